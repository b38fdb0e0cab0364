import { describe, expect, it } from 'vitest'
import { choosePeer, type Candidate } from '../../node/src/router/choose.js'
import { PENALTY, PeerPenalties } from '../../node/src/router/penalty.js'
import { inRange } from '../../node/src/gossip/gossip.js'
import type { CapacityAdvert } from '../../proto/codec.js'

/**
 * Routes `n` invocations from router "a", each staying in flight for the next 20 picks. Every
 * peer's load is what this router has in flight there (the liar advertises 0 of its own).
 */
function shares (p: PeerPenalties, advertised: Record<string, number>, n: number, opts: { stay?: number } = {}, self = 'a'): Record<string, number> & { maxLiar: number } {
  const cap = p.slotCap(Object.values(advertised))
  const counts: Record<string, number> & { maxLiar: number } = { maxLiar: 0 }
  const inFlight: Array<{ id: string, until: number }> = []
  let seed = 7
  const rng = (): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31 }
  for (let i = 0; i < n; i++) {
    while (inFlight.length > 0 && inFlight[0].until <= i) inFlight.shift()
    const load = (id: string): number => inFlight.filter(x => x.id === id).length
    const cands: Candidate[] = Object.entries(advertised).map(([id, slots]) => ({ id, slots: id === self ? slots : Math.min(slots, cap), load: load(id), warm: false, self: id === self, penalty: p.score(id) }))
    const c = choosePeer(cands, rng)
    if (c == null) continue
    counts[c.id] = (counts[c.id] ?? 0) + 1
    inFlight.push({ id: c.id, until: i + (opts.stay ?? 20) })
    counts.maxLiar = Math.max(counts.maxLiar, load('liar'))
  }
  return counts
}

describe('routing share of a peer that lies about its capacity', () => {
  it('believes no peer has more than a few times the median slots', () => {
    const p = new PeerPenalties({ slotCapFactor: 4, minSlotCap: 16 })
    expect(p.slotCap([8, 8, 1_000_000])).toBe(32)
    expect(p.slotCap([100, 100, 100])).toBe(400)
    expect(p.slotCap([1])).toBe(16)
  })

  it('caps what a huge advert attracts, and cuts a failing peer to nothing until its penalty decays', () => {
    let now = 0
    const p = new PeerPenalties({ now: () => now, halfLifeMs: 10_000 })
    const honest = { a: 8, b: 8, c: 8 }
    const lying = { a: 8, b: 8, liar: 1_000_000 }
    const fair = shares(p, honest, 3000)
    const withLiar = shares(p, lying, 3000)
    console.log('shares: honest', fair, 'with a liar', withLiar)
    // under heavy load (work staying in flight for 200 picks), the work held by the liar at once
    // is bounded by the cap (4 x the median of 8), where believing its advert would not bound it
    const uncapped = shares(new PeerPenalties({ slotCapFactor: 1e9 }), lying, 3000, { stay: 200 })
    const capped = shares(p, lying, 3000, { stay: 200 })
    expect(uncapped.maxLiar).toBeGreaterThan(100)
    expect(capped.maxLiar).toBeLessThanOrEqual(32)
    for (let i = 0; i < 3; i++) p.add('liar', PENALTY.failed)
    // while the honest peers have room (10 in flight, 16 honest slots), a penalised liar gets nothing
    const before = shares(new PeerPenalties(), lying, 3000, { stay: 10 })
    const punished = shares(p, lying, 3000, { stay: 10 })
    expect(before.liar / 3000).toBeGreaterThan(0.3)
    expect((punished.liar ?? 0) / 3000).toBeLessThan(0.02)
    now += 60_000
    expect(p.score('liar')).toBeLessThan(0.1)
  })

  it('counts an answer far slower than the function\'s usual round trip as a stall', () => {
    const p = new PeerPenalties()
    for (let i = 0; i < 10; i++) p.answered('b', 'f', 20)
    expect(p.score('b')).toBe(0)
    p.answered('slow', 'f', 3000)
    expect(p.score('slow')).toBeCloseTo(PENALTY.stalled, 1)
  })
})

describe('advert ranges', () => {
  const good: CapacityAdvert = { nodeId: 'x', name: 'agent-1', slots: 8, inFlight: 2, freeMemMb: 1000, warm: ['f@1'], seq: 3, draining: false, startedAtMs: Date.now() - 1000, sentAtMs: Date.now(), invocations: 5, coldStarts: 1, warmStarts: 4 }

  it('accepts what a real agent sends and refuses values out of range', () => {
    expect(inRange(good)).toBe(true)
    for (const bad of [{ slots: 0 }, { slots: 2_000_000 }, { inFlight: 2_000_000 }, { name: 'a b' }, { seq: 0 }, { startedAtMs: Date.now() + 3_600_000 }, { sentAtMs: Date.now() + 3_600_000 }, { warm: ['x'.repeat(300)] }]) {
      expect(inRange({ ...good, ...bad } as CapacityAdvert), JSON.stringify(bad).slice(0, 60)).toBe(false)
    }
  })
})
