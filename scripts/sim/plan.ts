/**
 * Which runs `npm run simulate` makes, and how long each simulates. The cost of a run is its
 * events, and most are BUSY round trips: a simulated second at 10,000 nodes and 80% load is
 * ~3.7 million invocations, and round-robin draws ~40 BUSY answers per invocation there. So
 * larger meshes simulate less time (warm-ups cover the first advert cycles, after which the
 * BUSY rate is steady within noise at 1,000 nodes), and the full run leaves out at 10,000 nodes
 * round-robin and 95% load (about 2 to 20 minutes of CPU per 200 simulated ms); ask for them
 * with --nodes 10000 --loads 0.95 --policies round-robin.
 */
import { POLICIES, slotsFor, type Policy, type SimConfig } from './model.js'
import { DEFAULT_SERVICE, LOGNORMAL_SERVICE, type ServiceDist } from './rng.js'
import type { GossipDesign } from './shards.js'

export const LOADS: readonly number[] = [0.5, 0.8, 0.95]

export interface Scale {
  nodes: number
  warmupMs: number
  durationMs: number
  /** loads run by default at this size @default LOADS */
  loads?: readonly number[]
  /** policies run by default at this size @default POLICIES */
  policies?: readonly Policy[]
  /** who hears whose adverts @default "all" */
  design?: GossipDesign
}

const CHEAP: readonly Policy[] = ['fnmesh', 'random', 'oracle']

export const FULL: readonly Scale[] = [
  { nodes: 10, warmupMs: 1000, durationMs: 30_000 },
  { nodes: 100, warmupMs: 1000, durationMs: 5000 },
  { nodes: 1000, warmupMs: 350, durationMs: 150 },
  { nodes: 10_000, warmupMs: 250, durationMs: 50, loads: [0.5, 0.8], policies: CHEAP },
  // the sharded design (shards.ts), where it differs from "all": past one shard's size
  { nodes: 1000, warmupMs: 350, durationMs: 150, loads: [0.5, 0.8], policies: ['fnmesh'], design: 'shards' },
  { nodes: 10_000, warmupMs: 250, durationMs: 50, loads: [0.5, 0.8], policies: ['fnmesh'], design: 'shards' },
  // the probing design (probe.ts): no load adverts, so no BUSY storms: cheap enough to run to a
  // steady state at every size, with its own oracle over the same window
  { nodes: 10, warmupMs: 1000, durationMs: 30_000, policies: ['fnmesh'], design: 'probe' },
  { nodes: 100, warmupMs: 1000, durationMs: 5000, policies: ['fnmesh'], design: 'probe' },
  { nodes: 1000, warmupMs: 1000, durationMs: 1000, policies: ['fnmesh', 'oracle'], design: 'probe' },
  { nodes: 10_000, warmupMs: 1000, durationMs: 500, policies: ['fnmesh', 'oracle'], design: 'probe' }
]

export const QUICK: readonly Scale[] = [
  { nodes: 10, warmupMs: 500, durationMs: 5000 },
  { nodes: 100, warmupMs: 500, durationMs: 1000 },
  { nodes: 1000, warmupMs: 250, durationMs: 50, loads: [0.5, 0.8], policies: CHEAP },
  { nodes: 10_000, warmupMs: 150, durationMs: 20, loads: [0.8], policies: CHEAP },
  { nodes: 10_000, warmupMs: 150, durationMs: 20, loads: [0.8], policies: ['fnmesh'], design: 'shards' },
  { nodes: 10_000, warmupMs: 300, durationMs: 100, loads: [0.8], policies: ['fnmesh', 'oracle'], design: 'probe' }
]

/** The 3-agent mesh measured for real: slots 2/2/4 */
export const VALIDATION_SLOTS = [2, 2, 4]
export const VALIDATION_LOADS: readonly number[] = [0.5, 0.75]

export interface Job {
  id: string
  group: 'scaling' | 'validation'
  config: SimConfig
  /** rough relative cost, to start the longest jobs first */
  cost: number
}

export interface PlanOptions {
  quick: boolean
  seed: number
  service: ServiceDist
  gossipDelayMs: [number, number]
  hopMs: number
  /** the agents' advertMinGapMs (what-if runs; default: their adaptive rule) */
  advertMinGapMs: number | undefined
  /** only these mesh sizes */
  nodes?: number[]
  /** these loads (at every size asked for) instead of each size's default */
  loads?: number[]
  /** only these policies */
  policies?: Policy[]
  /** only these designs */
  designs?: GossipDesign[]
}

export function plan (o: PlanOptions): Job[] {
  const jobs: Job[] = []
  const common = { seed: o.seed, service: o.service, gossipDelayMs: o.gossipDelayMs, hopMs: o.hopMs, advertMinGapMs: o.advertMinGapMs }
  for (const s of o.quick ? QUICK : FULL) {
    if (o.nodes != null && !o.nodes.includes(s.nodes)) continue
    const design = s.design ?? 'all'
    if (o.designs != null && !o.designs.includes(design)) continue
    for (const load of o.loads ?? s.loads ?? LOADS) {
      for (const policy of o.policies ?? s.policies ?? POLICIES) {
        // BUSY round trips dominate the cost; they grow with N and load, most for round-robin.
        const heavy = policy === 'round-robin' ? 2 * (1 + 20 * load ** 8) : policy === 'fnmesh' ? 1 + 20 * load ** 8 : 0.3
        jobs.push({
          id: `n${s.nodes}-l${Math.round(load * 100)}-${policy}${design === 'all' ? '' : `-${design}`}`,
          group: 'scaling',
          config: { ...common, slots: slotsFor(s.nodes), load, policy, warmupMs: s.warmupMs, durationMs: s.durationMs, design },
          cost: s.nodes ** 1.3 * (s.warmupMs + s.durationMs) * load * heavy
        })
      }
    }
  }
  if (o.nodes != null || o.loads != null || o.designs != null) return jobs.sort((a, b) => b.cost - a.cost)
  for (const load of VALIDATION_LOADS) {
    for (const policy of o.policies ?? POLICIES) {
      jobs.push({
        id: `validation-l${Math.round(load * 100)}-${policy}`,
        group: 'validation',
        config: { ...common, slots: VALIDATION_SLOTS, load, policy, warmupMs: 1000, durationMs: o.quick ? 20_000 : 120_000 },
        cost: 1
      })
    }
  }
  return jobs.sort((a, b) => b.cost - a.cost)
}

export function parseService (name: string): ServiceDist {
  if (name === 'pareto') return DEFAULT_SERVICE
  if (name === 'lognormal') return LOGNORMAL_SERVICE
  throw new Error(`Unknown service-time distribution "${name}": use pareto or lognormal`)
}

export type { Policy }
