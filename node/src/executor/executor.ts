/**
 * The executor: runs invocations routed to this node (from its own router directly, from other
 * routers over `fnmesh.exec.<node id>`) in a sandbox, writes the meter record durably, and only
 * then returns the result. Never takes more than `slots` at once: a full or draining node
 * answers FNMESH_ERR_BUSY, and one whose disk is too full to meter answers FNMESH_ERR_DISK_FULL,
 * so the router picks another peer. A router that sees no free slot anywhere sends the
 * invocation with `queueMs` (what the caller's deadline leaves): a full node then keeps it waiting
 * (first come, first served, at most `maxQueue`) when its expected wait fits (admit.ts, ../wait.ts)
 * and hands it the next slot that frees, which it knows at once, where a router would learn of it
 * only from the next advert; BUSY at once when the wait would not fit, and if none frees within
 * queueMs after all.
 * Ran implies metered: before a run starts, the record it would write is checked against the
 * rules peers apply (metering/records/record.ts refusal); a run that could not be metered never starts
 * (FNMESH_ERR_INVALID_ARGUMENT, say a spec's memory out of range or an event id over the limit).
 */
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node'
import { decode, encode, Outcome, type Encodable, type ExecRequest, type InvokeResult, type MeterBundle, type MeterRecord } from '../../../proto/codec.js'
import { CapacityError, FnmeshError, FunctionError, fnmeshError, toErrorInfo } from '../../../proto/errors.js'
import { FUNCTION_NAME_PATTERN, MAX_ID_BYTES, STREAM_RESULT_LIMIT, SYNC_PAYLOAD_LIMIT, execSubject, probeSubject } from '../../../proto/subjects.js'
import { StreamSender, type StreamSink } from '../../../core/stream.js'
import { availableParallelism } from 'node:os'
import type { StoredSpec } from '../../../core/registry.js'
import { eligible } from '../../../core/placement.js'
import type { Logger } from '../logger.js'
import type { FunctionCache } from '../registry/cache.js'
import type { LogSink } from '../sandbox/logs.js'
import type { SandboxPool } from '../sandbox/pool.js'
import type { BindCall, WireError } from '../sandbox/protocol.js'
import { Idle, Once } from '../lifecycle.js'
import { refusal } from '../metering/records/record.js'
import { DEFAULT_MAX_QUEUE, admit } from './admit.js'
import { DrainRate, RunTimes, expectedWaitMs } from '../wait.js'
import { noMetrics, type InvocationOutcome, type MetricsSink } from '../metrics/sink.js'
import { parseTraceparent, toXRay, validTracestate } from '../../../core/trace-context.js'
import { A, bounded } from '../tracing/attributes.js'
import { faasTrigger, noTracing, type TraceSpan, type Tracer } from '../tracing/tracer.js'

/** An invocation waiting in the executor's queue: resolved true with a slot, false when refused */
interface Queued { take: (slot: boolean) => void, runMs: number }

/**
 * Where the executor meters: written here and on a peer before it resolves, or, with `carry`
 * (the router is another node and stores the copy), written here and resolved with the signed
 * bundle the result carries back.
 */
export interface MeterSink {
  record: (record: Encodable<MeterRecord>, options?: { carry?: boolean, router?: string }) => Promise<Encodable<MeterBundle> | undefined | void>
  /** why this node must take no new work (its disk is full), or '' */
  refusing: () => string
}

export interface ExecutorComponents {
  /** where other routers send invocations (fnmesh.exec.<node id>); without it, direct calls only */
  nc?: NatsConnection
  nodeId: string
  functions: FunctionCache
  pool: SandboxPool
  meter: MeterSink
  logger: Logger
  /** called whenever in-flight changes (gossip sends a prompt advert, the router wakes waiters) */
  onLoadChange: () => void
  /** where the agent's own lines about an invocation go (timeouts, crashes), beside the function's */
  logs?: LogSink
  /** where invocations, throttles and queue waits are counted; none when metrics are off */
  metrics?: MetricsSink
  /** serves the binding calls of functions that declare bindings (node/src/bindings/server.ts) */
  bindings?: BindingService
  /** spans of each run's stages (none when tracing is off) */
  tracer?: Tracer
  /** this node's placement labels (config.ts): a function whose constraints they do not satisfy is not run here */
  labels?: Readonly<Record<string, string>>
  /** mesh-wide permits of functions deployed with --reserved (executor/reserved.ts); none: no cap is applied */
  reserved?: ReservedPermits
}

