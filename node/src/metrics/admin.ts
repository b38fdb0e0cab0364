/**
 * The admin listener (--admin [host:]port): /metrics (Prometheus text), /healthz (the process
 * answers), /readyz (the agent runs, NATS is connected, it is not draining), the dashboard at /
 * and its data at /api/snapshot. Off unless asked for; on 127.0.0.1 unless a host is given; any
 * other bind needs a bearer token (config.ts refuses to start without one), compared in constant
 * time. The dashboard's static files (the same for everyone, no data in them) are the only
 * answers given without the token: a browser cannot send a header when it opens a page, so the
 * page asks for the token and sends it with each data request.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from '../logger.js'
import { SECURITY_HEADERS, isAsset, readAsset } from './dashboard/assets.js'
import { RANGES } from './dashboard/data.js'

export interface AdminComponents {
  /** the metrics in Prometheus text format */
  metrics: () => Promise<{ contentType: string, text: string }>
  /** why the agent is not ready, or '' when it is */
  notReady: () => string
  /** the dashboard's data; without it, / and /api are not served */
  dashboard?: { snapshot: (range: string) => Promise<unknown>, stop: () => void }
  logger: Logger
}

export interface AdminInit {
  /** @default 0 (a free port) */
  port?: number
  /** @default "127.0.0.1" */
  host?: string
  /** required bearer token; undefined = none asked */
  token?: string
}

export class AdminServer {
  private server: Server | undefined
  private readonly tokenDigest: Buffer | undefined

  constructor (private readonly c: AdminComponents, private readonly init: AdminInit = {}) {
    this.tokenDigest = init.token != null ? digest(init.token) : undefined
  }

  /** the bound port once started */
  get port (): number | undefined {
    return (this.server?.address() as AddressInfo | null)?.port
  }

  isStarted (): boolean {
    return this.server != null
  }

  async start (): Promise<void> {
    if (this.server != null) return
    const server = createServer((req, res) => { this.handle(req, res).catch(() => { if (!res.headersSent) res.writeHead(500); res.end() }) })
    server.keepAliveTimeout = 5000
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.init.port ?? 0, this.init.host ?? '127.0.0.1', () => { server.off('error', reject); resolve() })
    })
    this.server = server
  }

  async stop (): Promise<void> {
    const server = this.server
    if (server == null) return
    this.server = undefined
    this.c.dashboard?.stop()
    await new Promise<void>(resolve => {
      server.close(() => { resolve() })
      server.closeAllConnections()
    })
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Appended, not resolved: "//host/x" stays a path here, never another host's.
    const url = new URL(`http://admin${(req.url ?? '/').startsWith('/') ? req.url ?? '/' : '/'}`)
    const path = url.pathname
    const read = req.method === 'GET' || req.method === 'HEAD'
    if (read && this.c.dashboard != null && isAsset(path)) {
      const { type, body } = await readAsset(path)
      res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': type, 'cache-control': 'no-cache' })
      res.end(body)
      return
    }
    if (this.tokenDigest != null && !this.authorized(req)) {
      res.writeHead(401, { 'www-authenticate': 'Bearer', 'content-type': 'text/plain', 'cache-control': 'no-store' })
      res.end('unauthorized\n')
      return
    }
    if (!read) {
      res.writeHead(405, { allow: 'GET, HEAD' })
      res.end()
      return
    }
    if (path === '/api/snapshot' && this.c.dashboard != null) {
      const range = url.searchParams.get('range') ?? '1h'
      if (!Object.hasOwn(RANGES, range)) {
        res.writeHead(400, { ...SECURITY_HEADERS, 'content-type': 'text/plain' })
        res.end(`error FNMESH_ERR_INVALID_ARGUMENT: range must be one of ${Object.keys(RANGES).join(', ')}\n`)
        return
      }
      const body = JSON.stringify(await this.c.dashboard.snapshot(range))
      res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'application/json', 'cache-control': 'no-store' })
      res.end(body)
    } else if (path === '/metrics') {
      const { contentType, text } = await this.c.metrics()
      res.writeHead(200, { 'content-type': contentType })
      res.end(text)
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end('ok\n')
    } else if (path === '/readyz') {
      const why = this.c.notReady()
      res.writeHead(why === '' ? 200 : 503, { 'content-type': 'text/plain' })
      res.end(why === '' ? 'ready\n' : `not ready: ${why}\n`)
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' })
      res.end('not found\n')
    }
  }

  private authorized (req: IncomingMessage): boolean {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')
    // Both sides hashed: equal lengths for timingSafeEqual, and no early exit on the length.
    return m != null && timingSafeEqual(digest(m[1]), this.tokenDigest as Buffer)
  }
}

function digest (s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest()
}

