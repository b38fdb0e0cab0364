/**
 * Mesh-wide reserved concurrency (`--reserved N`, issue 15) by leases, as the gateway's rate
 * limits lease tokens (gateway/ratelimit/limiter.ts): one KV entry per function,
 * `conc.<function>` in `fnmesh_ratelimits`, holds each agent's lease (permits, expiry) as
 * `ConcurrencyLeases`; an agent changes only its own lease, by compare-and-set on the entry's
 * revision, and grows it only while the permits of every unexpired lease stay within N. A run
 * takes a permit of this agent's lease before it starts and gives it back when it ends; a permit
 * given back is kept for the next run here until the lease is shrunk (at once, coalesced with
 * whatever else finished meanwhile). Leases are renewed every `renewMs` while they hold permits.
 *
 * Tolerance. While agents reach NATS KV and their clocks agree within `ttlMs`, at most N runs
 * are in progress across the mesh: the CAS makes the sum exact. A permit held by an agent that
 * crashed comes back when its lease expires (`ttlMs`, 10 s, after its last renewal): fewer than
 * N meanwhile, never more. An agent cut off from NATS starts nothing new once its lease expires
 * by its own clock, but finishes what it runs; those runs may then overlap with N new ones
 * elsewhere: at most N + k, k = the runs in progress on agents cut off for over `ttlMs`. When KV
 * cannot be reached, runs that need a new permit are refused (FNMESH_ERR_THROTTLED): it fails
 * closed, not open.
 */
import type { KV } from '@nats-io/kv'
import { decode, encode } from '../../../proto/codec.js'
import type { Logger } from '../logger.js'

export interface ReservedInit {
  /** A lease not renewed this long is free for others. @default 10000 */
  ttlMs?: number
  /** Leases holding permits are renewed this often. @default 3000 */
  renewMs?: number
  now?: () => number
}

export interface ReservedComponents {
  kv: KV
  nodeId: string
  logger: Logger
}

interface FnState {
  limit: number
  /** permits in this agent's lease, as last written */
  held: number
  /** runs holding one now */
  used: number
  /** by this agent's clock */
  expiresAt: number
  /** operations on the KV entry, one at a time */
  chain: Promise<unknown>
  shrinkQueued: boolean
}

const CONFLICT = /wrong last sequence|key exists/i
/** Most leases one entry may list: a bigger (hostile) value is read as empty and replaced */
const MAX_LEASES = 1024
const NODE_ID = /^[1-9A-HJ-NP-Za-km-z]{1,128}$/

export const concurrencyKey = (fn: string): string => `conc.${fn}`

export class ReservedConcurrency {
  private readonly fns = new Map<string, FnState>()
  private readonly ttlMs: number
  private readonly renewMs: number
  private readonly now: () => number
  private timer: NodeJS.Timeout | undefined
  private warned = 0
  /** compare-and-set writes and conflicts (for tests and logs) */
  readonly stats = { writes: 0, conflicts: 0, refused: 0, kvErrors: 0 }

  constructor (private readonly c: ReservedComponents, init: ReservedInit = {}) {
    this.ttlMs = init.ttlMs ?? 10_000
    this.renewMs = init.renewMs ?? 3000
    this.now = init.now ?? Date.now
  }

  start (): void {
    if (this.timer != null) return
    this.timer = setInterval(() => { this.renewAll() }, this.renewMs)
    this.timer.unref()
  }

  isStarted (): boolean {
    return this.timer != null
  }

  /** Stops renewing; leases then expire on their own (a drained agent holds none) */
  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** Takes one permit of `fn` (cap `limit` mesh-wide): true when the run may start */
  async acquire (fn: string, limit: number): Promise<boolean> {
    const s = this.state(fn, limit)
    if (s.used < s.held && this.now() < s.expiresAt) {
      s.used++
      return true
    }
    // Counted at once, so acquires waiting behind this one ask for their permits in one write.
    s.used++
    const ok = await this.serial(s, async () => await this.write(fn, s, true))
    if (!ok) {
      s.used--
      this.stats.refused++
    }
    return ok
  }

