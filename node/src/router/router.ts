/**
 * The router: takes sync invocations from NATS (one agent of the queue group gets each), picks
 * the least-loaded peer (choose.ts), sends the invocation there (or runs it here, when that
 * peer is this node) and answers the caller. A peer that fails or does not answer is replaced
 * once; with no free slot the invocation waits in the executor queue whose expected wait fits
 * its deadline, and FNMESH_ERR_NO_CAPACITY comes at once when none does.
 */
import { randomUUID } from 'node:crypto'
import { headers as natsHeaders, Match, RequestError, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node'
import { decode, encode, type ExecRequest, type InvokeResult, type Encodable, type MeterBundle } from '../../../proto/codec.js'
import { fnmeshError, toErrorInfo, type ErrorCode } from '../../../proto/errors.js'
import { AGENTS_QUEUE, Headers, FUNCTION_NAME_PATTERN, INVOKE_WILDCARD, KEEPALIVE_INTERVAL_MS, MAX_ID_BYTES, execSubject, probeSubject, SYNC_PAYLOAD_LIMIT } from '../../../proto/subjects.js'
import type { StoredSpec } from '../../../core/registry.js'
import { TRACEPARENT, TRACESTATE, traceContextOf, type TraceContext } from '../../../core/trace-context.js'
import { advertLabels, eligible, hasPlacement, placeProvisioned, preferred, termsOf } from '../../../core/placement.js'
import { StreamSender, ackChunk, isChunk, newInbox, readChunk, type StreamSink } from '../../../core/stream.js'
import type { PeerEntry, PeerTable } from '../gossip/peer-table.js'
import { Idle, Once, Waiters } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { FunctionCache } from '../registry/cache.js'
import { bestFree, bestQueue, chooseQueue, choosePeer, type Candidate } from './choose.js'
import { beforePick, dispatchState, nowhereToSend, onAnswer, queueBudget, sent, type DispatchRules, type DispatchState, type Refusal } from './dispatch.js'
import { LoadTracker } from './load.js'
import { PENALTY, PeerPenalties } from './penalty.js'
import { BASELINES, type BaselinePick, type BaselinePolicy, type RoutingPolicy } from './policies.js'
import { PROBE_ROUNDS, PROBE_TIMEOUT_MS, PROBES_PER_PICK, probeTargets } from './probe.js'
import { A, bounded } from '../tracing/attributes.js'
import { noTracing, type TraceSpan, type Tracer } from '../tracing/tracer.js'

export type { RoutingPolicy } from './policies.js'

/**
 * What the router needs of this node's own executor (agent.ts wires the Executor in): its
 * exact load, where a function is warm, and running an invocation without a network hop.
 */
export interface LocalNode {
  readonly slots: number
  /** invocations running and waiting in its queue */
  readonly load: number
  /** invocations running */
  readonly inFlight: number
  /** expected slot time of one run of `key` (`function@version`) on this node; the router assumes the same of every peer */
  runMs: (key: string) => number
  /** a sandbox of `fn@version` is idle here */
  isWarm: (key: string) => boolean
  /** idle provisioned sandboxes of `fn@version` here (--provisioned) */
  provisionedIdle?: (key: string) => number
  /** runs one invocation here; never throws; an abort answers FNMESH_ERR_ABORTED; a streaming handler's body goes to `stream` */
  execute: (req: Encodable<ExecRequest>, options?: { signal?: AbortSignal, stream?: StreamSink }) => Promise<Encodable<InvokeResult>>
}

/**
 * Where this node keeps the second copy of a peer's meter record, carried back with the result
 * (agent.ts wires Metering.keepCopy). Never throws; resolves once the copy is written, to where
 * it is: 'here', 'peer' (handed on, this node could not write it) or '' (nowhere: the answer
 * must not be given as a success, the copy it counts on does not exist).
 */
export interface MeterCopies {
  keep: (bundle: MeterBundle, from: string) => Promise<'here' | 'peer' | ''>
}

export interface RouterComponents {
  nc: NatsConnection
  nodeId: string
  table: PeerTable
  functions: FunctionCache
  local: LocalNode
  logger: Logger
  /** with it, peers send the run's signed record back with the result and this node stores it before answering */
  meterCopies?: MeterCopies
  /** spans of routing and dispatching (none when tracing is off) */
  tracer?: Tracer
}

/** The router's defaults (config.ts applies the same to the agent's options) */
export const ROUTER_DEFAULTS = {
  /** baseline policies: how long an invocation may wait at the router for a slot (least-loaded: the caller's deadline) */
  queueWaitMs: 500,
  /** invocations waiting at this router at most (baseline policies) */
  maxQueued: 1000,
  /** added to the function's timeout for a peer's answer to come back */
  dispatchGraceMs: 12_000
} as const

export interface RouterInit {
  /** Baseline policies: how long an invocation may wait at the router for a free slot (least-loaded queues by the caller's deadline). @default 500 */
  queueWaitMs?: number
  /** Max invocations waiting for a slot. @default 1000 */
  maxQueued?: number
  /** Extra wait for a peer beyond the function's timeout. @default 12000 */
  dispatchGraceMs?: number
  /** @default 6 MiB */
  payloadLimit?: number
  /** @default Math.random */
  rng?: () => number
  /** How to pick a peer (policies.ts). @default "least-loaded" */
  policy?: RoutingPolicy
}

/** One invocation to route, from NATS or (later) from a trigger */
export interface RouteRequest {
  function: string
  /** an alias ("live"), a version ("3") or "$LATEST" (core/aliases.ts); absent = the latest version */
  qualifier?: string
  payload: Uint8Array
  /**
   * An invocation id minted inside this agent (the gateway's random request id); never taken
   * from a caller's message. Absent: the router mints one.
   */
  invocationId?: string
  /**
   * The caller's idempotency/correlation key, carried to logs and the meter record. Never the
   * invocation id: the router mints that, so no caller can merge, replace or hide records.
   */
  idempotencyKey?: string
  /** how long the caller waits; 0 = the default */
  timeoutMs?: number
  trigger?: string
  /** the caller's W3C trace context (already checked), which the route span continues */
  trace?: TraceContext
  /** functions before this one in a chain of invoke bindings (ExecRequest.hops) */
  hops?: number
}

export interface RouteOptions {
  /** the caller gave up: stop waiting and queueing, answer FNMESH_ERR_ABORTED */
  signal?: AbortSignal
  /**
   * The caller takes a streamed reply: a streaming handler's body goes here chunk by chunk and
   * the result says `streamed`. Once a chunk went, the invocation is never sent again.
   */
  stream?: StreamSink
}

/** A sink that remembers whether the body has started */
class TrackedSink implements StreamSink {
  bytes = 0
  started = false
  constructor (private readonly inner: StreamSink) {}
  async write (piece: Parameters<StreamSink['write']>[0]): Promise<void> {
    this.started = true
    this.bytes += piece.data.byteLength
    await this.inner.write(piece)
  }
}

const DEFAULT_CALLER_TIMEOUT_MS = 60_000

class DispatchFailure extends Error {}
class Aborted extends Error {}

const WORKING = natsHeaders()
WORKING.set(Headers.status, 'working')

interface Remote { reject: (err: Error) => void }

export class Router {
  readonly tracker: LoadTracker
  /** penalties from failed, refused and stalled dispatches, and the cap on believed slots */
  readonly penalties = new PeerPenalties()
  private sub: Subscription | undefined
  /** invocations waiting at the router for a slot (baseline policies, or every queue full) */
  private readonly waiters = new Waiters<'slot'>()
  private readonly remote = new Map<string, Set<Remote>>()
  private readonly warmSets = new WeakMap<object, Set<string>>()
  private readonly labelSets = new WeakMap<object, Readonly<Record<string, string>> | null>()
  /** invocations taken from NATS and not yet answered */
  private readonly active = new Idle()
  /** their requests, sent an interim reply by one shared timer (not a timer per invocation) */
  private readonly answering = new Set<Msg>()
  private keepalive: NodeJS.Timeout | undefined
  private readonly draining = new Once(async () => { await this.drainOnce() })
  private readonly baseline: BaselinePick | undefined
  /** routing "probe": the peer this router chose last (probed again first) */
  private probeMemory: string | undefined
  /**
   * Routing "probe", since start: how each pick went (its own node, a free peer or a queue from
   * probe answers, or the fallback to the adverts' view) and how probes were answered
   */
  readonly probeStats = { own: 0, free: 0, queue: 0, fallback: 0, answered: 0, unanswered: 0 }
  private readonly rules: DispatchRules
  private readonly init: Required<RouterInit>
  private readonly log: Logger
  private readonly tracer: Tracer
  /** invocations routed to each node by this router (for tests and `nodes`) */
  readonly routedTo = new Map<string, number>()

  constructor (private readonly c: RouterComponents, init: RouterInit = {}) {
    this.init = {
      queueWaitMs: init.queueWaitMs ?? ROUTER_DEFAULTS.queueWaitMs,
      maxQueued: init.maxQueued ?? ROUTER_DEFAULTS.maxQueued,
      dispatchGraceMs: init.dispatchGraceMs ?? ROUTER_DEFAULTS.dispatchGraceMs,
      payloadLimit: init.payloadLimit ?? SYNC_PAYLOAD_LIMIT,
      rng: init.rng ?? Math.random,
      policy: init.policy ?? 'least-loaded'
    }
    const fnmesh = this.init.policy === 'least-loaded' || this.init.policy === 'probe'
    this.rules = { queueWaitMs: this.init.queueWaitMs, maxQueued: this.init.maxQueued, queueAtExecutor: fnmesh }
    this.baseline = fnmesh ? undefined : BASELINES[this.init.policy as BaselinePolicy]()
    this.tracker = new LoadTracker()
    this.log = c.logger
    this.tracer = c.tracer ?? noTracing
    c.table.on('updated', (e) => { this.tracker.onAdvert(e.advert.nodeId); this.wake() })
    // A peer (re)joining starts without the failures of its time away (a healed partition, a
    // restart): they were its absence, and an idle mesh would otherwise route nothing to it until
    // they decayed (minutes after a 20 s cut). Failing again costs it its place again.
    c.table.on('added', (e) => { this.penalties.forget(e.advert.nodeId); this.tracker.onAdvert(e.advert.nodeId); this.wake() })
    c.table.on('removed', (id, reason) => { this.onPeerRemoved(id, reason) })
  }

  start (): void {
    if (this.sub != null) return
    // Interim replies tell callers this router is alive; one that stops hearing them re-sends.
    // Each caller hears one within KEEPALIVE_INTERVAL_MS of taking its request, as before.
    this.keepalive ??= setInterval(() => { this.sendKeepalives() }, KEEPALIVE_INTERVAL_MS)
    this.keepalive.unref()
    this.sub = this.c.nc.subscribe(INVOKE_WILDCARD, {
      queue: AGENTS_QUEUE,
      callback: (err, msg) => {
        if (err != null) { this.log.error({ err: err.message }, 'invoke subscription failed'); return }
        void this.onMessage(msg)
      }
    })
  }

  isStarted (): boolean {
    return this.sub != null
  }

  /** Stops taking invocations from NATS, then waits for those being routed. Idempotent: every caller gets the same promise */
  async drain (): Promise<void> {
    await this.draining.run()
  }

  private async drainOnce (): Promise<void> {
    const sub = this.sub
    this.sub = undefined
    if (sub != null && !this.c.nc.isClosed()) await sub.drain().catch(() => {})
    await this.active.whenIdle()
  }

  /** Stops taking invocations without waiting for those being routed */
  stop (): void {
    this.sub?.unsubscribe()
    this.sub = undefined
  }

  private sendKeepalives (): void {
    // Stopped or drained, with every taken invocation answered: nothing left to keep alive.
    if (this.sub == null && this.answering.size === 0) {
      clearInterval(this.keepalive)
      this.keepalive = undefined
      return
    }
    for (const msg of this.answering) {
      try { msg.respond(new Uint8Array(0), { headers: WORKING }) } catch {}
    }
  }

  /** Called by the local executor when it frees a slot */
  wake (): void {
    this.waiters.wakeAll()
  }

  private async onMessage (msg: Msg): Promise<void> {
    this.active.enter()
    this.answering.add(msg)
    let result: Encodable<InvokeResult>
    let sender: StreamSender | undefined
    try {
      const req = decode('InvokeRequest', msg.data, { maxBytes: this.init.payloadLimit + 64 * 1024 })
      const fromSubject = msg.subject.slice(msg.subject.lastIndexOf('.') + 1)
      if (!FUNCTION_NAME_PATTERN.test(fromSubject)) {
        throw fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `Function name "${shorten(fromSubject)}" is invalid: expected 1 to 64 letters, digits, "-" or "_", starting with a letter or digit`)
      }
      if (req.function !== '' && req.function !== fromSubject) {
        throw fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `Invocation names function "${shorten(req.function)}" but was sent to "${msg.subject}"`)
      }
      if (req.stream && msg.reply != null && msg.reply !== '') sender = new StreamSender(this.c.nc, msg.reply)
      // SDK invoke(): the caller's trace context rides in NATS headers (checked: invalid is ignored).
      const h = msg.headers
      const trace = h != null ? traceContextOf(h.get(TRACEPARENT, Match.IgnoreCase), h.get(TRACESTATE, Match.IgnoreCase)) : undefined
      result = await this.route({ function: fromSubject, qualifier: req.qualifier, payload: req.payload, idempotencyKey: req.idempotencyKey, timeoutMs: req.timeoutMs, trigger: 'sync', trace }, { stream: sender })
    } catch (err) {
      result = { ok: false, error: toErrorInfo(err) }
    } finally {
      // No chunk may follow the result.
      sender?.close()
    }
    this.answering.delete(msg)
    try {
      msg.respond(encode('InvokeResult', result))
    } catch (err: any) {
      this.log.warn({ err: String(err?.message ?? err) }, 'could not answer the caller')
    } finally {
      this.active.leave()
    }
  }

  /** Routes one invocation and returns its result; never throws */
  async route (req: RouteRequest, options: RouteOptions = {}): Promise<Encodable<InvokeResult>> {
    if (!this.tracer.enabled) return await this.routeOnce(req, options, undefined)
    const span = this.tracer.start(`route ${bounded(req.function)}`, {
      kind: 'client',
      remote: req.trace,
      attributes: { [A.faasInvokedName]: bounded(req.function), [A.trigger]: req.trigger ?? 'sync' }
    })
    const result = await this.routeOnce(req, options, span)
    if (result.invocationId != null && result.invocationId !== '') span.set(A.faasInvocationId, result.invocationId)
    if (result.nodeId != null && result.nodeId !== '') span.set(A.nodeId, result.nodeId)
    if (result.ok !== true) span.fail(result.error?.code ?? 'FNMESH_ERR_INTERNAL', result.error?.errorMessage)
    span.end()
    return result
  }

  private async routeOnce (req: RouteRequest, options: RouteOptions, span: TraceSpan | undefined): Promise<Encodable<InvokeResult>> {
    const invocationId = req.invocationId ?? randomUUID()
    const idempotencyKey = req.idempotencyKey ?? ''
    const fail = (code: ErrorCode, message: string): Encodable<InvokeResult> =>
      ({ invocationId, ok: false, error: toErrorInfo(fnmeshError(code, message)) })
    try {
      if (options.signal?.aborted === true) return fail('FNMESH_ERR_ABORTED', `Cannot invoke "${req.function}": the caller aborted`)
      if (Buffer.byteLength(idempotencyKey) > MAX_ID_BYTES) {
        return fail('FNMESH_ERR_INVALID_ARGUMENT', `Cannot invoke "${req.function}": the idempotency key is ${Buffer.byteLength(idempotencyKey)} bytes, over the limit of ${MAX_ID_BYTES}`)
      }
      const deadline = Date.now() + (req.timeoutMs != null && req.timeoutMs > 0 ? req.timeoutMs : DEFAULT_CALLER_TIMEOUT_MS)
      if (req.payload.byteLength > this.init.payloadLimit) {
        return fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Cannot invoke "${req.function}": the event is ${req.payload.byteLength} bytes, over the limit of ${this.init.payloadLimit}`)
      }
      // An alias picks its version per invocation, by its weights; a version pins it.
      const qualifier = req.qualifier ?? ''
      const latest = qualifier === '' ? await this.c.functions.spec(req.function) : null
      const resolved = qualifier === '' ? (latest != null ? { spec: latest, pinned: false } : null) : await this.c.functions.resolve(req.function, qualifier, this.init.rng)
      if (resolved == null) return fail('FNMESH_ERR_NOT_FOUND', `Function "${req.function}" is not deployed`)
      const spec = resolved.spec
      try {
        JSON.parse(Buffer.from(req.payload.buffer, req.payload.byteOffset, req.payload.byteLength).toString('utf8'))
      } catch (err: any) {
        return fail('FNMESH_ERR_INVALID_JSON', `Cannot invoke "${req.function}": the event is not valid JSON (${String(err?.message)})`)
      }
      const exec: Encodable<ExecRequest> = {
        invocationId,
        idempotencyKey,
        function: spec.name,
        version: spec.version,
        payload: req.payload,
        routerId: this.c.nodeId,
        deadlineMs: deadline,
        trigger: req.trigger ?? 'sync',
        stream: options.stream != null,
        // Tracing off: the caller's context goes to the function as it came. On: each dispatch's own.
        traceparent: span == null ? req.trace?.traceparent : undefined,
        tracestate: span == null ? req.trace?.tracestate : undefined,
        pinned: resolved.pinned,
        hops: req.hops ?? 0
      }
      return await this.dispatchWithRetry(spec, exec, deadline, options.signal, options.stream != null ? new TrackedSink(options.stream) : undefined, span)
    } catch (err) {
      return { invocationId, ok: false, error: toErrorInfo(err) }
    }
  }

  /** The dispatch loop: dispatch.ts decides, this does the picking, sending and waiting */
  private async dispatchWithRetry (spec: StoredSpec, exec: Encodable<ExecRequest>, deadline: number, signal: AbortSignal | undefined, stream?: TrackedSink, span?: TraceSpan): Promise<Encodable<InvokeResult>> {
    const key = `${spec.name}@${spec.version}`
    const s = dispatchState()
    const failed = new Set<string>()
    /** nodes that had no idle provisioned sandbox left for this invocation when asked for one */
    const noneIdle = new Set<string>()
    /** routing "probe": peers that did not answer a probe of the current pick (no answer in time, not accepting) */
    const unanswered = new Set<string>()
    const failures: string[] = []
    const refused = (r: Refusal): Encodable<InvokeResult> => this.error(exec, s.attempts, r.code, this.refusalMessage(r, spec, exec, failures))
    const placed = hasPlacement(spec)
    const aborted = (): Encodable<InvokeResult> => this.error(exec, s.attempts, 'FNMESH_ERR_ABORTED', `Cannot run "${spec.name}" (invocation ${exec.invocationId ?? ''}): the caller aborted`)
    for (;;) {
      if (signal?.aborted === true) return aborted()
      const late = beforePick(s, Date.now(), deadline)
      if (late != null) return refused(late)
      if (placed && !this.c.table.routable().some(e => eligible(this.labelsOf(e), spec))) {
        return this.error(exec, s.attempts, 'FNMESH_ERR_NO_MATCHING_NODE', `Cannot route invocation "${exec.invocationId ?? ''}" of "${spec.name}": no live node's labels satisfy its constraints ${termsOf(spec.constraints).map(t => t.raw).join(', ')}`)
      }
      // A provisioned pick that the node refuses (another router took its idle sandbox first) is
      // not asked for a provisioned sandbox again; the next pick goes to another holder.
      let peer = (spec.provisioned ?? 0) > 0 ? this.pickProvisioned(spec, key, failed.size > 0 || noneIdle.size > 0 ? new Set([...failed, ...noneIdle]) : failed) : undefined
      const provisionedPick = peer != null
      let queueMs = 0
      if (peer == null && this.init.policy === 'probe') {
        // Its own node with a free slot is checked and taken with no await in between: invocations
        // routed here at the same time each see the slots the others took (as pick() does).
        peer = this.ownFreeSlot(spec, failed)
        const probed = peer == null ? await this.probePick(spec, key, failed, s, deadline, unanswered) : undefined
        const st = this.probeStats
        if (peer != null) st.own++
        else if (probed == null) st.fallback++
        else if (probed.entry.self) st.own++
        else if (probed.queueMs > 0) st.queue++
        else st.free++
        peer ??= probed?.entry
        queueMs = probed?.queueMs ?? 0
      }
      // (probing found no room in PROBE_ROUNDS rounds: the view from the adverts, as least-loaded;
      // the peers that did not answer a probe of this pick only when no other would take it: a
      // stopped host holds what it is sent until its peers drop it, a slow one may be the only place)
      const quiet = unanswered.size > 0 ? new Set([...failed, ...unanswered]) : undefined
      unanswered.clear()
      for (const exclude of quiet != null ? [quiet, failed] : [failed]) {
        if (peer != null) break
        queueMs = 0
        peer = this.pick(spec, key, exclude)
        if (peer != null) break
        // Nothing free in this view, which lags the truth by up to an advert: wait in the queue of
        // an executor whose expected wait fits the deadline, which hands over a slot the moment one frees.
        const runMs = this.c.local.runMs(key)
        queueMs = queueBudget(s, this.rules, Date.now(), deadline, runMs)
        if (queueMs > 0) peer = this.pickQueue(spec, key, exclude, queueMs, runMs)
      }
      if (peer == null) {
        const next = nowhereToSend(s, this.rules, {
          now: Date.now(),
          deadline,
          queueMs,
          waiting: this.waiters.size(),
          allFailed: this.c.table.routable().every(e => failed.has(e.advert.nodeId) || (placed && !eligible(this.labelsOf(e), spec)))
        })
        if (next.kind === 'refuse') return refused(next)
        await this.waiters.wait('slot', { timeoutMs: next.ms, signal })
        continue
      }
      sent(s)
      const id = peer.advert.nodeId
      this.routedTo.set(id, (this.routedTo.get(id) ?? 0) + 1)
      let result: Encodable<InvokeResult> | undefined
      let failure: string | undefined
      const sentAt = Date.now()
      const attempt: Encodable<ExecRequest> = { ...exec, attempt: s.attempts, queueMs: Math.max(0, Math.floor(queueMs)), provisionedPick }
      const ds = span == null ? undefined : this.dispatchSpan(span, attempt, peer)
      if (ds != null) { attempt.traceparent = ds.traceparent; attempt.tracestate = ds.tracestate }
      try {
        result = await this.dispatch(peer, attempt, Math.min(deadline, Date.now() + queueMs + spec.timeoutMs + this.init.dispatchGraceMs), signal, stream)
      } catch (err) {
        if (err instanceof Aborted) { ds?.fail('FNMESH_ERR_ABORTED'); ds?.end(); return aborted() }
        if (!(err instanceof DispatchFailure)) { ds?.fail('FNMESH_ERR_INTERNAL'); ds?.end(); throw err }
        failure = err.message
      }
      if (ds != null) {
        if (result == null) ds.fail('FNMESH_ERR_PEER_UNAVAILABLE', failure)
        else if (result.ok !== true) ds.fail(result.error?.code ?? 'FNMESH_ERR_INTERNAL', result.error?.errorMessage)
        ds.end()
      }
      // A body that has started cannot be taken back: the invocation is never run a second time.
      if (stream?.started === true) {
        if (result != null) return { ...result, attempts: s.attempts }
        this.penalties.add(id, PENALTY.failed)
        return this.error(exec, s.attempts, 'FNMESH_ERR_PEER_UNAVAILABLE', `The stream of "${spec.name}" (invocation ${exec.invocationId ?? ''}) broke after ${stream.bytes} bytes: peer ${peer.advert.name} (${id}) ${failure ?? ''}`)
      }
      if (isAborted(signal) || result?.error?.code === 'FNMESH_ERR_ABORTED') return aborted()
      const code = result == null ? '' : result.ok === true ? '' : result.error?.code ?? ''
      const next = onAnswer(s, result == null ? { kind: 'failed' } : { kind: 'result', code }, this.c.table.size)
      if (next.kind === 'busy' && provisionedPick) {
        // Its idle provisioned sandbox went to another router's call first: not a full node,
        // just not a provisioned one for this call. Another holder, else the usual pick.
        noneIdle.add(id)
        if (next.refuse != null) return refused(next.refuse)
        continue
      }
      if (next.kind === 'busy') {
        // The peer was fuller than its advert said: count it as full (its queue too, when it
        // would not queue this) until it advertises again.
        if (queueMs > 0) this.tracker.markQueueRefused(id, queueMs)
        else this.tracker.markFull(id)
        if (!peer.self) this.penalties.add(id, PENALTY.busy)
        if (next.refuse != null) return refused(next.refuse)
        continue
      }
      if (next.kind === 'failed') {
        failed.add(id)
        if (result == null) {
          this.penalties.add(id, PENALTY.failed)
          failures.push(`peer ${peer.advert.name} (${id}) ${failure ?? ''}`)
          this.log.warn({ fn: spec.name, invocationId: exec.invocationId, peer: id, sentAt, err: failure }, 'dispatch failed')
        } else {
          if (!peer.self) this.penalties.add(id, PENALTY.failed)
          failures.push(`peer ${peer.advert.name} (${id}) failed: ${code}: ${result.error?.errorMessage ?? ''}`)
        }
        if (next.refuse != null) return refused(next.refuse)
        continue
      }
      if (!peer.self) this.penalties.answered(id, spec.name, Date.now() - sentAt)
      return { ...(result as Encodable<InvokeResult>), attempts: s.attempts }
    }
  }

  /** One try at one node: its span is the parent of that node's executor spans */
  private dispatchSpan (route: TraceSpan, exec: Encodable<ExecRequest>, peer: PeerEntry): TraceSpan {
    return this.tracer.start('dispatch', {
      parent: route,
      attributes: { [A.peerId]: peer.advert.nodeId, [A.peerLocal]: peer.self, [A.attempt]: exec.attempt ?? 1, [A.queueMs]: exec.queueMs ?? 0 }
    })
  }

  private refusalMessage (r: Refusal, spec: StoredSpec, exec: Encodable<ExecRequest>, failures: string[]): string {
    const inv = exec.invocationId ?? ''
    switch (r.reason) {
      case 'deadline': return `Cannot run "${spec.name}" (invocation ${inv}): the caller's deadline passed`
      case 'no-slot-in-time': return `Cannot route invocation "${inv}" of "${spec.name}": no peer is expected to free a slot for it within its deadline (${Math.max(0, (exec.deadlineMs ?? 0) - Date.now())} ms left)`
      case 'no-slot': return `Cannot route invocation "${inv}" of "${spec.name}": no peer has a free slot`
      case 'all-full': return `Cannot route invocation "${inv}" of "${spec.name}": every peer tried was full`
      case 'none-left': return `Cannot run "${spec.name}" (invocation ${inv}): ${failures.join('; ')}`
      case 'failed-twice': return `Cannot run "${spec.name}" (invocation ${inv}): ${failures.join('; then ')}`
    }
  }

  private error (exec: Encodable<ExecRequest>, attempts: number, code: ErrorCode, message: string): Encodable<InvokeResult> {
    return { invocationId: exec.invocationId, ok: false, attempts, error: toErrorInfo(fnmeshError(code, message)) }
  }

  /**
   * Routing "probe" (probe.ts): its own node when that has a free slot; else the loads of
   * PROBES_PER_PICK peers asked now (the one chosen last and others drawn by slots; placement
   * constraints and preferences as for any pick), the best free one, else the best queue that
   * fits the budget (queueMs > 0); up to PROBE_ROUNDS rounds of new peers. Undefined: none of
   * them answered with room (the caller falls back to the adverts' view, where the peers it adds
   * to `unanswered` come last).
   */
  private async probePick (spec: StoredSpec, key: string, exclude: ReadonlySet<string>, s: DispatchState, deadline: number, unanswered: Set<string>): Promise<{ entry: PeerEntry, queueMs: number } | undefined> {
    const all = this.candidates(spec, key, exclude)
    const preferredOnly = (spec.prefer?.length ?? 0) > 0 ? all.filter(c => preferred(this.labelsOf(c.entry), spec)) : []
    // As pick() then pickQueue() with preferFirst: a free slot at a preferred node, else at any
    // (probing the rest only when no preferred one has room); only then a queue, at a preferred
    // node when one's wait fits, else at any.
    const probed = new Set<string>()
    /** every answer of this pick: a queue is chosen among them all */
    const answers: typeof all = []
    for (const candidates of preferredOnly.length > 0 ? [preferredOnly, all] : [all]) {
      const own = candidates.find(c => c.self === true)
      if (own != null && own.load < own.slots) return { entry: own.entry, queueMs: 0 }
      for (let round = 0; round < PROBE_ROUNDS; round++) {
        const peers = candidates.filter(c => c.self !== true && !probed.has(c.id))
        if (peers.length === 0 && round > 0) break
        const memory = round === 0 ? peers.find(c => c.id === this.probeMemory) : undefined
        const targets = probeTargets(peers, c => c.slots, PROBES_PER_PICK, memory, this.init.rng)
        for (const t of targets) probed.add(t.id)
        // What this router sends a peer while its probe is out (other invocations routed at the
        // same moment see the same answers) is added to the answer, so they do not all pile on it.
        const sentBefore = targets.map(t => this.routedTo.get(t.id) ?? 0)
        const answered = await Promise.all(targets.map(async c => await this.probe(c, spec)))
        targets.forEach((t, i) => {
          const a = answered[i]
          if (a == null) { unanswered.add(t.id); this.probeStats.unanswered++ } else { a.load += (this.routedTo.get(t.id) ?? 0) - sentBefore[i]; this.probeStats.answered++ }
        })
        const fresh = answered.filter((c): c is NonNullable<typeof c> => c != null)
        answers.push(...fresh)
        const mine = own != null ? { ...own, load: this.c.local.load } : undefined
        const free = bestFree(mine != null ? [mine, ...fresh] : fresh)
        if (free != null) {
          if (free.self !== true) this.probeMemory = free.id
          return { entry: free.entry, queueMs: 0 }
        }
        // No preferred node has room: a free slot elsewhere comes before their queues.
        if (candidates !== all) continue
        const runMs = this.c.local.runMs(key)
        const queueMs = queueBudget(s, this.rules, Date.now(), deadline, runMs)
        if (queueMs <= 0) return undefined
        const q = this.preferFirst(spec, mine != null ? [mine, ...answers] : answers, list => bestQueue(list, queueMs, runMs))
        if (q != null) {
          if (q.self !== true) this.probeMemory = q.id
          return { entry: q.entry, queueMs }
        }
      }
    }
    return undefined
  }

  /**
   * Routing "probe": this node, when the function may run here, its executor has a free slot
   * and no other node is to be asked first (the function prefers none, or this node too);
   * synchronous, so the caller dispatches before another invocation looks
   */
  private ownFreeSlot (spec: StoredSpec, exclude: ReadonlySet<string>): PeerEntry | undefined {
    if (this.c.local.load >= this.c.local.slots) return undefined
    const own = this.c.table.routable().find(e => e.self)
    if (own == null || exclude.has(own.advert.nodeId)) return undefined
    if ((spec.constraints?.length ?? 0) > 0 && !eligible(this.labelsOf(own), spec)) return undefined
    if ((spec.prefer?.length ?? 0) > 0 && !preferred(this.labelsOf(own), spec)) return undefined
    return own
  }

  /**
   * Routing "probe": `id` just joined through this node (membership "swim"): this router's next
   * pick that probes asks it first, so a newcomer gets work at once (the simulator's join model)
   */
  remember (id: string): void {
    if (this.init.policy === 'probe' && id !== this.c.nodeId) this.probeMemory = id
  }

  /** One load probe: the candidate with the load its executor answered, or null (no answer in time, not accepting, unreadable) */
  private async probe<C extends Candidate & { entry: PeerEntry }> (c: C, spec: StoredSpec): Promise<C | null> {
    try {
      const msg = await this.c.nc.request(probeSubject(c.id), encode('LoadProbe', { function: spec.name, version: spec.version }), { timeout: PROBE_TIMEOUT_MS })
      const a = decode('LoadAnswer', msg.data)
      if (a.nodeId !== c.id || !a.accepting) return null
      // A peer is not believed to have more slots than its advert, capped by the mesh (candidates())
      const slots = Math.min(a.slots, c.slots)
      return { ...c, slots, load: Math.min(a.inFlight + a.queued, 1_000_000), warm: a.warm }
    } catch {
      return null
    }
  }

  /**
   * Where to wait for a slot when none is free in this router's view (least-loaded routing):
   * among the nodes the function prefers when one of their queues fits, else among all it may use
   */
  private pickQueue (spec: StoredSpec, key: string, exclude: ReadonlySet<string>, budgetMs: number, runMs: number): PeerEntry | undefined {
    const candidates = this.candidates(spec, key, exclude)
    return this.preferFirst(spec, candidates, list => chooseQueue(list, budgetMs, runMs, this.init.rng))?.entry
  }

  /**
   * A function with provisioned sandboxes (--provisioned) goes first to a node whose advert says
   * it holds an idle one of `key` that this router has not already sent a call to since (the
   * least loaded such node), so the first N concurrent calls find them; none: the usual choice.
   */
  private pickProvisioned (spec: StoredSpec, key: string, exclude: ReadonlySet<string>): PeerEntry | undefined {
    const placed = (spec.constraints?.length ?? 0) > 0
    const routable = this.c.table.routable().filter(e => !placed || eligible(this.labelsOf(e), spec))
    // The nodes the provisioner places the sandboxes on (every agent computes the same), and those
    // whose last advert listed an idle one: an advert lags (a sandbox freed since is not in it), so
    // a holder is asked even when its advert says busy; the executor answers BUSY at once when
    // none is idle (ExecRequest.provisioned_pick) and the next holder is asked.
    const holders = placeProvisioned(key, routable.map(e => e.advert.nodeId), spec.provisioned ?? 0)
    let best: { entry: PeerEntry, rank: number } | undefined
    for (const entry of routable) {
      const a = entry.advert
      if (exclude.has(a.nodeId)) continue
      let rank: number
      if (entry.self) {
        if ((this.c.local.provisionedIdle?.(key) ?? 0) <= 0 || this.c.local.load >= this.c.local.slots) continue
        rank = this.c.local.load / this.c.local.slots / 2
      } else {
        const advertised = a.provisioned.filter(k => k === key).length - this.tracker.sinceAdvert(a.nodeId)
        if (advertised <= 0 && !holders.has(a.nodeId)) continue
        const load = this.tracker.estimate(a.nodeId, a.inFlight, a.slots)
        if (load >= a.slots) continue
        // Nodes advertising an idle one first; the less loaded, then a random one (routers spread).
        rank = (advertised > 0 ? 0 : 1) + load / a.slots / 2 + this.init.rng() * 1e-6
      }
      if (best == null || rank < best.rank) best = { entry, rank }
    }
    return best?.entry
  }

  private pick (spec: StoredSpec, key: string, exclude: ReadonlySet<string>): PeerEntry | undefined {
    const candidates = this.candidates(spec, key, exclude)
    if (this.baseline == null) return this.preferFirst(spec, candidates, list => choosePeer(list, this.init.rng))?.entry
    return this.baseline(candidates, { localInFlight: this.c.local.inFlight, outstanding: (peer) => this.tracker.outstanding(peer) })?.entry
  }

  /** `--prefer` is "should": the choice among preferred nodes while one fits, else among every eligible one */
  private preferFirst<C extends Candidate & { entry: PeerEntry }> (spec: StoredSpec, candidates: C[], choose: (list: C[]) => C | undefined): C | undefined {
    if ((spec.prefer?.length ?? 0) > 0) {
      const first = choose(candidates.filter(c => preferred(this.labelsOf(c.entry), spec)))
      if (first != null) return first
    }
    return choose(candidates)
  }

  /** A peer's labels as its advert carries them, validated once per advert (undefined: invalid) */
  private labelsOf (entry: PeerEntry): Readonly<Record<string, string>> | undefined {
    const a = entry.advert
    let labels = this.labelSets.get(a)
    if (labels === undefined) {
      labels = advertLabels(a.labels) ?? null
      this.labelSets.set(a, labels)
    }
    return labels ?? undefined
  }

  private candidates (spec: StoredSpec, key: string, exclude: ReadonlySet<string>): Array<Candidate & { entry: PeerEntry }> {
    const candidates: Array<Candidate & { entry: PeerEntry }> = []
    const placed = (spec.constraints?.length ?? 0) > 0
    const routable = placed ? this.c.table.routable().filter(e => eligible(this.labelsOf(e), spec)) : this.c.table.routable()
    // No peer is believed to have more than a few times the mesh's median slots.
    const cap = this.penalties.slotCap(routable.map(e => e.self ? this.c.local.slots : e.advert.slots))
    for (const entry of routable) {
      const a = entry.advert
      if (exclude.has(a.nodeId)) continue
      const slots = Math.min(a.slots, cap)
      candidates.push(entry.self
        ? { id: a.nodeId, slots: this.c.local.slots, load: this.c.local.load, warm: this.c.local.isWarm(key), self: true, waitAboveMs: this.tracker.waitAbove(a.nodeId), entry }
        : { id: a.nodeId, slots, load: this.tracker.estimate(a.nodeId, a.inFlight, slots), warm: this.warmSet(a).has(key), penalty: this.penalties.score(a.nodeId), waitAboveMs: this.tracker.waitAbove(a.nodeId), entry })
    }
    return candidates
  }

  private warmSet (advert: { warm: string[] }): Set<string> {
    let set = this.warmSets.get(advert)
    if (set == null) {
      set = new Set(advert.warm)
      this.warmSets.set(advert, set)
    }
    return set
  }

  private async dispatch (peer: PeerEntry, exec: Encodable<ExecRequest>, until: number, signal: AbortSignal | undefined, stream?: StreamSink): Promise<Encodable<InvokeResult>> {
    if (peer.self) return await this.c.local.execute(exec, { signal, stream })
    const id = peer.advert.nodeId
    const d = this.tracker.sent(id)
    let lost: Remote | undefined
    const gone = new Promise<never>((resolve, reject) => { lost = { reject } })
    const set = this.remote.get(id) ?? new Set()
    this.remote.set(id, set)
    set.add(lost as Remote)
    const onAbort = (): void => { lost?.reject(new Aborted()) }
    signal?.addEventListener('abort', onAbort, { once: true })
    const timeoutMs = Math.max(1, until - Date.now())
    const copies = this.c.meterCopies
    const request = encode('ExecRequest', copies != null ? { ...exec, carryMeter: true } : exec)
    const pending = stream != null ? this.requestStream(execSubject(id), request, timeoutMs, stream) : this.c.nc.request(execSubject(id), request, { timeout: timeoutMs })
    pending.catch(() => {})
    gone.catch(() => {})
    try {
      const msg = await Promise.race([pending, gone])
      let result: InvokeResult
      try {
        result = decode('InvokeResult', msg.data)
      } catch (err: any) {
        throw new DispatchFailure(`sent an unreadable result (${String(err?.message)})`)
      }
      // The run's record travels with its result: this node's copy is written before the caller
      // hears the answer (the peer has its own), and the copy is not passed on to the caller.
      const copy = result.meterCopy
      if (copy != null) {
        delete (result as Partial<InvokeResult>).meterCopy
        const kept = await copies?.keep(copy, id)
        // As when the executor's meter fails: not metered as asked means not acknowledged.
        if (kept === '') {
          result.ok = false
          result.payload = new Uint8Array(0)
          result.error = toErrorInfo(fnmeshError('FNMESH_ERR_METER_UNAVAILABLE', `Cannot answer invocation "${result.invocationId}": its meter record's copy could not be kept on this node nor handed to a peer`))
        }
      }
      return result
    } catch (err: any) {
      if (err instanceof DispatchFailure || err instanceof Aborted) throw err
      if (err instanceof RequestError && err.isNoResponders()) throw new DispatchFailure('is not listening on NATS')
      if (err?.name === 'TimeoutError' || err?.cause?.name === 'TimeoutError') throw new DispatchFailure(`did not answer within ${timeoutMs} ms`)
      throw new DispatchFailure(String(err?.message ?? err))
    } finally {
      signal?.removeEventListener('abort', onAbort)
      set.delete(lost as Remote)
      if (set.size === 0 && this.remote.get(id) === set) this.remote.delete(id)
      this.tracker.finished(d)
      this.wake()
    }
  }

  /**
   * Sends an ExecRequest that takes a streamed reply: chunks come on a fresh inbox, each handed
   * to `sink` and then acknowledged to the executor (so its window follows the caller's pace);
   * resolves with the final message (the InvokeResult). Ends in `timeoutMs` in any case.
   */
  private async requestStream (subject: string, data: Uint8Array, timeoutMs: number, sink: StreamSink): Promise<Msg> {
    const nc = this.c.nc
    const inbox = newInbox(nc)
    const sub = nc.subscribe(inbox)
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<never>((resolve, reject) => {
      timer = setTimeout(() => { reject(Object.assign(new Error('timeout'), { name: 'TimeoutError' })); sub.unsubscribe() }, timeoutMs)
    })
    timedOut.catch(() => {})
    const run = async (): Promise<Msg> => {
      nc.publish(subject, data, { reply: inbox })
      let seq = 1
      for await (const msg of sub) {
        if (msg.headers?.code === 503) throw new DispatchFailure('is not listening on NATS')
        if (!isChunk(msg)) return msg
        let chunk
        try {
          chunk = readChunk(msg, seq)
        } catch (err: any) {
          throw new DispatchFailure(`sent an unreadable stream chunk (${String(err?.message)})`)
        }
        await sink.write({ data: chunk.data, contentType: chunk.contentType, invocationId: chunk.invocationId, nodeId: chunk.nodeId }).catch((err) => {
          // The caller went away or the stream is over its limit: the executor stops the function.
          ackChunk(msg, seq, inbox, true)
          throw err
        })
        ackChunk(msg, seq, inbox)
        seq++
      }
      throw Object.assign(new Error('timeout'), { name: 'TimeoutError' })
    }
    try {
      return await Promise.race([run(), timedOut])
    } finally {
      clearTimeout(timer)
      sub.unsubscribe()
    }
  }

  private onPeerRemoved (id: string, reason: string): void {
    this.tracker.forget(id)
    if (reason === 'draining') this.penalties.forget(id)
    this.log.info({ peer: id, reason }, 'peer left')
    // A draining peer finishes what it has; any other departure fails its dispatches, which retry.
    if (reason === 'draining') return
    for (const r of this.remote.get(id) ?? []) r.reject(new DispatchFailure(`left the mesh (${reason})`))
    this.remote.delete(id)
  }
}

/** Read through a call: TypeScript narrows `signal.aborted` across awaits as if it could not change */
function isAborted (signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true
}

/** A name as quoted in an error message: a hostile one can be kilobytes long */
function shorten (text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}... (${text.length} characters)` : text
}
