/**
 * Runs one pulled event on this node and settles it with JetStream: ack once the function
 * finished and its meter record is written; a failed run is re-published as a retry (with
 * backoff) until the function's retries are spent, then dead-lettered with why; a node problem
 * (draining, metering, NATS) hands the event back (nak) without counting an attempt.
 */
import type { JetStreamClient, JsMsg } from '@nats-io/jetstream'
import { headers as natsHeaders } from '@nats-io/transport-node'
import { encode, type Encodable, type ErrorInfo, type InvokeResult } from '../../../proto/codec.js'
import { toErrorInfo, type ErrorCode } from '../../../proto/errors.js'
import { ACK_WAIT_MS, EventHeaders, dlqSubject, eventInvocationId, functionSubject, type Binding } from '../../../core/events.js'
import type { StoredSpec } from '../../../core/registry.js'
import type { Executor } from '../executor/executor.js'
import type { Logger } from '../logger.js'
import { noMetrics, type MetricsSink } from '../metrics/sink.js'
import type { FunctionCache } from '../registry/cache.js'
import { prepare, type PreparedEvent } from './prepare.js'
import { conditionOf, publishDestination, type Outcome } from './destinations.js'
import { HOPS_HEADER, MAX_HOPS } from '../../../core/bindings.js'

export interface DispatcherComponents {
  js: JetStreamClient
  executor: Executor
  functions: FunctionCache
  logger: Logger
  /** where pulled and settled events are counted */
  metrics?: MetricsSink
}

/** Codes that say the node could not run it, not that the function failed: try again elsewhere */
const HAND_BACK: ReadonlySet<string> = new Set<ErrorCode>(['FNMESH_ERR_BUSY', 'FNMESH_ERR_THROTTLED', 'FNMESH_ERR_NATS_UNAVAILABLE', 'FNMESH_ERR_METER_UNAVAILABLE', 'FNMESH_ERR_INTERNAL', 'FNMESH_ERR_BUNDLE_INVALID', 'FNMESH_ERR_NOT_FOUND'])
/** A message delivered this many times without settling (say, it crashes every agent) is dead-lettered */
const MAX_DELIVERIES = 20

export interface DispatchStats { ran: number, acked: number, retried: number, deadLettered: number, handedBack: number }

export class Dispatcher {
  readonly stats: DispatchStats = { ran: 0, acked: 0, retried: 0, deadLettered: 0, handedBack: 0 }

  private readonly metrics: MetricsSink

  constructor (private readonly c: DispatcherComponents) {
    this.metrics = c.metrics ?? noMetrics
  }

  /**
   * Never throws: every path acks, naks or dead-letters the message. `onClaimed` runs once the
   * event holds a slot of the executor or will not need one (so the puller counts it only once).
   */
  async handle (msg: JsMsg, binding: Binding, onClaimed: () => void = () => {}): Promise<void> {
    let claimed = false
    const claim = (): void => { if (!claimed) { claimed = true; onClaimed() } }
    this.metrics.eventPulled(binding.fn, msg.info.pending, Date.now() - msg.info.timestampNanos / 1e6)
    try {
      await this.settle(msg, binding, claim)
    } finally {
      claim()
    }
  }

