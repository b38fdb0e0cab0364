import { describe, expect, it } from 'vitest'
import { better, type Candidate } from '../../node/src/router/choose.js'
import { Simulation, simulate } from '../../scripts/sim/engine.js'
import { EventQueue } from '../../scripts/sim/events.js'
import { GossipModel } from '../../scripts/sim/gossip.js'
import { slotsFor, type RunResult, type SimConfig } from '../../scripts/sim/model.js'
import { OracleTree } from '../../scripts/sim/oracle.js'
import { prng } from '../../scripts/sim/rng.js'
import { GOSSIPSUB, gossipLoad, measureWire } from '../../scripts/sim/wire.js'

const small = (over: Partial<SimConfig> = {}): SimConfig => ({
  slots: slotsFor(10),
  load: 0.8,
  policy: 'fnmesh',
  seed: 7,
  warmupMs: 200,
  durationMs: 2000,
  ...over
})

/** A result without the wall-clock fields, which differ between identical runs */
function stable (r: RunResult): Omit<RunResult, 'wallMs'> {
  const { wallMs, ...rest } = r
  return rest
}

describe('simulator', () => {
  it('gives the same result for the same seed and a different one for another seed', () => {
    for (const policy of ['fnmesh', 'round-robin', 'random', 'oracle'] as const) {
      const a = simulate(small({ policy }))
      const b = simulate(small({ policy }))
      expect(stable(a)).toEqual(stable(b))
      const c = simulate(small({ policy, seed: 8 }))
      expect(c.latencyMs.p50).not.toBe(a.latencyMs.p50)
    }
  })

  it('gives every arrival an outcome: completed or refused, under load and overload', () => {
    for (const policy of ['fnmesh', 'round-robin', 'random', 'oracle'] as const) {
      // Overloaded, a wait for a slot grows until the callers' 500 ms deadline (fnmesh: the
      // expected wait over it) or the 500 ms wait at the router refuses: give it the time.
      for (const load of [0.5, 1.5]) {
        const sim = new Simulation(small({ policy, load, slots: slotsFor(load > 1 ? 10 : 40), durationMs: load > 1 ? 3000 : 1000, deadlineMs: 500 }))
        const r = sim.run()
        expect(sim.totals.arrivals).toBeGreaterThan(1000)
        expect(sim.totals.completed + sim.totals.rejected).toBe(sim.totals.arrivals)
        expect(r.completed + r.rejected).toBe(r.arrivals)
        if (load > 1) expect(r.rejected).toBeGreaterThan(0)
      }
    }
  })

  it('finds the oracle no worse than a plain queue group at 80% load on a small mesh', () => {
    for (const seed of [1, 2, 3]) {
      const oracle = simulate(small({ policy: 'oracle', seed }))
      const random = simulate(small({ policy: 'random', seed }))
      expect(oracle.arrivals).toBe(random.arrivals)
      expect(oracle.latencyMs.p99).toBeLessThanOrEqual(random.latencyMs.p99)
      expect(oracle.latencyMs.p50).toBeLessThanOrEqual(random.latencyMs.p50)
      expect(oracle.rejectionRate).toBeLessThanOrEqual(random.rejectionRate)
      expect(oracle.utilisation.maxOverMean).toBeLessThanOrEqual(random.utilisation.maxOverMean)
    }
  })

  it('routes as choosePeer over the full list when it walks random nodes instead', () => {
    // Above fullScanMaxNodes the views hand choosePeer two nodes found by a random walk; the
    // outcome must match handing it every node (within sampling noise over many invocations).
    const runs = (fullScanMaxNodes: number): RunResult[] => [11, 12].map(seed => simulate(small({ slots: slotsFor(40), seed, fullScanMaxNodes, durationMs: 1500 })))
    const mean = (rs: RunResult[], f: (r: RunResult) => number): number => rs.reduce((a, r) => a + f(r), 0) / rs.length
    const full = runs(1000)
    const walked = runs(1)
    for (const f of [(r: RunResult) => r.busyPerInvocation, (r: RunResult) => r.latencyMs.p50, (r: RunResult) => r.remoteFraction, (r: RunResult) => r.utilisation.maxOverMean]) {
      expect(Math.abs(mean(walked, f) - mean(full, f)) / mean(full, f)).toBeLessThan(0.1)
    }
  })

  it('predicts capacity-proportional spread on the 2/2/4-slot mesh the real bench used', () => {
    const r = simulate({ slots: [2, 2, 4], load: 0.5, policy: 'fnmesh', seed: 1, warmupMs: 500, durationMs: 10_000 })
    const per = r.perNode as number[]
    const total = per.reduce((a, b) => a + b, 0)
    expect(per[2] / total).toBeGreaterThan(0.4)
    expect(per[0] / total).toBeLessThan(0.32)
    expect(r.windows?.count).toBeGreaterThan(10)
  })
})

