/**
 * Per (design, nodes, load): what the results JSON answers about scale, from the simulated runs
 * and the real mesh of agents (scripts/mesh-scale.ts), which corrects the model:
 *
 * - gossip CPU and bytes per node: adverts a node hears per second (the nodes it hears about x
 *   the adverts each publishes, as simulated) x what one heard advert costs a real agent: the
 *   same real mesh measured idle and then with a 250 ms keepalive, the extra CPU and gossipsub
 *   bytes (in + out: every copy, the relaying, IHAVE, control) per extra advert heard. IHAVE
 *   lists grow with the message rate and the view: the model's IHAVE bytes (wire.ts) for the
 *   simulated rate are added on top.
 * - join to first work: a joining node's first advert goes out on its first peer's subscription
 *   (20 ms coalescing) and reaches the others within the gossip delay; the routers that hear it
 *   then pick it as soon as one of them samples it (power of two among the free nodes it hears
 *   about: each invocation samples it with probability >= 2 / heard), plus the hop.
 * - failure to no routing (a crashed agent, its host up): every router connected to it sees the
 *   connection drop and stops routing there at once (the real mesh's measured time); a router
 *   not connected to it (past the connection limit: only with "all" above 300 nodes) waits 3 of
 *   its keepalives. A silent host (no FIN) is found by probing (SWIM: each node probes one node
 *   it hears about per second; the first probe of the dead node comes within ~1 s, fails after
 *   0.5 s, and the suspicion is published to the node's shard) in the sharded design, and by 3
 *   keepalives in "all" as the agent does today.
 *
 * The probing design (probe.ts) has no load adverts: its "gossip" is membership (SWIM: one
 * probe a second per node, so about 4 messages a second at each node) plus the load probes. The
 * membership is the agent's own (`--membership swim`, node/src/gossip/swim.ts), measured on a
 * real mesh (`mesh-scale.js ... --calibrate-swim-period 100 -- --membership swim`, newest
 * bench/results/*-mesh-scale-swim.json): the SWIM messages an idle agent sends and receives a
 * second at the largest mesh, x the CPU and bytes one costs (the same mesh pinging 10x as often:
 * extra CPU per extra message), plus the periodic push-pull sync charged as if every one sent
 * the whole membership (N entries every 30 s x (log2(N/32)+1), swim.ts). Without that file, the
 * earlier model: 4 messages, each charged as much as a heard gossipsub advert. The probes, per invocation, charged at
 * what one costs over NATS here (scripts/probe-cost.mjs: the asking and the answering process;
 * nats-server's share is given apart). A joining node is made the memory of the router it joins
 * through, so that router's next remote pick probes it; a crashed node's subscriptions go with
 * its connection and its probes get no answer, so nothing is dispatched to it after one probe
 * round trip; a silent one is never chosen once its probes time out (PROBE_ANSWER_TIMEOUT_MS).
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { RunResult } from './model.js'
import { gossipLoad, GOSSIPSUB, type WireCosts } from './wire.js'
import { serviceMean, type ServiceDist } from './rng.js'

/** The figures of one real mesh (scripts/bench/mesh-scale.ts) the model is corrected by */
export interface RealCalibration {
  source: string
  agents: number
  /** extra CPU per extra advert heard (the mesh idle, then with a short keepalive), µs */
  cpuUsPerAdvert: number
  /** extra gossipsub bytes in + out per extra advert heard */
  bytesPerAdvert: number
  /** idle CPU per agent with no adverts at all (the rest of the agent), cores */
  idleFixedCore: number
  /** SIGKILL to no survivor routing to it, ms, as measured (largest mesh) */
  failureToNoRoutingMs: number | null
  load1: number | null
}

interface Idle { corePerAgent: number, gossipBytesPerAgentPerSec: number, advertsReceivedPerAgentPerSec: number }

/** The newest results file of `resultsDir` whose name ends with `suffix` (names start with the date) */
function newest (resultsDir: string, suffix: string): string | undefined {
  const found = readdirSync(resultsDir).filter(f => f.endsWith(suffix)).sort()
  return found.length === 0 ? undefined : join(resultsDir, found[found.length - 1])
}

