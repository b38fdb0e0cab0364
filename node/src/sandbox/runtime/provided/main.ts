/**
 * The host of a Lambda custom runtime (`--runtime provided`) inside the sandbox. It speaks the
 * same IPC protocol as the Node runtime (boot, init, invoke), and instead of loading a handler it
 * serves the Runtime API on loopback (api.ts) and starts the bundle's executable `bootstrap` with
 * Lambda's environment and AWS_LAMBDA_RUNTIME_API, in the task root. The bootstrap's stdout and
 * stderr are the sandbox's own (the agent keeps them as the function's log lines).
 *
 * Init ends at the bootstrap's first `next`; an init error it posts, or its exit, fails the init.
 * Each invocation ends with its response or error; a bootstrap that exits during one fails it
 * (Runtime.ExitError) and ends the sandbox, as on Lambda.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants, statSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { connect } from 'node:net'
import type { ChildMessage, InitRequest, InvokeRequest, ParentMessage, WireError } from '../../protocol.js'
import { RuntimeApi } from './api.js'
import { exitStatus } from './status.js'

type State = 'generic' | 'initializing' | 'ready' | 'invoking' | 'ending'

let state: State = 'generic'
let api: RuntimeApi | undefined
let bootstrap: ChildProcess | undefined
/** the IPC request being answered: the init, or the running invocation */
let current: { id: number, kind: 'init' | 'invoke', requestId?: string } | undefined

function send (msg: ChildMessage, then?: () => void): void {
  if (process.send == null || !process.connected) { then?.(); return }
  process.send(msg, undefined, undefined, () => { then?.() })
}

/** Stops the bootstrap and this host */
function end (status = 0): void {
  state = 'ending'
  try { bootstrap?.kill('SIGKILL') } catch {}
  api?.close()
  process.exit(status)
}

function failInit (error: WireError): void {
  const req = current
  current = undefined
  if (req?.kind === 'init') send({ t: 'init-error', id: req.id, error }, () => { end(1) })
  else end(1)
}

function onInit (msg: InitRequest): void {
  if (state !== 'generic') {
    send({ t: 'init-error', id: msg.id, error: { code: 'FNMESH_ERR_INTERNAL', errorType: 'Runtime.InvalidState', errorMessage: 'Sandbox is already specialised', trace: [] } })
    return
  }
  state = 'initializing'
  current = { id: msg.id, kind: 'init' }
  start(msg).catch((err) => {
    failInit({ code: 'FNMESH_ERR_FUNCTION_INIT', errorType: 'Runtime.Unknown', errorMessage: `The runtime API did not start: ${String(err?.message ?? err)}`, trace: [] })
  })
}

async function start (msg: InitRequest): Promise<void> {
  const path = `${msg.taskRoot}/bootstrap`
  // Lambda's words for a missing or unusable entry point.
  let entry: string | undefined
  try {
    if (!statSync(path).isFile()) entry = `Couldn't find valid bootstrap(s): [${path}]`
    else accessSync(path, constants.X_OK)
  } catch (err: any) {
    entry = err?.code === 'EACCES' ? `fork/exec ${path}: permission denied` : `Couldn't find valid bootstrap(s): [${path}]`
  }
  if (entry != null) {
    failInit({ code: 'FNMESH_ERR_HANDLER_NOT_FOUND', errorType: 'Runtime.InvalidEntrypoint', errorMessage: entry, trace: [] })
    return
  }
  api = new RuntimeApi({
    invokedFunctionArn: msg.invokedFunctionArn,
    resultLimit: msg.resultLimit,
    onReady: () => {
      if (current?.kind !== 'init') return
      const id = current.id
      current = undefined
      state = 'ready'
      send({ t: 'init-ok', id })
    },
    onInitError: (error) => { failInit(error) },
    onOutcome: (requestId, outcome) => {
      if (current?.kind !== 'invoke' || current.requestId !== requestId) return
      const id = current.id
      current = undefined
      state = 'ready'
      send(outcome.ok ? { t: 'result', id, ok: true, payload: outcome.payload } : { t: 'result', id, ok: false, error: outcome.error })
    }
  })
  const address = await api.listen()
  // A network namespace whose loopback stayed down (no `ip` tool) would leave the bootstrap nowhere to call.
  if (!await reachable(address)) {
    failInit({ code: 'FNMESH_ERR_FUNCTION_INIT', errorType: 'Runtime.Unknown', errorMessage: `The runtime API at ${address} is unreachable inside the sandbox: its loopback interface is down (is iproute2 installed?)`, trace: [] })
    return
  }
  const env = { ...msg.env, AWS_LAMBDA_RUNTIME_API: address }
  // Through sh, which closes the IPC channel (fd 3) and the log pipe (fd 4) first: the bootstrap
  // talks to the agent only through the Runtime API and its stdout and stderr.
  bootstrap = spawn('/bin/sh', ['-c', 'exec 3>&- 4>&-; exec "$0"', path], { cwd: msg.taskRoot, env, stdio: ['ignore', 'inherit', 'inherit'] })
  bootstrap.on('error', (err) => { onBootstrapEnd(null, null, err.message) })
  bootstrap.on('exit', (code, signal) => { onBootstrapEnd(code, signal) })
}

