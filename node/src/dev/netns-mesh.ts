/**
 * A multi-host mesh on one machine: N hosts (network namespaces, node/src/dev/netns.ts), a
 * NATS server on each clustered with the others over routes between the hosts, `fnmesh init`
 * with min(3, N) replicas, and agents on each host listening for libp2p on the host's own
 * address. For the multi-host tests and `npm run netns-mesh`.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnAgent, initNats, type AgentProcess } from './cluster.js'
import { createNetHosts, type NetHost, type NetHosts } from './netns.js'
import { startNatsServer, type NatsServer } from './nats-server.js'
import { CLUSTER_PING_CONFIG } from './nats-cluster.js'
import type { InitResult } from '../../../core/init.js'

export const NATS_PORT = 4222
export const ROUTE_PORT = 6222


export interface NetnsMeshOptions {
  /** @default 3 */
  hosts?: number
  /** hosts that run a NATS server (the first ones). @default min(3, hosts) */
  natsServers?: number
  /** @default 1 */
  agentsPerHost?: number
  /** @default 4 */
  slots?: number
  /** more `fnmesh agent` flags. @default ["--sandbox", "none"] */
  agentArgs?: string[]
  env?: Record<string, string>
}

export interface NetnsMesh {
  net: NetHosts
  dir: string
  /** the NATS server of host i (index i - 1) */
  servers: NatsServer[]
  agents: AgentProcess[]
  /** every server's client URL, comma-separated: what --nats and FNMESH_NATS take */
  natsUrls: string
  init: InitResult
  /** Starts an agent on `host` */
  startAgent: (host: NetHost, name?: string) => Promise<AgentProcess>
  /** Adds a host (no NATS server) with one agent */
  addHost: () => Promise<{ host: NetHost, agent: AgentProcess }>
  /** Kills every process it started (by pid), removes the namespaces, the bridge and the folder */
  stop: () => Promise<void>
}

export async function startNetnsMesh (options: NetnsMeshOptions = {}): Promise<NetnsMesh> {
  const count = options.hosts ?? 3
  const natsCount = options.natsServers ?? Math.min(3, count)
  const dir = await mkdtemp(join(tmpdir(), 'fnmesh-netns-'))
  const net = createNetHosts(count)
  const servers: NatsServer[] = []
  const agents: AgentProcess[] = []
  const routes = net.hosts.slice(0, natsCount).map(h => `nats-route://${h.address}:${ROUTE_PORT}`)
  const natsUrls = net.hosts.slice(0, natsCount).map(h => `nats://${h.address}:${NATS_PORT}`).join(',')
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    for (const a of agents) a.kill('SIGKILL')
    await Promise.all(agents.map(async a => await a.exited))
    await Promise.all(servers.map(async s => await s.stop().catch(() => {})))
    net.destroy()
    await rm(dir, { recursive: true, force: true })
  }
  const startAgent = async (host: NetHost, name?: string): Promise<AgentProcess> => {
    const n = name ?? `h${host.index}-a${agents.filter(a => a.name.startsWith(`h${host.index}-`)).length + 1}`
    const agent = await spawnAgent({
      nats: natsUrls,
      name: n,
      dataDir: join(dir, n),
      slots: options.slots ?? 4,
      listen: [`/ip4/${host.address}/tcp/0`],
      wrap: host.wrap,
      args: options.agentArgs ?? ['--sandbox', 'none'],
      env: options.env,
      logFile: join(dir, `${n}.log`)
    })
    agents.push(agent)
    return agent
  }
  try {
    for (const h of net.hosts.slice(0, natsCount)) {
      servers.push(await startNatsServer({
        host: h.address,
        port: NATS_PORT,
        serverName: `h${h.index}`,
        storeDir: join(dir, `nats-h${h.index}`),
        cluster: { name: `fnmesh-${net.id}`, port: ROUTE_PORT, routes },
        // Routes and clients to a server cut off by the network (no TCP reset) go stale in ~6 s.
        extraConfig: CLUSTER_PING_CONFIG,
        wrap: h.wrap
      }))
    }
    // Init waits out the cluster's first meta leader election (its calls are retried).
    const init = await initNats(natsUrls, undefined, { replicas: Math.min(3, natsCount) })
    for (const h of net.hosts) {
      for (let i = 0; i < (options.agentsPerHost ?? 1); i++) await startAgent(h)
    }
    return {
      net,
      dir,
      servers,
      agents,
      natsUrls,
      init,
      startAgent,
      addHost: async () => {
        const host = net.addHost()
        return { host, agent: await startAgent(host) }
      },
      stop
    }
  } catch (err) {
    await stop()
    throw err
  }
}
