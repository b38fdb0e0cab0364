/**
 * Parent side of one sandboxed child process: boot, specialise once, invoke one at a time,
 * kill. A child that failed init, crashed, timed out or reported a fatal error is never reused.
 *
 * Killing SIGKILLs everything inside the sandbox: the processes of its cgroup (when it has one)
 * and its process group. With a namespace monitor in front (bwrap, unshare --fork) the inside
 * goes first so the monitor reaps it and exits by itself, leaving no zombie behind.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { constants } from 'node:os'
import type { WorkerCgroup } from './layers/cgroup.js'
import type { SandboxCommand } from './layers/command.js'
import { LineSplitter } from './logs.js'
import { exitStatus } from './runtime/provided/status.js'
import type { BindCall, BindReply, ChildMessage, ChunkAck, InitRequest, StreamChunkMessage, WireError } from './protocol.js'

export type WorkerState = 'booting' | 'generic' | 'initializing' | 'idle' | 'busy' | 'dead'

export interface SpawnSpec {
  command: SandboxCommand
  /** environment of the child before specialisation */
  env: Record<string, string>
  /** the function's memory, MB (for error messages) */
  memoryMb: number
  cgroup?: WorkerCgroup
  /** the spawned process waits for the sandbox (bwrap, unshare --fork) rather than being it */
  monitor: boolean
}

export interface InvokeOutcome {
  ok: boolean
  payload?: string
  /** the handler streamed its response through `onChunk` (payload is then empty) */
  streamed?: boolean
  error?: WireError
  durationMs: number
}

/** Why a worker died, as seen from the parent */
export interface Death { code: number | null, signal: NodeJS.Signals | null, oom: boolean, reason: string }

export type OutputSource = 'log' | 'stdout' | 'stderr'

/**
 * Serves one binding call of the running invocation (node/src/bindings/server.ts, bound by the
 * executor to the spec and deadline); rejects with a coded error, which goes back to the child.
 */
export type BindingHandler = (call: BindCall) => Promise<unknown>

/**
 * Takes one piece of a streaming handler's response (the executor forwards or buffers it);
 * resolves when the next may come, rejects with a coded error that ends the stream.
 */
export type ChunkHandler = (data: Buffer, contentType: string) => Promise<void>

/** Largest base64 text of one chunk message from the child (256 KiB of data) */
const MAX_CHUNK_TEXT = Math.ceil(256 * 1024 / 3) * 4

/** Binding calls one sandbox may have in flight; past it, calls are answered BUSY at once */
export const MAX_BINDS_IN_FLIGHT = 64

const STDERR_TAIL = 4096
const MAX_LINE = 256 * 1024
const SIGNALS = Object.fromEntries(Object.entries(constants.signals).map(([name, n]) => [n, name])) as Record<number, NodeJS.Signals>

let nextWorkerId = 1

export class SandboxWorker extends EventEmitter<{ exit: [Death], line: [source: OutputSource, line: string, cut: boolean], invoke: [requestId: string] }> {
  readonly wid = nextWorkerId++
  readonly memoryMb: number
  state: WorkerState = 'booting'
  /** "name@version" once specialised */
  key: string | undefined
  lastUsedMs = Date.now()
  invocations = 0
  private readonly child: ChildProcess
  private readonly spec: SpawnSpec
  private readonly booted: Promise<void>
  private pending = new Map<number, { resolve: (m: ChildMessage) => void, reject: (e: Death) => void }>()
  private nextId = 1
  private stderrTail = ''
  private killedFor: string | undefined
  death: Death | undefined
  /** the running invocation's binding handler (none outside an invocation) */
  private serveBind: BindingHandler | undefined
  private bindsInFlight = 0
  /** the running invocation's chunk handler and IPC request id (none outside an invocation) */
  private takeChunk: ChunkHandler | undefined
  private invokeId: number | undefined
  /** the chunk being handled: the child sends the next only after its ack */
  private chunkInFlight: Promise<void> | undefined

