/**
 * `mesh.invokeStream()`: a synchronous invocation whose response comes as it is written. The
 * request asks for a streamed reply on a fresh inbox (under this client's inbox prefix); the
 * router answers with "working" interim replies, chunks (each acknowledged once the caller has
 * taken it from the iterator, so a slow reader holds at most the sender's window here) and the
 * final InvokeResult (see core/stream.ts and docs/ARCHITECTURE.md).
 */
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node'
import { decode, encode, type InvokeResult } from '../../proto/codec.js'
import { CapacityError, FnmeshError, InputError, TransportError, fromErrorInfo } from '../../proto/errors.js'
import { Headers, KEEPALIVE_TIMEOUT_MS, Status, invokeSubject } from '../../proto/subjects.js'
import { ackChunk, isChunk, newInbox, readChunk } from '../../core/stream.js'
import { mapRequestError } from '../../core/nats.js'

/** How a streamed invocation ended */
export interface StreamEnd {
  invocationId: string
  nodeId: string
  version: number
  durationMs: number
  cold: boolean
  /** bytes of body received */
  bytes: number
  /** false when the handler was not a streaming one: its result (JSON) came as the one chunk */
  streamed: boolean
}

/** A streamed invocation: iterate it for the body's chunks */
export interface InvokeStream extends AsyncIterable<Uint8Array> {
  /** the invocation id the mesh minted */
  readonly invocationId: string
  /** the node that runs it */
  readonly nodeId: string
  /** the response stream's content type (application/json for a buffered result) */
  readonly contentType: string
  /** resolves when the body has been read to its end; rejects with the coded error that ended it */
  readonly done: Promise<StreamEnd>
  /** stops reading: the function's next write fails (FNMESH_ERR_ABORTED) */
  cancel: () => void
  /** the body as a web ReadableStream */
  readable: () => ReadableStream<Uint8Array>
}

interface Item { data: Uint8Array, msg?: Msg, seq?: number }

export interface StreamCallOptions {
  deadline: number
  idempotencyKey: string
  signal?: AbortSignal
  what: string
}

