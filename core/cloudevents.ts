/**
 * CloudEvents 1.0 on NATS: structured mode (body `application/cloudevents+json`) and binary mode
 * (attributes as `ce-` headers, the body is the data). Validation follows the CloudEvents spec's
 * required attributes and type rules; any other NATS message is wrapped as an event with
 * attributes fnmesh fills in.
 */
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/transport-node'
import { InputError } from '../proto/errors.js'
import { MAX_ID_BYTES } from '../proto/subjects.js'

export interface CloudEvent {
  specversion: string
  id: string
  source: string
  type: string
  time?: string
  subject?: string
  datacontenttype?: string
  dataschema?: string
  data?: unknown
  data_base64?: string
  /** extension attributes */
  [extension: string]: unknown
}

export const STRUCTURED_CONTENT_TYPE = 'application/cloudevents+json'
const CORE = new Set(['specversion', 'id', 'source', 'type', 'time', 'subject', 'datacontenttype', 'dataschema'])
const EXTENSION_NAME = /^[a-z0-9]{1,20}$/
// RFC 3339 date-time
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/

function bad (why: string): never {
  throw new InputError('FNMESH_ERR_INVALID_EVENT', `Invalid CloudEvent: ${why}`)
}

/** Throws FNMESH_ERR_INVALID_EVENT unless `ce` is a valid CloudEvent 1.0 (JSON format) */
export function validateCloudEvent (ce: unknown): asserts ce is CloudEvent {
  if (ce == null || typeof ce !== 'object' || Array.isArray(ce)) bad('not a JSON object')
  const e = ce as Record<string, unknown>
  if (e.specversion !== '1.0') bad(`specversion must be "1.0", got ${JSON.stringify(e.specversion)}`)
  for (const k of ['id', 'source', 'type']) {
    if (typeof e[k] !== 'string' || e[k] === '') bad(`${k} must be a non-empty string`)
  }
  // The id goes into the meter record of every run, which peers refuse over MAX_ID_BYTES.
  const idBytes = Buffer.byteLength(e.id as string)
  if (idBytes > MAX_ID_BYTES) bad(`id is ${idBytes} bytes, over the limit of ${MAX_ID_BYTES}`)
  if (e.time !== undefined && (typeof e.time !== 'string' || !RFC3339.test(e.time) || Number.isNaN(Date.parse(e.time)))) {
    bad(`time must be an RFC 3339 timestamp, got ${JSON.stringify(e.time)}`)
  }
  for (const k of ['subject', 'datacontenttype', 'dataschema']) {
    if (e[k] !== undefined && (typeof e[k] !== 'string' || e[k] === '')) bad(`${k} must be a non-empty string when present`)
  }
  if (e.data !== undefined && e.data_base64 !== undefined) bad('data and data_base64 are both present')
  if (e.data_base64 !== undefined && (typeof e.data_base64 !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(e.data_base64))) bad('data_base64 is not base64')
  for (const [k, v] of Object.entries(e)) {
    if (CORE.has(k) || k === 'data' || k === 'data_base64') continue
    if (!EXTENSION_NAME.test(k)) bad(`attribute name "${k}" must be 1-20 lowercase letters or digits`)
    if (v !== null && !['string', 'number', 'boolean'].includes(typeof v)) bad(`extension attribute "${k}" must be a string, number or boolean`)
  }
}

/** Binary mode: the attributes as ce- headers (data goes in the body) */
export function binaryHeaders (attrs: Omit<CloudEvent, 'data' | 'data_base64'>): MsgHdrs {
  const h = natsHeaders()
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue
    if (k === 'datacontenttype') h.set('content-type', String(v))
    else h.set(`ce-${k}`, String(v))
  }
  return h
}

/** What a consumer makes of one NATS message */
export interface ParsedEvent {
  /** CloudEvent attributes (strings), with fnmesh's own when the publisher gave none */
  attributes: Record<string, string>
  /** the event body handed to the function, as JSON text */
  json: string
  mode: 'structured' | 'binary' | 'plain'
}

