/**
 * A real mesh of many agents on one host: one nats-server, N `fnmesh agent` processes
 * (`--sandbox none`, small slots, an admin listener each), started together. It measures what
 * the simulator predicts for that size:
 *
 * - form: from every agent being ready to every agent's table holding all N (each agent's own
 *   `fnmesh_gossip_peers`, scraped from its /metrics);
 * - idle cost: CPU per agent (/proc, user + system) and libp2p bytes per agent (the agents'
 *   `fnmesh_libp2p_bytes_total`, gossipsub's protocol alone and the whole wire) over a quiet window;
 * - join: from spawning one more agent under a steady load to the first invocation it runs;
 * - failure: from SIGKILL of an agent to no survivor routing to it (every survivor's routable
 *   peers without it) and to the last dispatch any router sent it.
 *
 * Used by the bench's `mesh-scale` figure, `node dist/scripts/mesh-scale.js` and the 10-agent
 * integration test. Everything it starts is stopped by `stop()` (and by the parent-death signal
 * of the agents if this process dies).
 */
import { readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startDevCluster, type AgentProcess, type DevCluster } from '../../node/src/dev/cluster.js'
import { connect, type Mesh } from '../../sdk/src/client.js'
import { scanProcesses } from './cpu.js'

export interface MeshScaleOptions {
  agents: number
  /** slots per agent @default 1 */
  slots?: number
  /** quiet window for the idle cost @default 30000 */
  idleWindowMs?: number
  /** wait after forming before the window (start-up work settles) @default 5000 */
  settleMs?: number
  /** longest wait for the mesh to form @default 120000 */
  formTimeoutMs?: number
  /** measure join to first work and failure too @default true */
  churn?: boolean
  /** agents spawned at once (the rest join in waves of this many) @default all */
  wave?: number
  /** more agent flags */
  args?: string[]
  /** progress lines */
  log?: (line: string) => void
  signal?: AbortSignal
}

export interface AgentScrape {
  peers: number
  advertsSent: number
  advertsReceived: number
  /** membership "swim": SWIM messages sent + received, and their bytes in + out */
  swimMessages: number
  swimBytes: number
  /** libp2p bytes by protocol ("wire" = all, as sent on TCP) and direction */
  bytes: Record<string, { in: number, out: number }>
}

export interface MeshScaleResult {
  agents: number
  slots: number
  /** spawn of the first agent to every agent ready */
  startMs: number
  /** every agent ready to every agent seeing all N */
  formMs: number
  idle: {
    windowMs: number
    /** CPU per agent, cores: mean, max */
    corePerAgent: number
    corePerAgentMax: number
    /** RSS per agent, MB (mean) */
    rssMbPerAgent: number
    /** gossipsub protocol bytes per agent per second, in + out (mean) */
    gossipBytesPerAgentPerSec: number
    /** every libp2p byte on the wire per agent per second, in + out (Noise, yamux, every protocol) */
    wireBytesPerAgentPerSec: number
    advertsSentPerAgentPerSec: number
    advertsReceivedPerAgentPerSec: number
    /** membership "swim" (--membership swim): SWIM messages sent + received per agent per second, and their bytes in + out */
    membershipMessagesPerAgentPerSec: number
    membershipBytesPerAgentPerSec: number
    /** nats-server's CPU over the window divided by the agents, cores (what the mesh's NATS traffic costs the server, per agent) */
    natsCoresPerAgent: number
    /** CPU of processes outside the mesh meanwhile, cores (a loaded machine says so) */
    otherCores: number
  }
  /** spawn of one more agent under load to its first invocation, and to its ready line */
  joinMs?: number
  joinReadyMs?: number
  /** SIGKILL to no survivor routing to it (routable peers), to every table dropping it (peers gauge) */
  failureToNoRoutingMs?: number
  /**
   * SIGSTOP of another agent (hung: its connections stay up, only its adverts stop) to no survivor
   * routing to it, and SIGCONT to every survivor routing to it again
   */
  hangToNoRoutingMs?: number
  resumeToRoutingMs?: number
}

