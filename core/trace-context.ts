/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) as fnmesh carries it: a `traceparent`
 * (and its `tracestate`) from an HTTP header, an SDK call, a NATS header or a CloudEvent's
 * distributed tracing extension. Anything from outside is checked strictly here; what fails the
 * check is ignored (the run starts a new trace), never an error to the caller. Shared by the
 * agent and the SDK; no OpenTelemetry import, so it costs nothing when tracing is off.
 */

/** One parsed `traceparent` (version 00) */
export interface TraceParent {
  /** 32 lowercase hex digits, not all zero */
  traceId: string
  /** 16 lowercase hex digits, not all zero */
  spanId: string
  /** trace flags, 0-255; bit 0 = sampled */
  flags: number
}

/** The header names (lowercase, as HTTP/2 and NATS clients send them) */
export const TRACEPARENT = 'traceparent'
export const TRACESTATE = 'tracestate'
/** CloudEvents binary mode over NATS: the extension attributes as `ce-` headers */
export const CE_TRACEPARENT = 'ce-traceparent'
export const CE_TRACESTATE = 'ce-tracestate'

const TRACEPARENT_PATTERN = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/
const ZERO_TRACE = '00000000000000000000000000000000'
const ZERO_SPAN = '0000000000000000'
/** W3C: at most 32 list members, and a vendor may cut a longer header; we refuse over 512 bytes */
const TRACESTATE_MAX = 512
const TRACESTATE_MEMBERS = 32
const STATE_KEY = /^(?:[a-z0-9][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})$/
const STATE_VALUE = /^[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$/

/**
 * Parses a `traceparent`: exactly version 00 (55 characters, lowercase hex), a trace id and a
 * span id that are not all zero. Anything else (other versions, upper case, spaces, extra
 * fields) is undefined.
 */
export function parseTraceparent (value: unknown): TraceParent | undefined {
  if (typeof value !== 'string' || value.length !== 55) return undefined
  const m = TRACEPARENT_PATTERN.exec(value)
  if (m == null || m[1] === ZERO_TRACE || m[2] === ZERO_SPAN) return undefined
  return { traceId: m[1], spanId: m[2], flags: parseInt(m[3], 16) }
}

/** The `traceparent` header of `tp` (version 00) */
export function formatTraceparent (tp: TraceParent): string {
  return `00-${tp.traceId}-${tp.spanId}-${(tp.flags & 0xff).toString(16).padStart(2, '0')}`
}

/** `value` when it is a valid `traceparent`, else undefined */
export function validTraceparent (value: unknown): string | undefined {
  return parseTraceparent(value) != null ? value as string : undefined
}

/**
 * `value` when it is a valid `tracestate` list (at most 512 bytes and 32 members, each
 * key=value by the W3C grammar, keys unique), with empty members dropped; else undefined.
 */
export function validTracestate (value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length === 0 || value.length > TRACESTATE_MAX) return undefined
  const members: string[] = []
  const keys = new Set<string>()
  for (const raw of value.split(',')) {
    const member = raw.trim()
    if (member === '') continue
    const eq = member.indexOf('=')
    if (eq <= 0) return undefined
    const key = member.slice(0, eq)
    const val = member.slice(eq + 1)
    if (!STATE_KEY.test(key) || !STATE_VALUE.test(val) || keys.has(key)) return undefined
    keys.add(key)
    members.push(member)
  }
  if (members.length === 0 || members.length > TRACESTATE_MEMBERS) return undefined
  return members.join(',')
}

/** A checked trace context: `tracestate` only travels with a valid `traceparent` */
export interface TraceContext {
  traceparent: string
  tracestate?: string
}

/** The trace context of untrusted input (headers, options, event attributes): undefined unless the traceparent is valid */
export function traceContextOf (traceparent: unknown, tracestate?: unknown): TraceContext | undefined {
  const tp = validTraceparent(traceparent)
  if (tp == null) return undefined
  const ts = validTracestate(tracestate)
  return ts != null ? { traceparent: tp, tracestate: ts } : { traceparent: tp }
}

/**
 * AWS X-Ray's trace header for a W3C context, as Lambda sets `_X_AMZN_TRACE_ID`:
 * `Root=1-{first 8 hex of the trace id}-{other 24};Parent={span id};Sampled={0|1}`. X-Ray's
 * root is a time (8 hex) and 96 random bits: a W3C trace id maps onto it one to one, so a
 * tracer reading either header lands in the same trace.
 */
export function toXRay (tp: TraceParent): string {
  return `Root=1-${tp.traceId.slice(0, 8)}-${tp.traceId.slice(8)};Parent=${tp.spanId};Sampled=${(tp.flags & 1) === 1 ? '1' : '0'}`
}

/** The W3C context of an X-Ray trace header (Root, Parent and Sampled in any order); undefined if it has no valid Root and Parent */
export function fromXRay (header: unknown): TraceParent | undefined {
  if (typeof header !== 'string' || header.length > 256) return undefined
  const fields = new Map<string, string>()
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim())
  }
  const root = /^1-([0-9a-f]{8})-([0-9a-f]{24})$/.exec(fields.get('Root') ?? '')
  const parent = fields.get('Parent') ?? ''
  if (root == null || !/^[0-9a-f]{16}$/.test(parent)) return undefined
  const tp = { traceId: root[1] + root[2], spanId: parent, flags: fields.get('Sampled') === '1' ? 1 : 0 }
  return tp.traceId === ZERO_TRACE || tp.spanId === ZERO_SPAN ? undefined : tp
}