  constructor (spec: SpawnSpec) {
    super()
    this.spec = spec
    this.memoryMb = spec.memoryMb
    this.child = spawn(spec.command.file, spec.command.args, {
      cwd: spec.command.cwd,
      env: spec.env,
      // Own process group, so a timeout kills everything the function started.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc', 'pipe'],
      serialization: 'json'
    })
    const lines = (source: OutputSource): LineSplitter => new LineSplitter(MAX_LINE, (line, cut) => { this.emit('line', source, line, cut) })
    const pipe = (stream: NodeJS.ReadableStream | null | undefined, source: OutputSource): void => {
      if (stream == null) return
      const splitter = lines(source)
      stream.setEncoding('utf8')
      stream.on('data', (text: string) => {
        if (source === 'stderr') this.stderrTail = (this.stderrTail + text).slice(-STDERR_TAIL)
        splitter.push(text)
      })
      stream.on('end', () => { splitter.end() })
    }
    pipe(this.child.stdout, 'stdout')
    pipe(this.child.stderr, 'stderr')
    pipe(this.child.stdio[4] as NodeJS.ReadableStream | null, 'log')
    this.booted = new Promise((resolve, reject) => {
      this.pending.set(0, { resolve: () => { resolve() }, reject })
    })
    this.booted.catch(() => {})
    this.child.on('message', (msg: ChildMessage) => { this.onMessage(msg) })
    this.child.on('error', (err) => { this.onExit(null, null, `spawn failed: ${err.message}`) })
    this.child.on('exit', (code, signal) => {
      // stderr may still hold the tail that says why (out of memory): judge once it closed.
      let judged = false
      const judge = (): void => { if (!judged) { judged = true; this.onExit(code, signal) } }
      this.child.once('close', judge)
      setTimeout(judge, 200).unref()
    })
  }

  get pid (): number | undefined {
    return this.child.pid
  }

  /** Processes in this sandbox's cgroup (empty without one) */
  cgroupPids (): number[] {
    return this.spec.cgroup?.pids() ?? []
  }

  /** Resolves once the child runs and listens on IPC */
  async ready (timeoutMs: number): Promise<void> {
    await withTimeout(this.booted, timeoutMs, () => { this.kill('boot timed out') })
    if (this.state === 'booting') this.state = 'generic'
  }

  /** Loads the function into this (generic) worker */
  async init (msg: Omit<InitRequest, 't' | 'id'>, timeoutMs: number): Promise<{ ok: true } | { ok: false, error: WireError }> {
    this.state = 'initializing'
    this.key = `${msg.functionName}@${msg.functionVersion}`
    let reply: ChildMessage
    try {
      reply = await this.request({ t: 'init', id: 0, ...msg }, timeoutMs)
    } catch (err) {
      const death = err as Death
      const error = death.reason === 'timeout'
        ? { code: 'FNMESH_ERR_FUNCTION_INIT', errorType: 'Runtime.InitTimeout', errorMessage: `Function init did not finish within ${timeoutMs} ms`, trace: [] }
        : this.deathError(death)
      return { ok: false, error }
    }
    if (reply.t === 'init-ok') {
      this.state = 'idle'
      return { ok: true }
    }
    const error = reply.t === 'init-error' ? reply.error : { code: 'FNMESH_ERR_INTERNAL', errorType: 'Runtime.InvalidState', errorMessage: 'Unexpected reply to init', trace: [] }
    this.kill('init failed')
    return { ok: false, error }
  }

  /** Runs one invocation; kills the sandbox at `deadlineMs` */
  async invoke (requestId: string, payload: string, deadlineMs: number, extra?: { cloudEvent?: Record<string, string>, bindings?: BindingHandler, onChunk?: ChunkHandler, traceparent?: string, tracestate?: string, xrayTraceId?: string }): Promise<InvokeOutcome> {
    const { bindings, onChunk, ...fields } = extra ?? {}
    this.serveBind = bindings
    this.takeChunk = onChunk
    this.state = 'busy'
    this.invocations++
    this.emit('invoke', requestId)
    const started = performance.now()
    try {
      const reply = await this.request({ t: 'invoke', id: 0, requestId, payload, deadlineMs, ...fields }, deadlineMs - Date.now())
      const durationMs = performance.now() - started
      if (reply.t !== 'result') throw new Error('Unexpected reply to invoke')
      // The child answers once every chunk was acknowledged; a chunk still being taken belongs to a failed run.
      if (reply.ok) return { ok: true, payload: reply.payload, durationMs, ...(reply.streamed === true ? { streamed: true } : {}) }
      if (reply.fatal === true) {
        this.kill('fatal error in function')
        // A custom runtime's bootstrap killed by the memory cgroup: its host says only that it exited.
        if (reply.error?.code === 'FNMESH_ERR_FUNCTION_EXITED' && (this.spec.cgroup?.oomKills() ?? 0) > 0) {
          return { ok: false, error: { ...reply.error, code: 'FNMESH_ERR_OUT_OF_MEMORY', errorType: 'Runtime.OutOfMemory' }, durationMs }
        }
      }
      return { ok: false, error: reply.error, durationMs }
    } catch (err) {
      return { ok: false, error: this.deathError(err as Death), durationMs: performance.now() - started }
    } finally {
      this.serveBind = undefined
      this.takeChunk = undefined
      this.invokeId = undefined
      await this.chunkInFlight?.catch(() => {})
      this.lastUsedMs = Date.now()
      // A worker killed here (fatal error) is dying: never idle, or the pool hands it out before its exit arrives.
      if (this.state === 'busy' && this.killedFor == null) this.state = 'idle'
    }
  }

