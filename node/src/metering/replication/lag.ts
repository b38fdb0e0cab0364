/**
 * Replication lag samples of this node's batches (signed -> R-th peer's ack), in a
 * bounded window that the status API can read and restart.
 */

const WINDOW = 20_000

export interface LagSummary { samples: number, p50: number, p99: number, max: number }

export class LagWindow {
  private samples: number[] = []
  private next = 0

  add (ms: number): void {
    if (this.samples.length < WINDOW) this.samples.push(ms)
    else { this.samples[this.next] = ms; this.next = (this.next + 1) % WINDOW }
  }

  summary (): LagSummary {
    const s = Float64Array.from(this.samples).sort()
    const q = (p: number): number => s.length === 0 ? 0 : s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]
    return { samples: s.length, p50: q(0.5), p99: q(0.99), max: s.length === 0 ? 0 : s[s.length - 1] }
  }

  reset (): void {
    this.samples = []
    this.next = 0
  }
}