/** From the newest bench/results/*-mesh-scale.json with a calibration (or `file`) */
export function loadCalibration (resultsDir: string, file?: string): RealCalibration | undefined {
  const path = file ?? newest(resultsDir, '-mesh-scale.json')
  if (path == null) return undefined
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { results: Array<{ agents: number, failureToNoRoutingMs?: number }>, calibration?: { agents: number, slow: Idle, fast: Idle, load1?: number } }
  const c = doc.calibration
  if (c == null) return undefined
  const dRate = c.fast.advertsReceivedPerAgentPerSec - c.slow.advertsReceivedPerAgentPerSec
  if (!(dRate > 0)) return undefined
  const cpuUsPerAdvert = (c.fast.corePerAgent - c.slow.corePerAgent) * 1e6 / dRate
  // The failure time: from this file's sizes, else from the newest real-mesh run of sizes
  let sizes = doc.results
  if (!sizes.some(r => r.failureToNoRoutingMs != null)) {
    const run = newest(resultsDir, '-mesh-scale.json')
    if (run != null) sizes = (JSON.parse(readFileSync(run, 'utf8')) as typeof doc).results
  }
  // the smallest mesh: the fewest agents competing for this machine's 2 cores
  const largest = [...sizes].sort((a, b) => a.agents - b.agents).find(r => r.failureToNoRoutingMs != null)
  return {
    source: path,
    agents: c.agents,
    cpuUsPerAdvert,
    bytesPerAdvert: (c.fast.gossipBytesPerAgentPerSec - c.slow.gossipBytesPerAgentPerSec) / dRate,
    idleFixedCore: c.slow.corePerAgent - c.slow.advertsReceivedPerAgentPerSec * cpuUsPerAdvert / 1e6,
    failureToNoRoutingMs: largest?.failureToNoRoutingMs ?? null,
    load1: c.load1 ?? null
  }
}

/** What one load probe costs over NATS (newest bench/results/*-probe-cost.json, paced run) */
export interface ProbeCost {
  source: string
  /** CPU of the asking plus the answering process per probe, µs */
  usPerProbe: number
  natsServerUsPerProbe: number
  /** both clients' bytes in + out per probe */
  wireBytesPerProbe: number
}

export function loadProbeCost (resultsDir: string, file?: string): ProbeCost | undefined {
  const path = file ?? newest(resultsDir, '-probe-cost.json')
  if (path == null) return undefined
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { wireBytesPerProbe: number, runs: Array<{ mode: string, askerUsPerProbe: number, answererUsPerProbe: number, natsServerUsPerProbe: number }> }
  const run = doc.runs.find(r => r.mode.startsWith('paced')) ?? doc.runs[doc.runs.length - 1]
  if (run == null) return undefined
  return { source: path, usPerProbe: run.askerUsPerProbe + run.answererUsPerProbe, natsServerUsPerProbe: run.natsServerUsPerProbe, wireBytesPerProbe: doc.wireBytesPerProbe }
}

/** SWIM membership of the probing design: messages at each node per second (a ping and an ack each way) */
const SWIM_MSGS_PER_NODE_PER_SEC = 4

/** What membership "swim" costs a real agent (newest bench/results/*-mesh-scale-swim.json) */
export interface SwimCost {
  source: string
  /** the largest real mesh measured */
  agents: number
  /** SWIM messages sent + received per idle agent per second there */
  msgsPerNodePerSec: number
  /** extra CPU per extra message (the calibration), µs; and nats-server's */
  cpuUsPerMessage: number
  natsServerUsPerMessage: number | null
  bytesPerMessage: number
  /** one member's entry in a sync page, bytes (the mean SWIM bytes per message bounds it from above: a ping carries an entry now and then) */
  entryBytes: number
  /** idle CPU per agent at each size measured: [agents, cores] */
  idleCoreBySize: Array<[number, number]>
  /** SIGKILL and SIGSTOP of one agent to every survivor's table leaving it out of routing, at the largest mesh, ms */
  failureToNoRoutingMs: number | null
  hangToNoRoutingMs: number | null
}

