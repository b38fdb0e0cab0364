/**
 * The sandboxed child: boots as a generic worker, is specialised once for one function version
 * (init), then runs invocations of it one at a time, Lambda-style.
 *
 * Runs with nothing but Node's own modules and the files of this folder, so that it works under
 * the permission model reading only this folder and the function's code, and inside a mount
 * namespace where this folder is /var/runtime and the code /var/task.
 */
import { onBindResult } from './bindings.js'
import { beginInvocation, patchConsole } from './console.js'
import { RuntimeError, toWireError, unhandledRejection } from './errors.js'
import { loadHandler, type Handler } from './handler.js'
import { runInvocation, type Answer } from './invoke.js'
import { installAwsLambda, onChunkAck, streamingOf } from './streaming.js'
import type { ChildMessage, InitRequest, InvokeRequest, ParentMessage } from '../protocol.js'

type State = 'generic' | 'initializing' | 'ready' | 'invoking'

let state: State = 'generic'
let handler: Handler | undefined
let meta: InitRequest | undefined
/** the request being answered: an init or an invocation */
let current: { id: number, kind: 'init' | 'invoke' } | undefined

function send (msg: ChildMessage, then?: () => void): void {
  if (process.send == null || !process.connected) return
  process.send(msg, undefined, undefined, () => { then?.() })
}

/** While a function runs, only its own work may keep the event loop alive (see invoke.ts) */
function holdLoop (hold: boolean): void {
  const channel = process.channel as { ref?: () => void, unref?: () => void } | undefined
  if (hold) channel?.ref?.()
  else channel?.unref?.()
}

async function onInit (msg: InitRequest): Promise<void> {
  if (state !== 'generic') {
    send({ t: 'init-error', id: msg.id, error: { code: 'FNMESH_ERR_INTERNAL', errorType: 'Runtime.InvalidState', errorMessage: 'Sandbox is already specialised', trace: [] } })
    return
  }
  state = 'initializing'
  meta = msg
  current = { id: msg.id, kind: 'init' }
  try {
    // The function sees only its own environment, as on Lambda. Unchanged values are left alone:
    // writing TZ makes V8 and ICU reload the time zone, which costs ~15 ms inside a sandbox.
    for (const key of Object.keys(process.env)) if (!Object.hasOwn(msg.env, key)) delete process.env[key]
    for (const [key, value] of Object.entries(msg.env)) if (process.env[key] !== value) process.env[key] = value
    process.chdir(msg.taskRoot)
    patchConsole(msg.logLimit)
    beginInvocation(undefined)
    // As on Lambda, the global exists before the function's code loads (hono's streamHandle needs it then).
    installAwsLambda()
    handler = await loadHandler(msg.taskRoot, msg.handler)
    streamingOf(handler)
    state = 'ready'
    current = undefined
    send({ t: 'init-ok', id: msg.id })
  } catch (err) {
    current = undefined
    send({ t: 'init-error', id: msg.id, error: toWireError(err, 'FNMESH_ERR_FUNCTION_INIT') }, () => process.exit(1))
  }
}

function onInvoke (msg: InvokeRequest): void {
  if (state !== 'ready' || handler == null || meta == null) {
    send({ t: 'result', id: msg.id, ok: false, error: { code: 'FNMESH_ERR_INTERNAL', errorType: 'Runtime.InvalidState', errorMessage: `Sandbox cannot invoke while ${state}`, trace: [] } })
    return
  }
  let event: unknown
  try {
    event = JSON.parse(msg.payload)
  } catch (err) {
    send({ t: 'result', id: msg.id, ok: false, error: toWireError(err, 'FNMESH_ERR_INVALID_JSON') })
    return
  }
  state = 'invoking'
  current = { id: msg.id, kind: 'invoke' }
  beginInvocation(msg.requestId)
  holdLoop(false)
  runInvocation(handler, meta, msg, event, (answer: Answer) => {
    state = 'ready'
    current = undefined
    holdLoop(true)
    send(answer.ok ? { t: 'result', id: msg.id, ok: true, payload: answer.payload, ...(answer.streamed === true ? { streamed: true } : {}) } : { t: 'result', id: msg.id, ok: false, error: answer.error })
  })
}

// A crash outside the handler's own promise fails the request being served, then the sandbox
// exits (Lambda: 129 for an exception, 128 for a rejection): its state is unknown.
function fatal (err: RuntimeError | unknown, status: number): void {
  const error = toWireError(err, current?.kind === 'init' ? 'FNMESH_ERR_FUNCTION_INIT' : 'FNMESH_ERR_FUNCTION_ERROR')
  const req = current
  current = undefined
  if (req == null) process.exit(status)
  else if (req.kind === 'init') send({ t: 'init-error', id: req.id, error }, () => process.exit(status))
  else send({ t: 'result', id: req.id, ok: false, error, fatal: true }, () => process.exit(status))
}
process.on('uncaughtException', (err) => { fatal(err, 129) })
process.on('unhandledRejection', (reason) => { fatal(unhandledRejection(reason), 128) })
// The agent is gone: nothing can reach this sandbox any more.
process.on('disconnect', () => process.exit(0))

process.on('message', (msg: ParentMessage) => {
  if (msg?.t === 'init') void onInit(msg)
  else if (msg?.t === 'invoke') onInvoke(msg)
  else if (msg?.t === 'bind-result') onBindResult(msg)
  else if (msg?.t === 'chunk-ack') onChunkAck(msg)
})
send({ t: 'boot' })
