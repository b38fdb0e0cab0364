/**
 * A NATS cluster of N real servers on this machine (127.0.0.1, free ports), each with its own
 * JetStream store, routed to each other: `fnmesh dev --nats-servers 3` and tests.
 */
import { createServer } from 'node:net'
import { startNatsServer, type NatsServer, type NatsServerOptions } from './nats-server.js'

/** Added to every clustered server: routes and clients to a server cut off go stale in ~6 s */
export const CLUSTER_PING_CONFIG = 'ping_interval: "2s"\nping_max: 3'

/** A TCP port free on 127.0.0.1 right now */
export async function freePort (): Promise<number> {
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

export interface ClusterServerConfigOptions {
  /** unique per server, e.g. the host name */
  serverName: string
  /** the cluster's name, the same on every server */
  clusterName: string
  /** every server's route URL, e.g. nats-route://nats-1.internal:6222 (this one's included is fine) */
  routes: string[]
  /** @default "/var/lib/nats" */
  storeDir?: string
  /** @default "0.0.0.0" */
  host?: string
  /** @default 4222 */
  port?: number
  /** @default 6222 */
  routePort?: number
  /** the accounts block (node/src/dev/nats-auth-config.ts natsAuthConfig()), or none */
  accounts?: string
}

/** One server's configuration in a production NATS cluster for fnmesh (README "Running in production") */
export function natsClusterServerConfig (o: ClusterServerConfigOptions): string {
  return [
    `server_name: ${JSON.stringify(o.serverName)}`,
    `listen: "${o.host ?? '0.0.0.0'}:${o.port ?? 4222}"`,
    'max_payload: 8MB',
    `jetstream { store_dir: ${JSON.stringify(o.storeDir ?? '/var/lib/nats')} }`,
    CLUSTER_PING_CONFIG,
    `cluster {\n  name: ${JSON.stringify(o.clusterName)}\n  listen: "${o.host ?? '0.0.0.0'}:${o.routePort ?? 6222}"\n  routes: [\n${o.routes.map(r => `    ${JSON.stringify(r)}`).join('\n')}\n  ]\n}`,
    o.accounts ?? ''
  ].join('\n')
}