/** What the executor needs of the mesh-wide concurrency leases */
export interface ReservedPermits {
  acquire: (fn: string, limit: number) => Promise<boolean>
  release: (fn: string) => void
}

/** What the executor needs of the binding server: one call, scoped to the spec, bounded by the deadline */
export interface BindingService {
  serve: (spec: StoredSpec, call: BindCall, deadlineMs: number, usage?: { calls: number, bytes: number }, ctx?: { invocationId: string, hops: number }) => Promise<unknown>
  /** the invocation ended: what its calls left open (object writes) is dropped */
  end?: (invocationId: string) => void
}

export interface ExecutorInit {
  /** Max concurrent invocations. @default defaultSlots(): 4 per CPU, at least 2 */
  slots?: number
  /** Durations are billed rounded up to a multiple of this. @default 1 */
  billingGranularityMs?: number
  /** @default 6 MiB */
  payloadLimit?: number
  /** Most invocations waiting for a slot here (--max-queue). @default 10000 */
  maxQueue?: number
  /** Largest streamed response body (awslambda.streamifyResponse). @default 20 MiB */
  streamLimit?: number
}

/** How one run's body went: streamed (bytes, content type) or buffered */
interface StreamUsage { streamed: boolean, bytes: number, contentType: string }

export type ExecutorState = 'running' | 'draining' | 'stopped'


/** The longest error code a run can end with, for the record checked before it runs */
const LONGEST_ERROR = { code: 'FNMESH_ERR_FUNCTION_EXITED' }

const OUTCOME_OF: Record<string, Outcome> = {
  FNMESH_ERR_TIMEOUT: Outcome.OUTCOME_TIMEOUT,
  FNMESH_ERR_OUT_OF_MEMORY: Outcome.OUTCOME_OUT_OF_MEMORY,
  FNMESH_ERR_FUNCTION_EXITED: Outcome.OUTCOME_CRASH,
  FNMESH_ERR_FUNCTION_INIT: Outcome.OUTCOME_CRASH
}

const METRIC_OUTCOME_OF: Record<string, InvocationOutcome> = {
  FNMESH_ERR_TIMEOUT: 'timeout',
  FNMESH_ERR_OUT_OF_MEMORY: 'out_of_memory',
  FNMESH_ERR_FUNCTION_EXITED: 'crash',
  FNMESH_ERR_FUNCTION_INIT: 'crash'
}

/** Invocations a node runs at once unless told: 4 per CPU, at least 2 (config.ts uses it too) */
export function defaultSlots (): number {
  return Math.max(2, availableParallelism() * 4)
}

export class Executor {
  state: ExecutorState = 'running'
  inFlight = 0
  invocations = 0
  readonly slots: number
  private readonly granularity: number
  /** Largest event it runs a function with (the dispatcher dead-letters bigger ones) */
  readonly payloadLimit: number
  /** Largest streamed response body */
  readonly streamLimit: number
  /** most invocations waiting in its queue (admit.ts): what routers assume of every executor */
  readonly maxQueue: number
  /** observed slot time per function, for the expected wait (../wait.ts) */
  readonly runTimes = new RunTimes()
  /** the expected slot time of everything in the queue */
  private aheadMs = 0
  /** how fast slots really free while invocations wait */
  private readonly drainRate = new DrainRate()
  private sub: Subscription | undefined
  /** load probes of routers that route by probing (router/probe.ts) */
  private probes: Subscription | undefined
  private started = false
  /** invocations holding a slot, for drain() */
  private readonly busy = new Idle()
  private readonly draining = new Once(async () => {
    if (this.state === 'running') this.state = 'draining'
    this.refuseQueued()
    await this.busy.whenIdle()
  })
  private readonly slotWaiters = new Set<() => void>()
  /** invocations waiting for a slot, oldest first */
  private readonly queue: Queued[] = []
  /** calls picked for an idle provisioned sandbox here that have not taken a sandbox yet, per fn@version */
  private readonly provisionedClaims = new Map<string, number>()
  private readonly claimedBy = new Map<string, string>()
  private readonly log: Logger
  private readonly metrics: MetricsSink
  private readonly tracer: Tracer

  constructor (private readonly c: ExecutorComponents, init: ExecutorInit = {}) {
    this.slots = init.slots ?? defaultSlots()
    this.granularity = init.billingGranularityMs ?? 1
    this.payloadLimit = init.payloadLimit ?? SYNC_PAYLOAD_LIMIT
    this.streamLimit = init.streamLimit ?? STREAM_RESULT_LIMIT
    this.maxQueue = init.maxQueue ?? DEFAULT_MAX_QUEUE
    this.log = c.logger
    this.metrics = c.metrics ?? noMetrics
    this.tracer = c.tracer ?? noTracing
  }

