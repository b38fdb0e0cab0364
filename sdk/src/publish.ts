/**
 * Async events from the client side: publish (CloudEvents over JetStream, durable on return),
 * and the dead-letter stream: list, replay, purge.
 */
import { randomUUID } from 'node:crypto'
import { jetstream, jetstreamManager, AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream'
import { headers as natsHeaders, nanos, nuid, NoRespondersError, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node'
import { decode, type DeadLetter } from '../../proto/codec.js'
import { FnmeshError, InputError, NotFoundError, TransportError, UsageError } from '../../proto/errors.js'
import { binaryHeaders, STRUCTURED_CONTENT_TYPE, validateCloudEvent, type CloudEvent } from '../../core/cloudevents.js'
import { jsRetry } from '../../core/js-retry.js'
import { traceContextOf } from '../../core/trace-context.js'
import { DLQ_STREAM, EVENTS_STREAM, subjectCovers, EventHeaders, dlqSubject, functionSubject } from '../../core/events.js'
import { bounded, DEFAULT_CALL_TIMEOUT_MS } from '../../core/call.js'

/** Largest async event (JSON bytes). Lambda takes 256 KB; JetStream here takes more. */
export const ASYNC_PAYLOAD_LIMIT = 1024 * 1024

export interface PublishOptions {
  /** Event id: the same id within the 10 minute dedupe window is accepted once. @default a UUID */
  id?: string
  /** CloudEvent type. @default "fnmesh.event" */
  type?: string
  /** CloudEvent source. @default "fnmesh://sdk" */
  source?: string
  /**
   * W3C trace context the event's run continues: the CloudEvents distributed tracing extension
   * (`ce-traceparent` in binary mode; added to a structured CloudEvent that has none). An invalid
   * value is left out (the run starts a new trace), never an error.
   */
  traceparent?: string
  /** W3C `tracestate`, sent with a valid `traceparent` */
  tracestate?: string
  signal?: AbortSignal
  /** @default 10000 */
  timeoutMs?: number
}

export interface PublishResult {
  id: string
  stream: string
  seq: number
  /** true if JetStream already had an event with this id (it was not stored again) */
  duplicate: boolean
}

const clients = new WeakMap<NatsConnection, JetStreamClient>()
/** One JetStream client per connection, made on first use */
function jsClient (nc: NatsConnection): JetStreamClient {
  let js = clients.get(nc)
  if (js == null) { js = jetstream(nc); clients.set(nc, js) }
  return js
}

const PUBLISH_TOKEN = /^[A-Za-z0-9_\-:=@+~]+$/

function checkPublishSubject (subject: string): void {
  if (typeof subject !== 'string' || subject === '' || subject.length > 256 || /^(fnmesh|_INBOX|\$)/i.test(subject) ||
      subject.split('.').some(t => !PUBLISH_TOKEN.test(t))) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot publish to "${String(subject)}": a subject is dot-separated tokens of letters, digits and -_:=@+~, with no wildcards or spaces, not starting with "fnmesh", "_INBOX" or "$"`)
  }
}

function isCloudEvent (data: unknown): data is CloudEvent {
  return data != null && typeof data === 'object' && !Array.isArray(data) && 'specversion' in data
}

export async function publishEvent (nc: NatsConnection, subject: string, data: unknown, options: PublishOptions = {}): Promise<PublishResult> {
  checkPublishSubject(subject)
  let body: string
  let id: string
  let h
  const trace = traceContextOf(options.traceparent, options.tracestate)
  if (isCloudEvent(data)) {
    if (trace != null && data.traceparent === undefined) data = { ...data, ...trace }
    validateCloudEvent(data)
    id = data.id
    body = JSON.stringify(data)
    h = natsHeaders()
    h.set('content-type', STRUCTURED_CONTENT_TYPE)
  } else {
    id = options.id ?? randomUUID()
    const attrs = { specversion: '1.0', id, source: options.source ?? 'fnmesh://sdk', type: options.type ?? 'fnmesh.event', time: new Date().toISOString(), datacontenttype: 'application/json', ...trace }
    validateCloudEvent(attrs)
    try {
      body = JSON.stringify(data === undefined ? null : data)
    } catch (err: any) {
      throw new InputError('FNMESH_ERR_INVALID_JSON', `Cannot publish to "${subject}": the event cannot be serialised to JSON (${String(err?.message)})`)
    }
    h = binaryHeaders(attrs)
  }
  const bytes = Buffer.from(body, 'utf8')
  if (bytes.byteLength > ASYNC_PAYLOAD_LIMIT) {
    throw new InputError('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Cannot publish to "${subject}": the event is ${bytes.byteLength} bytes, over the limit of ${ASYNC_PAYLOAD_LIMIT}`)
  }
  // An event whose publish was aborted may still be stored: publishing it again with the same id is safe.
  return await bounded(`publish to "${subject}"`, options, DEFAULT_CALL_TIMEOUT_MS, async (signal) => await store(nc, subject, bytes, id, h, options.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS, signal))
}

