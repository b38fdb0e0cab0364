/**
 * One JetStream message -> the event a function runs with: its id (stable across retries), its
 * time, its CloudEvent attributes, the JSON the handler receives, and which attempt this is.
 */
import type { JsMsg } from '@nats-io/jetstream'
import { InputError } from '../../../proto/errors.js'
import { MAX_ID_BYTES, SYNC_PAYLOAD_LIMIT } from '../../../proto/subjects.js'
import { parseEventMessage } from '../../../core/cloudevents.js'
import { EventHeaders, type Binding } from '../../../core/events.js'
import { HOPS_HEADER } from '../../../core/bindings.js'

export interface PreparedEvent {
  eventId: string
  /** epoch ms the event happened */
  eventTimeMs: number
  attributes: Record<string, string>
  /** the handler's event, JSON text */
  json: string
  /** the run this delivery asks for: 1 = first */
  attempt: number
  /** epoch ms of the first run (0 = this is it) */
  firstAttemptMs: number
  /** epoch ms before which it must not run (retry backoff) */
  notBeforeMs: number
  /** the trigger it came through, e.g. "orders.*" */
  trigger: string
  /** the kind of that trigger, recorded in metering */
  kind: string
  /** functions before this event in its chain (header Fnmesh-Hops, set by agents; 0 from outside) */
  hops: number
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/**
 * Throws FNMESH_ERR_INVALID_EVENT for a message that cannot be an event, and FNMESH_ERR_PAYLOAD_TOO_LARGE
 * for one bigger than `payloadLimit` (raw, or as the JSON the handler would get): both before it runs.
 */
export function prepare (msg: JsMsg, binding: Binding, payloadLimit = SYNC_PAYLOAD_LIMIT): PreparedEvent {
  // Raw publishers skip the SDK's checks: bound the bytes before parsing them.
  if (msg.data.byteLength > payloadLimit) {
    throw new InputError('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Event ${msg.info.stream}-${msg.seq} is ${msg.data.byteLength} bytes, over the limit of ${payloadLimit}`)
  }
  const ev = parse(msg, binding)
  const hops = Number(msg.headers?.get(HOPS_HEADER) ?? '')
  ev.hops = Number.isSafeInteger(hops) && hops > 0 ? hops : 0
  const idBytes = Buffer.byteLength(ev.eventId)
  if (idBytes > MAX_ID_BYTES) {
    throw new InputError('FNMESH_ERR_INVALID_EVENT', `Event ${msg.info.stream}-${msg.seq} has an id of ${idBytes} bytes, over the limit of ${MAX_ID_BYTES}`)
  }
  const jsonBytes = Buffer.byteLength(ev.json)
  if (jsonBytes > payloadLimit) {
    throw new InputError('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Event ${msg.info.stream}-${msg.seq} is ${jsonBytes} bytes as the handler's JSON, over the limit of ${payloadLimit}`)
  }
  return ev
}

function parse (msg: JsMsg, binding: Binding): PreparedEvent {
  const seqId = `${msg.info.stream}-${msg.seq}`
  const time = Math.floor(Number(msg.timestampNanos / 1_000_000n))
  const base = { attempt: 1, firstAttemptMs: 0, notBeforeMs: 0, trigger: binding.trigger?.raw ?? '', kind: binding.trigger?.kind ?? 'direct', hops: 0 }
  const t = binding.trigger
  if (t == null) return fromDirect(msg, seqId, time)
  if (t.kind === 'subject') {
    const ev = parseEventMessage(msg.data, msg.headers, { id: seqId, source: `nats:${msg.subject}`, type: 'fnmesh.nats.message', time: new Date(time).toISOString(), subject: msg.subject })
    // The event's age counts from when JetStream accepted it (as Lambda counts from when it
    // received it), not from the time its publisher wrote in it.
    return { ...base, eventId: ev.attributes.id, eventTimeMs: time, attributes: ev.attributes, json: ev.json }
  }
  if (t.kind === 'object') {
    let info: Record<string, unknown>
    try {
      info = JSON.parse(Buffer.from(msg.data).toString('utf8'))
    } catch {
      throw new InputError('FNMESH_ERR_INVALID_EVENT', `Object store message ${seqId} is not JSON`)
    }
    const deleted = info.deleted === true
    const event = { bucket: t.bucket, name: info.name, size: info.size, digest: info.digest, mtime: info.mtime, nuid: info.nuid, deleted, operation: deleted ? 'delete' : 'put' }
    const id = `obj-${t.bucket}-${String(info.nuid ?? seqId)}${deleted ? '-del' : ''}`
    return { ...base, eventId: id, eventTimeMs: time, attributes: { specversion: '1.0', id, source: `nats-object:${t.bucket}`, type: `fnmesh.object.${event.operation}`, subject: String(info.name ?? ''), time: new Date(time).toISOString() }, json: JSON.stringify(event) }
  }
  if (t.kind !== 'kv') throw new InputError('FNMESH_ERR_INVALID_EVENT', `Trigger "${t.raw}" has no consumer of its own`)
  // kv: the subject is $KV.<bucket>.<key>
  const key = msg.subject.slice(`$KV.${t.bucket}.`.length)
  const op = msg.headers?.get('KV-Operation') || 'PUT'
  let value: string | null = null
  try { value = utf8.decode(msg.data) } catch {}
  const event = { bucket: t.bucket, key, operation: op, revision: msg.seq, value, ...(value == null ? { valueBase64: Buffer.from(msg.data).toString('base64') } : {}) }
  const id = `kv-${t.bucket}-${msg.seq}`
  return { ...base, eventId: id, eventTimeMs: time, attributes: { specversion: '1.0', id, source: `nats-kv:${t.bucket}`, type: `fnmesh.kv.${op.toLowerCase()}`, subject: key, time: new Date(time).toISOString() }, json: JSON.stringify(event) }
}

/** An event aimed at one function (schedule tick, retry, replay): fnmesh headers, event JSON body */
function fromDirect (msg: JsMsg, seqId: string, time: number): PreparedEvent {
  const h = msg.headers
  const num = (name: string): number => { const v = Number(h?.get(name) ?? ''); return Number.isFinite(v) ? v : 0 }
  let attributes: Record<string, string> = {}
  try {
    const parsed = JSON.parse(h?.get(EventHeaders.attributes) || '{}')
    if (parsed != null && typeof parsed === 'object') attributes = Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, String(v)]))
  } catch {
    throw new InputError('FNMESH_ERR_INVALID_EVENT', `Event ${seqId} has a malformed ${EventHeaders.attributes} header`)
  }
  let json: string
  try {
    json = utf8.decode(msg.data)
    JSON.parse(json)
  } catch {
    throw new InputError('FNMESH_ERR_INVALID_EVENT', `Event ${seqId} aimed at a function is not JSON`)
  }
  const eventId = h?.get(EventHeaders.eventId) || seqId
  const trigger = h?.get(EventHeaders.trigger) || ''
  return {
    eventId,
    eventTimeMs: num(EventHeaders.eventTime) || time,
    attributes: { specversion: '1.0', id: eventId, ...attributes },
    json,
    attempt: Math.max(1, num(EventHeaders.attempt)),
    firstAttemptMs: num(EventHeaders.firstAttempt),
    notBeforeMs: num(EventHeaders.notBefore),
    trigger,
    hops: 0,
    kind: trigger.startsWith('cron:') || trigger.startsWith('rate') ? 'schedule' : (msg.subject.split('.').pop() ?? 'direct')
  }
}