  private async settle (msg: JsMsg, binding: Binding, claim: () => void): Promise<void> {
    let ev: PreparedEvent
    try {
      ev = prepare(msg, binding, this.c.executor.payloadLimit)
    } catch (err) {
      // Never run: an event over the limits could not be metered (or even handed to the function).
      const info = toErrorInfo(err)
      await this.deadLetter(msg, binding, null, info.code === 'FNMESH_ERR_PAYLOAD_TOO_LARGE' ? 'event too large' : 'invalid event', info)
      return
    }
    const spec = await this.c.functions.spec(binding.fn).catch(() => null)
    if (spec == null) {
      // Deleted, or the registry is unreachable for now: try again later.
      this.nak(msg, 5000)
      return
    }
    const now = Date.now()
    if (ev.notBeforeMs > now) {
      this.nak(msg, ev.notBeforeMs - now)
      return
    }
    if (now - ev.eventTimeMs > spec.maxEventAgeMs) {
      await this.deadLetter(msg, binding, ev, 'event too old', null, spec)
      return
    }
    if (ev.hops > MAX_HOPS) {
      await this.deadLetter(msg, binding, ev, 'loop detected', { code: 'FNMESH_ERR_LOOP_DETECTED', errorType: 'Fnmesh.LoopDetected', errorMessage: `Event ${ev.eventId} comes at hop ${ev.hops} of a chain of functions (the limit is ${MAX_HOPS})`, trace: [] }, spec, false)
      return
    }
    if (msg.info.deliveryCount > MAX_DELIVERIES) {
      await this.deadLetter(msg, binding, ev, `delivered ${msg.info.deliveryCount} times without finishing`, null, spec)
      return
    }
    const invocationId = eventInvocationId(spec.name, ev.eventId)
    // Tell JetStream the event is being worked on while the run takes long.
    const keepalive = setInterval(() => { msg.working() }, ACK_WAIT_MS / 3)
    let result: Encodable<InvokeResult>
    try {
      const started = this.c.executor.executeWhenFree({
        invocationId,
        function: spec.name,
        version: 0,
        payload: Buffer.from(ev.json, 'utf8'),
        attempt: ev.attempt,
        trigger: ev.kind,
        eventId: ev.eventId,
        attributes: ev.attributes,
        deadlineMs: Date.now() + spec.timeoutMs,
        hops: ev.hops
      }, () => { msg.working() })
      // execute() takes its slot synchronously when one is free (if none is, the node is full and
      // the puller asks for nothing more anyway).
      claim()
      result = await started
    } finally {
      clearInterval(keepalive)
    }
    if (result.ok !== true && result.error?.code === 'FNMESH_ERR_INVALID_ARGUMENT') {
      // The executor refused it before running (its meter record would be refused): no retry helps.
      await this.deadLetter(msg, binding, ev, 'cannot be metered', result.error as ErrorInfo, spec, false)
      return
    }
    this.stats.ran++
    if (result.ok === true) {
      // The destination is stored before the ack: a crash in between runs the event again, and
      // the destination's message id keeps it to one.
      const out: Outcome = { condition: 'Success', attempts: ev.attempt, result: Buffer.from(result.payload ?? new Uint8Array(0)).toString('utf8') || 'null' }
      if (!await this.destination(spec, ev, out)) {
        this.nak(msg, 2000)
        return
      }
      msg.ack()
      this.stats.acked++
      this.metrics.eventSettled(binding.fn, 'acked')
      return
    }
    const error = result.error as ErrorInfo
    if (HAND_BACK.has(error.code)) {
      this.stats.handedBack++
      this.metrics.eventSettled(binding.fn, 'handed_back')
      this.nak(msg, error.code === 'FNMESH_ERR_BUSY' ? 0 : 2000)
      return
    }
    if (ev.attempt <= spec.maxRetries) {
      await this.retry(msg, binding, ev, spec, error)
      return
    }
    await this.deadLetter(msg, binding, ev, 'retries exhausted', error, spec)
  }

  /** Publishes an outcome on the spec's destination (if any); false: not stored, hand the event back */
  private async destination (spec: StoredSpec, ev: PreparedEvent, out: Outcome): Promise<boolean> {
    return await publishDestination(this.c.js, spec, ev, out, (why) => {
      this.c.logger.warn({ fn: spec.name, eventId: ev.eventId, condition: out.condition, why }, 'destination not published')
    })
  }

  private nak (msg: JsMsg, delayMs: number): void {
    try { msg.nak(delayMs > 0 ? Math.ceil(delayMs) : undefined) } catch {}
  }

