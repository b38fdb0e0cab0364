/**
 * Mesh-wide token buckets by leasing. Each bucket (one per rate-limited route, one per API key
 * with a rate) lives in NATS KV `fnmesh_ratelimits` as a `RateBucket`; an agent takes tokens from
 * it in small leases with compare-and-set on the entry's revision, then spends them locally.
 *
 * Tolerance. The CAS makes the shared count exact, so over any window T the whole mesh admits at
 * most burst + rate x T per bucket (plus rate x the clock skew between agents, once: refills use
 * the writer's clock). What it may lose is the other way: tokens leased by an agent and not spent
 * within a second expire (at most one lease per agent, sized to ~50 ms of that agent's own demand),
 * and an agent that found the bucket empty waits until the next token is due (at least 20 ms)
 * before asking again. When KV cannot be reached the agent falls back to a local bucket of
 * rate / N (N = agents in its peer table) for 5 s at a time: still near the limit if traffic is
 * spread evenly, and logged.
 */
import type { KV } from '@nats-io/kv'
import { decode, encode } from '../../../../proto/codec.js'
import type { Logger } from '../../logger.js'
import { full, LocalBucket, msUntilToken, refill, take, type BucketLimits, type BucketState } from './bucket.js'

/** Where buckets live: NATS KV, or a fake in unit tests */
export interface LeaseStore {
  /** Takes up to `want` tokens; `granted` 0 comes with the ms until the next token */
  take: (id: string, want: number, limits: BucketLimits) => Promise<{ granted: number, retryAfterMs: number }>
}

const CONFLICT = /wrong last sequence|key exists/i

export class KvLeaseStore implements LeaseStore {
  /** last entry seen per bucket: with it, an uncontended lease is one KV round trip */
  private readonly seen = new Map<string, { revision: number, state: BucketState }>()

  constructor (private readonly kv: KV, private readonly now: () => number = Date.now) {}

  async take (id: string, want: number, l: BucketLimits): Promise<{ granted: number, retryAfterMs: number }> {
    for (let attempt = 0; attempt < 8; attempt++) {
      let last = this.seen.get(id)
      if (last == null || attempt > 0) {
        const entry = await this.kv.get(id)
        last = entry != null && entry.operation === 'PUT' && entry.value.byteLength > 0
          ? { revision: entry.revision, state: toState(decode('RateBucket', entry.value)) }
          : { revision: entry?.revision ?? 0, state: { tokens: Number.NaN, atMs: 0 } }
      }
      const now = this.now()
      const current = Number.isNaN(last.state.tokens) ? full(now, l) : refill(last.state, now, l)
      const r = take(current, want)
      if (r.granted === 0) {
        this.seen.set(id, last)
        return { granted: 0, retryAfterMs: msUntilToken(r.state, l) }
      }
      const bytes = encode('RateBucket', { tokens: r.state.tokens, atMs: r.state.atMs })
      try {
        const revision = last.revision === 0 ? await this.kv.create(id, bytes) : await this.kv.update(id, bytes, last.revision)
        this.seen.set(id, { revision, state: r.state })
        return { granted: r.granted, retryAfterMs: 0 }
      } catch (err: any) {
        // Another agent wrote first (or the entry was deleted): read it again and retry.
        if (!CONFLICT.test(String(err?.message))) throw err
        this.seen.delete(id)
      }
    }
    return { granted: 0, retryAfterMs: 10 }
  }
}

function toState (b: { tokens: number, atMs: number }): BucketState {
  return { tokens: b.tokens, atMs: b.atMs }
}

export interface LimiterInit {
  /** Leased tokens not spent within this long are dropped. @default 1000 */
  leaseTtlMs?: number
  /** Least wait before asking an empty bucket again. @default 20 */
  minPollMs?: number
  /** A lease covers this much of the agent's own recent demand. @default 50 */
  leaseWindowMs?: number
  /** This agent's share of a bucket when KV is unreachable. @default 1 */
  fallbackShare?: () => number
  now?: () => number
  logger: Logger
}

