/**
 * NATS plumbing shared by the SDK and the agent: connecting with clear errors, and requests
 * that honour an AbortSignal and map NATS failures onto fnmesh codes.
 */
import { connect as natsConnect, NoRespondersError, RequestError, TimeoutError, type NatsConnection, type NodeConnectionOptions, type Msg, type MsgHdrs } from '@nats-io/transport-node'
import { AuthError, TransportError, CapacityError, FnmeshError } from '../proto/errors.js'
import { natsAuthFromEnv, natsAuthOptions, type NatsAuth } from './nats-auth.js'

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222'

export interface NatsConnectOptions extends Omit<NodeConnectionOptions, 'servers'> {
  /** One URL, a comma-separated list, or an array. @default env FNMESH_NATS, else nats://127.0.0.1:4222 */
  servers?: string | string[]
  /** Credentials and TLS files; anything left out comes from FNMESH_NATS_* variables */
  auth?: NatsAuth
}

/** Resolves the servers option the way every fnmesh command does */
export function natsServers (servers?: string | string[]): string[] {
  const raw = servers ?? process.env.FNMESH_NATS ?? DEFAULT_NATS_URL
  const list = (Array.isArray(raw) ? raw : raw.split(',')).map(s => s.trim()).filter(Boolean)
  return list.length > 0 ? list : [DEFAULT_NATS_URL]
}

/** Connects to NATS; an unreachable server is a TransportError FNMESH_ERR_NATS_UNAVAILABLE */
export async function connectNats (options: NatsConnectOptions = {}): Promise<NatsConnection> {
  const servers = natsServers(options.servers)
  const { auth, ...rest } = options
  const credentials = natsAuthOptions(natsAuthFromEnv(auth))
  try {
    // noAsyncTraces: no Error object (and stack capture) per request on the hot path.
    // Pings every 2 s, 3 unanswered = stale: a server cut off by the network (no TCP reset) is
    // left for another of the list within ~6-8 s instead of the client default's 4-6 min.
    return await natsConnect({ timeout: 5000, noAsyncTraces: true, pingInterval: 2000, maxPingOut: 3, ...credentials, ...rest, servers })
  } catch (err: any) {
    if (/authoriz|authenticat|permission/i.test(String(err?.message)) || err?.name === 'AuthorizationError') {
      throw new AuthError('FNMESH_ERR_FORBIDDEN', `Cannot connect to NATS at ${servers.join(',')}: the server refused these credentials (${String(err?.message ?? err)})`, { cause: err })
    }
    const why = String(err?.code === 'ECONNREFUSED' ? 'connection refused' : (err?.message ?? err))
    throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot connect to NATS at ${servers.join(',')}: ${why}`, { cause: err })
  }
}

export interface RequestOptions {
  timeoutMs: number
  signal?: AbortSignal
  headers?: MsgHdrs
  /** Names the operation in error messages, e.g. `invoke "hello"` */
  what: string
}

/**
 * A NATS request with fnmesh errors: no responders -> FNMESH_ERR_NO_AGENTS, timeout ->
 * FNMESH_ERR_CLIENT_TIMEOUT, abort -> FNMESH_ERR_ABORTED, closed connection -> FNMESH_ERR_NATS_UNAVAILABLE.
 */
export async function request (nc: NatsConnection, subject: string, data: Uint8Array, options: RequestOptions): Promise<Msg> {
  const { signal } = options
  if (signal?.aborted === true) throw abortError(options.what, signal)
  const pending = nc.request(subject, data, { timeout: options.timeoutMs, headers: options.headers })
  if (signal == null) return await pending.catch(err => { throw mapRequestError(err, options) })
  let onAbort: (() => void) | undefined
  const aborted = new Promise<never>((resolve, reject) => {
    onAbort = () => { reject(abortError(options.what, signal)) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([pending.catch(err => { throw mapRequestError(err, options) }), aborted])
  } finally {
    pending.catch(() => {})
    if (onAbort != null) signal.removeEventListener('abort', onAbort)
  }
}

function abortError (what: string, signal: AbortSignal): FnmeshError {
  return new TransportError('FNMESH_ERR_ABORTED', `Cannot ${what}: aborted by the caller`, { cause: signal.reason })
}

export function mapRequestError (err: any, options: Pick<RequestOptions, 'what' | 'timeoutMs'>): FnmeshError {
  if (err instanceof FnmeshError) return err
  if (isPermissionError(err)) {
    return new AuthError('FNMESH_ERR_FORBIDDEN', `Cannot ${options.what}: NATS refused it to this user (${String(err?.message ?? err)})`, { cause: err })
  }
  if ((err instanceof RequestError && err.isNoResponders()) || err instanceof NoRespondersError || err?.cause instanceof NoRespondersError) {
    return new CapacityError('FNMESH_ERR_NO_AGENTS', `Cannot ${options.what}: no fnmesh agent is listening on this NATS server (start one with "fnmesh agent" or "fnmesh dev")`, { cause: err })
  }
  if (err instanceof TimeoutError || err?.cause instanceof TimeoutError || err?.name === 'TimeoutError') {
    return new TransportError('FNMESH_ERR_CLIENT_TIMEOUT', `Cannot ${options.what}: no answer within ${options.timeoutMs} ms`, { cause: err })
  }
  return new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot ${options.what}: ${String(err?.message ?? err)}`, { cause: err })
}