  /** SIGKILL to everything in the sandbox; idempotent */
  kill (reason: string): void {
    this.killedFor ??= reason
    const pid = this.child.pid
    if (this.state === 'dead' || pid == null) return
    const inside = this.spec.cgroup?.pids().filter(p => p !== pid) ?? []
    const killGroup = (): void => {
      try { process.kill(-pid, 'SIGKILL') } catch {}
      try { this.child.kill('SIGKILL') } catch {}
    }
    for (const p of inside) { try { process.kill(p, 'SIGKILL') } catch {} }
    if (this.spec.monitor && inside.length > 0) {
      // The monitor reaps what it started and exits; if it does not, it goes too.
      setTimeout(() => { if (this.state !== 'dead') killGroup() }, 1000).unref()
    } else {
      killGroup()
    }
  }

  private deathError (death: Death): WireError {
    if (death.reason === 'timeout') {
      return { code: 'FNMESH_ERR_TIMEOUT', errorType: 'Sandbox.Timedout', errorMessage: 'Task timed out', trace: [] }
    }
    // Lambda's words (its runtime API reports the process status as Go prints it); the executor
    // prefixes "RequestId: ID Error: ".
    const status = exitStatus(death.code, death.signal)
    if (death.oom) {
      return { code: 'FNMESH_ERR_OUT_OF_MEMORY', errorType: 'Runtime.OutOfMemory', errorMessage: `Runtime exited with error: ${status}`, trace: [] }
    }
    return { code: 'FNMESH_ERR_FUNCTION_EXITED', errorType: 'Runtime.ExitError', errorMessage: `Runtime exited with error: ${status}`, trace: [] }
  }

  private async request (msg: ChildMessage | { t: 'init' | 'invoke', id: number, [k: string]: unknown }, timeoutMs: number): Promise<ChildMessage> {
    if (this.state === 'dead' || this.death != null) throw this.death ?? { code: null, signal: null, oom: false, reason: 'dead' }
    const id = this.nextId++
    if (msg.t === 'invoke') this.invokeId = id
    const reply = new Promise<ChildMessage>((resolve, reject) => { this.pending.set(id, { resolve, reject }) })
    this.child.send({ ...msg, id }, (err) => {
      if (err != null) this.kill(`ipc send failed: ${err.message}`)
    })
    return await withTimeout(reply, Math.max(0, timeoutMs), () => { this.kill('timeout') })
  }

  private onMessage (msg: ChildMessage): void {
    if (msg?.t === 'bind') { this.onBind(msg); return }
    if (msg?.t === 'chunk') { this.onChunk(msg); return }
    const id = msg?.t === 'boot' ? 0 : msg?.id
    const p = typeof id === 'number' ? this.pending.get(id) : undefined
    if (p == null) {
      // The runtime answers only what was asked: anything else is the function talking on the
      // channel itself (process.send), which could keep the agent busy parsing. It goes.
      this.kill('unsolicited message on the IPC channel')
      return
    }
    this.pending.delete(id as number)
    p.resolve(msg)
  }

