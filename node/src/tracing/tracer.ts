/**
 * What the parts tell the tracing: a small tracer the agent hands them (like metrics/sink.ts).
 * Only tracing/otel.ts knows OpenTelemetry, and agent.ts loads it only with --otlp-endpoint;
 * without it every part holds `noTracing`, whose `enabled` is false, and the hot paths check
 * that boolean before they build a span's attributes.
 *
 * The trace context still travels when tracing is off: a caller's `traceparent` reaches the
 * function unchanged (context.traceparent, _X_AMZN_TRACE_ID), only no span of the mesh is in it.
 */

export type SpanKind = 'server' | 'client' | 'internal' | 'consumer' | 'producer'
export type SpanAttributes = Record<string, string | number | boolean | undefined>

export interface SpanOptions {
  kind?: SpanKind
  /** a span of this process */
  parent?: TraceSpan
  /** a context from outside (header, NATS field): checked again here, anything invalid starts a new trace */
  remote?: { traceparent?: string | null, tracestate?: string | null }
  attributes?: SpanAttributes
  /** epoch ms it started (a stage timed before the span could be made); default now */
  startMs?: number
}

export interface TraceSpan {
  /** this span as a W3C `traceparent`, for the work it hands to another process */
  readonly traceparent: string
  readonly tracestate: string | undefined
  set: (key: string, value: string | number | boolean) => void
  rename: (name: string) => void
  /** status ERROR, with the FNMESH code as `error.type` and `fnmesh.error.code` */
  fail: (code: string, message?: string | null) => void
  /** ends it (at `endMs`, epoch ms, when given); later calls do nothing */
  end: (endMs?: number) => void
}

export interface Tracer {
  /** false: spans are not recorded; callers skip building them */
  readonly enabled: boolean
  start: (name: string, options?: SpanOptions) => TraceSpan
  /** exports what is queued (bounded in time) and stops; idempotent */
  shutdown: () => Promise<void>
}

const NO_SPAN: TraceSpan = {
  traceparent: '',
  tracestate: undefined,
  set: () => {},
  rename: () => {},
  fail: () => {},
  end: () => {}
}

/** The tracer when tracing is off: one shared do-nothing span, no allocation */
export const noTracing: Tracer = {
  enabled: false,
  start: () => NO_SPAN,
  shutdown: async () => {}
}

/** OTel FaaS `faas.trigger` for fnmesh's trigger kinds */
export function faasTrigger (trigger: string): 'http' | 'pubsub' | 'timer' | 'datasource' | 'other' {
  switch (trigger) {
    case 'http': return 'http'
    case 'subject': return 'pubsub'
    case 'schedule': return 'timer'
    case 'object':
    case 'kv': return 'datasource'
    default: return 'other'
  }
}