export function loadSwimCost (resultsDir: string, file?: string): SwimCost | undefined {
  const path = file ?? newest(resultsDir, '-mesh-scale-swim.json')
  if (path == null) return undefined
  type Row = { agents: number, idle: { corePerAgent: number, membershipMessagesPerAgentPerSec: number, membershipBytesPerAgentPerSec: number }, failureToNoRoutingMs?: number, hangToNoRoutingMs?: number }
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { results: Row[], swimCalibration?: { cpuUsPerMessage: number | null, bytesPerMessage: number | null, natsServerUsPerMessage: number | null } }
  const c = doc.swimCalibration
  if (c?.cpuUsPerMessage == null || doc.results.length === 0) return undefined
  const largest = [...doc.results].sort((a, b) => b.agents - a.agents)[0]
  const msgs = largest.idle.membershipMessagesPerAgentPerSec
  return {
    source: path,
    agents: largest.agents,
    msgsPerNodePerSec: msgs,
    cpuUsPerMessage: c.cpuUsPerMessage,
    natsServerUsPerMessage: c.natsServerUsPerMessage,
    bytesPerMessage: c.bytesPerMessage ?? largest.idle.membershipBytesPerAgentPerSec / msgs,
    entryBytes: 600,
    idleCoreBySize: doc.results.map(r => [r.agents, r.idle.corePerAgent]),
    failureToNoRoutingMs: largest.failureToNoRoutingMs ?? null,
    hangToNoRoutingMs: largest.hangToNoRoutingMs ?? null
  }
}

/** swim.ts: push-pull every SWIM_SYNC_MS x (ceil(log2(N) - log2(32)) + 1) past 32 members */
export function swimSyncIntervalMs (nodes: number): number {
  return 30_000 * (nodes > 32 ? Math.ceil(Math.log2(nodes) - Math.log2(32)) + 1 : 1)
}
/** CPU to encode or decode one member's entry of a sync page, µs (protobuf of ~600 B, no signature check: only newer entries are checked) */
const SYNC_US_PER_ENTRY = 10
/** A probe not answered within this long counts as no room there (the node may be gone) */
export const PROBE_ANSWER_TIMEOUT_MS = 20

export interface ScaleRow {
  design: string
  nodes: number
  load: number
  p99Ms: number
  oracleP99Ms: number
  p99OverOracle: number
  /** nodes a node hears about */
  viewNodes: number
  advertsPublishedPerNodePerSec: number
  advertsHeardPerNodePerSec: number
  gossipCorePerNode: number
  gossipBytesPerNodePerSec: number
  joinToFirstWorkMs: number
  failureToNoRoutingMs: number
  silentFailureToNoRoutingMs: number
  keepaliveMs: number
  advertGapMs: number
  /** design "probe": the parts of the gossip figures (membership, load probes) and nats-server's share */
  probe?: { probesPerNodePerSec: number, probesPerInvocation: number, membershipCorePerNode: number, probeCorePerNode: number, membershipBytesPerNodePerSec: number, probeBytesPerNodePerSec: number, natsServerCorePerNode: number, membershipSource: string, membershipMsgsPerNodePerSec: number, syncBytesPerNodePerSec: number }
}

/** libp2p's connection manager limit: beyond it a node is not connected to every node it hears about */
const MAX_CONNECTIONS = GOSSIPSUB.maxConnections
/** SWIM probing in the sharded design: one probe a second, answered within 0.5 s */
const PROBE_PERIOD_MS = 1000
const PROBE_TIMEOUT_MS = 500

export function scaleRows (runs: RunResult[], wire: WireCosts, cal: RealCalibration, service: ServiceDist, gossipDelayMaxMs: number, hopMs: number, probeCost?: ProbeCost, swimCost?: SwimCost): ScaleRow[] {
  const rows: ScaleRow[] = []
  for (const r of runs) {
    if (r.policy !== 'fnmesh') continue
    // the oracle over the same window if there is one (the probing runs have their own)
    const oracle = runs.find(o => o.policy === 'oracle' && o.nodes === r.nodes && o.load === r.load && o.design === r.design) ??
      runs.find(o => o.policy === 'oracle' && o.nodes === r.nodes && o.load === r.load)
    if (oracle == null) continue
    if (r.design === 'probe') {
      if (probeCost == null) continue
      rows.push(probeRow(r, oracle, cal, probeCost, service, hopMs, swimCost))
      continue
    }
    const heard = r.viewNodes
    const rate = r.advertsPerNodePerSec
    const heardPerSec = heard * rate
    const ihave = gossipLoad(heard + 1, rate, wire).ihaveBytesPerSec
    const perRouterRate = r.load * r.totalSlots / (serviceMean(service) / 1000) / r.nodes
    const firstPickMs = 1000 / (2 * perRouterRate)
    const connected = heard <= MAX_CONNECTIONS
    const crashMs = cal.failureToNoRoutingMs ?? NaN
    rows.push({
      design: r.design,
      nodes: r.nodes,
      load: r.load,
      p99Ms: r.latencyMs.p99,
      oracleP99Ms: oracle.latencyMs.p99,
      p99OverOracle: r.latencyMs.p99 / oracle.latencyMs.p99,
      viewNodes: heard,
      advertsPublishedPerNodePerSec: rate,
      advertsHeardPerNodePerSec: heardPerSec,
      gossipCorePerNode: heardPerSec * cal.cpuUsPerAdvert / 1e6,
      gossipBytesPerNodePerSec: heardPerSec * cal.bytesPerAdvert + 2 * ihave,
      joinToFirstWorkMs: 20 + gossipDelayMaxMs + firstPickMs + hopMs,
      failureToNoRoutingMs: connected ? crashMs : 3 * r.keepaliveMs,
      silentFailureToNoRoutingMs: r.design === 'shards' ? PROBE_PERIOD_MS + PROBE_TIMEOUT_MS + gossipDelayMaxMs : 3 * r.keepaliveMs,
      keepaliveMs: r.keepaliveMs,
      advertGapMs: r.advertGapMs
    })
  }
  return rows
}

