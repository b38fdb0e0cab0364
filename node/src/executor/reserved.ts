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
  /** runs holding a permit now */
  granted: number
  /** acquires waiting for a write of the lease */
  pending: number
  /** by this agent's clock */
  expiresAt: number
  /** operations on the KV entry, one at a time */
  chain: Promise<unknown>
  shrinkQueued: boolean
  /** the permits a write in flight sets the lease to: until it lands, no more are taken locally */
  writing: number
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
    // Not past acquires waiting for a write: the permits it grows the lease by are theirs.
    if (s.pending === 0 && this.spare(s)) {
      s.granted++
      return true
    }
    s.pending++
    // The permit is counted inside the operation: nothing may take or give it up in between.
    const ok = await this.serial(s, async () => {
      const granted = await this.grow(fn, s).catch(() => false)
      s.pending--
      if (granted) s.granted++
      return granted
    })
    if (!ok) this.stats.refused++
    return ok
  }

  /** Gives back a permit taken by acquire() */
  release (fn: string): void {
    const s = this.fns.get(fn)
    if (s == null) return
    s.granted = Math.max(0, s.granted - 1)
    if (s.shrinkQueued) return
    s.shrinkQueued = true
    void this.serial(s, async () => {
      s.shrinkQueued = false
      return s.held > s.granted ? await this.write(fn, s, s.granted) : true
    })
  }

  /** Permits this agent holds now per function (for tests and logs) */
  held (): Record<string, { held: number, granted: number }> {
    return Object.fromEntries([...this.fns].map(([fn, s]) => [fn, { held: s.held, granted: s.granted }]))
  }

  /** A permit of this agent's live lease is free (and no write in flight gives it up) */
  private spare (s: FnState): boolean {
    return s.granted < Math.min(s.held, s.writing) && this.now() < s.expiresAt
  }

  private state (fn: string, limit: number): FnState {
    let s = this.fns.get(fn)
    if (s == null) {
      s = { limit, held: 0, granted: 0, pending: 0, expiresAt: 0, chain: Promise.resolve(), shrinkQueued: false, writing: Infinity }
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
      if (s.held === 0 && s.granted === 0 && s.pending === 0) { this.fns.delete(fn); continue }
      void this.serial(s, async () => await this.write(fn, s, s.granted))
    }
  }

  /**
   * One more permit for a waiting acquire: from a lease an earlier write already grew, else by
   * growing the lease for every acquire waiting here, as far as the others' unexpired leases
   * leave room under the limit. False when not even one fits.
   */
  private async grow (fn: string, s: FnState): Promise<boolean> {
    if (this.spare(s)) return true
    return await this.write(fn, s, (taken) => {
      const want = Math.min(s.granted + s.pending, s.limit - taken)
      return want >= s.granted + 1 ? want : -1
    })
  }

  /**
   * Sets this agent's lease of `fn` to `want` permits (0 removes it; a function of the permits
   * others hold, -1 to give up) with a fresh expiry, by compare-and-set. True when written.
   */
  private async write (fn: string, s: FnState, want: number | ((taken: number) => number)): Promise<boolean> {
    const key = concurrencyKey(fn)
    try {
      for (let attempt = 0; attempt < 16; attempt++) {
        const entry = await this.c.kv.get(key)
        const now = this.now()
        const others = entry != null && entry.operation === 'PUT' ? this.othersOf(entry.value, now) : []
        const taken = others.reduce((n, l) => n + l.permits, 0)
        const permits = typeof want === 'number' ? Math.max(want, s.granted) : want(taken)
        if (permits < 0) return false
        const leases = permits > 0 ? [...others, { nodeId: this.c.nodeId, permits, expiresAtMs: now + this.ttlMs }] : others
        const bytes = encode('ConcurrencyLeases', { leases })
        // A run here may not take a permit this write gives up (a shrink racing a new run).
        s.writing = permits
        try {
          if (entry == null) await this.c.kv.create(key, bytes)
          else await this.c.kv.update(key, bytes, entry.revision)
          this.stats.writes++
          s.held = permits
          s.expiresAt = now + this.ttlMs
          return true
        } catch (err: any) {
          if (!CONFLICT.test(String(err?.message))) throw err
          this.stats.conflicts++
        } finally {
          s.writing = Infinity
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