  /** Listens for invocations routed here by other agents. Idempotent */
  start (): void {
    if (this.started) return
    this.started = true
    const nc = this.c.nc
    if (nc == null) return
    this.sub = nc.subscribe(execSubject(this.c.nodeId), {
      callback: (err, msg) => {
        if (err != null) { this.log.error({ err: err.message }, 'exec subscription failed'); return }
        void this.onMessage(msg)
      }
    })
    this.probes = nc.subscribe(probeSubject(this.c.nodeId), {
      callback: (err, msg) => {
        if (err != null) { this.log.error({ err: err.message }, 'probe subscription failed'); return }
        this.onProbe(msg)
      }
    })
  }

  /**
   * A router asks how loaded this node is right now (LoadProbe -> LoadAnswer). Cheap and
   * synchronous: counts only. A malformed probe gets no answer (the router counts it as none).
   */
  private onProbe (msg: Msg): void {
    if (msg.reply == null || msg.reply === '') return
    let fn = ''
    let version = 0
    try {
      const probe = decode('LoadProbe', msg.data)
      if (probe.function !== '' && FUNCTION_NAME_PATTERN.test(probe.function)) { fn = probe.function; version = probe.version }
    } catch {
      return
    }
    const accepting = this.state === 'running' && this.c.meter.refusing() === ''
    try {
      msg.respond(encode('LoadAnswer', { nodeId: this.c.nodeId, slots: this.slots, inFlight: this.inFlight, queued: this.queue.length, warm: fn !== '' && this.isWarm(`${fn}@${version}`), accepting }))
    } catch {}
  }

  isStarted (): boolean {
    return this.started
  }

  isWarm (key: string): boolean {
    return this.c.pool.hasIdle(key)
  }

  /** Idle provisioned sandboxes of `key` here (the router prefers them) */
  provisionedIdle (key: string): number {
    return this.c.pool.provisionedIdle(key)
  }

  /** Refuses new work and resolves when the last invocation finished. Idempotent: every caller gets the same promise */
  async drain (): Promise<void> {
    await this.draining.run()
  }

  /** Refuses new work at once (what runs finishes on its own). Idempotent */
  stop (): void {
    this.started = false
    this.state = 'stopped'
    this.refuseQueued()
    this.sub?.unsubscribe()
    this.sub = undefined
    this.probes?.unsubscribe()
    this.probes = undefined
  }

  private async onMessage (msg: Msg): Promise<void> {
    let result: Encodable<InvokeResult>
    let sender: StreamSender | undefined
    try {
      const req = decode('ExecRequest', msg.data, { maxBytes: this.payloadLimit + 64 * 1024 })
      // A router that takes a streamed reply gets the chunks on its reply subject, then the result.
      if (req.stream && this.c.nc != null && msg.reply != null && msg.reply !== '') sender = new StreamSender(this.c.nc, msg.reply)
      result = await this.execute(req, { stream: sender })
    } catch (err) {
      result = { ok: false, error: toErrorInfo(err), nodeId: this.c.nodeId }
    } finally {
      sender?.close()
    }
    try {
      msg.respond(encode('InvokeResult', result))
    } catch (err: any) {
      this.log.warn({ err: String(err?.message ?? err) }, 'could not answer the router')
    }
  }