function probeRow (r: RunResult, oracle: RunResult, cal: RealCalibration, cost: ProbeCost, service: ServiceDist, hopMs: number, swim?: SwimCost): ScaleRow {
  // probeMsgsPerNodePerSec counts each probe's request and answer at both ends
  const probes = r.probeMsgsPerNodePerSec / 4
  const msgs = swim?.msgsPerNodePerSec ?? SWIM_MSGS_PER_NODE_PER_SEC
  // the push-pull sync, as if each sent and took the whole membership
  const syncPerSec = 1000 / swimSyncIntervalMs(r.nodes)
  const syncBytes = swim != null ? 2 * r.nodes * swim.entryBytes * syncPerSec : 0
  const syncCore = swim != null ? 2 * r.nodes * SYNC_US_PER_ENTRY * syncPerSec / 1e6 : 0
  const membershipCore = msgs * (swim?.cpuUsPerMessage ?? cal.cpuUsPerAdvert) / 1e6 + syncCore
  const membershipBytes = msgs * (swim?.bytesPerMessage ?? cal.bytesPerAdvert) + syncBytes
  const probeCore = probes * cost.usPerProbe / 1e6
  const probeBytes = probes * cost.wireBytesPerProbe
  const perRouterRate = r.load * r.totalSlots / (serviceMean(service) / 1000) / r.nodes
  const remotePicksPerSec = perRouterRate * Math.max(r.remoteFraction, 1e-6)
  return {
    design: r.design,
    nodes: r.nodes,
    load: r.load,
    p99Ms: r.latencyMs.p99,
    oracleP99Ms: oracle.latencyMs.p99,
    p99OverOracle: r.latencyMs.p99 / oracle.latencyMs.p99,
    viewNodes: r.viewNodes,
    advertsPublishedPerNodePerSec: 0,
    advertsHeardPerNodePerSec: 0,
    gossipCorePerNode: membershipCore + probeCore,
    gossipBytesPerNodePerSec: membershipBytes + probeBytes,
    // its join through a router (a round trip), that router's next remote pick, then probe and dispatch
    joinToFirstWorkMs: 2 * hopMs + 1000 / remotePicksPerSec + 3 * hopMs,
    failureToNoRoutingMs: 2 * hopMs,
    silentFailureToNoRoutingMs: PROBE_ANSWER_TIMEOUT_MS,
    keepaliveMs: PROBE_PERIOD_MS,
    advertGapMs: 0,
    probe: {
      probesPerNodePerSec: probes,
      probesPerInvocation: r.probesPerInvocation,
      membershipCorePerNode: membershipCore,
      probeCorePerNode: probeCore,
      membershipBytesPerNodePerSec: membershipBytes,
      probeBytesPerNodePerSec: probeBytes,
      natsServerCorePerNode: probes * cost.natsServerUsPerProbe / 1e6 + msgs * (swim?.natsServerUsPerMessage ?? 0) / 1e6,
      membershipSource: swim?.source.replace(/^.*\/bench\//, 'bench/') ?? 'model: 4 messages a second, each the cost of a heard gossipsub advert',
      membershipMsgsPerNodePerSec: msgs,
      syncBytesPerNodePerSec: syncBytes
    }
  }
}
