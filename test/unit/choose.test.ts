import { describe, expect, it } from 'vitest'
import { better, canQueue, chooseQueue, choosePeer } from '../../node/src/router/choose.js'


/** mulberry32: a tiny seeded PRNG, so the random draws are the same on every run */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** An rng that returns `values` in turn (and fails the test if asked for more) */
function scripted (...values: number[]): () => number {
  return () => {
    const v = values.shift()
    if (v === undefined) throw new Error('rng called more often than scripted')
    return v
  }
}

const peer = (id: string, load: number, slots: number, warm = false): Candidate => ({ id, load, slots, warm })

/** How often each id is chosen over `draws` choices */
function spread (candidates: Candidate[], draws: number, seed: number): Record<string, number> {
  const rng = prng(seed)
  const counts: Record<string, number> = Object.fromEntries(candidates.map(c => [c.id, 0]))
  for (let i = 0; i < draws; i++) {
    const c = choosePeer(candidates, rng)
    if (c == null) throw new Error('no peer chosen')
    counts[c.id]++
  }
  return counts
}

describe('routing choice', () => {
  it('returns undefined when there are no candidates', () => {
    expect(choosePeer([], scripted())).toBeUndefined()
  })

  it('returns undefined when every peer is full, over-full or has no slots', () => {
    const all = [peer('a', 4, 4), peer('b', 9, 8), peer('c', 0, 0)]
    expect(choosePeer(all, prng(1))).toBeUndefined()
  })

  it('returns the single peer with a free slot without drawing', () => {
    const only = peer('b', 1, 2)
    expect(choosePeer([peer('a', 2, 2), only, peer('c', 5, 4)], scripted())).toBe(only)
    expect(choosePeer([only], scripted())).toBe(only)
  })

  it('never picks a full peer over thousands of draws', () => {
    const candidates = [peer('full', 8, 8, true), peer('over', 5, 4, true), peer('zero', 0, 0, true), peer('x', 7, 8), peer('y', 3, 4)]
    const counts = spread(candidates, 5000, 7)
    expect(counts.full + counts.over + counts.zero).toBe(0)
    expect(counts.x + counts.y).toBe(5000)
  })

  it('draws two distinct peers and keeps the better one', () => {
    const a = peer('a', 0, 4)
    const b = peer('b', 3, 4)
    const c = peer('c', 2, 4)
    // i = floor(0.0 * 3) = 0 (a); j = floor(0.99 * 2) = 1, shifted past i to 2 (c)
    expect(choosePeer([a, b, c], scripted(0.0, 0.99))).toBe(a)
    // i = 1 (b); j = floor(0.6 * 2) = 1, shifted past i to 2 (c): c is less loaded than b
    expect(choosePeer([a, b, c], scripted(0.5, 0.6))).toBe(c)
    // i = 2 (c); j = 0 (a)
    expect(choosePeer([a, b, c], scripted(0.9, 0.1))).toBe(a)
  })

  it('draws only among peers with a free slot', () => {
    const a = peer('a', 3, 4)
    const b = peer('b', 1, 4)
    // Full peers are filtered first: indices are over [a, b], so i = 1 (b), j = 0 (a)
    expect(choosePeer([peer('full', 4, 4), a, peer('full2', 2, 2), b], scripted(0.7, 0.2))).toBe(b)
  })

  it('prefers lower utilisation over more free slots', () => {
    // 6 of 8 busy leaves 2 free slots at 75 %; 1 of 2 busy leaves 1 free slot at 50 %
    const big = peer('big', 6, 8, true)
    const small = peer('small', 1, 2)
    expect(better(small, big)).toBe(true)
    expect(better(big, small)).toBe(false)
    expect(choosePeer([big, small], scripted(0, 0))).toBe(small)
    expect(choosePeer([big, small], scripted(0.9, 0))).toBe(small)
    expect(choosePeer([peer('half', 5, 10), peer('idle', 0, 2)], scripted(0, 0))?.id).toBe('idle')
  })

  it('prefers the warm peer when utilisation ties', () => {
    const cold = peer('cold', 2, 4)
    const warm = peer('warm', 4, 8, true)
    expect(better(warm, cold)).toBe(true)
    expect(better(cold, warm)).toBe(false)
    expect(choosePeer([cold, warm], scripted(0, 0))).toBe(warm)
    expect(choosePeer([cold, warm], scripted(0.9, 0))).toBe(warm)
  })

  it('treats utilisations equal up to rounding as a tie', () => {
    // 1/3 and 2/6 differ in the last bits of a double
    const cold = peer('cold', 1, 3)
    const warm = peer('warm', 2, 6, true)
    expect(better(warm, cold)).toBe(true)
    expect(better(cold, warm)).toBe(false)
  })

  it('prefers more free slots when utilisation and warmth tie', () => {
    // 4 of 8 and 1 of 2 are both 50 %: 4 free slots beat 1
    for (const warm of [true, false]) {
      const big = peer('big', 4, 8, warm)
      const small = peer('small', 1, 2, warm)
      expect(better(big, small)).toBe(true)
      expect(better(small, big)).toBe(false)
      expect(choosePeer([small, big], scripted(0, 0))).toBe(big)
      expect(choosePeer([small, big], scripted(0.9, 0))).toBe(big)
    }
  })

  it('spreads like power of two choices: the most loaded of 3 is never chosen', () => {
    // Pairs are drawn uniformly: {a,b} -> a, {a,c} -> a, {b,c} -> b, so a 2/3, b 1/3, c never.
    const counts = spread([peer('c', 3, 4), peer('a', 0, 4), peer('b', 1, 4)], 30_000, 42)
    expect(counts.c).toBe(0)
    expect(counts.a / 30_000).toBeGreaterThan(0.64)
    expect(counts.a / 30_000).toBeLessThan(0.69)
    expect(counts.b / 30_000).toBeGreaterThan(0.31)
    expect(counts.b / 30_000).toBeLessThan(0.36)
  })

  it('spreads like power of two choices over 5 peers: rank k wins 2(n-1-k)/(n(n-1)) of draws', () => {
    // Ranked best first; the expected shares for n = 5 are 0.4, 0.3, 0.2, 0.1, 0.
    const ranked = [peer('r0', 0, 10), peer('r1', 2, 10), peer('r2', 4, 10), peer('r3', 6, 10), peer('r4', 8, 10)]
    const shuffled = [ranked[3], ranked[0], ranked[4], ranked[2], ranked[1]]
    const draws = 50_000
    const counts = spread(shuffled, draws, 2024)
    expect(counts.r4).toBe(0)
    ranked.forEach((c, k) => {
      const expected = (2 * (5 - 1 - k)) / (5 * 4)
      expect(Math.abs(counts[c.id] / draws - expected), c.id).toBeLessThan(0.015)
    })
  })

  it('spreads evenly over equally loaded peers, so routers with the same view do not herd', () => {
    const counts = spread([peer('a', 1, 4), peer('b', 1, 4), peer('c', 1, 4), peer('d', 1, 4)], 40_000, 99)
    // All tie on utilisation, warmth and free slots: each peer should win about a quarter.
    for (const id of ['a', 'b', 'c', 'd']) expect(Math.abs(counts[id] / 40_000 - 0.25), id).toBeLessThan(0.02)
  })
})