/** Starts the invocation; resolves once its first chunk (or its whole result) arrived */
export async function invokeStream (nc: NatsConnection, name: string, payload: Uint8Array, options: StreamCallOptions): Promise<InvokeStream> {
  const { deadline, signal, what } = options
  const inbox = newInbox(nc)
  let sub: Subscription
  try {
    sub = nc.subscribe(inbox)
  } catch (err) {
    throw mapRequestError(err, { what, timeoutMs: deadline - Date.now() })
  }
  const send = (): void => {
    nc.publish(invokeSubject(name), encode('InvokeRequest', { function: name, payload, idempotencyKey: options.idempotencyKey, timeoutMs: Math.max(1, deadline - Date.now()), stream: true }), { reply: inbox })
  }
  const queue: Item[] = []
  let end: { ok: true, value: StreamEnd } | { ok: false, error: FnmeshError } | undefined
  let wake: (() => void) | undefined
  let seq = 1
  let bytes = 0
  let lastChunk: Msg | undefined
  let meta = { invocationId: '', nodeId: '', contentType: '' }
  let started: (() => void) | undefined
  let failStart: ((e: FnmeshError) => void) | undefined
  const firstMessage = new Promise<void>((resolve, reject) => { started = resolve; failStart = reject })
  firstMessage.catch(() => {})
  let resolveDone: (v: StreamEnd) => void = () => {}
  let rejectDone: (e: FnmeshError) => void = () => {}
  const done = new Promise<StreamEnd>((resolve, reject) => { resolveDone = resolve; rejectDone = reject })
  done.catch(() => {})

  let liveness: NodeJS.Timeout | undefined
  let resent = false
  const finish = (e: typeof end): void => {
    if (end != null) return
    end = e
    clearTimeout(liveness)
    signal?.removeEventListener('abort', onAbort)
    try { sub.unsubscribe() } catch {}
    if (e?.ok === true) resolveDone(e.value)
    else if (e != null) { rejectDone(e.error); failStart?.(e.error) }
    started?.()
    wake?.()
  }
  const alive = (): void => {
    clearTimeout(liveness)
    const left = deadline - Date.now()
    liveness = setTimeout(() => {
      if (Date.now() >= deadline) { finish({ ok: false, error: mapRequestError(Object.assign(new Error('timeout'), { name: 'TimeoutError' }), { what, timeoutMs: deadline }) }); return }
      // The router went silent before the body started: another takes it over (as invoke does).
      if (seq === 1 && !resent) { resent = true; send(); alive(); return }
      finish({ ok: false, error: new TransportError('FNMESH_ERR_PEER_UNAVAILABLE', `Cannot ${what}: the agent routing it stopped answering${seq > 1 ? ` after ${bytes} bytes` : ', twice'}`) })
    }, Math.max(0, Math.min(KEEPALIVE_TIMEOUT_MS, left)))
  }
  const onAbort = (): void => {
    if (lastChunk != null) ackChunk(lastChunk, seq - 1, inbox, true)
    finish({ ok: false, error: new TransportError('FNMESH_ERR_ABORTED', `Cannot ${what}: aborted by the caller`, { cause: signal?.reason }) })
  }
  const onMessage = (msg: Msg): void => {
    if (end != null) return
    alive()
    if (msg.headers?.code === 503) {
      finish({ ok: false, error: new CapacityError('FNMESH_ERR_NO_AGENTS', `Cannot ${what}: no fnmesh agent is listening on this NATS server (start one with "fnmesh agent" or "fnmesh dev")`) })
      return
    }
    if (msg.headers?.get(Headers.status) === Status.working) return
    try {
      if (isChunk(msg)) {
        const chunk = readChunk(msg, seq)
        if (seq === 1) meta = { invocationId: chunk.invocationId, nodeId: chunk.nodeId, contentType: chunk.contentType }
        lastChunk = msg
        queue.push({ data: chunk.data, msg, seq })
        seq++
        bytes += chunk.data.byteLength
        started?.()
        wake?.()
        return
      }
      const res: InvokeResult = decode('InvokeResult', msg.data)
      if (!res.ok) {
        const err = fromErrorInfo(res.error)
        Object.assign(err, { invocationId: res.invocationId, nodeId: res.nodeId })
        finish({ ok: false, error: err })
        return
      }
      if (!res.streamed) {
        // A buffered handler: its result is the one chunk.
        meta = { invocationId: res.invocationId, nodeId: res.nodeId, contentType: 'application/json' }
        queue.push({ data: res.payload })
        bytes += res.payload.byteLength
      }
      finish({ ok: true, value: { invocationId: res.invocationId, nodeId: res.nodeId, version: res.version, durationMs: res.durationMs, cold: res.cold, bytes, streamed: res.streamed } })
    } catch (err) {
      if (lastChunk != null) ackChunk(lastChunk, seq - 1, inbox, true)
      finish({ ok: false, error: err instanceof FnmeshError ? err : new InputError('FNMESH_ERR_DECODE', `Cannot ${what}: ${String((err as Error)?.message ?? err)}`) })
    }
  }
  void (async () => {
    try { for await (const msg of sub) onMessage(msg) } catch (err) { finish({ ok: false, error: mapRequestError(err, { what, timeoutMs: 0 }) }) }
  })()
  if (signal?.aborted === true) { onAbort(); throw (end as { error: FnmeshError }).error }
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    send()
  } catch (err) {
    finish({ ok: false, error: mapRequestError(err, { what, timeoutMs: 0 }) })
  }
  alive()
  await firstMessage

  const next = async (): Promise<IteratorResult<Uint8Array>> => {
    for (;;) {
      const item = queue.shift()
      if (item != null) {
        // Taken by the reader: the sender may send more.
        if (item.msg != null && end == null) ackChunk(item.msg, item.seq as number, inbox)
        return { done: false, value: item.data }
      }
      if (end != null) {
        if (!end.ok) throw end.error
        return { done: true, value: undefined }
      }
      await new Promise<void>(resolve => { wake = resolve })
      wake = undefined
    }
  }
  const cancel = (): void => {
    if (end != null) return
    if (lastChunk != null) ackChunk(lastChunk, seq - 1, inbox, true)
    finish({ ok: false, error: new TransportError('FNMESH_ERR_ABORTED', `Cannot ${what}: the reader cancelled the stream`) })
  }
  return {
    get invocationId () { return meta.invocationId },
    get nodeId () { return meta.nodeId },
    get contentType () { return meta.contentType },
    done,
    cancel,
    [Symbol.asyncIterator]: () => ({
      next,
      return: async () => { cancel(); return { done: true, value: undefined } }
    }),
    readable: () => new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        try {
          const r = await next()
          if (r.done === true) controller.close()
          else controller.enqueue(r.value)
        } catch (err) {
          controller.error(err)
        }
      },
      cancel
    })
  }
}