async function store (nc: NatsConnection, subject: string, bytes: Uint8Array, id: string, h: MsgHdrs, timeoutMs: number, signal?: AbortSignal): Promise<PublishResult> {
  try {
    // Safe to send again (same Nats-Msg-Id): across a leader election of a replicated stream,
    // "no responders" is retried within the caller's timeout.
    const deadline = Date.now() + timeoutMs
    const ack = await jsRetry(async () => {
      try {
        return await jsClient(nc).publish(subject, bytes, { msgID: id, headers: h, timeout: Math.max(1, deadline - Date.now()) })
      } catch (err: any) {
        // No stream captures the subject at all: not worth waiting for. Thrown as the coded error
        // itself: a plain error carrying JetStream's "no responders" as its cause read as transient
        // to jsRetry, which waited out the whole budget (~10 s) before saying so.
        if (isNoResponders(err) && await capturedBy(nc, subject) === null) throw notCaptured(subject)
        throw err
      }
    }, { budgetMs: Math.max(0, deadline - Date.now() - 100), signal })
    return { id, stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate }
  } catch (err: any) {
    // JetStream answers a publish to a subject no stream captures with "no responders", which the
    // client reports as JetStream not enabled: ask JetStream itself which one it is.
    if (err instanceof NotFoundError) throw err
    if (isNoResponders(err) && await capturedBy(nc, subject) === null) throw notCaptured(subject)
    if (err?.name === 'TimeoutError' || /timeout/i.test(String(err?.message))) {
      throw new TransportError('FNMESH_ERR_CLIENT_TIMEOUT', `Cannot publish to "${subject}": JetStream did not confirm within ${timeoutMs} ms`, { cause: err })
    }
    throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot publish to "${subject}": ${String(err?.message ?? err)}`, { cause: err })
  }
}

function notCaptured (subject: string): NotFoundError {
  return new NotFoundError('FNMESH_ERR_NOT_FOUND', `Cannot publish to "${subject}": no function is triggered by it (no JetStream stream captures the subject; deploy one with --on "${subject}")`)
}

function isNoResponders (err: any): boolean {
  return err instanceof NoRespondersError || err?.cause instanceof NoRespondersError || /no responders|jetstream is not enabled|503/i.test(String(err?.message))
}

/**
 * The stream capturing `subject`; null only when JetStream says none does and the mesh's events
 * stream answers (with subjects that do not cover it); undefined when it cannot tell (no rights,
 * or a server cut off from the cluster's leaders, which may answer that no stream matches).
 */
async function capturedBy (nc: NatsConnection, subject: string): Promise<string | null | undefined> {
  try {
    const jsm = await jetstreamManager(nc, { checkAPI: false })
    const found = await jsm.streams.find(subject).catch((err: any) => { if (/no stream matches/i.test(String(err?.message))) return null; throw err })
    if (found != null) return found
    const events = await jsm.streams.info(EVENTS_STREAM)
    return (events.config.subjects ?? []).some(p => subjectCovers(p, subject)) ? undefined : null
  } catch {
    return undefined
  }
}

export interface DeadLetterInfo {
  seq: number
  function: string
  trigger: string
  subject: string
  eventId: string
  invocationId: string
  attempts: number
  reason: string
  error: { code: string, errorType: string, errorMessage: string } | null
  eventTime: string
  firstAttemptAt: string
  lastAttemptAt: string
  /** the event as the function received it */
  event: unknown
  attributes: Record<string, string>
}

function iso (ms: number): string {
  return ms > 0 ? new Date(ms).toISOString() : ''
}

/** Every dead letter (of `fn`) through a temporary consumer, deleted however the read ends */
async function readDeadLetters (nc: NatsConnection, jsm: JetStreamManager, fn?: string, signal?: AbortSignal): Promise<Array<{ seq: number, dl: DeadLetter }>> {
  const exists = await jsm.streams.info(DLQ_STREAM).then(() => true, () => false)
  if (!exists) return []
  signal?.throwIfAborted()
  const name = `fnmesh_dlq_${nuid.next()}`
  await jsm.consumers.add(DLQ_STREAM, {
    name,
    filter_subject: fn != null ? dlqSubject(fn) : 'fnmesh.dlq.>',
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.All,
    inactive_threshold: nanos(30_000)
  })
  const out: Array<{ seq: number, dl: DeadLetter }> = []
  try {
    const consumer = await jetstream(nc).consumers.get(DLQ_STREAM, name)
    let pending = (await consumer.info()).num_pending
    while (pending > 0) {
      signal?.throwIfAborted()
      const batch = await consumer.fetch({ max_messages: Math.min(pending, 256), expires: 2000 })
      // An abort ends the pull at once, so the consumer is deleted now rather than after it expires.
      const stop = (): void => { batch.stop() }
      signal?.addEventListener('abort', stop, { once: true })
      let got = 0
      try {
        for await (const m of batch) {
          got++
          try { out.push({ seq: m.seq, dl: decode('DeadLetter', m.data) }) } catch {}
        }
      } finally {
        signal?.removeEventListener('abort', stop)
      }
      signal?.throwIfAborted()
      if (got === 0) break
      pending -= got
    }
  } finally {
    await jsm.consumers.delete(DLQ_STREAM, name).catch(() => {})
  }
  return out
}

export async function listDeadLetters (nc: NatsConnection, jsm: JetStreamManager, fn?: string, signal?: AbortSignal): Promise<DeadLetterInfo[]> {
  return (await readDeadLetters(nc, jsm, fn, signal)).map(({ seq, dl }) => {
    let event: unknown
    try { event = JSON.parse(Buffer.from(dl.event).toString('utf8')) } catch { event = null }
    return {
      seq,
      function: dl.function,
      trigger: dl.trigger,
      subject: dl.subject,
      eventId: dl.eventId,
      invocationId: dl.invocationId,
      attempts: dl.attempts,
      reason: dl.reason,
      error: dl.error != null && dl.error.code !== '' ? { code: dl.error.code, errorType: dl.error.errorType, errorMessage: dl.error.errorMessage } : null,
      eventTime: iso(dl.eventTimeMs),
      firstAttemptAt: iso(dl.firstAttemptMs),
      lastAttemptAt: iso(dl.lastAttemptMs),
      event,
      attributes: { ...dl.attributes }
    }
  })
}

export async function replayDeadLetters (nc: NatsConnection, jsm: JetStreamManager, fn?: string, signal?: AbortSignal): Promise<{ replayed: number }> {
  const js = jetstream(nc)
  let replayed = 0
  for (const { seq, dl } of await readDeadLetters(nc, jsm, fn, signal)) {
    signal?.throwIfAborted()
    const h = natsHeaders()
    h.set(EventHeaders.attempt, '1')
    h.set(EventHeaders.eventId, dl.eventId)
    // Its age counts from the replay: an event dead-lettered for being too old runs again.
    h.set(EventHeaders.eventTime, String(Date.now()))
    h.set(EventHeaders.trigger, dl.trigger)
    h.set(EventHeaders.attributes, JSON.stringify(dl.attributes))
    try {
      await js.publish(functionSubject(dl.function, 'replay'), dl.event, { headers: h, msgID: `replay:${seq}` })
      await jsm.streams.deleteMessage(DLQ_STREAM, seq)
    } catch (err: any) {
      throw err instanceof FnmeshError ? err : new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot replay dead letter ${seq}: ${String(err?.message ?? err)}`)
    }
    replayed++
  }
  return { replayed }
}

export async function purgeDeadLetters (jsm: JetStreamManager, fn?: string, signal?: AbortSignal): Promise<{ purged: number }> {
  const exists = await jsm.streams.info(DLQ_STREAM).then(() => true, () => false)
  if (!exists) return { purged: 0 }
  signal?.throwIfAborted()
  const r = await jsm.streams.purge(DLQ_STREAM, { filter: fn != null ? dlqSubject(fn) : 'fnmesh.dlq.>' })
  return { purged: r.purged }
}