describe('the router\'s own node', () => {
  const own = (load: number, slots: number, warm = false): Candidate => ({ id: 'self', load, slots, warm, self: true })

  it('wins a tie of utilisation and warmth over a peer, but not a lower utilisation or a warm peer', () => {
    expect(better(own(0, 8), peer('p', 0, 8))).toBe(true)
    expect(better(peer('p', 0, 8), own(0, 8))).toBe(false)
    expect(better(own(2, 8), peer('p', 1, 8))).toBe(false)
    expect(better(own(0, 8), peer('p', 0, 8, true))).toBe(false)
  })

  it('is always one of the two sampled when it has a free slot', () => {
    const peers = [peer('a', 0, 4), own(0, 4), peer('b', 0, 4), peer('c', 0, 4)]
    for (const r of [0, 0.3, 0.6, 0.99]) {
      expect(choosePeer(peers, scripted(r, r))?.id).toBe('self')
    }
    // Busier than the sampled peer: the peer takes it.
    expect(choosePeer([own(3, 4), peer('a', 0, 4), peer('b', 0, 4)], scripted(0, 0))?.id).toBe('a')
    // Full: never chosen.
    expect(choosePeer([own(4, 4), peer('a', 3, 4)], scripted(0, 0))?.id).toBe('a')
  })
})

