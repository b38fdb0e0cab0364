/**
 * The HTTP gateway part: Node's http server with the route table of every deployed function.
 * One request: match (404/405, CORS preflight) -> size from Content-Length (413) -> auth
 * (401/403) -> mesh-wide rate limits of the route and the key (429 + Retry-After) -> body (413,
 * 408) -> JSON and JSON Schema (400) -> payload 2.0 event -> Router.route(), so it reaches the
 * least-loaded peer like any invocation -> result mapped back (502 for a function error or a bad
 * response). Every answer carries x-request-id (also the invocation id); every error is one JSON
 * shape; nothing reaches the client as a stack trace.
 */
import { createHash, randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { NatsConnection } from '@nats-io/transport-node'
import { openBucket } from '../../../core/kv-follow.js'
import type { Encodable, InvokeResult } from '../../../proto/codec.js'
import { FnmeshError, fnmeshError, toErrorInfo } from '../../../proto/errors.js'
import { RATELIMITS_BUCKET, REQUEST_ID_HEADER, SYNC_PAYLOAD_LIMIT } from '../../../proto/subjects.js'
import type { StoredSpec } from '../../../core/registry.js'
import { Idle, type Startable, type Drainable } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { RouteOptions, RouteRequest } from '../router/router.js'
import { HttpStreamSink } from './stream.js'
import { Authenticator, KeyStore, type AuthResult } from './auth.js'
import { readBody } from './body.js'
import { corsHeaders, isPreflight, preflightHeaders } from './cors.js'
import { buildEvent } from './event.js'
import { KvLeaseStore, MeshRateLimiter } from './ratelimit/limiter.js'
import { errorResponse, mapResult, type HttpResponse } from './response.js'
import { RouteTable, type RouteEntry } from './routes.js'
import { BodyValidator, describeProblems } from './validate.js'

export interface GatewayComponents {
  nc: NatsConnection
  /** Router.route: runs one invocation on the least-loaded peer (a streaming handler's body to `stream`); never throws */
  route: (req: RouteRequest, options?: RouteOptions) => Promise<Encodable<InvokeResult>>
  /** the specs known now (later ones come through onSpec) */
  specs: () => StoredSpec[]
  /** false for a spec this agent must not serve (unsigned when a trust list is set) */
  trusted?: (spec: StoredSpec) => boolean
  /** agents in the mesh, for the rate limits' fallback share */
  agents: () => number
  logger: Logger
}

export interface GatewayInit {
  /** @default 0 (any free port) */
  port?: number
  /** @default "0.0.0.0" */
  host?: string
  /** Largest request body. @default 6 MiB */
  bodyLimit?: number
  /** A body must arrive within this long. @default 30000 */
  bodyTimeoutMs?: number
  /** Extra wait for a result beyond the function's timeout. @default 15000 */
  graceMs?: number
}

const JSON_TYPE = /^application\/([\w.+-]+\+)?json\b/i
/** Retry-After (seconds) of a 503 FNMESH_ERR_NO_CAPACITY: the mesh refused because no queue would give a slot within the deadline */
const NO_CAPACITY_RETRY_AFTER_S = 1

export class Gateway implements Startable, Drainable {
  readonly table = new RouteTable()
  readonly stats = { requests: 0, byStatus: {} as Record<number, number> }
  private server: Server | undefined
  private readonly keys: KeyStore
  private readonly auth: Authenticator
  private readonly validator = new BodyValidator()
  private limiter: MeshRateLimiter | undefined
  private readonly init: Required<GatewayInit>
  /** requests under way */
  private readonly requests = new Idle()
  private draining: Promise<void> | undefined
  private readonly log: Logger

  constructor (private readonly c: GatewayComponents, init: GatewayInit = {}) {
    this.init = { port: init.port ?? 0, host: init.host ?? '0.0.0.0', bodyLimit: init.bodyLimit ?? SYNC_PAYLOAD_LIMIT, bodyTimeoutMs: init.bodyTimeoutMs ?? 30_000, graceMs: init.graceMs ?? 15_000 }
    this.log = c.logger
    this.keys = new KeyStore(c.logger)
    this.auth = new Authenticator(this.keys)
  }

  /** Starts serving (then `port` is the port it listens on); idempotent */
  async start (): Promise<void> {
    if (this.server != null) return
    this.draining = undefined
    await this.keys.start(this.c.nc)
    // Made by `fnmesh init` (history 1, memory, 1 h TTL): agents never create buckets.
    const kv = await openBucket(this.c.nc, RATELIMITS_BUCKET)
    this.limiter = new MeshRateLimiter(new KvLeaseStore(kv), { logger: this.log, fallbackShare: () => 1 / Math.max(1, this.c.agents()) })
    for (const spec of this.c.specs()) this.onSpec(spec.name, spec)
    const server = createServer({ requestTimeout: this.init.bodyTimeoutMs + 5000, headersTimeout: 10_000, keepAliveTimeout: 5000 }, (req, res) => {
      this.handle(req, res).catch((err: any) => {
        this.log.error({ code: 'FNMESH_ERR_INTERNAL', err: String(err?.message ?? err) }, 'an HTTP request failed outside its handler')
        if (!res.headersSent) { res.statusCode = 500; res.end() } else res.destroy()
      })
    })
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
      else socket.destroy()
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.init.port, this.init.host, () => { server.off('error', reject); resolve() })
    })
    this.server = server
    this.log.info({ port: this.port, host: this.init.host, routes: this.table.size }, 'HTTP gateway listening')
  }

  get port (): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0
  }

  isStarted (): boolean {
    return this.server != null
  }

  /** A spec was deployed, changed or deleted */
  onSpec (name: string, spec: StoredSpec | null): void {
    if (spec != null && this.c.trusted != null && !this.c.trusted(spec)) {
      this.log.warn({ fn: name, version: spec.version }, 'not serving the routes of a deploy this agent does not trust')
      spec = null
    }
    try {
      this.table.set(name, spec)
    } catch (err: any) {
      // Specs come validated from the FunctionCache; should one still not build, its routes go.
      this.log.error({ fn: name, code: 'FNMESH_ERR_INTERNAL', err: String(err?.message ?? err) }, 'cannot serve the routes of a function')
      try { this.table.set(name, null) } catch {}
    }
    if (this.table.conflicts.length > 0) this.log.warn({ conflicts: this.table.conflicts }, 'several functions claim the same routes: the first by name serves each')
  }

  /** Stops taking connections, finishes the requests under way; idempotent (one promise for every caller) */
  async drain (): Promise<void> {
    this.draining ??= (async () => {
      const server = this.server
      if (server == null) return
      server.close()
      server.closeIdleConnections()
      await this.requests.whenIdle()
      this.stop()
    })()
    await this.draining
  }

  /** Closes every connection at once; idempotent */
  stop (): void {
    this.keys.stop()
    this.server?.closeAllConnections()
    this.server?.close()
    this.server = undefined
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requests.enter()
    const requestId = randomUUID()
    let extra: Record<string, string> = {}
    let response: HttpResponse | 'streamed'
    try {
      const out = await this.respond(req, res, requestId)
      response = out.response
      extra = out.extra
    } catch (err) {
      response = this.failure(err, requestId)
    }
    if (response === 'streamed') this.count(res.statusCode)
    else this.send(req, res, response, { ...extra, [REQUEST_ID_HEADER]: requestId })
    this.requests.leave()
  }

  private async respond (req: IncomingMessage, res: ServerResponse, requestId: string): Promise<{ response: HttpResponse | 'streamed', extra: Record<string, string> }> {
    const method = (req.method ?? 'GET').toUpperCase()
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const rawPath = q < 0 ? url : url.slice(0, q)
    const rawQueryString = q < 0 ? '' : url.slice(q + 1)
    if (!rawPath.startsWith('/')) throw fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `The request target "${rawPath.slice(0, 100)}" is not a path`)
    const match = this.table.match(method, rawPath)
    if (match.kind === 'none') throw fnmeshError('FNMESH_ERR_ROUTE_NOT_FOUND', `No route matches ${method} ${rawPath.slice(0, 200)}`)
    if (match.kind === 'method') {
      if (method === 'OPTIONS') {
        const withCors = match.entries.find(e => e.route.cors != null)
        const headers = withCors != null && isPreflight(req.headers) ? preflightHeaders(withCors.route.cors, match.allow.filter(m => m !== 'OPTIONS' && m !== 'HEAD'), req.headers) : { allow: match.allow.join(', ') }
        return { response: { status: 204, headers, body: Buffer.alloc(0) }, extra: {} }
      }
      throw Object.assign(fnmeshError('FNMESH_ERR_METHOD_NOT_ALLOWED', `Method ${method} is not allowed on ${rawPath.slice(0, 200)}: use ${match.allow.join(', ')}`), { headers: { allow: match.allow.join(', ') } })
    }
    const { entry, pathParameters } = match
    const route = entry.route
    if (method === 'OPTIONS' && route.cors != null && isPreflight(req.headers) && entry.key.method !== 'OPTIONS') {
      const methods = entry.key.method === 'ANY' ? ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD'] : [entry.key.method]
      return { response: { status: 204, headers: preflightHeaders(route.cors, methods, req.headers), body: Buffer.alloc(0) }, extra: {} }
    }
    const extra = route.cors != null ? corsHeaders(route.cors, typeof req.headers.origin === 'string' ? req.headers.origin : undefined) : {}
    const declared = Number(req.headers['content-length'] ?? 0)
    if (declared > this.init.bodyLimit) throw Object.assign(fnmeshError('FNMESH_ERR_PAYLOAD_TOO_LARGE', `The request body is ${declared} bytes: the limit is ${this.init.bodyLimit}`), { headers: { ...extra, connection: 'close' } })
    try {
      const auth = await this.auth.check(route, req.headers)
      await this.limit(entry, auth)
      const body = await readBody(req, this.init.bodyLimit, this.init.bodyTimeoutMs)
      this.check(route, req.headers['content-type'], body)
      const event = buildEvent({
        method,
        rawPath,
        rawQueryString,
        rawHeaders: req.rawHeaders,
        sourceIp: req.socket.remoteAddress ?? '',
        protocol: `HTTP/${req.httpVersion}`,
        body,
        requestId,
        timeEpoch: Date.now()
      }, { routeKey: entry.routeKey, pathParameters }, auth.authorizer as Record<string, unknown> | undefined)
      // Every route takes a streamed reply: a streaming handler's body goes out as it is written
      // (chunked), any other handler's result comes whole, as before.
      const sink = new HttpStreamSink(res, method === 'HEAD', { ...extra, [REQUEST_ID_HEADER]: requestId })
      const result = await this.c.route({ function: entry.fn, payload: Buffer.from(JSON.stringify(event), 'utf8'), invocationId: requestId, timeoutMs: entry.spec.timeoutMs + this.init.graceMs, trigger: 'http' }, { stream: sink })
      if (sink.headersSent) {
        if (result.ok !== true) this.log.warn({ requestId, code: result.error?.code, err: result.error?.errorMessage }, 'streamed HTTP response cut short')
        sink.end(result.ok === true)
        return { response: 'streamed', extra }
      }
      if (result.ok === true && result.streamed === true) {
        sink.end(true)
        return { response: 'streamed', extra }
      }
      if (result.ok !== true) {
        const e = result.error ?? toErrorInfo(new Error('no result'))
        // No capacity within the deadline is refused at once: tell the client when to come back.
        const headers = e.code === 'FNMESH_ERR_NO_CAPACITY' ? { 'retry-after': String(NO_CAPACITY_RETRY_AFTER_S) } : undefined
        return { response: errorResponse(e.code ?? 'FNMESH_ERR_INTERNAL', e.errorType ?? 'Error', e.errorMessage ?? '', requestId, { headers }), extra }
      }
      const text = Buffer.from(result.payload ?? new Uint8Array(0)).toString('utf8')
      return { response: mapResult(text), extra }
    } catch (err) {
      if (err instanceof FnmeshError) Object.assign(err, { headers: { ...extra, ...(err as { headers?: Record<string, string> }).headers } })
      throw err
    }
  }

  /** Malformed JSON (when the body says it is JSON, or the route has a schema) and schema problems */
  private check (route: RouteEntry['route'], contentType: string | undefined, body: Buffer): void {
    if (route.schema === '' && (contentType == null || !JSON_TYPE.test(contentType))) return
    let value: unknown
    try {
      value = body.byteLength === 0 ? undefined : JSON.parse(body.toString('utf8'))
    } catch (err: any) {
      throw fnmeshError('FNMESH_ERR_INVALID_JSON', `The request body is not valid JSON: ${String(err?.message)}`)
    }
    if (route.schema === '') return
    const problems = this.validator.problems(route, value ?? null)
    if (problems.length > 0) {
      throw Object.assign(fnmeshError('FNMESH_ERR_VALIDATION_FAILED', `The request body does not match the route's schema: ${describeProblems(problems)}`), { details: problems })
    }
  }

  private async limit (entry: RouteEntry, auth: AuthResult): Promise<void> {
    const limiter = this.limiter
    if (limiter == null) return
    const checks: Array<[string, number, number, string]> = []
    if (entry.route.ratePerS > 0) {
      const id = `route.${entry.fn}.${createHash('sha256').update(entry.routeKey).digest('hex').slice(0, 16)}`
      checks.push([id, entry.route.ratePerS, entry.route.burst || entry.route.ratePerS, `route "${entry.routeKey}"`])
    }
    if (auth.key != null && auth.key.ratePerS > 0) checks.push([`key.${auth.key.name}`, auth.key.ratePerS, auth.key.burst || auth.key.ratePerS, `API key "${auth.key.name}"`])
    for (const [id, rate, burst, what] of checks) {
      const wait = await limiter.admit(id, { rate, burst })
      if (wait > 0) {
        const seconds = Math.max(1, Math.ceil(wait / 1000))
        throw Object.assign(fnmeshError('FNMESH_ERR_RATE_LIMITED', `The rate limit of ${what} (${rate}/s over the mesh) is exhausted: retry after ${seconds} s`), { headers: { 'retry-after': String(seconds) } })
      }
    }
  }

  private failure (err: unknown, requestId: string): HttpResponse {
    const e = err as FnmeshError & { headers?: Record<string, string>, details?: unknown[] }
    if (err instanceof FnmeshError) {
      const r = errorResponse(e.code, e.errorType, e.message, requestId, { details: e.details, headers: e.headers })
      if (r.status >= 500) this.log.warn({ requestId, code: e.code, err: e.message }, 'HTTP request failed')
      return r
    }
    this.log.error({ requestId, err: String((err as Error)?.stack ?? err) }, 'HTTP request failed with an unexpected error')
    return errorResponse('FNMESH_ERR_INTERNAL', 'InternalError', `Internal error in the gateway (request ${requestId})`, requestId)
  }

  private count (status: number): void {
    this.stats.requests++
    this.stats.byStatus[status] = (this.stats.byStatus[status] ?? 0) + 1
  }

  private send (req: IncomingMessage, res: ServerResponse, r: HttpResponse, extra: Record<string, string>): void {
    this.count(r.status)
    if (res.headersSent || res.destroyed) return
    try {
      res.writeHead(r.status, { ...r.headers, ...extra, 'content-length': String(r.body.byteLength) })
    } catch (err: any) {
      // Node refused a header the function chose: the response is invalid, not the gateway.
      const e = errorResponse('FNMESH_ERR_RESPONSE_INVALID', 'FunctionError', `The function's response is invalid: ${String(err?.message)}`, extra[REQUEST_ID_HEADER] ?? '')
      res.writeHead(e.status, { ...e.headers, [REQUEST_ID_HEADER]: extra[REQUEST_ID_HEADER] ?? '', 'content-length': String(e.body.byteLength) })
      res.end(e.body)
      return
    }
    res.end(req.method === 'HEAD' ? undefined : r.body)
  }
}