function header (h: MsgHdrs | undefined, name: string): string | undefined {
  if (h == null) return undefined
  return h.get(name) || h.get(name.toLowerCase()) || h.get(name.replace(/(^|-)([a-z])/g, (m) => m.toUpperCase())) || undefined
}

const decoder = new TextDecoder('utf-8', { fatal: true })

/** Data bytes to the JSON text the function receives: JSON stays JSON, text becomes a string */
function dataToJson (data: Uint8Array, contentType: string | undefined): string {
  if (data.byteLength === 0) return 'null'
  let text: string
  try {
    text = decoder.decode(data)
  } catch {
    return JSON.stringify({ data_base64: Buffer.from(data).toString('base64') })
  }
  if (contentType == null || /json/i.test(contentType)) {
    try { JSON.parse(text); return text } catch {}
  }
  return JSON.stringify(text)
}

/** The body as a JSON object if it is one with a `specversion` member (a structured CloudEvent), else undefined */
function structuredBody (data: Uint8Array): Record<string, unknown> | undefined {
  // Cheap refusal first: most plain messages are not JSON objects at all.
  let i = 0
  while (i < data.byteLength && (data[i] === 0x20 || data[i] === 0x0a || data[i] === 0x0d || data[i] === 0x09)) i++
  if (data[i] !== 0x7b) return undefined
  let value: unknown
  try { value = JSON.parse(Buffer.from(data).toString('utf8')) } catch { return undefined }
  if (value == null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, 'specversion')) return undefined
  return value as Record<string, unknown>
}

/**
 * Parses a message from a trigger subject. `fallback` gives the attributes of a message that is
 * not a CloudEvent (a plain NATS publish). Throws FNMESH_ERR_INVALID_EVENT for a message that
 * claims to be a CloudEvent and is not a valid one.
 */
export function parseEventMessage (data: Uint8Array, h: MsgHdrs | undefined, fallback: { id: string, source: string, type: string, time: string, subject: string }): ParsedEvent {
  const contentType = header(h, 'content-type')
  const specversion = header(h, 'ce-specversion')
  // Structured mode: said by the content type, or (the CloudEvents NATS binding, which the Go SDK
  // follows) a message with neither a content type nor ce- headers whose body is a JSON object
  // naming its specversion.
  const unlabelled = contentType == null && specversion == null ? structuredBody(data) : undefined
  if (unlabelled !== undefined || (contentType != null && contentType.toLowerCase().startsWith('application/cloudevents'))) {
    let ce: unknown = unlabelled
    if (ce === undefined) {
      try {
        ce = JSON.parse(Buffer.from(data).toString('utf8'))
      } catch {
        bad('structured-mode body is not JSON')
      }
    }
    validateCloudEvent(ce)
    const { data: body, data_base64: b64, ...rest } = ce
    const attributes = Object.fromEntries(Object.entries(rest).map(([k, v]) => [k, String(v)]))
    const json = b64 !== undefined ? JSON.stringify({ data_base64: b64 }) : JSON.stringify(body === undefined ? null : body)
    return { attributes, json, mode: 'structured' }
  }
  if (specversion != null) {
    const attrs: Record<string, unknown> = {}
    for (const k of h?.keys() ?? []) {
      const lower = k.toLowerCase()
      if (lower.startsWith('ce-')) attrs[lower.slice(3)] = h?.get(k)
    }
    if (contentType != null) attrs.datacontenttype = contentType
    validateCloudEvent(attrs)
    // The data's type: the content-type header, else a ce-datacontenttype header.
    const dataType = typeof attrs.datacontenttype === 'string' ? attrs.datacontenttype : undefined
    return { attributes: attrs as Record<string, string>, json: dataToJson(data, dataType), mode: 'binary' }
  }
  const attributes: Record<string, string> = { specversion: '1.0', ...fallback }
  if (contentType != null) attributes.datacontenttype = contentType
  return { attributes, json: dataToJson(data, contentType), mode: 'plain' }
}