describe('where to wait when no peer has a free slot (chooseQueue)', () => {
  it('returns undefined without candidates, or when no queue\'s expected wait fits the budget', () => {
    expect(chooseQueue([], 1000, 10)).toBeUndefined()
    // a: (4 queued + 1) x 10 ms / 2 slots = 25 ms; b: (8 + 1) x 10 / 4 = 22.5 ms
    expect(chooseQueue([peer('a', 6, 2), peer('b', 12, 4)], 22, 10, prng(1))).toBeUndefined()
    expect(chooseQueue([peer('a', 6, 2), peer('b', 12, 4)], 23, 10, prng(1))?.id).toBe('b')
    expect(chooseQueue([peer('a', 3, 0)], 60_000, 10, prng(1))).toBeUndefined()
  })

  it('queues far past 3 per slot when the deadline leaves room: the view\'s "full" is no bound', () => {
    expect(chooseQueue([peer('a', 2 + 1000, 2)], 60_000, 5, prng(1))?.id).toBe('a')
    expect(canQueue(peer('a', 2 + 1000, 2), 60_000, 5)).toBe(true)
    expect(canQueue(peer('a', 2 + 1000, 2), 2000, 5)).toBe(false)
  })

  it('leaves out a peer that refused as long a budget since its last advert, not one that refused a shorter one', () => {
    const a = { ...peer('a', 2, 2), waitAboveMs: 500 }
    expect(canQueue(a, 500, 5)).toBe(false)
    expect(canQueue(a, 501, 5)).toBe(true)
    expect(chooseQueue([a, peer('b', 20, 2)], 400, 5, prng(2))?.id).toBe('b')
  })

  it('of two, queues where (load + 1) / slots is least: the shorter expected wait', () => {
    // b: (8 + 1) / 8 < a: (2 + 1) / 2
    expect(chooseQueue([peer('a', 2, 2), peer('b', 8, 8)], 1000, 10, scripted(0, 0))?.id).toBe('b')
    expect(chooseQueue([peer('a', 2, 2), peer('b', 8, 8)], 1000, 10, scripted(0.9, 0.1))?.id).toBe('b')
    // a queue whose wait does not fit is left out even when it would look shortest per slot
    expect(chooseQueue([peer('a', 4 + 100, 4), peer('b', 5, 2)], 200, 10, prng(3))?.id).toBe('b')
  })

  it('always weighs the router\'s own node, whose load it knows exactly, against one other', () => {
    const own = { ...peer('self', 2, 2), self: true }
    const others = [peer('x', 40, 16), peer('y', 40, 16), peer('z', 40, 16)]
    const rng = prng(5)
    for (let i = 0; i < 200; i++) {
      // (2 + 1) / 2 = 1.5 beats (40 + 1) / 16 = 2.56 whichever other is drawn
      expect(chooseQueue([...others, own], 60_000, 5, rng)?.id).toBe('self')
    }
  })

  it('spreads queued work over equally loaded peers', () => {
    const rng = prng(11)
    const counts: Record<string, number> = { a: 0, b: 0, c: 0 }
    const cands = [peer('a', 4, 4), peer('b', 4, 4), peer('c', 4, 4)]
    for (let i = 0; i < 3000; i++) counts[chooseQueue(cands, 60_000, 5, rng)?.id ?? '']++
    for (const k of ['a', 'b', 'c']) expect(counts[k]).toBeGreaterThan(800)
  })
})

describe('chooseQueue prefers shallow queues', () => {
  it('picks among queues under SPREAD_PER_SLOT per slot while any is in view, and among every one that fits after', () => {
    // a: 1 slot, 10 queued (deep) but shortest per-slot would be b's... b: 4 slots, 8 queued (shallow)
    const a = peer('a', 1 + 10, 1)
    const b = peer('b', 4 + 8, 4)
    for (let i = 0; i < 50; i++) expect(chooseQueue([a, b], 60_000, 5, prng(i))?.id).toBe('b')
    const deep = peer('c', 4 + 60, 4)
    expect(chooseQueue([a, deep], 60_000, 5, scripted(0, 0))?.id).toBe('a')
  })
})