  /**
   * A binding call from the child. Whatever it names, the handler decides (the scope is the
   * spec's, never the child's word); outside an invocation there is nothing to serve.
   */
  private onBind (call: BindCall): void {
    const id = call.id
    if (typeof id !== 'number' || !Number.isSafeInteger(id)) { this.kill('malformed binding call on the IPC channel'); return }
    const answer = (reply: Omit<BindReply, 't' | 'id'>): void => {
      if (this.state === 'dead' || !this.child.connected) return
      this.child.send({ t: 'bind-result', id, ...reply } satisfies BindReply, (err) => { if (err != null) this.kill(`ipc send failed: ${err.message}`) })
    }
    const serve = this.serveBind
    if (serve == null || this.state !== 'busy') {
      answer({ ok: false, error: { code: 'FNMESH_ERR_FORBIDDEN', errorType: 'Binding.Forbidden', errorMessage: 'Binding call refused: no invocation with bindings is running', trace: [] } })
      return
    }
    if (this.bindsInFlight >= MAX_BINDS_IN_FLIGHT) {
      answer({ ok: false, error: { code: 'FNMESH_ERR_BUSY', errorType: 'Binding.Busy', errorMessage: `Binding call refused: ${MAX_BINDS_IN_FLIGHT} calls of this sandbox are already in flight`, trace: [] } })
      return
    }
    this.bindsInFlight++
    serve(call).then(
      (value) => { answer({ ok: true, value }) },
      (err) => { answer({ ok: false, error: bindError(err) }) }
    ).finally(() => { this.bindsInFlight-- })
  }

  /**
   * A piece of a streaming handler's response. Only the running invocation may stream, one piece
   * at a time (the runtime waits for each ack): anything else is not our runtime talking.
   */
  private onChunk (msg: StreamChunkMessage): void {
    const take = this.takeChunk
    if (this.state !== 'busy' || take == null || msg.id !== this.invokeId || this.chunkInFlight != null ||
      typeof msg.n !== 'number' || !Number.isSafeInteger(msg.n) || typeof msg.data !== 'string' || msg.data.length > MAX_CHUNK_TEXT ||
      typeof msg.ct !== 'string' || msg.ct.length > 256) {
      this.kill('unexpected or malformed stream chunk on the IPC channel')
      return
    }
    const n = msg.n
    const answer = (error?: WireError): void => {
      if (this.state === 'dead' || !this.child.connected) return
      this.child.send({ t: 'chunk-ack', n, ...(error != null ? { error } : {}) } satisfies ChunkAck, (err) => { if (err != null) this.kill(`ipc send failed: ${err.message}`) })
    }
    const handling = take(Buffer.from(msg.data, 'base64'), msg.ct).then(
      () => { answer() },
      (err) => { answer(bindError(err, 'Runtime.ResponseStreamError')) }
    ).finally(() => { if (this.chunkInFlight === handling) this.chunkInFlight = undefined })
    this.chunkInFlight = handling
  }

  private onExit (code: number | null, signal: NodeJS.Signals | null, reason?: string): void {
    if (this.state === 'dead') return
    this.state = 'dead'
    const oom = (this.spec.cgroup?.oomKills() ?? 0) > 0 || /heap out of memory|Reached heap limit|Allocation failed|out of memory|Cannot allocate memory/i.test(this.stderrTail)
    if (this.killedFor != null && signal == null) {
      // Killed here with SIGKILL: a namespace monitor in front reports its own status instead.
      signal = 'SIGKILL'
      code = null
    } else if (this.spec.monitor && signal == null && code != null && code > 128 && SIGNALS[code - 128] != null) {
      // A monitor reports its sandbox's signal as 128 + the signal number.
      signal = SIGNALS[code - 128]
      code = null
    }
    this.death = { code, signal, oom, reason: this.killedFor ?? reason ?? 'exited' }
    for (const p of this.pending.values()) p.reject(this.death)
    this.pending.clear()
    this.emit('exit', this.death)
  }
}

function bindError (err: any, fallbackType = 'Binding.Error'): WireError {
  const code = typeof err?.code === 'string' && err.code.startsWith('FNMESH_ERR_') ? err.code : 'FNMESH_ERR_INTERNAL'
  return { code, errorType: typeof err?.errorType === 'string' && err.errorType !== 'FnmeshError' ? err.errorType : fallbackType, errorMessage: String(err?.message ?? err), trace: [] }
}

async function withTimeout<T> (promise: Promise<T>, ms: number, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  let grace: NodeJS.Timeout | undefined
  // On timeout the child is killed; the rejection that counts comes from its exit, which
  // carries why. The grace timer only guards against an exit that never comes.
  const timedOut = new Promise<never>((resolve, reject) => {
    timer = setTimeout(() => {
      onTimeout()
      grace = setTimeout(() => { reject({ code: null, signal: null, oom: false, reason: 'timeout' } satisfies Death) }, 5000)
    }, ms)
  })
  try {
    return await Promise.race([promise, timedOut])
  } finally {
    clearTimeout(timer)
    clearTimeout(grace)
  }
}
