/**
 * What one simulation run is: the mesh (nodes and their slots), the load, the routing policy
 * and the timing of the network and of gossip; and what it measures.
 */
import { advertGapFor, keepaliveFor } from '../../node/src/gossip/gossip.js'
import type { GossipDesign } from './shards.js'
import { DEFAULT_SERVICE, type ServiceDist } from './rng.js'

/**
 * fnmesh: the agent's routing (power of two choices, own-outstanding correction, BUSY re-pick);
 * random: a plain NATS queue group, the receiving node runs it (router.ts "local");
 * round-robin: each router cycles through the nodes, skipping those its table shows full;
 * oracle: the globally least-utilised node by true load, seen instantly (a lower bound)
 */
export type Policy = 'fnmesh' | 'random' | 'round-robin' | 'oracle'
export const POLICIES: readonly Policy[] = ['fnmesh', 'random', 'round-robin', 'oracle']

/** Slots per node, repeated over the mesh: the same mix (mean 5.4, 2 to 16) at every N */
export const SLOT_MIX: readonly number[] = [2, 2, 2, 4, 4, 4, 4, 8, 8, 16]

export interface SimConfig {
  /** slots of each node; the mesh has slots.length nodes, every one also a router */
  slots: number[]
  /** offered load as a fraction of total capacity (sum of slots / mean service time) */
  load: number
  policy: Policy
  seed: number
  /** simulated time before measuring */
  warmupMs: number
  /** simulated time measured (arrivals in this window count) */
  durationMs: number
  /** @default DEFAULT_SERVICE (bounded Pareto 5-50 ms, shape 1.2) */
  service?: ServiceDist
  /** one advert's delay to one receiver, uniform in [min, max] ms @default [2, 10] */
  gossipDelayMs?: [number, number]
  /** one way, router -> peer over NATS (the reply takes as long) @default 0.25 */
  hopMs?: number
  /** baseline policies' wait at the router @default 500 (router.ts queueWaitMs) */
  queueWaitMs?: number
  /** every caller's deadline (the SDK's default timeout): fnmesh queues at executors as long as it allows @default 60000 */
  deadlineMs?: number
  /** most invocations in one executor's queue (--max-queue) @default 10000 */
  maxQueue?: number
  /** @default 1000 (router.ts maxQueued) */
  maxQueued?: number
  /** the keepalive @default keepaliveFor(nodes heard), as the agents do */
  advertIntervalMs?: number
  /** @default the design's gap rule for the nodes heard (all: advertGapFor, as the agents do) */
  advertMinGapMs?: number
  /** who hears whose adverts (shards.ts) @default "all" */
  design?: GossipDesign
  /** shards: nodes per shard topic @default 25 */
  shardSize?: number
  /** shards: shard topics each node reads @default 2 */
  shardsRead?: number
  /** shards: the prompt-advert gap is this many ms per node heard (20 ms to 2 s) @default 25 */
  gapMsPerNode?: number
  /** give choosePeer every node up to this mesh size (see views.ts) @default 32 */
  fullScanMaxNodes?: number
  /** probe: nodes probed per pick, the router's memory included (probe.ts) @default 2 */
  probes?: number
}

export function slotsFor (nodes: number): number[] {
  return Array.from({ length: nodes }, (_, i) => SLOT_MIX[i % SLOT_MIX.length])
}

export interface Percentiles { p50: number, p99: number, p999: number, mean: number, max: number }

