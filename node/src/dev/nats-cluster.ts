/**
 * A NATS cluster of N real servers on this machine (127.0.0.1, free ports), each with its own
 * JetStream store, routed to each other: `fnmesh dev --nats-servers 3` and tests.
 */
import { createServer } from 'node:net'
import { startNatsServer, type NatsServer, type NatsServerOptions } from './nats-server.js'

/** Added to every clustered server: routes and clients to a server cut off go stale in ~6 s */
export const CLUSTER_PING_CONFIG = 'ping_interval: "2s"\nping_max: 3'

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => { resolve(port) })
    })
  })
}

export interface NatsCluster {
  servers: NatsServer[]
  /** every server's URL, comma-separated (what --nats and FNMESH_NATS take) */
  urls: string
  stop: () => Promise<void>
}

export async function startNatsCluster (count: number, options: Omit<NatsServerOptions, 'port' | 'cluster' | 'serverName' | 'storeDir'> = {}): Promise<NatsCluster> {
  const ports = await Promise.all(Array.from({ length: count }, async () => ({ client: await freePort(), route: await freePort() })))
  const routes = ports.map(p => `nats-route://127.0.0.1:${p.route}`)
  const name = `fnmesh-dev-${process.pid}`
  const servers: NatsServer[] = []
  try {
    for (const [i, p] of ports.entries()) {
      servers.push(await startNatsServer({ ...options, port: p.client, serverName: `n${i + 1}`, cluster: { name, port: p.route, routes }, extraConfig: [CLUSTER_PING_CONFIG, options.extraConfig ?? ''].join('\n') }))
    }
  } catch (err) {
    await Promise.all(servers.map(async s => await s.stop()))
    throw err
  }
  return { servers, urls: servers.map(s => s.url).join(','), stop: async () => { await Promise.all(servers.map(async s => await s.stop())) } }
}