/** True for NATS's "Permissions Violation" (the user may not publish or subscribe there) */
export function isPermissionError (err: any): boolean {
  return /permissions? violation/i.test(String(err?.message ?? '')) || /permissions? violation/i.test(String(err?.cause?.message ?? '')) || err?.name === 'PermissionViolationError'
}

export interface LiveRequestOptions {
  /** epoch ms after which the caller stops waiting */
  deadline: number
  /** give up on the responder after this long without any message from it */
  livenessMs: number
  signal?: AbortSignal
  what: string
  /** header that marks an interim "still working" message, and its value */
  interim: { header: string, value: string }
  /** headers of the request (a W3C trace context) */
  headers?: MsgHdrs
}

/**
 * A request whose responder sends interim "working" messages while it works. Resolves with the
 * final reply, or 'silent' when the responder sent nothing for `livenessMs` (it likely died),
 * so the caller can re-send. Errors map as in request().
 */
export async function requestLive (nc: NatsConnection, subject: string, data: Uint8Array, options: LiveRequestOptions): Promise<Msg | 'silent'> {
  const { signal, deadline } = options
  const timeoutMs = Math.max(1, deadline - Date.now())
  if (signal?.aborted === true) throw abortError(options.what, signal)
  let replies: Awaited<ReturnType<NatsConnection['requestMany']>>
  try {
    replies = await nc.requestMany(subject, data, { strategy: 'timer', maxWait: timeoutMs, headers: options.headers })
  } catch (err) {
    throw mapRequestError(err, { what: options.what, timeoutMs })
  }
  const it = replies[Symbol.asyncIterator]()
  let timer: NodeJS.Timeout | undefined
  let onAbort: (() => void) | undefined
  try {
    for (;;) {
      const left = deadline - Date.now()
      const wait = Math.min(options.livenessMs, left)
      const next = await new Promise<IteratorResult<Msg> | 'timeout'>((resolve, reject) => {
        timer = setTimeout(() => { resolve('timeout') }, Math.max(0, wait))
        if (signal != null) {
          onAbort = () => { reject(abortError(options.what, signal)) }
          signal.addEventListener('abort', onAbort, { once: true })
        }
        it.next().then(resolve, reject)
      })
      clearTimeout(timer)
      if (onAbort != null) signal?.removeEventListener('abort', onAbort)
      if (next === 'timeout') {
        if (Date.now() >= deadline) throw mapRequestError(new TimeoutError(), { what: options.what, timeoutMs })
        return 'silent'
      }
      // The iterator ends when maxWait passes with no final reply.
      if (next.done === true) throw mapRequestError(new TimeoutError(), { what: options.what, timeoutMs })
      if (next.value.headers?.get(options.interim.header) === options.interim.value) continue
      return next.value
    }
  } catch (err) {
    throw mapRequestError(err, { what: options.what, timeoutMs })
  } finally {
    clearTimeout(timer)
    if (onAbort != null) signal?.removeEventListener('abort', onAbort)
    const stoppable = replies as unknown as { stop?: () => void }
    stoppable.stop?.()
  }
}
