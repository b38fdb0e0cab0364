import { fixture } from './fixtures.js'
import type { Mesh } from '../../sdk/src/client.js'
import { sleep } from './wait.js'

export type ProbeKind = 'invoke' | 'publish' | 'deploy' | 'list' | 'usage' | 'keys' | 'logs'

export interface ProbeOp { kind: ProbeKind, start: number, end: number, ok: boolean, code?: string, message?: string }

export interface Window { from: number, to: number }

export interface KindFigure {
  /** operations that ended in the window */
  ops: number
  failed: number
  codes: string[]
  /** one message per failure code */
  examples: string[]
  /** longest time in the window with no operation of this kind succeeding (ms) */
  maxGapMs: number
  /** the slowest operation that ended in the window (ms) */
  maxLatencyMs: number
}

/**
 * Every kind of operation a user does, each in its own loop against one SDK client, recorded:
 * sync invokes (several at once), event publishes with unique ids (the accepted ones are the
 * ones that must run), deploys, listing, usage, API keys and logs.
 */
export class Probes {
  readonly ops: ProbeOp[] = []
  readonly accepted = new Set<string>()
  /** where JetStream stored each accepted event, and when its publish was answered */
  readonly stored = new Map<string, { seq: number, duplicate: boolean, at: number }>()
  private stopped = false
  private readonly loops: Array<Promise<void>> = []
  private n = 0

  constructor (private readonly mesh: Mesh, readonly invokeTimeoutMs = 4000) {}

  start (): void {
    const loop = (kind: ProbeKind, pauseMs: number, fn: () => Promise<unknown>): void => {
      this.loops.push((async () => {
        while (!this.stopped) {
          const start = Date.now()
          try {
            await fn()
            this.ops.push({ kind, start, end: Date.now(), ok: true })
          } catch (err: any) {
            this.ops.push({ kind, start, end: Date.now(), ok: false, code: String(err?.code ?? err?.name ?? 'none'), message: String(err?.message ?? err).slice(0, 200) })
            await sleep(100)
          }
          await sleep(pauseMs)
        }
      })())
    }
    for (let i = 0; i < 3; i++) loop('invoke', 50, async () => await this.mesh.invoke('ok', { i }, { timeoutMs: this.invokeTimeoutMs }))
    for (let i = 0; i < 2; i++) {
      loop('publish', 50, async () => {
        const id = `ev-${this.n++}`
        const r = await this.mesh.publish('work.item', { id }, { id, timeoutMs: 3000 })
        this.accepted.add(id)
        this.stored.set(id, { seq: r.seq, duplicate: r.duplicate === true, at: Date.now() })
      })
    }
    loop('deploy', 1000, async () => await this.mesh.deploy({ name: 'probe', path: fixture('ok.js') }))
    loop('list', 500, async () => await this.mesh.functions())
    loop('usage', 500, async () => await this.mesh.usage({ fn: 'ok', timeoutMs: 3000 }))
    loop('keys', 1000, async () => await this.mesh.keys.list())
    loop('logs', 1000, async () => { for await (const _ of this.mesh.logs('ok', { sinceMs: 2000, timeoutMs: 3000 })) { /* read them all */ } })
  }

  async stop (): Promise<void> {
    this.stopped = true
    await Promise.all(this.loops)
  }

  /** Figures of each kind of operation over `w` */
  figures (w: Window): Record<ProbeKind, KindFigure> {
    const out: Partial<Record<ProbeKind, KindFigure>> = {}
    for (const kind of ['invoke', 'publish', 'deploy', 'list', 'usage', 'keys', 'logs'] as ProbeKind[]) {
      const ops = this.ops.filter(o => o.kind === kind && o.end >= w.from && o.end <= w.to)
      const oks = ops.filter(o => o.ok).map(o => o.end).sort((a, b) => a - b)
      let gap = 0
      let last = w.from
      for (const t of oks) { gap = Math.max(gap, t - last); last = t }
      gap = Math.max(gap, w.to - last)
      out[kind] = {
        ops: ops.length,
        failed: ops.filter(o => !o.ok).length,
        codes: [...new Set(ops.filter(o => !o.ok).map(o => o.code ?? ''))],
        examples: [...new Map(ops.filter(o => !o.ok).map(o => [o.code, `${String(o.code)}: ${String(o.message)}`])).values()],
        maxGapMs: gap,
        maxLatencyMs: Math.max(0, ...ops.map(o => o.end - o.start))
      }
    }
    return out as Record<ProbeKind, KindFigure>
  }
}
