/**
 * The Lambda Runtime API (version 2018-06-01) as a custom runtime's bootstrap sees it, served
 * inside the sandbox on loopback: `GET /runtime/invocation/next` blocks until an invocation comes
 * and hands it out with the `Lambda-Runtime-*` headers; `POST /runtime/invocation/{id}/response`
 * and `/error` end it; `POST /runtime/init/error` fails the init. One invocation at a time, as on
 * Lambda: the first `next` ends the init, each later one asks for the following invocation.
 *
 * Answers as Lambda's: 202 `{"status":"OK"}` when accepted; 400 for a request id that is not the
 * current one; 403 for a call the state does not allow (a second response, an init error after
 * init, a `next` while an invocation is unanswered); 413 for a response over the payload limit
 * (the invocation then fails); 404 for any other path. Error bodies are `{errorMessage, errorType}`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { WireError } from '../../protocol.js'

export const API_PREFIX = '/2018-06-01/runtime/'

export interface Invocation {
  requestId: string
  /** the event, JSON text */
  payload: string
  /** epoch ms */
  deadlineMs: number
  traceId: string
}

export type Outcome = { ok: true, payload: string } | { ok: false, error: WireError }

export interface RuntimeApiInit {
  invokedFunctionArn: string
  /** largest response body, bytes */
  resultLimit: number
  /** the bootstrap's first `next`: init is over */
  onReady: () => void
  onInitError: (error: WireError) => void
  onOutcome: (requestId: string, outcome: Outcome) => void
}

type State = 'init' | 'ready' | 'invoking' | 'failed'

/** Largest error body kept (the rest is read and dropped) */
const ERROR_BODY_LIMIT = 256 * 1024
/** Largest error message and trace kept from a runtime's error, characters */
const MESSAGE_LIMIT = 64 * 1024
const TRACE_LINES = 200

export class RuntimeApi {
  private state: State = 'init'
  private server: Server | undefined
  /** a `next` held until an invocation comes */
  private waiting: ServerResponse | undefined
  /** an invocation not handed out yet */
  private queued: Invocation | undefined
  /** the invocation handed out and not answered */
  private current: Invocation | undefined
  /** ids already answered (a second answer is 403, not 400) */
  private readonly answered = new Set<string>()

  constructor (private readonly init: RuntimeApiInit) {}

  /** Listens on 127.0.0.1 (Lambda's port 9001 when free: the sandbox's own network namespace) and returns "host:port" */
  async listen (): Promise<string> {
    const server = createServer((req, res) => { this.route(req, res) })
    // `next` is a long poll that may wait as long as the sandbox stays warm.
    server.requestTimeout = 0
    server.timeout = 0
    server.keepAliveTimeout = 60_000
    this.server = server
    const on = async (port: number): Promise<void> => await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, '127.0.0.1', () => { server.off('error', reject); resolve() })
    })
    try {
      await on(9001)
    } catch {
      // Shared network (egress, or no namespace): any free port.
      await on(0)
    }
    const address = server.address()
    if (address == null || typeof address === 'string') throw new Error('The runtime API has no address')
    return `127.0.0.1:${address.port}`
  }

  /** An invocation from the agent: handed to a waiting `next`, or kept for the next one */
  invoke (inv: Invocation): void {
    this.queued = inv
    this.state = 'invoking'
    this.handOut()
  }

  close (): void {
    this.state = 'failed'
    this.server?.close()
    this.server?.closeAllConnections()
  }

  private route (req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0]
    if (!path.startsWith(API_PREFIX)) { reply(res, 404, notFound(path)); drain(req); return }
    const rest = path.slice(API_PREFIX.length)
    if (rest === 'invocation/next') {
      if (req.method !== 'GET') { reply(res, 405, { errorMessage: 'Method not allowed', errorType: 'MethodNotAllowed' }); drain(req); return }
      this.next(req, res)
      return
    }
    if (rest === 'init/error') {
      if (req.method !== 'POST') { reply(res, 405, { errorMessage: 'Method not allowed', errorType: 'MethodNotAllowed' }); drain(req); return }
      void this.initError(req, res)
      return
    }
    const m = /^invocation\/([^/]+)\/(response|error)$/.exec(rest)
    if (m == null) { reply(res, 404, notFound(path)); drain(req); return }
    if (req.method !== 'POST') { reply(res, 405, { errorMessage: 'Method not allowed', errorType: 'MethodNotAllowed' }); drain(req); return }
    let id: string
    try { id = decodeURIComponent(m[1]) } catch { id = m[1] }
    void this.answer(req, res, id, m[2] as 'response' | 'error')
  }

  private next (req: IncomingMessage, res: ServerResponse): void {
    if (this.state === 'failed') { reply(res, 403, stateError('The runtime failed its init')); return }
    if (this.current != null) {
      reply(res, 403, stateError(`Invocation ${this.current.requestId} has no response or error yet`))
      return
    }
    if (this.waiting != null && !this.waiting.destroyed && !this.waiting.writableEnded) {
      reply(res, 403, stateError('Another next request is already waiting'))
      return
    }
    this.waiting = res
    req.on('close', () => { if (this.waiting === res && !res.writableEnded) this.waiting = undefined })
    if (this.state === 'init') {
      this.state = 'ready'
      this.init.onReady()
    }
    this.handOut()
  }

  private handOut (): void {
    const res = this.waiting
    const inv = this.queued
    if (res == null || inv == null) return
    this.waiting = undefined
    this.queued = undefined
    this.current = inv
    const body = Buffer.from(inv.payload, 'utf8')
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Content-Length': body.byteLength,
      'Lambda-Runtime-Aws-Request-Id': inv.requestId,
      'Lambda-Runtime-Deadline-Ms': String(inv.deadlineMs),
      'Lambda-Runtime-Invoked-Function-Arn': this.init.invokedFunctionArn,
      'Lambda-Runtime-Trace-Id': inv.traceId
    })
    res.end(body)
  }

  private async answer (req: IncomingMessage, res: ServerResponse, id: string, kind: 'response' | 'error'): Promise<void> {
    const inv = this.current
    if (inv == null || inv.requestId !== id) {
      drain(req)
      if (this.answered.has(id)) reply(res, 403, stateError(`Invocation ${id} is already answered`))
      else reply(res, 400, { errorMessage: `Invalid request ID: "${id.slice(0, 100)}"`, errorType: 'InvalidRequestID' })
      return
    }
    const limit = kind === 'response' ? this.init.resultLimit : ERROR_BODY_LIMIT
    const body = await readBody(req, limit)
    // The invocation may have ended meanwhile (a second answer raced this one).
    if (this.current !== inv) { reply(res, 403, stateError(`Invocation ${id} is already answered`)); return }
    this.current = undefined
    this.answered.add(id)
    if (this.answered.size > 64) this.answered.delete(this.answered.values().next().value as string)
    this.state = 'ready'
    if (kind === 'response' && body.over) {
      reply(res, 413, { errorMessage: `Exceeded maximum allowed payload size (${this.init.resultLimit} bytes).`, errorType: 'RequestEntityTooLarge' })
      this.init.onOutcome(id, { ok: false, error: { code: 'FNMESH_ERR_RESULT_INVALID', errorType: 'Runtime.ResponseSizeTooLarge', errorMessage: `Response payload size (${body.size} bytes) exceeded maximum allowed payload size (${this.init.resultLimit} bytes)`, trace: [] } })
      return
    }
    reply(res, 202, { status: 'OK' })
    if (kind === 'response') this.init.onOutcome(id, { ok: true, payload: resultJson(body.data) })
    else this.init.onOutcome(id, { ok: false, error: runtimeError(body.data, req.headers['lambda-runtime-function-error-type'], 'FNMESH_ERR_FUNCTION_ERROR') })
  }

  private async initError (req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.state !== 'init') {
      drain(req)
      reply(res, 403, stateError('Init errors are accepted only before the first next request'))
      return
    }
    const body = await readBody(req, ERROR_BODY_LIMIT)
    if (this.state !== 'init') { reply(res, 403, stateError('Init errors are accepted only before the first next request')); return }
    this.state = 'failed'
    reply(res, 202, { status: 'OK' })
    this.init.onInitError(runtimeError(body.data, req.headers['lambda-runtime-function-error-type'], 'FNMESH_ERR_FUNCTION_INIT'))
  }
}