/** Prometheus text -> the few series this run reads */
export function parseScrape (text: string): AgentScrape {
  const out: AgentScrape = { peers: NaN, advertsSent: 0, advertsReceived: 0, swimMessages: 0, swimBytes: 0, bytes: {} }
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue
    const m = /^(\w+)(?:\{([^}]*)\})? ([-\d.e+]+|NaN)$/.exec(line)
    if (m == null) continue
    const [, name, labelText, value] = m
    const labels = Object.fromEntries([...(labelText ?? '').matchAll(/(\w+)="([^"]*)"/g)].map(l => [l[1], l[2]]))
    const v = Number(value)
    if (name === 'fnmesh_gossip_peers') out.peers = v
    else if (name === 'fnmesh_gossip_adverts_total' && labels.direction === 'sent') out.advertsSent = v
    else if (name === 'fnmesh_gossip_adverts_total' && labels.direction === 'received') out.advertsReceived = v
    else if (name === 'fnmesh_membership_messages_total' && labels.direction !== 'rejected') out.swimMessages += v
    else if (name === 'fnmesh_membership_bytes_total') out.swimBytes += v
    else if (name === 'fnmesh_libp2p_bytes_total') {
      const b = out.bytes[labels.protocol] ??= { in: 0, out: 0 }
      if (labels.direction === 'in') b.in += v
      else if (labels.direction === 'out') b.out += v
    }
  }
  return out
}

async function scrape (agent: AgentProcess): Promise<AgentScrape | undefined> {
  const port = Number(agent.ready.adminPort)
  if (!Number.isFinite(port) || !agent.running) return undefined
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) })
    return parseScrape(await res.text())
  } catch {
    return undefined
  }
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** Polls every agent in `agents` until `ok` holds for each one's scrape; ms taken, or throws */
async function until (agents: AgentProcess[], ok: (s: AgentScrape) => boolean, timeoutMs: number, what: string, signal?: AbortSignal): Promise<number> {
  const start = Date.now()
  let last: Array<AgentScrape | undefined> = []
  for (;;) {
    signal?.throwIfAborted()
    last = await Promise.all(agents.map(scrape))
    if (last.every(s => s != null && ok(s))) return Date.now() - start
    if (Date.now() - start > timeoutMs) {
      const seen = last.map(s => s?.peers ?? '?').join(',')
      throw new Error(`${what}: not within ${timeoutMs} ms (routable peers per agent: ${seen})`)
    }
    await sleep(200)
  }
}

function sum (xs: number[]): number { return xs.reduce((a, b) => a + b, 0) }

function rssMb (pid: number | undefined): number {
  try {
    const status = readFileSync(`/proc/${pid ?? -1}/status`, 'utf8')
    const m = /VmRSS:\s+(\d+) kB/.exec(status)
    return m != null ? Number(m[1]) / 1024 : NaN
  } catch {
    return NaN
  }
}