interface Local {
  tokens: number
  expiresAt: number
  emptyUntil: number
  pending: Promise<void> | undefined
  waiting: number
  /** requests per second here, smoothed */
  demand: number
  windowStart: number
  windowCount: number
  fallback: LocalBucket
  fallbackUntil: number
}

export class MeshRateLimiter {
  private readonly buckets = new Map<string, Local>()
  private readonly init: Required<Omit<LimiterInit, 'logger'>>
  private warned = 0
  /** leases taken, KV errors (for tests and logs) */
  readonly stats = { leases: 0, kvErrors: 0 }

  constructor (private readonly store: LeaseStore, private readonly i: LimiterInit) {
    this.init = {
      leaseTtlMs: i.leaseTtlMs ?? 1000,
      minPollMs: i.minPollMs ?? 20,
      leaseWindowMs: i.leaseWindowMs ?? 50,
      fallbackShare: i.fallbackShare ?? (() => 1),
      now: i.now ?? Date.now
    }
  }

  /** Admits one request against bucket `id`: resolves 0, or the ms until a token is due */
  async admit (id: string, l: BucketLimits): Promise<number> {
    const b = this.local(id)
    this.observe(b)
    b.waiting++
    try {
      for (let round = 0; round < 8; round++) {
        const now = this.init.now()
        if (now < b.fallbackUntil) {
          const share = Math.min(1, Math.max(0.001, this.init.fallbackShare()))
          return b.fallback.tryTake({ rate: l.rate * share, burst: Math.max(1, l.burst * share) })
        }
        if (b.tokens >= 1 && now < b.expiresAt) {
          b.tokens--
          return 0
        }
        if (now < b.emptyUntil) return b.emptyUntil - now
        await this.lease(b, id, l)
      }
      return this.init.minPollMs
    } finally {
      b.waiting--
    }
  }

  private local (id: string): Local {
    let b = this.buckets.get(id)
    if (b == null) {
      b = { tokens: 0, expiresAt: 0, emptyUntil: 0, pending: undefined, waiting: 0, demand: 0, windowStart: this.init.now(), windowCount: 0, fallback: new LocalBucket(this.init.now), fallbackUntil: 0 }
      this.buckets.set(id, b)
    }
    return b
  }

  private observe (b: Local): void {
    const now = this.init.now()
    b.windowCount++
    const elapsed = now - b.windowStart
    if (elapsed >= 250) {
      const rate = b.windowCount * 1000 / elapsed
      b.demand = elapsed > 2000 ? rate : b.demand * 0.5 + rate * 0.5
      b.windowStart = now
      b.windowCount = 0
    }
  }

  private async lease (b: Local, id: string, l: BucketLimits): Promise<void> {
    if (b.pending != null) { await b.pending; return }
    const want = Math.max(1, Math.min(Math.floor(l.burst), Math.max(Math.ceil(b.demand * this.init.leaseWindowMs / 1000), b.waiting)))
    b.pending = (async () => {
      try {
        const r = await this.store.take(id, want, l)
        const now = this.init.now()
        this.stats.leases++
        if (r.granted > 0) {
          if (now >= b.expiresAt) b.tokens = 0
          b.tokens += r.granted
          b.expiresAt = now + this.init.leaseTtlMs
        } else {
          b.emptyUntil = now + Math.max(this.init.minPollMs, r.retryAfterMs)
        }
      } catch (err: any) {
        this.stats.kvErrors++
        b.fallbackUntil = this.init.now() + 5000
        if (Date.now() - this.warned > 10_000) {
          this.warned = Date.now()
          this.i.logger.warn({ bucket: id, err: String(err?.message ?? err) }, 'rate limit buckets unreachable in NATS KV: limiting with this agent\'s share for 5 s')
        }
      }
    })().finally(() => { b.pending = undefined })
    await b.pending
  }
}
