import { describe, expect, it } from 'vitest'
import { simulate } from '../../scripts/sim/engine.js'
import { scaleRows, type RealCalibration } from '../../scripts/sim/cost.js'
import { shardGapFor, slotsFor } from '../../scripts/sim/model.js'
import { DEFAULT_SERVICE } from '../../scripts/sim/rng.js'
import { inView, shardLayout } from '../../scripts/sim/shards.js'
import { measureWire } from '../../scripts/sim/wire.js'

describe('sharded gossip in the simulator', () => {
  it('lets each node hear about the nodes of the shards it reads, its own among them', () => {
    const l = shardLayout(1000, 100, 2, 3)
    expect(l.shards).toBe(10)
    // two shards of ~100 nodes each, itself excluded
    expect(l.meanView).toBeGreaterThan(150)
    expect(l.meanView).toBeLessThan(250)
    for (let r = 0; r < 1000; r += 97) {
      expect(inView(l, r, r)).toBe(true)
      for (const p of l.view[r]) expect(inView(l, r, p)).toBe(true)
      const outside = Array.from({ length: 1000 }, (_, p) => p).filter(p => p !== r && !inView(l, r, p))
      expect(outside.length + l.view[r].length + 1).toBe(1000)
    }
  })

  it('spaces prompt adverts by the nodes that hear them, 20 ms to 2 s', () => {
    expect(shardGapFor(4, 2.5)).toBe(20)
    expect(shardGapFor(200, 2.5)).toBe(500)
    expect(shardGapFor(100_000, 2.5)).toBe(2000)
  })

  it('routes every invocation of a sharded mesh and keeps its tail near the oracle\'s', () => {
    const common = { slots: slotsFor(400), load: 0.8, seed: 5, warmupMs: 300, durationMs: 300 }
    const sharded = simulate({ ...common, policy: 'fnmesh', design: 'shards', shardSize: 50, shardsRead: 2 })
    const oracle = simulate({ ...common, policy: 'oracle' })
    expect(sharded.design).toBe('shards')
    expect(sharded.viewNodes).toBeGreaterThan(60)
    expect(sharded.viewNodes).toBeLessThan(140)
    expect(sharded.completed + sharded.rejected).toBeGreaterThan(0)
    expect(sharded.rejectionRate).toBeLessThan(0.01)
    expect(sharded.latencyMs.p99).toBeLessThan(2 * oracle.latencyMs.p99)

    const cal: RealCalibration = { source: 'test', agents: 10, cpuUsPerAdvert: 100, bytesPerAdvert: 1000, idleFixedCore: 0.01, failureToNoRoutingMs: 50, load1: null }
    return measureWire(1).then(wire => {
      const [row] = scaleRows([sharded, oracle], wire, cal, DEFAULT_SERVICE, 10, 0.25)
      // what a node hears: the nodes it hears about x what each publishes
      expect(row.advertsHeardPerNodePerSec).toBeCloseTo(sharded.viewNodes * sharded.advertsPerNodePerSec, 6)
      expect(row.gossipCorePerNode).toBeCloseTo(row.advertsHeardPerNodePerSec * 100e-6, 6)
      expect(row.gossipBytesPerNodePerSec).toBeGreaterThanOrEqual(row.advertsHeardPerNodePerSec * 1000)
      expect(row.oracleP99Ms).toBe(oracle.latencyMs.p99)
      expect(row.failureToNoRoutingMs).toBe(50)
    })
  }, 120_000)
})