export interface RunResult {
  design: GossipDesign
  /** mean nodes a router hears about (N - 1 for "all") */
  viewNodes: number
  keepaliveMs: number
  advertGapMs: number
  nodes: number
  totalSlots: number
  load: number
  policy: Policy
  simulatedMs: number
  /** arrivals in the measured window */
  arrivals: number
  completed: number
  /** NO_CAPACITY (queue wait over, or too many BUSY answers) */
  rejected: number
  rejectionRate: number
  /** arrival at the router -> result back at the router, completed invocations only */
  latencyMs: Percentiles
  /** arrival -> execution starts: waiting for a slot, BUSY round trips, the hop to the peer */
  queueDelayMs: Percentiles
  utilisation: { mean: number, min: number, max: number, maxOverMean: number, cv: number }
  /** dispatches answered BUSY per invocation */
  busyPerInvocation: number
  /** invocations that waited for a slot at their router */
  waitedFraction: number
  /** invocations run on another node than their router */
  remoteFraction: number
  /** adverts each node published per second */
  advertsPerNodePerSec: number
  /** exec requests + replies (BUSY included) sent or received per node per second */
  execMsgsPerNodePerSec: number
  /** design "probe": probes sent per invocation, and probe requests + answers sent or received per node per second */
  probesPerInvocation: number
  probeMsgsPerNodePerSec: number
  /**
   * the chosen remote peer's estimate at decision time (fnmesh and round-robin); fullScanFraction
   * counts picks that looked at every candidate node, per invocation (a cost of the simulator)
   */
  staleness: { advertAgeMs: number, estimateError: number, absEstimateError: number, ownCorrection: number, fullScanFraction: number } | null
  /**
   * fnmesh and round-robin: at sampled moments when a router found no free slot anywhere and
   * started waiting, the mean of what was really free and of why its view showed each of the
   * other nodes full (the advert it held, a BUSY answer, or what it had sent since)
   */
  waits: { samples: number, freeSlots: number, nodesWithRoom: number, fullByAdvert: number, markedBusy: number, fullByOwnSends: number } | null
  /** invocations of the window run on each node (meshes of up to 12 nodes) */
  perNode: number[] | null
  /** per node, the 5th/50th/95th percentile of its share of `size` consecutive completions */
  windows: { size: number, count: number, p5: number[], p50: number[], p95: number[] } | null
  events: number
  wallMs: number
}

export interface ResolvedConfig extends Required<SimConfig> {}

/** shards: the least gap between prompt adverts of a node heard by `heard` nodes */
export function shardGapFor (heard: number, msPerNode: number): number {
  return Math.min(2000, Math.max(20, Math.round(heard * msPerNode)))
}

/** Nodes heard by each node, roughly, under a design (before the layout is drawn) */
export function heardFor (c: SimConfig): number {
  const n = c.slots.length
  // probe: every node knows every member (SWIM-style membership), no load adverts
  if ((c.design ?? 'all') !== 'shards') return n
  const size = c.shardSize ?? 25
  return Math.min(n, Math.min(c.shardsRead ?? 2, Math.max(1, Math.round(n / size))) * n / Math.max(1, Math.round(n / size)))
}

export function resolve (c: SimConfig): ResolvedConfig {
  if (c.slots.length < 1 || c.slots.some(s => !Number.isInteger(s) || s < 1)) throw new Error('Every node needs at least one slot')
  if (!(c.load > 0 && c.load < 2)) throw new Error(`Load must be in (0, 2), got ${c.load}`)
  const design = c.design ?? 'all'
  const heard = heardFor(c)
  const gapMsPerNode = c.gapMsPerNode ?? 25
  return {
    design,
    shardSize: 25,
    shardsRead: 2,
    gapMsPerNode,
    service: DEFAULT_SERVICE,
    gossipDelayMs: [2, 10],
    hopMs: 0.25,
    queueWaitMs: 500,
    deadlineMs: 60_000,
    maxQueue: 10_000,
    maxQueued: 1000,
    fullScanMaxNodes: 32,
    probes: 2,
    ...c,
    // the agents' rules (gossip.ts) unless a what-if run sets them
    advertIntervalMs: c.advertIntervalMs ?? keepaliveFor(heard),
    advertMinGapMs: c.advertMinGapMs ?? (design === 'all' ? advertGapFor(heard) : shardGapFor(heard, gapMsPerNode))
  }
}