describe('simulated gossip', () => {
  it('shows a receiver an advert exactly from its arrival time on, and never an older one after', () => {
    const g = new GossipModel({ nodes: 3, slots: [2, 2, 2], seed: 5, delayMinMs: 2, delayMaxMs: 10 })
    expect(g.view(1, 0, 0).seq).toBe(1)
    const a = g.publish(0, 100, 1, false)
    const b = g.publish(0, 101, 2, false)
    const ta = g.arrival(a, 1)
    const tb = g.arrival(b, 1)
    expect(ta).toBeGreaterThanOrEqual(102)
    expect(ta).toBeLessThanOrEqual(110)
    let last = 0
    for (let t = 100; t <= 112; t += 0.25) {
      const v = g.view(1, 0, t)
      expect(v.seq).toBeGreaterThanOrEqual(last)
      last = v.seq
      if (t >= tb) expect(v.seq).toBe(b.seq)
      else if (t >= ta) expect(v.seq).toBe(a.seq)
      else expect(v.seq).toBe(1)
    }
  })

  it('publishes within 20-100 ms of a load change and coalesces changes in between', () => {
    const g = new GossipModel({ nodes: 1, slots: [4], seed: 1, delayMinMs: 2, delayMaxMs: 10 })
    expect(g.promptAt(0, 0)).toBe(20)
    expect(g.promptAt(0, 5)).toBeUndefined()
    g.promptFired(0)
    g.publish(0, 20, 1, false)
    expect(g.promptAt(0, 30)).toBe(120)
  })

  it('keeps a node outside the may-be-free set only while every advert anyone holds shows it full', () => {
    const g = new GossipModel({ nodes: 2, slots: [2, 2], seed: 1, delayMinMs: 2, delayMaxMs: 10 })
    g.publish(0, 100, 2, false)
    expect(g.pos[0]).toBeGreaterThanOrEqual(0)
    g.settle(0, 110)
    expect(g.pos[0]).toBe(-1)
    g.publish(0, 200, 1, false)
    expect(g.pos[0]).toBeGreaterThanOrEqual(0)
  })

  it('measures the real advert encoding and models flooding as one copy per advert', async () => {
    const w = await measureWire(1)
    expect(w.advertBytes).toBeGreaterThan(80)
    expect(w.frameBytes).toBeGreaterThan(w.advertBytes + 64)
    const g = gossipLoad(100, 10, w)
    expect(g.fullMeshBytesPerSec).toBeCloseTo(99 * 10 * w.frameBytes)
    expect(g.gossipsubCopies).toBeGreaterThan(GOSSIPSUB.D)
    expect(gossipLoad(1000, 10, w).ihaveBytesPerSec).toBeGreaterThan(g.ihaveBytesPerSec)
    // every copy is hashed, only the first is verified: far cheaper than a check per copy
    expect(w.fastIdUs).toBeLessThan(w.verifyUs / 5)
    expect(g.gossipsubCores).toBeCloseTo(99 * 10 * (g.gossipsubCopies * w.fastIdUs + w.verifyUs + 2 * w.decodeUs) / 1e6)
    expect(g.gossipsubCores).toBeLessThan(99 * 10 * g.gossipsubCopies * w.verifyUs / 1e6)
  })
})

describe('simulator parts', () => {
  it('pops events in time order and equal times in the order they were scheduled', () => {
    const q = new EventQueue<number>()
    const rng = prng(3)
    const times = Array.from({ length: 500 }, () => Math.floor(rng() * 50))
    times.forEach((t, i) => q.at(t, 0, i, undefined))
    let prev = { t: -1, i: -1 }
    let n = 0
    while (q.pop()) {
      expect(q.now > prev.t || (q.now === prev.t && q.a > prev.i)).toBe(true)
      prev = { t: q.now, i: q.a }
      n++
    }
    expect(n).toBe(500)
  })

  it('finds the least-utilised node with room as a scan with better() does', () => {
    const rng = prng(9)
    const nodes: Candidate[] = Array.from({ length: 37 }, (_, i) => ({ id: `n${i}`, slots: 1 + Math.floor(rng() * 8), load: 0, warm: true }))
    const tree = new OracleTree(nodes)
    for (let step = 0; step < 2000; step++) {
      const i = Math.floor(rng() * nodes.length)
      nodes[i].load = Math.max(0, Math.min(nodes[i].slots, nodes[i].load + (rng() < 0.6 ? 1 : -1)))
      tree.update(i)
      let best = -1
      for (let k = 0; k < nodes.length; k++) {
        if (nodes[k].load < nodes[k].slots && (best < 0 || better(nodes[k], nodes[best]))) best = k
      }
      const got = tree.best()
      if (best < 0) expect(got).toBe(-1)
      else expect(got >= 0 && better(nodes[got], nodes[best]) && nodes[got].load < nodes[got].slots).toBe(true)
    }
  })
})