  private async retry (msg: JsMsg, binding: Binding, ev: PreparedEvent, spec: StoredSpec, error: ErrorInfo): Promise<void> {
    const now = Date.now()
    const delay = spec.retryBackoffMs * 2 ** (ev.attempt - 1)
    const h = natsHeaders()
    h.set(EventHeaders.attempt, String(ev.attempt + 1))
    h.set(EventHeaders.notBefore, String(now + delay))
    h.set(EventHeaders.eventId, ev.eventId)
    h.set(EventHeaders.eventTime, String(ev.eventTimeMs))
    h.set(EventHeaders.firstAttempt, String(ev.firstAttemptMs || now))
    h.set(EventHeaders.trigger, ev.trigger || binding.trigger?.raw || '')
    h.set(EventHeaders.attributes, JSON.stringify(ev.attributes))
    if (ev.hops > 0) h.set(HOPS_HEADER, String(ev.hops))
    try {
      // Stored before the original is acked: a crash in between runs it again, never loses it.
      await this.c.js.publish(functionSubject(spec.name, 'retry'), Buffer.from(ev.json, 'utf8'), { headers: h, msgID: `retry:${eventInvocationId(spec.name, ev.eventId)}:${ev.attempt + 1}` })
      msg.ack()
      this.stats.retried++
      this.metrics.eventSettled(binding.fn, 'retried')
      this.c.logger.info({ fn: spec.name, eventId: ev.eventId, attempt: ev.attempt, code: error.code, retryInMs: delay }, 'event failed; retry scheduled')
    } catch (err: any) {
      this.c.logger.warn({ fn: spec.name, eventId: ev.eventId, err: String(err?.message ?? err) }, 'could not schedule a retry; handing the event back')
      this.nak(msg, 2000)
    }
  }

  /** `ran`: whether this delivery ran the function (then its attempt counts as a run made) */
  private async deadLetter (msg: JsMsg, binding: Binding, ev: PreparedEvent | null, reason: string, error: ErrorInfo | null, spec?: StoredSpec, ran = ev != null && error != null): Promise<void> {
    const now = Date.now()
    const eventId = ev?.eventId ?? `${msg.info.stream}-${msg.seq}`
    const record = encode('DeadLetter', {
      function: binding.fn,
      trigger: ev?.trigger || binding.trigger?.raw || '',
      subject: msg.subject,
      attributes: ev?.attributes ?? {},
      // An event over the payload limit is not copied: its dead letter must fit in a NATS message.
      event: ev != null ? Buffer.from(ev.json, 'utf8') : msg.data.byteLength > this.c.executor.payloadLimit ? new Uint8Array(0) : msg.data,
      eventId,
      invocationId: eventInvocationId(binding.fn, eventId),
      attempts: ran ? (ev?.attempt ?? 1) : (ev?.attempt ?? 1) - 1,
      eventTimeMs: ev?.eventTimeMs ?? 0,
      firstAttemptMs: ev?.firstAttemptMs || (error != null ? now : 0),
      lastAttemptMs: error != null ? now : 0,
      reason,
      error
    })
    try {
      await this.c.js.publish(dlqSubject(binding.fn), record, { msgID: `dlq:${binding.fn}:${eventId}:${ev?.attempt ?? 0}` })
      // The final failure's destination, before the ack (deduplicated if the event comes again).
      if (ev != null && spec != null && !await this.destination(spec, ev, { condition: conditionOf(reason), attempts: ran ? ev.attempt : ev.attempt - 1, error })) {
        this.nak(msg, 2000)
        return
      }
      msg.ack()
      this.stats.deadLettered++
      this.metrics.eventSettled(binding.fn, 'dead_lettered')
      this.c.logger.warn({ fn: binding.fn, eventId, reason, code: error?.code, attempts: ev?.attempt, maxRetries: spec?.maxRetries }, 'event dead-lettered')
    } catch (err: any) {
      this.c.logger.warn({ fn: binding.fn, eventId, err: String(err?.message ?? err) }, 'could not dead-letter an event; handing it back')
      this.nak(msg, 2000)
    }
  }
}
