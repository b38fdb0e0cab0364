/**
 * One invocation, with Lambda's completion rules:
 * - the handler is always called with (event, context, callback);
 * - a returned promise settles the invocation when it settles;
 * - only the first of callback / context.done / succeed / fail counts;
 * - callback(null, result) with `context.callbackWaitsForEmptyEventLoop` true (the default)
 *   answers once the event loop has nothing left to run, with it false at once;
 * - a handler that neither returns a promise nor calls back answers null once the loop is
 *   empty; an async handler whose promise is still pending then fails (Runtime.NodeJsExit).
 *
 * "The event loop is empty" is Node's 'beforeExit': during an invocation the IPC channel is
 * unref'd, so only the function's own work keeps the loop alive.
 */
import { makeBindings } from './bindings.js'
import { flushDropped } from './console.js'
import { nodeJsExit, toWireError } from './errors.js'
import type { Handler } from './handler.js'
import { ResponseStream, chunkSender, streamingOf } from './streaming.js'
import type { InitRequest, InvokeRequest, WireError } from '../protocol.js'

export interface Outcome { ok: true, payload: string, streamed?: boolean }
export type Answer = Outcome | { ok: false, error: WireError }

type OnBeforeExit = (() => void) | undefined

let beforeExit: OnBeforeExit
process.on('beforeExit', () => {
  const run = beforeExit
  beforeExit = undefined
  run?.()
})

function serialise (value: unknown, limit: number): Answer {
  let payload: string | undefined
  try {
    payload = JSON.stringify(value === undefined ? null : value)
  } catch (err: any) {
    return { ok: false, error: { code: 'FNMESH_ERR_RESULT_INVALID', errorType: 'Runtime.JSONStringifyError', errorMessage: `Unable to stringify response body: ${String(err?.message ?? err)}`, trace: [] } }
  }
  // JSON.stringify(() => {}) is undefined: Lambda answers null for what JSON cannot express.
  payload ??= 'null'
  const size = Buffer.byteLength(payload)
  if (size > limit) {
    return { ok: false, error: { code: 'FNMESH_ERR_RESULT_INVALID', errorType: 'Runtime.ResponseSizeTooLarge', errorMessage: `Response payload size (${size} bytes) exceeded maximum allowed payload size (${limit} bytes)`, trace: [] } }
  }
  return { ok: true, payload }
}

/** Runs the handler for `msg` and calls `answer` exactly once */
export function runInvocation (handler: Handler, meta: InitRequest, msg: InvokeRequest, event: unknown, answer: (a: Answer) => void): void {
  let answered = false
  const complete = (a: Answer): void => {
    if (answered) return
    answered = true
    beforeExit = undefined
    flushDropped()
    answer(a)
  }
  const postError = (err: unknown): void => { complete({ ok: false, error: toWireError(err, 'FNMESH_ERR_FUNCTION_ERROR') }) }
  const postResult = (value: unknown): void => { complete(serialise(value, meta.resultLimit)) }

  let waitForEmptyEventLoop = true
  let finished = false
  const once = <A extends unknown[]>(fn: (...args: A) => void) => (...args: A): void => {
    if (finished) return
    finished = true
    fn(...args)
  }
  const done = (err?: unknown, result?: unknown): void => {
    if (err !== undefined && err !== null) postError(err)
    else postResult(result)
  }
  const callback = once((err?: unknown, result?: unknown): void => {
    if (err !== undefined && err !== null) { postError(err); return }
    if (!waitForEmptyEventLoop) { postResult(result); return }
    beforeExit = () => { setImmediate(() => { postResult(result) }) }
  })
  const context = {
    get callbackWaitsForEmptyEventLoop () { return waitForEmptyEventLoop },
    set callbackWaitsForEmptyEventLoop (value: boolean) { waitForEmptyEventLoop = value },
    done: once(done),
    succeed: once((result?: unknown) => { done(null, result) }),
    fail: once((err?: unknown) => { done(err === undefined || err === null ? 'handled' : err) }),
    functionName: meta.functionName,
    functionVersion: meta.functionVersion,
    invokedFunctionArn: meta.invokedFunctionArn,
    memoryLimitInMB: String(meta.memoryMb),
    awsRequestId: msg.requestId,
    logGroupName: meta.logGroupName,
    logStreamName: meta.logStreamName,
    identity: undefined,
    clientContext: undefined,
    getRemainingTimeInMillis: () => Math.max(0, msg.deadlineMs - Date.now()),
    /** fnmesh: the CloudEvent attributes of an async event (undefined for sync invocations) */
    cloudEvent: msg.cloudEvent,
    /** fnmesh: the declared bindings (issue 17), clients that talk to the agent */
    bindings: makeBindings(meta.bindings, msg.deadlineMs)
  }
  const mode = streamingOf(handler)
  if (mode.streaming) {
    runStreaming(handler, event, context, new ResponseStream(chunkSender(msg.id), mode.highWaterMark), complete)
    return
  }
  // Neither a promise nor a callback: the loop running empty ends the invocation.
  const isAsync = handler.constructor?.name === 'AsyncFunction'
  beforeExit = () => {
    if (isAsync) postError(nodeJsExit())
    else postResult(null)
  }
  try {
    const out = handler(event, context, callback) as { then?: unknown } | undefined
    if (out != null && typeof out.then === 'function') {
      (out as Promise<unknown>).then(context.succeed, context.fail)
    }
  } catch (err) {
    callback(err)
  }
}

/**
 * A streaming handler, `(event, responseStream, context) => Promise`, with the rules of Lambda's
 * runtime: it must return a promise; once that resolves, the invocation ends when the stream has
 * finished (every chunk acknowledged), and fails when the loop runs empty before it was ended; a
 * rejection, or the agent refusing a chunk, ends it with that error. Its return value is ignored.
 */
function runStreaming (handler: Handler, event: unknown, context: object, stream: ResponseStream, complete: (a: Answer) => void): void {
  let done = false
  const finish = (a: Answer): void => {
    if (done) return
    done = true
    if (!a.ok && !stream.destroyed) stream.destroy()
    complete(a)
  }
  const fail = (err: unknown): void => {
    const code = typeof (err as { code?: unknown })?.code === 'string' && String((err as { code: string }).code).startsWith('FNMESH_ERR_') ? (err as { code: string }).code : 'FNMESH_ERR_FUNCTION_ERROR'
    finish({ ok: false, error: toWireError(err, code) })
  }
  const succeed = (): void => { finish({ ok: true, payload: '', streamed: true }) }
  stream.on('error', fail)
  stream.on('finish', () => { if (settled) succeed() })
  let settled = false
  beforeExit = () => { fail(nodeJsExit()) }
  let out: unknown
  try {
    out = (handler as unknown as (e: unknown, s: ResponseStream, c: object) => unknown)(event, stream, context)
  } catch (err) {
    fail(err)
    return
  }
  if (out == null || typeof (out as { then?: unknown }).then !== 'function') {
    fail(new Error('Streaming does not support non-async handlers.'))
    return
  }
  (out as Promise<unknown>).then(() => {
    settled = true
    if (stream.writableFinished) { succeed(); return }
    // Ended but not yet flushed: 'finish' answers. Not ended: the function may still end it;
    // if the loop runs empty first, it never will.
    beforeExit = () => { fail(new Error('Response stream is not finished.')) }
  }, fail)
}