  /** Gives back a permit taken by acquire() */
  release (fn: string): void {
    const s = this.fns.get(fn)
    if (s == null) return
    s.used = Math.max(0, s.used - 1)
    if (s.shrinkQueued) return
    s.shrinkQueued = true
    void this.serial(s, async () => {
      s.shrinkQueued = false
      return s.held > s.used ? await this.write(fn, s, false) : true
    })
  }

  /** Permits this agent holds now per function (for tests and logs) */
  held (): Record<string, { held: number, used: number }> {
    return Object.fromEntries([...this.fns].map(([fn, s]) => [fn, { held: s.held, used: s.used }]))
  }

  private state (fn: string, limit: number): FnState {
    let s = this.fns.get(fn)
    if (s == null) {
      s = { limit, held: 0, used: 0, expiresAt: 0, chain: Promise.resolve(), shrinkQueued: false }
      this.fns.set(fn, s)
    }
    s.limit = limit
    return s
  }

  private async serial (s: FnState, op: () => Promise<boolean>): Promise<boolean> {
    const next = s.chain.then(op, op)
    s.chain = next.catch(() => false)
    return await next.catch(() => false)
  }

  private renewAll (): void {
    for (const [fn, s] of this.fns) {
      if (s.held === 0 && s.used === 0) { this.fns.delete(fn); continue }
      void this.serial(s, async () => await this.write(fn, s, false))
    }
  }

  /**
   * Sets this agent's lease of `fn` to the permits its runs use now (0 removes it) with a fresh
   * expiry. Growing it (`grow`) needs room under the limit beside the unexpired leases of others;
   * keeping or shrinking it always fits. True when the lease covers the runs here.
   */
  private async write (fn: string, s: FnState, grow: boolean): Promise<boolean> {
    const key = concurrencyKey(fn)
    try {
      for (let attempt = 0; attempt < 16; attempt++) {
        // An earlier write (for acquires queued behind it) may already cover this one.
        if (grow && s.used <= s.held && this.now() < s.expiresAt) return true
        const entry = await this.c.kv.get(key)
        const now = this.now()
        const others = entry != null && entry.operation === 'PUT' ? this.othersOf(entry.value, now) : []
        const taken = others.reduce((n, l) => n + l.permits, 0)
        const want = s.used
        if (want > s.held && taken + want > s.limit) return false
        const leases = want > 0 ? [...others, { nodeId: this.c.nodeId, permits: want, expiresAtMs: now + this.ttlMs }] : others
        const bytes = encode('ConcurrencyLeases', { leases })
        try {
          if (entry == null) await this.c.kv.create(key, bytes)
          else await this.c.kv.update(key, bytes, entry.revision)
          this.stats.writes++
          s.held = want
          s.expiresAt = now + this.ttlMs
          return true
        } catch (err: any) {
          if (!CONFLICT.test(String(err?.message))) throw err
          this.stats.conflicts++
        }
      }
      return false
    } catch (err: any) {
      this.stats.kvErrors++
      if (Date.now() - this.warned > 10_000) {
        this.warned = Date.now()
        this.c.logger.warn({ fn, err: String(err?.message ?? err) }, 'reserved concurrency leases unreachable in NATS KV: runs needing a new permit are throttled')
      }
      return false
    }
  }

  /** The unexpired, well-formed leases of other agents in a stored value (junk reads as none) */
  private othersOf (value: Uint8Array, now: number): Array<{ nodeId: string, permits: number, expiresAtMs: number }> {
    if (value.byteLength === 0) return []
    let decoded
    try { decoded = decode('ConcurrencyLeases', value) } catch { return [] }
    if (decoded.leases.length > MAX_LEASES) return []
    const out = []
    for (const l of decoded.leases) {
      if (l.nodeId === this.c.nodeId || !NODE_ID.test(l.nodeId) || l.expiresAtMs <= now) continue
      // A lease far in the future (a clock far ahead, or a forged value) counts for one ttl only.
      if (!Number.isInteger(l.permits) || l.permits < 1 || l.permits > 100_000) continue
      out.push({ nodeId: l.nodeId, permits: l.permits, expiresAtMs: Math.min(l.expiresAtMs, now + this.ttlMs) })
    }
    return out
  }
}