function reply (res: ServerResponse, status: number, body: unknown): void {
  if (res.writableEnded || res.destroyed) return
  const text = JSON.stringify(body)
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) })
  res.end(text)
}

function notFound (path: string): { errorMessage: string, errorType: string } {
  return { errorMessage: `No runtime API at ${JSON.stringify(path.slice(0, 200))}`, errorType: 'NotFound' }
}

function stateError (message: string): { errorMessage: string, errorType: string } {
  return { errorMessage: message, errorType: 'InvalidStateTransition' }
}

/** Reads and drops a request's body */
function drain (req: IncomingMessage): void {
  req.resume()
}

/** The body up to `limit` bytes; `over` when it was longer (the rest is read and dropped) */
async function readBody (req: IncomingMessage, limit: number): Promise<{ data: Buffer, size: number, over: boolean }> {
  const chunks: Buffer[] = []
  let size = 0
  await new Promise<void>((resolve) => {
    req.on('data', (chunk: Buffer) => {
      size += chunk.byteLength
      if (size <= limit) chunks.push(chunk)
    })
    req.on('end', () => { resolve() })
    req.on('error', () => { resolve() })
    req.on('close', () => { resolve() })
  })
  return { data: Buffer.concat(chunks), size, over: size > limit }
}

/**
 * A response body as the result's JSON text: JSON stays as it is; any other body (Lambda passes
 * bytes through) becomes a JSON string of its UTF-8 text; an empty body is null.
 */
export function resultJson (data: Buffer): string {
  const text = data.toString('utf8')
  if (text.trim() === '') return 'null'
  try {
    JSON.parse(text)
    return text
  } catch {
    return JSON.stringify(text)
  }
}

/**
 * A runtime's error report as the Lambda error: the body's errorType (else the
 * Lambda-Runtime-Function-Error-Type header, else "Unhandled"), errorMessage and stackTrace; a
 * body that is not a JSON object is the message.
 */
export function runtimeError (data: Buffer, header: string | string[] | undefined, code: string): WireError {
  const headerType = typeof header === 'string' && header !== '' ? header.slice(0, 200) : undefined
  let body: unknown
  try { body = JSON.parse(data.toString('utf8')) } catch {}
  if (body != null && typeof body === 'object' && !Array.isArray(body)) {
    const b = body as Record<string, unknown>
    const stack = Array.isArray(b.stackTrace) ? b.stackTrace : Array.isArray(b.trace) ? b.trace : []
    return {
      code,
      errorType: typeof b.errorType === 'string' && b.errorType !== '' ? b.errorType.slice(0, 200) : headerType ?? 'Unhandled',
      errorMessage: typeof b.errorMessage === 'string' ? b.errorMessage.slice(0, MESSAGE_LIMIT) : '',
      trace: stack.slice(0, TRACE_LINES).map(l => (typeof l === 'string' ? l : JSON.stringify(l) ?? '').slice(0, 2000))
    }
  }
  return { code, errorType: headerType ?? 'Unhandled', errorMessage: data.toString('utf8').slice(0, MESSAGE_LIMIT), trace: [] }
}
