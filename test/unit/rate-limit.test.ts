import { describe, expect, it } from 'vitest'
import type { KV } from '@nats-io/kv'
import { full, LocalBucket, msUntilToken, refill, take } from '../../node/src/gateway/ratelimit/bucket.js'
import { KvLeaseStore, MeshRateLimiter, type LeaseStore } from '../../node/src/gateway/ratelimit/limiter.js'
import { silentLogger } from '../../node/src/logger.js'

/** The part of a NATS KV that leases use, with its compare-and-set on revisions */
class FakeKv {
  private readonly entries = new Map<string, { value: Uint8Array, revision: number }>()
  private rev = 0
  writes = 0
  conflicts = 0
  async get (k: string): Promise<any> {
    const e = this.entries.get(k)
    return e == null ? null : { key: k, value: e.value, revision: e.revision, operation: 'PUT' }
  }

  async create (k: string, v: Uint8Array): Promise<number> {
    if (this.entries.has(k)) { this.conflicts++; throw new Error('wrong last sequence: 1') }
    return this.put(k, v)
  }

  async update (k: string, v: Uint8Array, revision: number): Promise<number> {
    if (this.entries.get(k)?.revision !== revision) { this.conflicts++; throw new Error(`wrong last sequence: ${revision}`) }
    return this.put(k, v)
  }

  private put (k: string, v: Uint8Array): number {
    this.writes++
    this.entries.set(k, { value: v, revision: ++this.rev })
    return this.rev
  }
}

describe('token bucket arithmetic', () => {
  const l = { rate: 10, burst: 5 }

  it('refills at the rate up to the burst and never from a clock that runs behind', () => {
    expect(refill({ tokens: 0, atMs: 0 }, 200, l)).toEqual({ tokens: 2, atMs: 200 })
    expect(refill({ tokens: 4, atMs: 0 }, 10_000, l).tokens).toBe(5)
    expect(refill({ tokens: 1, atMs: 1000 }, 500, l)).toEqual({ tokens: 1, atMs: 1000 })
  })

  it('takes whole tokens and says when the next one is due', () => {
    expect(take(full(0, l), 3)).toEqual({ state: { tokens: 2, atMs: 0 }, granted: 3 })
    expect(take({ tokens: 0.5, atMs: 0 }, 1).granted).toBe(0)
    expect(msUntilToken({ tokens: 0.5, atMs: 0 }, l)).toBe(50)
  })

  it('admits burst then rate per second in a local bucket', () => {
    let now = 0
    const b = new LocalBucket(() => now)
    let admitted = 0
    for (; now <= 1000; now += 10) if (b.tryTake(l) === 0) admitted++
    expect(admitted).toBe(5 + 10)
  })
})

/** Runs `agents` limiters on one store for `seconds` of fake time, each offered `perAgent` req/s */
async function simulate (store: (now: () => number) => LeaseStore, opts: { agents: number, perAgent: number[], rate: number, burst: number, seconds: number }): Promise<{ admitted: number, denied: number, retryAfter: number[] }> {
  let now = 1_000_000
  const clock = (): number => now
  const shared = store(clock)
  const limiters = Array.from({ length: opts.agents }, () => new MeshRateLimiter(shared, { logger: silentLogger(), now: clock }))
  const next = limiters.map(() => now)
  let admitted = 0
  let denied = 0
  const retryAfter: number[] = []
  const end = now + opts.seconds * 1000
  for (; now < end; now += 1) {
    for (let i = 0; i < limiters.length; i++) {
      while (next[i] <= now) {
        next[i] += 1000 / opts.perAgent[i]
        const wait = await limiters[i].admit('route.f.x', { rate: opts.rate, burst: opts.burst })
        if (wait === 0) admitted++
        else { denied++; retryAfter.push(wait) }
      }
    }
  }
  return { admitted, denied, retryAfter }
}

describe('mesh-wide rate limits by leases from a shared bucket', () => {
  const kvStore = (kv: FakeKv) => (now: () => number): LeaseStore => {
    // One KvLeaseStore per agent would each keep their own cache; the fake KV is what they share.
    const stores = new Map<number, KvLeaseStore>()
    let turn = 0
    return { take: async (id, want, l) => { const k = turn++ % 3; if (!stores.has(k)) stores.set(k, new KvLeaseStore(kv as unknown as KV, now)); return await stores.get(k)!.take(id, want, l) } }
  }

  it('admits at most burst + rate x T over 3 agents under an even overload, and not much less', async () => {
    const kv = new FakeKv()
    const r = await simulate(kvStore(kv), { agents: 3, perAgent: [40, 40, 40], rate: 20, burst: 20, seconds: 10 })
    console.log(`even overload: admitted ${r.admitted} of ${r.admitted + r.denied} (bound ${20 + 20 * 10}), KV writes ${kv.writes}, conflicts ${kv.conflicts}`)
    expect(r.admitted).toBeLessThanOrEqual(20 + 20 * 10)
    expect(r.admitted).toBeGreaterThanOrEqual(0.9 * 20 * 10)
    expect(Math.min(...r.retryAfter)).toBeGreaterThan(0)
  })

  it('follows the demand when traffic is skewed onto one agent', async () => {
    const kv = new FakeKv()
    const r = await simulate(kvStore(kv), { agents: 3, perAgent: [100, 5, 1], rate: 30, burst: 30, seconds: 10 })
    expect(r.admitted).toBeLessThanOrEqual(30 + 30 * 10)
    expect(r.admitted).toBeGreaterThanOrEqual(0.9 * 30 * 10)
  })

  it('admits everything below the limit', async () => {
    const r = await simulate(kvStore(new FakeKv()), { agents: 3, perAgent: [5, 5, 5], rate: 20, burst: 20, seconds: 5 })
    expect(r.denied).toBe(0)
  })

  it('falls back to an even local share when the store fails', async () => {
    let now = 0
    const failing: LeaseStore = { take: async () => { throw new Error('no responders') } }
    const limiter = new MeshRateLimiter(failing, { logger: silentLogger(), now: () => now, fallbackShare: () => 1 / 4 })
    let admitted = 0
    for (; now < 10_000; now += 5) if (await limiter.admit('b', { rate: 40, burst: 40 }) === 0) admitted++
    expect(admitted).toBeGreaterThanOrEqual(100)
    expect(admitted).toBeLessThanOrEqual(10 + 110)
    expect(limiter.stats.kvErrors).toBeGreaterThan(0)
  })
})
