/**
 * What a router learned about its peers from the work it sent them: a decaying penalty per peer
 * for failed dispatches (no answer in time, not listening, garbage, node-level errors), "busy"
 * refusals and stalls (answers far slower than this function's usual round trip), and a cap on
 * how many slots any one peer is believed to have. Together they bound the share of routing a
 * peer can attract by advertising: huge capacity is capped near the mesh's median, and a peer
 * that then fails or stalls loses to every healthy peer with a free slot until its penalty decays.
 */

export interface PenaltyInit {
  /** @default 10000 */
  halfLifeMs?: number
  /** A peer is believed to have at most this many times the median slots of the mesh. @default 4 */
  slotCapFactor?: number
  /** ...and never fewer than this. @default 16 */
  minSlotCap?: number
  now?: () => number
}

export const PENALTY = { failed: 1, stalled: 0.5, busy: 0.25 } as const

/** Round trips of one function: smoothed, and how many seen */
interface Rtt { ewma: number, n: number }

export class PeerPenalties {
  private readonly scores = new Map<string, { score: number, atMs: number }>()
  private readonly rtts = new Map<string, Rtt>()
  private readonly halfLifeMs: number
  readonly slotCapFactor: number
  readonly minSlotCap: number
  private readonly now: () => number

  constructor (init: PenaltyInit = {}) {
    this.halfLifeMs = init.halfLifeMs ?? 10_000
    this.slotCapFactor = init.slotCapFactor ?? 4
    this.minSlotCap = init.minSlotCap ?? 16
    this.now = init.now ?? Date.now
  }

  /** The peer's penalty now: 0 for a healthy peer, about 1 per recent failure */
  score (id: string): number {
    const s = this.scores.get(id)
    if (s == null) return 0
    const v = s.score * Math.pow(0.5, (this.now() - s.atMs) / this.halfLifeMs)
    if (v < 0.01) { this.scores.delete(id); return 0 }
    return v
  }

  add (id: string, amount: number): void {
    this.scores.set(id, { score: this.score(id) + amount, atMs: this.now() })
  }

  /**
   * A dispatch to `id` of function `fn` answered after `rttMs`. Successful answers teach the
   * function's usual round trip; one far above it (3x and 500 ms more) counts as a stall.
   */
  answered (id: string, fn: string, rttMs: number): void {
    const r = this.rtts.get(fn) ?? { ewma: rttMs, n: 0 }
    if (r.n >= 5 && rttMs > r.ewma * 3 + 500) this.add(id, PENALTY.stalled)
    r.ewma = r.n === 0 ? rttMs : r.ewma * 0.9 + rttMs * 0.1
    r.n++
    this.rtts.set(fn, r)
  }

  forget (id: string): void {
    this.scores.delete(id)
  }

  /** The most slots any peer is believed to have, from the slots every routable peer advertises */
  slotCap (advertised: number[]): number {
    if (advertised.length === 0) return this.minSlotCap
    const sorted = [...advertised].sort((a, b) => a - b)
    const median = sorted[Math.floor((sorted.length - 1) / 2)]
    return Math.max(this.minSlotCap, Math.ceil(median * this.slotCapFactor))
  }
}
