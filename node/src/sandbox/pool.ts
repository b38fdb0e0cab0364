/**
 * Warm pools of sandboxed workers. Generic workers are booted ahead of need (per memory size and
 * network access), so a cold start only places the function's code in a running, already
 * isolated process and loads it; a specialised worker then serves only that function version,
 * one invocation at a time, until it idles out (scale to zero), up to the function's
 * concurrency cap per node.
 */
import { parseBindings } from '../../../core/bindings.js'
import { CapacityError, FunctionError, fnmeshError } from '../../../proto/errors.js'
import { SYNC_PAYLOAD_LIMIT } from '../../../proto/subjects.js'
import type { StoredSpec } from '../../../core/registry.js'
import { Idle, Waiters, type Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import { distPath } from '../paths.js'
import { describeLayers, detectIsolation, OS_LAYERS, type IsolationPlan } from './layers/detect.js'
import { usablePlan } from './layers/reach.js'
import { Workspace } from './layers/workspace.js'
import { InvocationLogs, type LogSink } from './logs.js'
import { RuntimeError } from './runtime/errors.js'
import { parseHandler } from './runtime/handler.js'
import { functionEnv, logGroupName, logStreamName, Spawner, type Spawned, type SpawnVariant } from './spawner.js'
import type { SandboxWorker } from './worker.js'

export interface SandboxPoolInit {
  /** folder holding the sandboxes' slots (code and tmp folders) */
  workDir: string
  /** Isolation layers. @default detectIsolation({ mode: 'auto' }) at start */
  plan?: IsolationPlan
  /** A folder (the data dir) made private to the agent when sandboxes run as another uid without a mount namespace */
  protectDir?: string
  /** A specialised worker idle this long is stopped. @default 300000 */
  idleTtlMs?: number
  /** Generic workers kept booted per memory size in use. @default 2 */
  prewarm?: number
  /** Max live workers on this node (busy + idle + generic). @default 64 */
  maxWorkers?: number
  /** Time allowed for boot and for loading the function. @default 10000 */
  initTimeoutMs?: number
  /** Largest result, bytes of JSON. @default 6 MiB */
  resultLimit?: number
  /** Bytes of log messages kept per invocation; the rest is dropped with a note. @default 65536 */
  logLimit?: number
  /** How long an invocation waits for a sandbox of a function at its concurrency cap. @default 1000 */
  capWaitMs?: number
  /** Processes and threads per sandbox. @default 64 */
  pidsMax?: number
  /** CPU cores per sandbox where cgroups allow. @default 1 */
  cpus?: number
  /** Size of each sandbox's /tmp in MB (a tmpfs, counted in its memory). @default 512 */
  tmpMb?: number
  /** Where function log lines go */
  logs?: LogSink
  logger: Logger
}

export interface Acquired {
  worker: SandboxWorker
  cold: boolean
  /** ms spent loading the function (0 when warm) */
  initMs: number
}

export interface AcquireOptions {
  /** the invocation the worker is for: its log lines (init included) carry this id */
  invocationId?: string
}

const DEFAULT_MEMORY_MB = 128
export const RUNTIME_DIR = distPath('node/src/sandbox/runtime')

interface Meta { spawned: Spawned, logs?: InvocationLogs }

type Options = Required<Omit<SandboxPoolInit, 'logger' | 'plan' | 'protectDir' | 'logs'>>

export class SandboxPool implements Startable {
  private readonly idle = new Map<string, SandboxWorker[]>()
  private readonly generic = new Map<string, SandboxWorker[]>()
  private readonly live = new Set<SandboxWorker>()
  private readonly meta = new Map<SandboxWorker, Meta>()
  private readonly perKey = new Map<string, number>()
  /** invocations waiting for a sandbox of a "name@version" at its concurrency cap (FIFO per key) */
  private readonly waiters = new Waiters<string>()
  /** live workers: idle once every one has exited */
  private readonly alive = new Idle()
  private readonly opts: Options
  private readonly log: Logger
  private workspace: Workspace
  private spawner: Spawner | undefined
  private sweeper: NodeJS.Timeout | undefined
  private started = false
  plan: IsolationPlan | undefined
  coldStarts = 0
  /** workers killed to make room and not yet exited */
  private readonly evicting = new Set<SandboxWorker>()
  /** provisioned workers (--provisioned): never idled out or evicted to make room */
  private readonly provisioned = new Set<SandboxWorker>()
  /** provision() calls in progress per key */
  private readonly provisioning = new Map<string, number>()
  warmStarts = 0

  constructor (private readonly init: SandboxPoolInit) {
    this.opts = {
      workDir: init.workDir,
      idleTtlMs: init.idleTtlMs ?? 300_000,
      prewarm: init.prewarm ?? 2,
      maxWorkers: init.maxWorkers ?? 64,
      initTimeoutMs: init.initTimeoutMs ?? 10_000,
      resultLimit: init.resultLimit ?? SYNC_PAYLOAD_LIMIT,
      logLimit: init.logLimit ?? 65536,
      capWaitMs: init.capWaitMs ?? 1000,
      pidsMax: init.pidsMax ?? 64,
      cpus: init.cpus ?? 1,
      tmpMb: init.tmpMb ?? 512
    }
    this.log = init.logger
    this.workspace = new Workspace(this.opts.workDir)
  }

  /**
   * Detects the isolation layers (unless given), prepares the slots, boots one sandbox with every
   * layer to prove they work together, and starts the prewarmed generic workers. In strict mode
   * a missing OS layer, or a sandbox that cannot boot with them, fails the start.
   */
  async start (): Promise<void> {
    if (this.started) return
    // Strict without the OS layers fails here; without a mount namespace, a sandbox uid must reach its code.
    let plan = usablePlan(this.init.plan ?? detectIsolation({ mode: 'auto' }), this.opts.workDir, this.init.protectDir, this.log)
    let canary: Spawned
    for (let fellBack = false; ; fellBack = true) {
      this.plan = plan
      // Without bubblewrap, /tmp is the slot's folder: under unshare the sandbox mounts a tmpfs of
      // tmpMb there in its own mount namespace (command.ts); with no namespaces at all the agent
      // mounts it, as root (else the slot folder stays on the data disk, unbounded).
      this.workspace = new Workspace(this.opts.workDir, plan.namespaces == null && process.getuid?.() === 0 ? this.opts.tmpMb : undefined)
      this.workspace.open(plan.uidBase != null && !plan.mount ? this.init.protectDir : undefined)
      this.spawner = new Spawner({ plan, workspace: this.workspace, runtimeDir: RUNTIME_DIR, pidsMax: this.opts.pidsMax, cpus: this.opts.cpus, tmpMb: this.opts.tmpMb, logger: this.log })
      const { active, missing } = describeLayers(plan)
      this.log.info({ mode: plan.mode, active, missing, prewarm: this.opts.prewarm }, `sandbox layers: ${active.join(', ')}`)
      try {
        // One sandbox booted with every layer proves they work together here; it becomes the first generic worker.
        canary = await this.spawner.canary(this.opts.initTimeoutMs)
        break
      } catch (err: any) {
        if (plan.mode !== 'auto' || fellBack) throw err
        // Layers that probe fine one by one may still fail together (a path the sandbox uid cannot
        // read, a tool that misbehaves): auto mode carries on with the permission model alone.
        this.log.error({ err: String(err?.message ?? err) }, 'sandbox did not boot with the OS layers: running functions with the permission model only')
        plan = detectIsolation({ mode: 'auto', disable: [...OS_LAYERS] })
      }
    }
    this.started = true
    if (this.opts.prewarm > 0) {
      this.adopt(canary)
      this.generic.set(genericKey(DEFAULT_MEMORY_MB, false), [canary.worker])
      this.refill(DEFAULT_MEMORY_MB, false)
    } else {
      canary.worker.kill('canary done')
    }
    this.sweeper = setInterval(() => { this.sweep() }, Math.min(1000, this.opts.idleTtlMs))
    this.sweeper.unref()
  }

  isStarted (): boolean {
    return this.started
  }

  /** Kills every worker */
  stop (): void {
    if (!this.started && this.live.size === 0) return
    this.started = false
    clearInterval(this.sweeper)
    for (const w of this.live) w.kill('pool stopped')
    if (this.live.size === 0) this.workspace.close()
    this.idle.clear()
    this.generic.clear()
    this.perKey.clear()
    this.waiters.wakeAll()
  }

  /**
   * Resolves once every worker has exited and its slot and cgroup are gone (or after `timeoutMs`):
   * `true` when settled. Woken by the exits and the clean-ups themselves, not by polling.
   */
  async settled (timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    // The spawner's clean-up of a worker begins at its exit, before the pool hears of it.
    if (!await this.alive.whenIdle({ timeoutMs })) return false
    return await (this.spawner?.cleaning.whenIdle({ timeoutMs: deadline - Date.now() }) ?? true)
  }

  /** "name@version" keys with a live specialised worker */
  warmKeys (): string[] {
    return [...this.perKey.entries()].filter(([, n]) => n > 0).map(([k]) => k)
  }

  /** Sandboxes of "name@version" running an invocation (or loading for one) now */
  busyCount (key: string): number {
    return (this.perKey.get(key) ?? 0) - (this.idle.get(key)?.length ?? 0)
  }

  /** Specialised workers alive (idle or busy), for the metrics */
  get warmCount (): number {
    let n = 0
    for (const v of this.perKey.values()) n += v
    return n
  }

  hasIdle (key: string): boolean {
    return (this.idle.get(key)?.length ?? 0) > 0
  }

  get size (): number {
    return this.live.size
  }

  /** Generic workers booted and waiting for a function of this memory size */
  genericReady (memoryMb = DEFAULT_MEMORY_MB, egress = false): number {
    return (this.generic.get(genericKey(memoryMb, egress && this.plan?.net === true)) ?? []).filter(w => w.state === 'generic').length
  }

  /**
   * A worker specialised for `spec`: a warm idle one if any, else (under the function's
   * concurrency cap, waiting up to capWaitMs for one to free) a generic one loaded with the
   * function (cold). Init failures throw FunctionError with the Lambda error.
   */
  async acquire (spec: StoredSpec, taskRoot: string, options: AcquireOptions = {}): Promise<Acquired> {
    if (!this.started) throw new CapacityError('FNMESH_ERR_BUSY', 'The sandbox pool is stopped')
    const key = `${spec.name}@${spec.version}`
    try {
      parseHandler(spec.handler)
    } catch (err) {
      const e = err as RuntimeError
      throw new FunctionError('FNMESH_ERR_HANDLER_NOT_FOUND', e.message, { errorType: e.errorType })
    }
    if (spec.runtime === 'provided' && !confinesNativeCode(this.plan)) {
      throw fnmeshError('FNMESH_ERR_SANDBOX_UNAVAILABLE', `Cannot run "${spec.name}" (runtime provided) on this node: a custom runtime is native code, which Node's permission model does not confine, and this node gives sandboxes neither a mount namespace nor a uid of their own (install bubblewrap or run the agent as root; --sandbox none runs it unconfined)`)
    }
    const cap = spec.concurrency > 0 ? spec.concurrency : Infinity
    const deadline = Date.now() + this.opts.capWaitMs
    for (;;) {
      const warm = this.idle.get(key)?.pop()
      if (warm != null) {
        this.warmStarts++
        this.meta.get(warm)?.logs?.begin(options.invocationId ?? '')
        warm.state = 'busy'
        return { worker: warm, cold: false, initMs: 0 }
      }
      if ((this.perKey.get(key) ?? 0) < cap) break
      const left = deadline - Date.now()
      if (left <= 0 || !this.started) {
        throw new CapacityError('FNMESH_ERR_BUSY', `Function "${spec.name}" is at its concurrency limit of ${cap} on this node`)
      }
      await this.waiters.wait(key, { timeoutMs: left })
    }
    return await this.coldStart(spec, key, taskRoot, options)
  }

  /**
   * Keeps `count` provisioned workers of `spec` (--provisioned): starts the missing ones (loaded
   * with the function, `AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency`, then idle),
   * and turns extra ones into ordinary workers that idle out. Within the function's concurrency
   * cap on this node. Resolves with the number it holds; init failures are thrown.
   */
  async provision (spec: StoredSpec, taskRoot: string, count: number): Promise<number> {
    const key = `${spec.name}@${spec.version}`
    const mine = [...this.provisioned].filter(w => w.key === key && w.state !== 'dead')
    for (const w of mine.slice(count)) this.provisioned.delete(w)
    let have = Math.min(mine.length, count) + (this.provisioning.get(key) ?? 0)
    const cap = spec.concurrency > 0 ? spec.concurrency : Infinity
    while (this.started && have < count && (this.perKey.get(key) ?? 0) < cap) {
      this.provisioning.set(key, (this.provisioning.get(key) ?? 0) + 1)
      have++
      try {
        const { worker } = await this.coldStart(spec, key, taskRoot, {}, 'provisioned-concurrency')
        this.coldStarts--
        this.provisioned.add(worker)
        worker.once('exit', () => { this.provisioned.delete(worker) })
        worker.state = 'idle'
        this.release(worker)
      } finally {
        const n = (this.provisioning.get(key) ?? 1) - 1
        if (n <= 0) this.provisioning.delete(key)
        else this.provisioning.set(key, n)
      }
    }
    return [...this.provisioned].filter(w => w.key === key).length
  }

  /** Stops being provisioned for every key but those in `keep` (they become ordinary workers) */
  unprovision (keep: ReadonlySet<string>): void {
    for (const w of this.provisioned) if (w.key == null || !keep.has(w.key)) this.provisioned.delete(w)
  }

  /** Idle provisioned workers of "name@version" */
  provisionedIdle (key: string): number {
    return (this.idle.get(key) ?? []).filter(w => this.provisioned.has(w)).length
  }

  /** "name@version" once per idle provisioned worker (this node's advert) */
  provisionedKeys (): string[] {
    const out: string[] = []
    for (const [key, list] of this.idle) for (const w of list) if (this.provisioned.has(w)) out.push(key)
    return out
  }

  private async coldStart (spec: StoredSpec, key: string, taskRoot: string, options: AcquireOptions, initializationType?: string): Promise<Acquired> {
    this.perKey.set(key, (this.perKey.get(key) ?? 0) + 1)
    this.coldStarts++
    const started = performance.now()
    let worker: SandboxWorker | undefined
    try {
      // Without a network namespace every sandbox has the network: one kind of generic worker.
      const egress = spec.egress && this.plan?.net === true
      // Node started with the function's NODE_OPTIONS is booted for this function; generic
      // workers are plain Node ones or custom runtimes' hosts (which hold nothing of a function).
      const runtime = spec.runtime === 'provided' ? 'provided' : undefined
      if (runtime == null && spec.env.NODE_OPTIONS != null) {
        worker = this.spawn(spec.memoryMb, egress, { nodeOptions: spec.env.NODE_OPTIONS })
      } else {
        worker = this.generic.get(genericKey(spec.memoryMb, egress, runtime))?.shift() ?? this.spawn(spec.memoryMb, egress, { runtime })
        this.refill(spec.memoryMb, egress, runtime)
      }
      this.makeRoom()
      await worker.ready(this.opts.initTimeoutMs)
      const meta = this.meta.get(worker)
      if (meta == null) throw new Error('the sandbox exited before it was given the function')
      await (this.spawner as Spawner).fill(meta.spawned, taskRoot)
      if (this.init.logs != null) {
        meta.logs = new InvocationLogs({ function: spec.name, version: spec.version, limit: this.opts.logLimit, sink: this.init.logs })
        meta.logs.begin(options.invocationId ?? '')
      }
      const stream = logStreamName(spec.version)
      const result = await worker.init({
        taskRoot: meta.spawned.inside.task,
        handler: spec.handler,
        functionName: spec.name,
        functionVersion: String(spec.version),
        memoryMb: spec.memoryMb,
        env: initializationType != null ? { ...functionEnv(spec, meta.spawned.inside, stream), AWS_LAMBDA_INITIALIZATION_TYPE: initializationType } : functionEnv(spec, meta.spawned.inside, stream),
        resultLimit: this.opts.resultLimit,
        logLimit: this.opts.logLimit,
        logGroupName: logGroupName(spec.name),
        logStreamName: stream,
        invokedFunctionArn: `fnmesh:function:${spec.name}:${spec.version}`,
        bindings: parseBindings(spec.name, spec.bindings ?? []).map(b => ({ name: b.name, kind: b.kind, target: b.target, readOnly: b.readOnly }))
      }, this.opts.initTimeoutMs)
      if (!result.ok) {
        throw new FunctionError(result.error.code as never, result.error.errorMessage, { errorType: result.error.errorType, trace: result.error.trace })
      }
    } catch (err) {
      this.forget(key)
      worker?.kill('init failed')
      if (err instanceof FunctionError) throw err
      throw new FunctionError('FNMESH_ERR_FUNCTION_INIT', `Sandbox for "${spec.name}" did not start: ${String((err as Error)?.message ?? (err as { reason?: string })?.reason ?? err)}`)
    }
    worker.once('exit', () => { this.forget(key) })
    worker.state = 'busy'
    return { worker, cold: true, initMs: performance.now() - started }
  }

  /** Gives a worker back after an invocation; a dead one is dropped */
  release (worker: SandboxWorker): void {
    if (worker.state !== 'idle' || worker.key == null || !this.started) {
      if (worker.state !== 'dead') worker.kill('released while not idle')
      return
    }
    const list = this.idle.get(worker.key) ?? []
    list.push(worker)
    this.idle.set(worker.key, list)
    this.waiters.wake(worker.key)
  }

  /** Stops idle workers of `name` whose version is not `keepVersion` nor one of `alsoKeep` (versions aliases name) */
  retire (name: string, keepVersion: number, alsoKeep: readonly number[] = []): void {
    const keep = new Set([keepVersion, ...alsoKeep].map(String))
    for (const [key, list] of this.idle) {
      const at = key.lastIndexOf('@')
      if (key.slice(0, at) === name && !keep.has(key.slice(at + 1))) {
        for (const w of list) w.kill('retired by a new version')
        this.idle.delete(key)
      }
    }
  }

  private forget (key: string): void {
    const n = (this.perKey.get(key) ?? 1) - 1
    if (n <= 0) this.perKey.delete(key)
    else this.perKey.set(key, n)
    this.waiters.wake(key)
  }

  private spawn (memoryMb: number, egress: boolean, variant?: SpawnVariant): SandboxWorker {
    return this.adopt((this.spawner as Spawner).spawn(memoryMb, egress, variant))
  }

  private adopt (spawned: Spawned): SandboxWorker {
    const { worker } = spawned
    this.live.add(worker)
    this.alive.enter()
    this.meta.set(worker, { spawned })
    worker.on('exit', (death) => {
      this.live.delete(worker)
      this.alive.leave()
      this.meta.delete(worker)
      this.removeFromLists(worker)
      if (!this.started && this.live.size === 0) this.workspace.close()
      this.log.debug({ wid: worker.wid, fn: worker.key, ...death }, 'sandbox exited')
    })
    worker.on('invoke', (requestId) => { this.meta.get(worker)?.logs?.begin(requestId) })
    worker.on('line', (source, line, cut) => {
      const logs = this.meta.get(worker)?.logs
      if (logs == null) return
      if (source === 'log') logs.record(line, cut)
      else logs.raw(source, line, cut)
    })
    return worker
  }

  private refill (memoryMb: number, egress: boolean, runtime?: 'provided'): void {
    if (!this.started || this.opts.prewarm === 0) return
    const key = genericKey(memoryMb, egress, runtime)
    const list = this.generic.get(key) ?? []
    this.generic.set(key, list)
    while (list.length < this.opts.prewarm) {
      // Workers booted ahead come first: losing the least recently used idle specialised worker
      // costs its function a ~20 ms cold start later, while a cold start with no worker booted
      // ahead pays a whole process start now (many functions would otherwise fill the pool
      // with idle ones and turn every cold start into a spawn).
      if (this.staying >= this.opts.maxWorkers && !this.evictIdle()) break
      const w = this.spawn(memoryMb, egress, { runtime })
      w.ready(this.opts.initTimeoutMs).catch(() => {})
      list.push(w)
    }
  }

  /** Above maxWorkers, stop the least recently used idle workers */
  private makeRoom (): void {
    let excess = this.staying - this.opts.maxWorkers
    while (excess-- > 0 && this.evictIdle()) {}
  }

  /** Workers alive and not on their way out */
  private get staying (): number {
    return this.live.size - this.evicting.size
  }

  /** Stops the least recently used idle specialised worker; false if there is none */
  private evictIdle (): boolean {
    let oldest: SandboxWorker | undefined
    for (const list of this.idle.values()) {
      for (const w of list) if (!this.provisioned.has(w) && (oldest == null || w.lastUsedMs < oldest.lastUsedMs)) oldest = w
    }
    if (oldest == null) return false
    const w = oldest
    // Out of the idle lists at once, so nobody is handed a worker on its way out.
    this.removeFromLists(w)
    this.evicting.add(w)
    w.once('exit', () => { this.evicting.delete(w) })
    w.kill('evicted')
    return true
  }

  private sweep (): void {
    const cutoff = Date.now() - this.opts.idleTtlMs
    for (const list of this.idle.values()) {
      for (const w of list) if (w.lastUsedMs < cutoff && !this.provisioned.has(w)) w.kill('idle')
    }
  }

  private removeFromLists (worker: SandboxWorker): void {
    for (const lists of [this.idle, this.generic] as Array<Map<unknown, SandboxWorker[]>>) {
      for (const [k, list] of lists) {
        const i = list.indexOf(worker)
        if (i >= 0) list.splice(i, 1)
        if (list.length === 0 && lists === this.idle) lists.delete(k)
      }
    }
  }
}

/**
 * Whether a sandbox keeps native code (a custom runtime's bootstrap) from the agent's files: a
 * mount namespace that shows it only its own, or a uid of its own (the data folder is private to
 * the agent). `--sandbox none` is the operator's choice to run code unconfined.
 */
export function confinesNativeCode (plan: IsolationPlan | undefined): boolean {
  return plan == null || plan.mode === 'none' || plan.mount || plan.uidBase != null
}

function genericKey (memoryMb: number, egress: boolean, runtime?: 'provided'): string {
  return `${memoryMb}/${egress ? 'net' : 'nonet'}${runtime != null ? `/${runtime}` : ''}`
}