  /**
   * Runs one invocation here; never throws. An abort ends its wait for a slot with
   * FNMESH_ERR_ABORTED; a run that started finishes (and is metered) whatever the signal says.
   */
  async execute (req: Encodable<ExecRequest>, options: { signal?: AbortSignal, stream?: StreamSink } = {}): Promise<Encodable<InvokeResult>> {
    const invocationId = req.invocationId ?? ''
    const { signal } = options
    if (signal?.aborted === true) return this.reject(invocationId, fnmeshError('FNMESH_ERR_ABORTED', `Invocation ${JSON.stringify(invocationId)} was aborted before it ran`))
    // The checks up to the invocation id come first, as before: a draining or refusing node says so whatever the request.
    const refusing = this.state === 'running' ? this.c.meter.refusing() : ''
    const key = `${req.function ?? ''}@${req.version ?? 0}`
    const waitMs = this.expectedWait()
    const admission = admit({ running: this.state === 'running', refusing, slots: this.slots, inFlight: this.inFlight, queued: this.queue.length, maxQueue: this.maxQueue, queueMs: req.queueMs ?? 0, waitMs })
    if (admission.kind === 'refuse' && admission.reason === 'draining') {
      return this.reject(invocationId, new CapacityError('FNMESH_ERR_BUSY', `Node ${this.c.nodeId} is draining`))
    }
    if (admission.kind === 'refuse' && admission.reason === 'refusing') {
      // It could not meter the invocation: running it would leave it unbilled.
      return this.reject(invocationId, new CapacityError('FNMESH_ERR_DISK_FULL', `Node ${this.c.nodeId} takes no new work: ${refusing}`))
    }
    if (invocationId === '' || Buffer.byteLength(invocationId) > MAX_ID_BYTES) {
      return this.reject(invocationId, fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `Invocation id of ${Buffer.byteLength(invocationId)} bytes is invalid: use 1-${MAX_ID_BYTES} bytes`))
    }
    // Routed here for an idle provisioned sandbox another call took first: BUSY at once (the
    // router asks another holder) rather than a cold start where a warm one waits elsewhere.
    if (req.provisionedPick === true) {
      if (this.claimedBy.has(invocationId) || this.c.pool.provisionedIdle(key) - (this.provisionedClaims.get(key) ?? 0) <= 0) {
        return this.reject(invocationId, new CapacityError('FNMESH_ERR_BUSY', `Node ${this.c.nodeId} has no idle provisioned sandbox of ${key} left`))
      }
      this.provisionedClaims.set(key, (this.provisionedClaims.get(key) ?? 0) + 1)
      this.claimedBy.set(invocationId, key)
    }
    try {
      return await this.admitAndRun(req, invocationId, key, waitMs, admission, options)
    } finally {
      this.releaseClaim(invocationId)
    }
  }

  /** A provisioned claim ends when its call takes a sandbox (or never will) */
  private releaseClaim (invocationId: string): void {
    const key = this.claimedBy.get(invocationId)
    if (key == null) return
    this.claimedBy.delete(invocationId)
    const n = (this.provisionedClaims.get(key) ?? 1) - 1
    if (n <= 0) this.provisionedClaims.delete(key)
    else this.provisionedClaims.set(key, n)
  }

  private async admitAndRun (req: Encodable<ExecRequest>, invocationId: string, key: string, waitMs: number, admission: ReturnType<typeof admit>, options: { signal?: AbortSignal, stream?: StreamSink }): Promise<Encodable<InvokeResult>> {
    const { signal } = options
    const queuedAt = Date.now()
    // Spans only for what this node takes (runs or queues): a refusal shows on the router's dispatch span.
    const span = this.tracer.enabled && admission.kind !== 'refuse' ? this.serverSpan(req, invocationId, queuedAt) : undefined
    if (admission.kind === 'run') {
      this.inFlight++
      this.busy.enter()
    } else {
      // A slot handed over by a finishing invocation is already counted in inFlight.
      const waited = admission.kind === 'queue' ? await this.waitInQueue(admission.ms, this.runTimes.estimate(key), signal) : 'refused'
      if (span != null) this.tracer.start('queue wait', { parent: span, startMs: queuedAt, attributes: { [A.queueMs]: req.queueMs ?? 0 } }).end()
      if (waited === 'aborted') return this.closed(span, this.reject(invocationId, fnmeshError('FNMESH_ERR_ABORTED', `Invocation ${JSON.stringify(invocationId)} was aborted while it waited for a slot`)))
      if (waited !== 'slot') {
        const why = admission.kind === 'refuse' && admission.reason === 'too-long'
          ? `its expected wait of ${Math.ceil(waitMs)} ms is over the ${req.queueMs ?? 0} ms the deadline leaves`
          : admission.kind === 'refuse' && admission.reason === 'queue-full' ? `its queue is full (${this.maxQueue})` : `no slot freed within ${req.queueMs ?? 0} ms`
        this.metrics.throttle(req.function ?? '')
        return this.closed(span, this.reject(invocationId, new CapacityError('FNMESH_ERR_BUSY', `Node ${this.c.nodeId} has no free slot (${this.slots} in flight, ${this.queue.length} waiting): ${why}`)))
      }
    }
    const slotAt = Date.now()
    this.metrics.queueWait(slotAt - queuedAt)
    this.metrics.running(req.function ?? '', 1)
    this.c.onLoadChange()
    try {
      return this.closed(span, await this.run(req, invocationId, req.stream === true ? options.stream : undefined, span))
    } catch (err) {
      return this.closed(span, this.reject(invocationId, err))
    } finally {
      this.metrics.running(req.function ?? '', -1)
      this.runTimes.observe(key, Date.now() - slotAt)
      this.drainRate.released(Date.now(), this.queue.length > 0)
      // The slot goes to the oldest queued invocation, if any, else it frees.
      const next = this.state === 'running' ? this.queue.shift() : undefined
      if (next != null) {
        this.aheadMs -= next.runMs
        next.take(true)
      }
      else {
        this.inFlight--
        this.busy.leave()
      }
      this.c.onLoadChange()
      const waiters = [...this.slotWaiters]
      this.slotWaiters.clear()
      for (const w of waiters) w()
    }
  }

  /**
   * As execute(), but an invocation that finds the node full waits here for a slot instead of
   * being refused (events pulled from JetStream: they are already this node's). Still refused
   * when the node drains, so the caller can hand the event back. `onWait` runs while it waits.
   */
  async executeWhenFree (req: Encodable<ExecRequest>, onWait?: () => void): Promise<Encodable<InvokeResult>> {
    for (;;) {
      const result = await this.execute(req)
      const code = result.ok === true ? '' : result.error?.code ?? ''
      if ((code !== 'FNMESH_ERR_BUSY' && code !== 'FNMESH_ERR_THROTTLED') || this.state !== 'running') return result
      onWait?.()
      await new Promise<void>(resolve => {
        // A throttled event waits for a permit anywhere in the mesh: ask again soon.
        const timer = setTimeout(done, code === 'FNMESH_ERR_THROTTLED' ? 200 : 1000)
        function done (): void { clearTimeout(timer); resolve() }
        this.slotWaiters.add(done)
      })
    }
  }

  /** Invocations running and waiting here: what adverts and the router's own pick count */
  get load (): number {
    return this.inFlight + this.queue.length
  }

  /** Expected wait for a slot of one more invocation here (../wait.ts) */
  expectedWait (): number {
    const bySlotTimes = expectedWaitMs({ slots: this.slots, running: this.inFlight, aheadMs: Math.max(0, this.aheadMs), runMs: this.runTimes.estimate() })
    // Slots are not always what limits a node (its CPU, the metering disk): the rate at which
    // they really free while others wait says so, and the longer estimate of the two is used.
    return bySlotTimes === 0 ? 0 : Math.max(bySlotTimes, this.drainRate.waitBehind(this.queue.length))
  }

  /**
   * Expected slot time of one run of `key` (`function@version`) here, as routers weigh queues:
   * its observed slot time, or, when slots have been freeing slower than that (the node's CPU
   * or disk limits it), the gap between releases times the slots
   */
  runMs (key: string): number {
    return Math.max(this.runTimes.estimate(key), this.drainRate.gap * this.slots)
  }

  /** Waits up to `ms` (admit.ts bounds it) for a slot handed over by a finishing invocation */
  private async waitInQueue (ms: number, runMs: number, signal: AbortSignal | undefined): Promise<'slot' | 'refused' | 'timeout' | 'aborted'> {
    return await new Promise((resolve) => {
      const leave = (why: 'timeout' | 'aborted'): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        const i = this.queue.indexOf(entry)
        if (i >= 0) {
          this.queue.splice(i, 1)
          this.aheadMs -= runMs
        }
        this.c.onLoadChange()
        resolve(why)
      }
      const onAbort = (): void => { leave('aborted') }
      const entry: Queued = {
        runMs,
        take: (slot) => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          resolve(slot ? 'slot' : 'refused')
        }
      }
      const timer = setTimeout(() => { leave('timeout') }, ms)
      signal?.addEventListener('abort', onAbort, { once: true })
      this.queue.push(entry)
      this.aheadMs += runMs
      this.c.onLoadChange()
    })
  }

  private refuseQueued (): void {
    this.aheadMs = 0
    for (const q of this.queue.splice(0)) q.take(false)
  }

  /** Free slots now */
  get free (): number {
    return Math.max(0, this.slots - this.inFlight)
  }

  /**
   * The SERVER span of one run here (OTel FaaS): a child of the router's dispatch span, or of
   * the event's traceparent. Its children are the stages: queue wait, cold start, run, meter.
   */
  private serverSpan (req: Encodable<ExecRequest>, invocationId: string, startMs: number): TraceSpan {
    const trigger = req.trigger ?? 'sync'
    return this.tracer.start(bounded(req.function ?? ''), {
      kind: 'server',
      remote: { traceparent: req.traceparent, tracestate: req.tracestate },
      startMs,
      attributes: {
        [A.faasTrigger]: faasTrigger(trigger),
        [A.trigger]: bounded(trigger),
        [A.faasInvocationId]: bounded(invocationId),
        [A.faasName]: bounded(req.function ?? ''),
        [A.attempt]: req.attempt ?? 1,
        [A.nodeId]: this.c.nodeId,
        [A.eventId]: req.eventId != null && req.eventId !== '' ? bounded(req.eventId) : undefined
      }
    })
  }

  /** Ends the run's server span with its outcome */
  private closed (span: TraceSpan | undefined, result: Encodable<InvokeResult>): Encodable<InvokeResult> {
    if (span == null) return result
    if (result.version != null && result.version > 0) span.set(A.faasVersion, String(result.version))
    if (result.cold != null) span.set(A.faasColdstart, result.cold)
    if (result.ok !== true) span.fail(result.error?.code ?? 'FNMESH_ERR_INTERNAL', result.error?.errorMessage)
    span.end()
    return result
  }

  private reject (invocationId: string, err: unknown): Encodable<InvokeResult> {
    return { invocationId, ok: false, error: toErrorInfo(err), nodeId: this.c.nodeId }
  }

  private async run (req: Encodable<ExecRequest>, invocationId: string, sink: StreamSink | undefined, span?: TraceSpan): Promise<Encodable<InvokeResult>> {
    const name = req.function ?? ''
    // A call through an alias or to a version runs exactly that version's spec and code.
    const spec = req.pinned === true ? await this.c.functions.specAt(name, req.version ?? 0) : await this.c.functions.spec(name, req.version ?? 0)
    if (spec == null) throw fnmeshError('FNMESH_ERR_NOT_FOUND', `Function "${name}" is not deployed`)
    // A router with a stale or forged view may send work this node's labels do not allow.
    if (!eligible(this.c.labels ?? {}, spec)) {
      throw fnmeshError('FNMESH_ERR_NO_MATCHING_NODE', `Node ${this.c.nodeId} does not run "${name}": its labels do not satisfy the constraints ${(spec.constraints ?? []).join(', ')}`)
    }
    const reserved = spec.reserved ?? 0
    if (reserved > 0 && this.c.reserved != null) {
      // Lambda throttles a call over the function's reserved concurrency: nothing runs, nothing is metered.
      if (!await this.c.reserved.acquire(name, reserved)) {
        this.metrics.throttle(name)
        throw new CapacityError('FNMESH_ERR_THROTTLED', `Function "${name}" is at its reserved concurrency of ${reserved} across the mesh`)
      }
      try {
        return await this.runSpec(spec, req, invocationId, sink, span)
      } finally {
        this.c.reserved.release(name)
      }
    }
    return await this.runSpec(spec, req, invocationId, sink, span)
  }

  private async runSpec (spec: StoredSpec, req: Encodable<ExecRequest>, invocationId: string, sink: StreamSink | undefined, span?: TraceSpan): Promise<Encodable<InvokeResult>> {
    const name = spec.name
    // Ran implies metered: a run whose record peers (or this meter) would refuse never starts.
    const unmeterable = refusal(decode('MeterRecord', encode('MeterRecord', this.record(spec, req, Date.now(), spec.timeoutMs, true, LONGEST_ERROR))), this.c.nodeId, Date.now())
    if (unmeterable != null) {
      throw fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot run invocation ${JSON.stringify(invocationId)} of "${name}": its meter record would be refused (${unmeterable})`)
    }
    const taskRoot = await this.c.functions.taskRoot(spec)
    const startMs = Date.now()
    let acquired
    try {
      acquired = await this.c.pool.acquire(spec, taskRoot, { invocationId })
      this.releaseClaim(invocationId)
    } catch (err) {
      this.releaseClaim(invocationId)
      if (!(err instanceof FunctionError)) throw err
      // The function's code failed to load: that is the invocation's outcome, and it is metered.
      const error = lambdaForm({ code: err.code, errorType: err.errorType, errorMessage: err.message, trace: err.trace }, invocationId, spec.timeoutMs)
      this.logError(spec, invocationId, error)
      if (span != null) this.tracer.start('cold start', { parent: span, startMs, attributes: { [A.faasColdstart]: true } }).fail(err.code, err.message)
      return await this.finish(spec, req, startMs, 0, true, error, undefined, undefined, undefined, undefined, span)
    }
    const { worker, cold, initMs } = acquired
    if (span != null && cold) this.tracer.start('cold start', { parent: span, startMs, attributes: { [A.faasColdstart]: true, [A.initMs]: initMs ?? 0 } }).end()
    const payload = Buffer.from(req.payload ?? new Uint8Array(0)).toString('utf8')
    const attrs = req.attributes ?? {}
    const deadlineMs = Date.now() + spec.timeoutMs
    const usage = { calls: 0, bytes: 0 }
    const server = this.c.bindings
    const extra: Parameters<typeof worker.invoke>[3] = {}
    if (Object.keys(attrs).length > 0) extra.cloudEvent = attrs as Record<string, string>
    // Every invocation gets a handler, so a forged call from a function with no bindings is answered FORBIDDEN.
    const ctx = { invocationId, hops: req.hops ?? 0 }
    extra.bindings = async (call) => {
      if (server == null) throw fnmeshError('FNMESH_ERR_UNSUPPORTED', 'This agent serves no bindings')
      return await server.serve(spec, call, deadlineMs, usage, ctx)
    }
    const stream: StreamUsage = { streamed: false, bytes: 0, contentType: '' }
    const buffered: Buffer[] = []
    extra.onChunk = async (data, contentType) => {
      stream.bytes += data.byteLength
      stream.contentType = contentType
      if (sink == null) {
        // Called without a stream (plain invoke): the body is the result, within the buffered limit.
        if (stream.bytes > this.payloadLimit) throw fnmeshError('FNMESH_ERR_RESULT_INVALID', `Response payload size exceeded maximum allowed payload size (${this.payloadLimit} bytes): invoke it with a stream for up to ${this.streamLimit} bytes`, { errorType: 'Runtime.ResponseSizeTooLarge' })
        buffered.push(data)
        return
      }
      if (stream.bytes > this.streamLimit) throw fnmeshError('FNMESH_ERR_STREAM_TOO_LARGE', `The response stream of "${name}" passed the streamed limit of ${this.streamLimit} bytes`, { errorType: 'Runtime.ResponseSizeTooLarge' })
      await sink.write(stream.streamed ? { data } : { data, contentType, invocationId, nodeId: this.c.nodeId })
      stream.streamed = true
    }
    // The function's trace context: the run span's, or the caller's as it came when tracing is off.
    const runSpan = span != null ? this.tracer.start('run', { parent: span, attributes: { [A.faasName]: spec.name, [A.faasVersion]: String(spec.version) } }) : undefined
    const tp = runSpan != null ? runSpan.traceparent : req.traceparent
    const parsed = tp != null && tp !== '' ? parseTraceparent(tp) : undefined
    if (parsed != null) {
      extra.traceparent = tp ?? undefined
      const ts = runSpan != null ? runSpan.tracestate : validTracestate(req.tracestate)
      if (ts != null) extra.tracestate = ts
      extra.xrayTraceId = toXRay(parsed)
    }
    const out = await worker.invoke(invocationId, payload, deadlineMs, extra)
    server?.end?.(invocationId)
    this.c.pool.release(worker)
    if (runSpan != null) {
      runSpan.set(A.durationMs, out.durationMs)
      if (!out.ok) runSpan.fail((out.error as WireError).code, (out.error as WireError).errorType)
      runSpan.end()
    }
    if (out.ok) {
      if (out.streamed === true && sink == null) return await this.finish(spec, req, startMs, out.durationMs, cold, undefined, bodyAsResult(Buffer.concat(buffered)), usage, initMs, stream, span)
      if (out.streamed === true) stream.streamed = true
      return await this.finish(spec, req, startMs, out.durationMs, cold, undefined, out.payload, usage, initMs, stream, span)
    }
    const error = lambdaForm(out.error as WireError, invocationId, spec.timeoutMs)
    this.logError(spec, invocationId, error)
    return await this.finish(spec, req, startMs, out.durationMs, cold, error, undefined, usage, initMs, stream, span)
  }

  /** As Lambda, a failed invocation leaves its error in the function's log */
  private logError (spec: StoredSpec, invocationId: string, error: WireError): void {
    if (this.c.logs == null) return
    // Lambda's log line: "Task timed out after 3.00 seconds" (the record carries the id)
    const message = error.code === 'FNMESH_ERR_TIMEOUT'
      ? error.errorMessage.replace(/^RequestId: \S+ Error: /, '')
      : `Invoke Error ${JSON.stringify({ errorType: error.errorType, errorMessage: error.errorMessage, code: error.code })}`
    this.c.logs({ invocationId, function: spec.name, version: spec.version, timeMs: Date.now(), level: 'ERROR', message })
  }

  /**
   * Meters the invocation and builds its result. A router on another node that asked for it
   * (`carryMeter`) gets the signed record in the result and stores that second copy before it
   * answers; otherwise the meter waits for a peer's copy.
   */
  private async finish (spec: StoredSpec, req: Encodable<ExecRequest>, startMs: number, durationMs: number, cold: boolean, error?: WireError, payload?: string, usage?: { calls: number, bytes: number }, initMs?: number, stream?: StreamUsage, span?: TraceSpan): Promise<Encodable<InvokeResult>> {
    const record = { ...this.record(spec, req, startMs, durationMs, cold, error, usage), streamBytes: stream?.streamed === true ? stream.bytes : 0 }
    const carry = req.carryMeter === true && req.routerId != null && req.routerId !== '' && req.routerId !== this.c.nodeId
    let meterCopy: Encodable<MeterBundle> | undefined
    const meterSpan = span != null ? this.tracer.start('meter', { parent: span, attributes: { 'fnmesh.meter.carry': carry } }) : undefined
    try {
      meterCopy = (carry ? await this.c.meter.record(record, { carry, router: req.routerId ?? undefined }) : await this.c.meter.record(record)) ?? undefined
    } catch (err) {
      // Not metered means not acknowledged: the router may run it elsewhere.
      const e = err instanceof FnmeshError ? err : fnmeshError('FNMESH_ERR_METER_UNAVAILABLE', String(err))
      meterSpan?.fail(e.code, e.message)
      meterSpan?.end()
      throw e
    }
    meterSpan?.end()
    this.invocations++
    this.metrics.invocation({
      function: spec.name,
      version: spec.version,
      trigger: record.trigger ?? 'sync',
      outcome: error == null ? 'success' : METRIC_OUTCOME_OF[error.code] ?? 'error',
      code: error?.code,
      durationMs,
      initMs: cold ? initMs : undefined
    })
    const streamed = stream?.streamed === true ? { streamed: true, streamBytes: stream.bytes, contentType: stream.contentType } : {}
    const base = { invocationId: req.invocationId, nodeId: this.c.nodeId, version: spec.version, durationMs, cold, meterCopy, ...streamed }
    if (error != null) return { ...base, ok: false, error }
    if (stream?.streamed === true) return { ...base, ok: true, payload: new Uint8Array(0) }
    return { ...base, ok: true, payload: Buffer.from(payload ?? 'null', 'utf8') }
  }

  /** The meter record of one run (also built before it runs, to check that it can be written) */
  private record (spec: StoredSpec, req: Encodable<ExecRequest>, startMs: number, durationMs: number, cold: boolean, error?: Pick<WireError, 'code'>, usage?: { calls: number, bytes: number }): Encodable<MeterRecord> {
    const billedMs = Math.max(this.granularity, Math.ceil(durationMs / this.granularity) * this.granularity)
    return {
      invocationId: req.invocationId,
      function: spec.name,
      version: spec.version,
      nodeId: this.c.nodeId,
      startMs,
      durationMs,
      billedMs,
      memoryMb: spec.memoryMb,
      outcome: error == null ? Outcome.OUTCOME_OK : OUTCOME_OF[error.code] ?? Outcome.OUTCOME_ERROR,
      errorCode: error?.code ?? '',
      cold,
      attempt: req.attempt ?? 1,
      trigger: req.trigger ?? 'sync',
      eventId: req.eventId ?? '',
      idempotencyKey: req.idempotencyKey ?? '',
      bindingCalls: usage?.calls ?? 0,
      bindingBytes: usage?.bytes ?? 0
    }
  }
}

/**
 * The errors Lambda itself words for a run the runtime could not finish (timeout, the runtime's
 * exit, out of memory): "RequestId: ID Error: Task timed out after 3.00 seconds".
 */
export function lambdaForm (error: WireError, invocationId: string, timeoutMs: number): WireError {
  if (error.code === 'FNMESH_ERR_TIMEOUT' && error.errorType === 'Sandbox.Timedout') {
    return { ...error, errorMessage: `RequestId: ${invocationId} Error: Task timed out after ${(timeoutMs / 1000).toFixed(2)} seconds` }
  }
  if ((error.code === 'FNMESH_ERR_FUNCTION_EXITED' || error.code === 'FNMESH_ERR_OUT_OF_MEMORY') && error.errorMessage.startsWith('Runtime exited with error: ')) {
    return { ...error, errorMessage: `RequestId: ${invocationId} Error: ${error.errorMessage}` }
  }
  return error
}

/**
 * A streaming handler's body as the result of a plain invoke: the bytes themselves when they are
 * JSON, else the body as a JSON string (UTF-8), since results travel as JSON.
 */
function bodyAsResult (body: Buffer): string {
  const text = body.toString('utf8')
  try {
    JSON.parse(text)
    return text
  } catch {
    return JSON.stringify(text)
  }
}