/** Starts N agents, measures, and stops everything (also on failure) */
export async function runMeshScale (o: MeshScaleOptions): Promise<MeshScaleResult> {
  const log = o.log ?? (() => {})
  const n = o.agents
  const slots = o.slots ?? 1
  const t0 = Date.now()
  log(`starting nats-server and ${n} agents (--sandbox none --slots ${slots})`)
  const wave = Math.max(1, Math.min(n, o.wave ?? n))
  const cluster = await startDevCluster({ nodes: wave, slots, readyTimeoutMs: 120_000, args: ['--sandbox', 'none', '--admin', '0', ...(o.args ?? [])] })
  let client: Mesh | undefined
  try {
    while (cluster.agents.length < n) {
      await Promise.all(Array.from({ length: Math.min(wave, n - cluster.agents.length) }, async () => await cluster.addAgent(slots)))
    }
    cluster.agents.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }))
    const startMs = Date.now() - t0
    log(`${n} agents ready in ${startMs} ms; waiting for one mesh`)
    const formMs = await until(cluster.agents, s => s.peers === n - 1, o.formTimeoutMs ?? 120_000, `${n} agents forming one mesh`, o.signal)
    log(`one mesh of ${n} in ${formMs} ms; idle window`)
    await sleep(o.settleMs ?? 5000)

    const windowMs = o.idleWindowMs ?? 30_000
    const pids = cluster.agents.map(a => a.pid)
    const natsPids = cluster.natsServers.map(s => s.pid ?? -1)
    const cpuOf = (): { agents: number[], others: number, nats: number } => {
      const procs = scanProcesses()
      const agents = pids.map(p => procs.get(p ?? -1)?.cpuMs ?? NaN)
      const nats = sum(natsPids.map(p => procs.get(p)?.cpuMs ?? 0))
      const self = new Set<number>([process.pid, ...pids.filter((p): p is number => p != null), ...cluster.natsServers.map(s => s.pid ?? -1)])
      let others = 0
      for (const [pid, p] of procs) if (!self.has(pid)) others += p.cpuMs
      return { agents, others, nats }
    }
    const s0 = await Promise.all(cluster.agents.map(scrape))
    const c0 = cpuOf()
    const w0 = Date.now()
    await sleep(windowMs)
    const c1 = cpuOf()
    const elapsed = Date.now() - w0
    const s1 = await Promise.all(cluster.agents.map(scrape))
    const cores = c1.agents.map((c, i) => (c - c0.agents[i]) / elapsed)
    const perSec = (f: (s: AgentScrape) => number): number => {
      const xs = s1.map((s, i) => s != null && s0[i] != null ? (f(s) - f(s0[i] as AgentScrape)) / (elapsed / 1000) : NaN).filter(Number.isFinite)
      return xs.length === 0 ? NaN : sum(xs) / xs.length
    }
    const bytesOf = (p: string) => (s: AgentScrape): number => Object.entries(s.bytes).filter(([k]) => k === p || (p === 'gossipsub' && k.startsWith('/meshsub/'))).reduce((a, [, b]) => a + b.in + b.out, 0)
    const idle: MeshScaleResult['idle'] = {
      windowMs: elapsed,
      corePerAgent: sum(cores) / cores.length,
      corePerAgentMax: Math.max(...cores),
      rssMbPerAgent: sum(pids.map(rssMb)) / pids.length,
      gossipBytesPerAgentPerSec: perSec(bytesOf('gossipsub')),
      wireBytesPerAgentPerSec: perSec(bytesOf('wire')),
      advertsSentPerAgentPerSec: perSec(s => s.advertsSent),
      advertsReceivedPerAgentPerSec: perSec(s => s.advertsReceived),
      membershipMessagesPerAgentPerSec: perSec(s => s.swimMessages),
      membershipBytesPerAgentPerSec: perSec(s => s.swimBytes),
      natsCoresPerAgent: (c1.nats - c0.nats) / elapsed / n,
      otherCores: (c1.others - c0.others) / elapsed
    }
    log(`idle: ${idle.corePerAgent.toFixed(4)} core/agent (max ${idle.corePerAgentMax.toFixed(4)}), gossip ${Math.round(idle.gossipBytesPerAgentPerSec)} B/s/agent, wire ${Math.round(idle.wireBytesPerAgentPerSec)} B/s/agent, membership ${idle.membershipMessagesPerAgentPerSec.toFixed(1)} msg/s ${Math.round(idle.membershipBytesPerAgentPerSec)} B/s/agent, nats-server ${idle.natsCoresPerAgent.toFixed(4)} core/agent, ${idle.rssMbPerAgent.toFixed(0)} MB RSS/agent; other processes ${idle.otherCores.toFixed(2)} cores`)
    const result: MeshScaleResult = { agents: n, slots, startMs, formMs, idle }
    if (o.churn ?? true) {
      client = await connect({ servers: cluster.natsUrls })
      Object.assign(result, await churn(cluster, client, n, o, log))
    }
    return result
  } finally {
    await client?.close().catch(() => {})
    // A SIGKILLed agent may leave a busy folder behind: a failed removal is not a failed run.
    await cluster.stop().catch((err: any) => { log(`cleanup: ${String(err?.message ?? err)}`) })
  }
}