function onBootstrapEnd (code: number | null, signal: NodeJS.Signals | null, why?: string): void {
  if (state === 'ending') return
  const message = `Runtime exited with error: ${why ?? exitStatus(code, signal)}`
  const req = current
  current = undefined
  if (req?.kind === 'init') {
    send({ t: 'init-error', id: req.id, error: { code: 'FNMESH_ERR_FUNCTION_EXITED', errorType: 'Runtime.ExitError', errorMessage: message, trace: [] } }, () => { end(1) })
  } else if (req?.kind === 'invoke') {
    send({ t: 'result', id: req.id, ok: false, fatal: true, error: { code: 'FNMESH_ERR_FUNCTION_EXITED', errorType: 'Runtime.ExitError', errorMessage: message, trace: [] } }, () => { end(1) })
  } else {
    end(1)
  }
}

function onInvoke (msg: InvokeRequest): void {
  if (state !== 'ready' || api == null) {
    send({ t: 'result', id: msg.id, ok: false, error: { code: 'FNMESH_ERR_INTERNAL', errorType: 'Runtime.InvalidState', errorMessage: `Sandbox cannot invoke while ${state}`, trace: [] } })
    return
  }
  state = 'invoking'
  current = { id: msg.id, kind: 'invoke', requestId: msg.requestId }
  api.invoke({ requestId: msg.requestId, payload: msg.payload, deadlineMs: msg.deadlineMs, traceId: traceId() })
}

async function reachable (address: string): Promise<boolean> {
  const [host, port] = address.split(':')
  return await new Promise((resolve) => {
    const socket = connect({ host, port: Number(port) })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => { resolve(false) })
  })
}

/** An X-Ray trace header of a new trace, as Lambda gives each invocation */
function traceId (): string {
  const seconds = Math.floor(Date.now() / 1000).toString(16).padStart(8, '0')
  return `Root=1-${seconds}-${randomBytes(12).toString('hex')};Parent=${randomBytes(8).toString('hex')};Sampled=0`
}

process.on('uncaughtException', (err) => {
  const error: WireError = { code: 'FNMESH_ERR_INTERNAL', errorType: 'Runtime.Unknown', errorMessage: `The runtime host failed: ${String(err?.message ?? err)}`, trace: [] }
  const req = current
  current = undefined
  if (req?.kind === 'init') send({ t: 'init-error', id: req.id, error }, () => { end(1) })
  else if (req?.kind === 'invoke') send({ t: 'result', id: req.id, ok: false, fatal: true, error }, () => { end(1) })
  else end(1)
})
// The agent is gone: nothing can reach this sandbox any more.
process.on('disconnect', () => { end(0) })

process.on('message', (msg: ParentMessage) => {
  if (msg?.t === 'init') onInit(msg)
  else if (msg?.t === 'invoke') onInvoke(msg)
})
send({ t: 'boot' })
