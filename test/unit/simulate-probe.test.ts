import { describe, expect, it } from 'vitest'
import { simulate } from '../../scripts/sim/engine.js'
import { scaleRows, swimSyncIntervalMs, type ProbeCost, type RealCalibration, type SwimCost } from '../../scripts/sim/cost.js'
import { slotsFor } from '../../scripts/sim/model.js'
import { bestFree, bestQueue, probeSet, SlotSampler, type ProbeCandidate } from '../../scripts/sim/probe.js'
import { DEFAULT_SERVICE, prng } from '../../scripts/sim/rng.js'
import { measureWire } from '../../scripts/sim/wire.js'

const cand = (idx: number, slots: number, load: number, self = false): ProbeCandidate => ({ id: String(idx), idx, slots, load, warm: true, self })

describe('the probing design in the simulator', () => {
  it('draws nodes in proportion to their slots', () => {
    const s = new SlotSampler([2, 16, 2])
    const rng = prng(7)
    const n = [0, 0, 0]
    for (let i = 0; i < 20_000; i++) n[s.draw(rng())]++
    expect(n[1] / n[0]).toBeGreaterThan(6.5)
    expect(n[1] / n[0]).toBeLessThan(9.5)
    expect(Math.abs(n[0] - n[2])).toBeLessThan(400)
  })

  it('probes the router\'s memory first, then distinct others, never the router itself', () => {
    const s = new SlotSampler(slotsFor(50))
    const rng = prng(3)
    for (let r = 0; r < 50; r++) {
      const set = probeSet(r, 50, 3, (r + 7) % 50, s, rng)
      expect(set[0]).toBe((r + 7) % 50)
      expect(set).toHaveLength(3)
      expect(new Set(set).size).toBe(3)
      expect(set).not.toContain(r)
    }
    expect(probeSet(0, 1, 2, -1, new SlotSampler([4]), rng)).toEqual([])
    expect(probeSet(0, 2, 2, -1, new SlotSampler([4, 4]), rng)).toEqual([1])
  })

  it('takes the least utilised free candidate, else the shortest queue that fits', () => {
    expect(bestFree([cand(0, 2, 2, true), cand(1, 4, 3), cand(2, 16, 8)])?.idx).toBe(2)
    // equal utilisation: the router's own node (no hop)
    expect(bestFree([cand(0, 4, 2, true), cand(1, 8, 4)])?.idx).toBe(0)
    expect(bestFree([cand(0, 2, 2, true), cand(1, 4, 4)])).toBeUndefined()
    expect(bestQueue([cand(0, 2, 4, true), cand(1, 8, 9)], 10_000, 10)?.idx).toBe(1)
    // no queue fits a budget shorter than the wait
    expect(bestQueue([cand(0, 2, 40, true), cand(1, 2, 40)], 5, 10)).toBeUndefined()
  })

  it('publishes no load adverts, probes per invocation, and keeps the tail at the oracle\'s at 80% and 95% load', () => {
    for (const load of [0.8, 0.95]) {
      const common = { slots: slotsFor(300), load, seed: 11, warmupMs: 300, durationMs: 700 }
      const probed = simulate({ ...common, policy: 'fnmesh', design: 'probe' })
      const oracle = simulate({ ...common, policy: 'oracle' })
      expect(probed.design).toBe('probe')
      expect(probed.advertsPerNodePerSec).toBe(0)
      expect(probed.probesPerInvocation).toBeGreaterThan(0)
      // at most 2 probes per pick, and picks are repeated only after BUSY answers
      expect(probed.probesPerInvocation).toBeLessThanOrEqual(2 * (1 + probed.busyPerInvocation) + 1e-9)
      expect(probed.rejectionRate).toBe(0)
      expect(probed.latencyMs.p99).toBeLessThan(1.3 * oracle.latencyMs.p99)
    }
  }, 120_000)

  it('costs a node its membership messages plus its probes, per second', async () => {
    const common = { slots: slotsFor(200), load: 0.8, seed: 2, warmupMs: 200, durationMs: 300 }
    const probed = simulate({ ...common, policy: 'fnmesh', design: 'probe' })
    const oracle = simulate({ ...common, policy: 'oracle', design: 'probe' as const })
    const cal: RealCalibration = { source: 'test', agents: 10, cpuUsPerAdvert: 1000, bytesPerAdvert: 3000, idleFixedCore: 0.01, failureToNoRoutingMs: 50, load1: null }
    const cost: ProbeCost = { source: 'test', usPerProbe: 50, natsServerUsPerProbe: 20, wireBytesPerProbe: 500 }
    const wire = await measureWire(1)
    expect(scaleRows([probed, oracle], wire, cal, DEFAULT_SERVICE, 10, 0.25)).toEqual([])
    const [row] = scaleRows([probed, oracle], wire, cal, DEFAULT_SERVICE, 10, 0.25, cost)
    const probes = probed.probeMsgsPerNodePerSec / 4
    expect(probes).toBeGreaterThan(0)
    expect(row.probe?.probesPerNodePerSec).toBeCloseTo(probes, 6)
    expect(row.gossipCorePerNode).toBeCloseTo(4 * 1000e-6 + probes * 50e-6, 6)
    expect(row.gossipBytesPerNodePerSec).toBeCloseTo(4 * 3000 + probes * 500, 3)
    expect(row.oracleP99Ms).toBe(oracle.latencyMs.p99)
    expect(row.silentFailureToNoRoutingMs).toBeLessThan(100)
    expect(row.joinToFirstWorkMs).toBeLessThan(100)

    // With the real agents' SWIM membership measured (--membership swim): its messages at its cost,
    // plus the whole-membership syncs (200 nodes: every 30 s x (ceil(log2(200/32)) + 1) = 120 s).
    const swim: SwimCost = { source: 'test', agents: 30, msgsPerNodePerSec: 4.2, cpuUsPerMessage: 100, natsServerUsPerMessage: 10, bytesPerMessage: 70, entryBytes: 600, idleCoreBySize: [[30, 0.008]], failureToNoRoutingMs: 700, hangToNoRoutingMs: 1800 }
    const [measured] = scaleRows([probed, oracle], wire, cal, DEFAULT_SERVICE, 10, 0.25, cost, swim)
    expect(swimSyncIntervalMs(200)).toBe(120_000)
    expect(swimSyncIntervalMs(10_000)).toBe(30_000 * 10)
    const syncPerSec = 1000 / 120_000
    expect(measured.probe?.membershipMsgsPerNodePerSec).toBe(4.2)
    expect(measured.probe?.syncBytesPerNodePerSec).toBeCloseTo(2 * 200 * 600 * syncPerSec, 6)
    expect(measured.gossipCorePerNode).toBeCloseTo(4.2 * 100e-6 + 2 * 200 * 10e-6 * syncPerSec + probes * 50e-6, 9)
    expect(measured.gossipBytesPerNodePerSec).toBeCloseTo(4.2 * 70 + 2 * 200 * 600 * syncPerSec + probes * 500, 3)
    expect(measured.probe?.natsServerCorePerNode).toBeCloseTo(probes * 20e-6 + 4.2 * 10e-6, 9)
    expect(measured.probe?.membershipSource).toBe('test')
  }, 120_000)
})
