/**
 * The router: takes sync invocations from NATS (one agent of the queue group gets each), picks
 * the least-loaded peer (choose.ts), sends the invocation there (or runs it here, when that
 * peer is this node) and answers the caller. A peer that fails or does not answer is replaced
 * once; a full mesh gets FNMESH_ERR_NO_CAPACITY after a short bounded wait.
 */
import { randomUUID } from 'node:crypto'
import { headers as natsHeaders, RequestError, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node'
import { decode, encode, type ExecRequest, type InvokeResult, type Encodable } from '../../../proto/codec.js'
import { fnmeshError, toErrorInfo, type ErrorCode } from '../../../proto/errors.js'
import { AGENTS_QUEUE, Headers, FUNCTION_NAME_PATTERN, INVOKE_WILDCARD, KEEPALIVE_INTERVAL_MS, MAX_ID_BYTES, execSubject } from '../../../proto/subjects.js'
import type { StoredSpec } from '../../../core/registry.js'
import type { Executor } from '../executor/executor.js'
import type { PeerEntry, PeerTable } from '../gossip/peer-table.js'
import type { Logger } from '../logger.js'
import type { FunctionCache } from '../registry/cache.js'
import { better, chooseQueue, choosePeer, type Candidate } from './choose.js'
import { LoadTracker } from './load.js'
import { PENALTY, PeerPenalties } from './penalty.js'

export interface RouterComponents {
  nc: NatsConnection
  nodeId: string
  table: PeerTable
  functions: FunctionCache
  local: Executor
  logger: Logger
}

export interface RouterInit {
  /** How long an invocation may wait for a free slot. @default 500 */
  queueWaitMs?: number
  /** Max invocations waiting for a slot. @default 1000 */
  maxQueued?: number
  /** Extra wait for a peer beyond the function's timeout. @default 12000 */
  dispatchGraceMs?: number
  /** @default 6 MiB */
  payloadLimit?: number
  /** @default Math.random */
  rng?: () => number
  /**
   * How to pick a peer. "least-loaded" is fnmesh's routing; the others exist to measure it
   * against (npm run bench): "local" runs everything where NATS delivered it (a plain queue
   * group), "round-robin" cycles through the peers, "oracle" takes the least-utilised peer by
   * its own exact counts (true load when it is the mesh's only router). @default "least-loaded"
   */
  policy?: RoutingPolicy
}

export type RoutingPolicy = 'least-loaded' | 'local' | 'round-robin' | 'oracle'
export const ROUTING_POLICIES: readonly RoutingPolicy[] = ['least-loaded', 'local', 'round-robin', 'oracle']

/** One invocation to route, from NATS or (later) from a trigger */
export interface RouteRequest {
  function: string
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
}

const DEFAULT_CALLER_TIMEOUT_MS = 60_000
/** Codes with which a peer says "not me, try elsewhere" without the function having run */
// A bad bundle (a path escaping it, two files at one path, a digest that does not match what the
// registry holds) is bad on every node: the caller gets FNMESH_ERR_BUNDLE_INVALID, not a retry.
const RETRYABLE: ReadonlySet<string> = new Set(['FNMESH_ERR_NATS_UNAVAILABLE', 'FNMESH_ERR_INTERNAL', 'FNMESH_ERR_METER_UNAVAILABLE', 'FNMESH_ERR_DECODE'])

class DispatchFailure extends Error {}

const WORKING = natsHeaders()
WORKING.set(Headers.status, 'working')

interface Remote { reject: (err: DispatchFailure) => void }

export class Router {
  readonly tracker = new LoadTracker()
  /** penalties from failed, refused and stalled dispatches, and the cap on believed slots */
  readonly penalties = new PeerPenalties()
  private sub: Subscription | undefined
  private readonly waiters = new Set<() => void>()
  private readonly remote = new Map<string, Set<Remote>>()
  private readonly warmSets = new WeakMap<object, Set<string>>()
  private active = 0
  private rr = 0
  private idle: (() => void) | undefined
  private readonly init: Required<RouterInit>
  private readonly log: Logger
  /** invocations routed to each node by this router (for tests and `nodes`) */
  readonly routedTo = new Map<string, number>()

  constructor (private readonly c: RouterComponents, init: RouterInit = {}) {
    this.init = {
      queueWaitMs: init.queueWaitMs ?? 500,
      maxQueued: init.maxQueued ?? 1000,
      dispatchGraceMs: init.dispatchGraceMs ?? 12_000,
      payloadLimit: init.payloadLimit ?? 6 * 1024 * 1024,
      rng: init.rng ?? Math.random,
      policy: init.policy ?? 'least-loaded'
    }
    this.log = c.logger
    c.table.on('updated', (e) => { this.tracker.onAdvert(e.advert.nodeId); this.wake() })
    c.table.on('added', (e) => { this.tracker.onAdvert(e.advert.nodeId); this.wake() })
    c.table.on('removed', (id, reason) => { this.onPeerRemoved(id, reason) })
  }

  start (): void {
    if (this.sub != null) return
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

  /** Stops taking invocations from NATS, then waits for those being routed */
  async drain (): Promise<void> {
    const sub = this.sub
    this.sub = undefined
    if (sub != null && !this.c.nc.isClosed()) await sub.drain().catch(() => {})
    if (this.active > 0) await new Promise<void>(resolve => { this.idle = resolve })
  }

  /** Stops taking invocations without waiting for those being routed */
  stop (): void {
    this.sub?.unsubscribe()
    this.sub = undefined
  }

  /** Called by the local executor when it frees a slot */
  wake (): void {
    for (const w of this.waiters) w()
  }

  private async onMessage (msg: Msg): Promise<void> {
    this.active++
    // Interim replies tell the caller this router is alive; one that stops hearing them re-sends.
    const keepalive = setInterval(() => {
      try { msg.respond(new Uint8Array(0), { headers: WORKING }) } catch {}
    }, KEEPALIVE_INTERVAL_MS)
    let result: Encodable<InvokeResult>
    try {
      const req = decode('InvokeRequest', msg.data, { maxBytes: this.init.payloadLimit + 64 * 1024 })
      const fromSubject = msg.subject.slice(msg.subject.lastIndexOf('.') + 1)
      if (!FUNCTION_NAME_PATTERN.test(fromSubject)) {
        throw fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `Function name "${shorten(fromSubject)}" is invalid: expected 1 to 64 letters, digits, "-" or "_", starting with a letter or digit`)
      }
      if (req.function !== '' && req.function !== fromSubject) {
        throw fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `Invocation names function "${shorten(req.function)}" but was sent to "${msg.subject}"`)
      }
      result = await this.route({ function: fromSubject, payload: req.payload, idempotencyKey: req.idempotencyKey, timeoutMs: req.timeoutMs, trigger: 'sync' })
    } catch (err) {
      result = { ok: false, error: toErrorInfo(err) }
    }
    clearInterval(keepalive)
    try {
      msg.respond(encode('InvokeResult', result))
    } catch (err: any) {
      this.log.warn({ err: String(err?.message ?? err) }, 'could not answer the caller')
    } finally {
      if (--this.active === 0) this.idle?.()
    }
  }

  /** Routes one invocation and returns its result; never throws */
  async route (req: RouteRequest): Promise<Encodable<InvokeResult>> {
    const invocationId = req.invocationId ?? randomUUID()
    const idempotencyKey = req.idempotencyKey ?? ''
    const fail = (code: ErrorCode, message: string): Encodable<InvokeResult> =>
      ({ invocationId, ok: false, error: toErrorInfo(fnmeshError(code, message)) })
    try {
      if (Buffer.byteLength(idempotencyKey) > MAX_ID_BYTES) {
        return fail('FNMESH_ERR_INVALID_ARGUMENT', `Cannot invoke "${req.function}": the idempotency key is ${Buffer.byteLength(idempotencyKey)} bytes, over the limit of ${MAX_ID_BYTES}`)
      }
      const deadline = Date.now() + (req.timeoutMs != null && req.timeoutMs > 0 ? req.timeoutMs : DEFAULT_CALLER_TIMEOUT_MS)
      if (req.payload.byteLength > this.init.payloadLimit) {
        return fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Cannot invoke "${req.function}": the event is ${req.payload.byteLength} bytes, over the limit of ${this.init.payloadLimit}`)
      }
      const spec = await this.c.functions.spec(req.function)
      if (spec == null) return fail('FNMESH_ERR_NOT_FOUND', `Function "${req.function}" is not deployed`)
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
        trigger: req.trigger ?? 'sync'
      }
      return await this.dispatchWithRetry(spec, exec, deadline)
    } catch (err) {
      return { invocationId, ok: false, error: toErrorInfo(err) }
    }
  }

  private async dispatchWithRetry (spec: StoredSpec, exec: Encodable<ExecRequest>, deadline: number): Promise<Encodable<InvokeResult>> {
    const key = `${spec.name}@${spec.version}`
    const failed = new Set<string>()
    const failures: string[] = []
    let attempts = 0
    let busy = 0
    let waitStarted: number | undefined
    for (;;) {
      if (Date.now() >= deadline) {
        return this.error(exec, attempts, 'FNMESH_ERR_CLIENT_TIMEOUT', `Cannot run "${spec.name}" (invocation ${exec.invocationId ?? ''}): the caller's deadline passed`)
      }
      let peer = this.pick(key, failed)
      let queueMs = 0
      if (peer == null && this.init.policy === 'least-loaded') {
        // Nothing free in this view, which lags the truth by up to an advert: wait in the queue of
        // the executor least behind instead, which hands over a slot the moment one frees.
        waitStarted ??= Date.now()
        queueMs = Math.min(waitStarted + this.init.queueWaitMs, deadline) - Date.now()
        if (queueMs > 0) peer = this.pickQueue(key, failed)
        if (peer == null && queueMs <= 0) {
          return this.error(exec, attempts, 'FNMESH_ERR_NO_CAPACITY', `Cannot route invocation "${exec.invocationId ?? ''}" of "${spec.name}": no peer had a free slot within ${this.init.queueWaitMs} ms`)
        }
      }
      if (peer == null) {
        // After a failure with no other peer left to try, waiting would not help.
        if (failures.length > 0 && this.c.table.routable().every(e => failed.has(e.advert.nodeId))) {
          return this.error(exec, attempts, 'FNMESH_ERR_PEER_UNAVAILABLE', `Cannot run "${spec.name}" (invocation ${exec.invocationId ?? ''}): ${failures.join('; ')}`)
        }
        waitStarted ??= Date.now()
        const left = Math.min(waitStarted + this.init.queueWaitMs, deadline) - Date.now()
        if (left <= 0 || (this.waiters.size >= this.init.maxQueued)) {
          return this.error(exec, attempts, 'FNMESH_ERR_NO_CAPACITY', `Cannot route invocation "${exec.invocationId ?? ''}" of "${spec.name}": no peer has a free slot`)
        }
        await this.waitForCapacity(left)
        continue
      }
      attempts++
      const id = peer.advert.nodeId
      this.routedTo.set(id, (this.routedTo.get(id) ?? 0) + 1)
      let result: Encodable<InvokeResult>
      const sentAt = Date.now()
      try {
        result = await this.dispatch(peer, { ...exec, attempt: attempts, queueMs: Math.max(0, Math.floor(queueMs)) }, Math.min(deadline, Date.now() + queueMs + spec.timeoutMs + this.init.dispatchGraceMs))
      } catch (err) {
        if (!(err instanceof DispatchFailure)) throw err
        failed.add(id)
        this.penalties.add(id, PENALTY.failed)
        failures.push(`peer ${peer.advert.name} (${id}) ${err.message}`)
        this.log.warn({ fn: spec.name, invocationId: exec.invocationId, peer: id, sentAt, err: err.message }, 'dispatch failed')
        if (failures.length >= 2) return this.error(exec, attempts, 'FNMESH_ERR_PEER_UNAVAILABLE', `Cannot run "${spec.name}" (invocation ${exec.invocationId ?? ''}): ${failures.join('; then ')}`)
        continue
      }
      const code = result.ok === true ? '' : result.error?.code ?? ''
      if (code === 'FNMESH_ERR_BUSY' || code === 'FNMESH_ERR_DISK_FULL') {
        // The peer was fuller than its advert said: count it as full (its queue too, when it
        // would not queue this) until it advertises again.
        if (queueMs > 0) this.tracker.markQueueFull(id)
        else this.tracker.markFull(id)
        if (!peer.self) this.penalties.add(id, PENALTY.busy)
        if (++busy > 3 * Math.max(1, this.c.table.size)) {
          return this.error(exec, attempts, 'FNMESH_ERR_NO_CAPACITY', `Cannot route invocation "${exec.invocationId ?? ''}" of "${spec.name}": every peer tried was full`)
        }
        continue
      }
      if (RETRYABLE.has(code)) {
        failed.add(id)
        if (!peer.self) this.penalties.add(id, PENALTY.failed)
        failures.push(`peer ${peer.advert.name} (${id}) failed: ${code}: ${result.error?.errorMessage ?? ''}`)
        if (failures.length >= 2) return this.error(exec, attempts, 'FNMESH_ERR_PEER_UNAVAILABLE', `Cannot run "${spec.name}" (invocation ${exec.invocationId ?? ''}): ${failures.join('; then ')}`)
        continue
      }
      if (!peer.self) this.penalties.answered(id, spec.name, Date.now() - sentAt)
      return { ...result, attempts }
    }
  }

  private error (exec: Encodable<ExecRequest>, attempts: number, code: ErrorCode, message: string): Encodable<InvokeResult> {
    return { invocationId: exec.invocationId, ok: false, attempts, error: toErrorInfo(fnmeshError(code, message)) }
  }

  /** Where to wait for a slot when none is free in this router's view (least-loaded routing) */
  private pickQueue (key: string, exclude: ReadonlySet<string>): PeerEntry | undefined {
    return chooseQueue(this.candidates(key, exclude), this.init.rng)?.entry
  }

  private pick (key: string, exclude: ReadonlySet<string>): PeerEntry | undefined {
    const candidates = this.candidates(key, exclude)
    switch (this.init.policy) {
      case 'least-loaded':
        return choosePeer(candidates, this.init.rng)?.entry
      case 'local':
        return candidates.find(c => c.entry.self && c.load < c.slots)?.entry
      case 'round-robin': {
        const ordered = candidates.sort((a, b) => a.id.localeCompare(b.id))
        for (let i = 0; i < ordered.length; i++) {
          const c = ordered[(this.rr + i) % ordered.length]
          if (c.load < c.slots) { this.rr = (this.rr + i + 1) % ordered.length; return c.entry }
        }
        return undefined
      }
      case 'oracle': {
        let best: (Candidate & { entry: PeerEntry }) | undefined
        for (const c of candidates) {
          // Exact when this is the only router: every dispatch in flight is its own.
          const load = c.entry.self ? this.c.local.inFlight : this.tracker.outstanding(c.id)
          const x = { ...c, load }
          if (x.load < x.slots && (best == null || better(x, best))) best = x
        }
        return best?.entry
      }
    }
  }

  private candidates (key: string, exclude: ReadonlySet<string>): Array<Candidate & { entry: PeerEntry }> {
    const candidates: Array<Candidate & { entry: PeerEntry }> = []
    const routable = this.c.table.routable()
    // No peer is believed to have more than a few times the mesh's median slots.
    const cap = this.penalties.slotCap(routable.map(e => e.self ? this.c.local.slots : e.advert.slots))
    for (const entry of routable) {
      const a = entry.advert
      if (exclude.has(a.nodeId)) continue
      const slots = Math.min(a.slots, cap)
      candidates.push(entry.self
        ? { id: a.nodeId, slots: this.c.local.slots, load: this.c.local.load, warm: this.c.local.isWarm(key), self: true, entry }
        : { id: a.nodeId, slots, load: this.tracker.estimate(a.nodeId, a.inFlight, slots), warm: this.warmSet(a).has(key), penalty: this.penalties.score(a.nodeId), entry })
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

  private async dispatch (peer: PeerEntry, exec: Encodable<ExecRequest>, until: number): Promise<Encodable<InvokeResult>> {
    if (peer.self) return await this.c.local.execute(exec)
    const id = peer.advert.nodeId
    const d = this.tracker.sent(id)
    let lost: Remote | undefined
    const gone = new Promise<never>((resolve, reject) => { lost = { reject } })
    const set = this.remote.get(id) ?? new Set()
    this.remote.set(id, set)
    set.add(lost as Remote)
    const timeoutMs = Math.max(1, until - Date.now())
    const pending = this.c.nc.request(execSubject(id), encode('ExecRequest', exec), { timeout: timeoutMs })
    pending.catch(() => {})
    gone.catch(() => {})
    try {
      const msg = await Promise.race([pending, gone])
      try {
        return decode('InvokeResult', msg.data)
      } catch (err: any) {
        throw new DispatchFailure(`sent an unreadable result (${String(err?.message)})`)
      }
    } catch (err: any) {
      if (err instanceof DispatchFailure) throw err
      if (err instanceof RequestError && err.isNoResponders()) throw new DispatchFailure('is not listening on NATS')
      if (err?.name === 'TimeoutError' || err?.cause?.name === 'TimeoutError') throw new DispatchFailure(`did not answer within ${timeoutMs} ms`)
      throw new DispatchFailure(String(err?.message ?? err))
    } finally {
      set.delete(lost as Remote)
      this.tracker.finished(d)
      this.wake()
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

  private async waitForCapacity (ms: number): Promise<void> {
    await new Promise<void>(resolve => {
      const done = (): void => {
        clearTimeout(timer)
        this.waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.waiters.add(done)
    })
  }
}

/** A name as quoted in an error message: a hostile one can be kilobytes long */
function shorten (text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}... (${text.length} characters)` : text
}