/** Join under load, then SIGKILL of one agent */
async function churn (cluster: DevCluster, client: Mesh, n: number, o: MeshScaleOptions, log: (line: string) => void): Promise<Partial<MeshScaleResult>> {
  const dir = join(cluster.dir, 'fn-scale')
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'index.mjs'), 'export const handler = async () => { await new Promise(r => setTimeout(r, 20)); return 1 }\n')
  await client.deploy({ name: 'scale-echo', path: dir, timeoutMs: 5000 })
  let running = true
  const results: Array<{ nodeId: string, at: number }> = []
  // A steady closed loop of a few callers: enough that every agent is offered work now and then.
  const callers = Math.min(8, n)
  const loop = Promise.all(Array.from({ length: callers }, async () => {
    while (running && o.signal?.aborted !== true) {
      try {
        const r = await client.invokeDetailed('scale-echo', {}, { timeoutMs: 10_000 })
        results.push({ nodeId: r.nodeId, at: Date.now() })
      } catch {
        await sleep(10)
      }
    }
  }))
  try {
    await sleep(2000)
    const spawnAt = Date.now()
    const joiner = await cluster.addAgent(o.slots ?? 1)
    const joinReadyMs = Date.now() - spawnAt
    let joinMs: number | undefined
    for (const deadline = Date.now() + 30_000; Date.now() < deadline;) {
      const r = results.find(x => x.nodeId === joiner.nodeId)
      if (r != null) { joinMs = r.at - spawnAt; break }
      await sleep(20)
    }
    log(`join: ready in ${joinReadyMs} ms, first work at ${joinMs ?? 'none within 30 s'} ms`)

    const victim = cluster.agents[1]
    const survivors = cluster.agents.filter(a => a !== victim && a.running)
    const expected = cluster.agents.length - 2
    const killAt = Date.now()
    victim.kill('SIGKILL')
    const failureToNoRoutingMs = await until(survivors, s => s.peers <= expected, 30_000, 'survivors dropping a killed agent', o.signal)
      .then(() => Date.now() - killAt)
    log(`failure: no survivor routes to the killed agent after ${failureToNoRoutingMs} ms`)

    // A hung agent: its TCP connections stay up, so nothing but the silence of its adverts (3 of
    // its keepalives) tells the others.
    const hung = cluster.agents[2]
    const others = survivors.filter(a => a !== hung)
    const stopAt = Date.now()
    hung.kill('SIGSTOP')
    let hangToNoRoutingMs: number
    try {
      hangToNoRoutingMs = await until(others, s => s.peers <= expected - 1, 60_000, 'survivors dropping a hung agent', o.signal).then(() => Date.now() - stopAt)
      log(`hang: no survivor routes to the SIGSTOPped agent after ${hangToNoRoutingMs} ms`)
    } finally {
      hung.kill('SIGCONT')
    }
    const contAt = Date.now()
    const resumeToRoutingMs = await until(others, s => s.peers >= expected, 60_000, 'survivors routing to a resumed agent', o.signal).then(() => Date.now() - contAt)
    log(`resume: every survivor routes to it again ${resumeToRoutingMs} ms after SIGCONT`)
    return { joinMs, joinReadyMs, failureToNoRoutingMs, hangToNoRoutingMs, resumeToRoutingMs }
  } finally {
    running = false
    await loop
  }
}
