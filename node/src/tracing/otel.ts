/**
 * The tracer with --otlp-endpoint: the OpenTelemetry JS SDK (a tracer provider of its own, not
 * the global one), a batch span processor with a bounded queue (spans past it are dropped, the
 * hot path never waits) and the OTLP/HTTP protobuf exporter. An export that fails is logged at
 * most once a minute with how many batches failed since, and never reaches the parts. The only
 * file that imports the OpenTelemetry SDK (check:deps); agent.ts loads it with import().
 */
import { hostname } from 'node:os'
import { ROOT_CONTEXT, SpanKind as OtelKind, SpanStatusCode, createTraceState, trace, type Span as OtelSpan } from '@opentelemetry/api'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { BasicTracerProvider, BatchSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base'
import { ATTR_SERVICE_INSTANCE_ID, ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions'
import { ATTR_HOST_NAME } from '@opentelemetry/semantic-conventions/incubating'
import { formatTraceparent, parseTraceparent, validTracestate } from '../../../core/trace-context.js'
import type { Logger } from '../logger.js'
import { A } from './attributes.js'
import type { SpanOptions, TraceSpan, Tracer } from './tracer.js'

export interface OtelTracingInit {
  /** the OTLP/HTTP traces URL (…/v1/traces) */
  url: string
  /** extra HTTP headers on every export (e.g. an API key) */
  headers?: Record<string, string>
  /** resource `service.name`. @default "fnmesh-agent" */
  serviceName?: string
  /** resource `service.version` */
  serviceVersion?: string
  /** resource `service.instance.id`: the node id */
  nodeId: string
  /** the node's name (`fnmesh.node.name`) */
  nodeName: string
  /** how long spans wait to be batched. @default 1000 */
  exportDelayMs?: number
  /** spans held for export at most; more are dropped. @default 4096 */
  maxQueue?: number
  /** one export's deadline. @default 10000 */
  exportTimeoutMs?: number
  logger: Logger
}

const KINDS = { server: OtelKind.SERVER, client: OtelKind.CLIENT, internal: OtelKind.INTERNAL, consumer: OtelKind.CONSUMER, producer: OtelKind.PRODUCER } as const
/** export failures are logged at most this often */
const FAILURE_LOG_INTERVAL_MS = 60_000
/** shutdown waits this long for the last export */
const SHUTDOWN_TIMEOUT_MS = 3000

class Span implements TraceSpan {
  private ended = false
  constructor (readonly span: OtelSpan) {}

  get traceparent (): string {
    const c = this.span.spanContext()
    return formatTraceparent({ traceId: c.traceId, spanId: c.spanId, flags: c.traceFlags })
  }

  get tracestate (): string | undefined {
    const s = this.span.spanContext().traceState?.serialize()
    return s != null && s !== '' ? s : undefined
  }

  set (key: string, value: string | number | boolean): void { this.span.setAttribute(key, value) }
  rename (name: string): void { this.span.updateName(name) }

  fail (code: string, message?: string | null): void {
    this.span.setAttribute(A.errorCode, code)
    this.span.setAttribute(A.errorType, code)
    this.span.setStatus({ code: SpanStatusCode.ERROR, message: message != null ? message.slice(0, 256) : code })
  }

  end (endMs?: number): void {
    if (this.ended) return
    this.ended = true
    this.span.end(endMs)
  }
}

export class OtelTracer implements Tracer {
  readonly enabled = true
  private readonly provider: BasicTracerProvider
  private readonly tracer
  private closing: Promise<void> | undefined

  constructor (init: OtelTracingInit) {
    const exporter = new LoggedExporter(new OTLPTraceExporter({ url: init.url, headers: init.headers, timeoutMillis: init.exportTimeoutMs ?? 10_000 }), init.logger, init.url)
    const maxQueue = init.maxQueue ?? 4096
    this.provider = new BasicTracerProvider({
      resource: resourceFromAttributes({
        [ATTR_SERVICE_NAME]: init.serviceName ?? 'fnmesh-agent',
        ...(init.serviceVersion != null ? { [ATTR_SERVICE_VERSION]: init.serviceVersion } : {}),
        [ATTR_SERVICE_INSTANCE_ID]: init.nodeId,
        [ATTR_HOST_NAME]: hostname(),
        'fnmesh.node.name': init.nodeName
      }),
      spanProcessors: [new BatchSpanProcessor(exporter, {
        maxQueueSize: maxQueue,
        maxExportBatchSize: Math.min(512, maxQueue),
        scheduledDelayMillis: init.exportDelayMs ?? 1000,
        exportTimeoutMillis: init.exportTimeoutMs ?? 10_000
      })]
    })
    this.tracer = this.provider.getTracer('fnmesh')
  }

  start (name: string, options: SpanOptions = {}): TraceSpan {
    let ctx = ROOT_CONTEXT
    if (options.parent instanceof Span) ctx = trace.setSpan(ROOT_CONTEXT, options.parent.span)
    else if (options.remote?.traceparent != null) {
      // Checked again: a context from another process is untrusted; invalid starts a new trace.
      const tp = parseTraceparent(options.remote.traceparent)
      if (tp != null) {
        const state = validTracestate(options.remote.tracestate)
        ctx = trace.setSpanContext(ROOT_CONTEXT, { traceId: tp.traceId, spanId: tp.spanId, traceFlags: tp.flags, isRemote: true, traceState: state != null ? createTraceState(state) : undefined })
      }
    }
    const attributes: Record<string, string | number | boolean> = {}
    for (const [k, v] of Object.entries(options.attributes ?? {})) if (v !== undefined) attributes[k] = v
    return new Span(this.tracer.startSpan(name, { kind: KINDS[options.kind ?? 'internal'], attributes, startTime: options.startMs }, ctx))
  }

  async shutdown (): Promise<void> {
    this.closing ??= Promise.race([
      this.provider.shutdown().catch(() => {}),
      new Promise<void>(resolve => { setTimeout(resolve, SHUTDOWN_TIMEOUT_MS).unref() })
    ])
    await this.closing
  }
}

/** The OTLP exporter, its failures logged (rate-limited) instead of lost in the SDK's diag logger */
class LoggedExporter implements SpanExporter {
  private failed = 0
  private lastLogMs = 0

  constructor (private readonly inner: SpanExporter, private readonly log: Logger, private readonly url: string) {}

  export (spans: ReadableSpan[], done: Parameters<SpanExporter['export']>[1]): void {
    this.inner.export(spans, (result) => {
      // ExportResultCode.SUCCESS is 0 (@opentelemetry/core)
      if (result.code !== 0) this.failure(spans.length, result.error)
      done(result)
    })
  }

  private failure (spans: number, err: Error | undefined): void {
    this.failed++
    const now = Date.now()
    if (now - this.lastLogMs < FAILURE_LOG_INTERVAL_MS) return
    this.lastLogMs = now
    this.log.warn({ url: this.url, spans, failedExports: this.failed, err: String(err?.message ?? err ?? 'unknown').slice(0, 300) }, 'exporting spans over OTLP failed; spans of failed exports are dropped (logged at most once a minute)')
    this.failed = 0
  }

  async shutdown (): Promise<void> { await this.inner.shutdown() }
  async forceFlush (): Promise<void> { await this.inner.forceFlush?.() }
}
