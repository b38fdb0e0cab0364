/**
 * A real OTLP/HTTP trace receiver for tests and the bench: an HTTP server taking POST /v1/traces
 * (protobuf, as the OpenTelemetry exporters send it, gzip or not), decoding each
 * ExportTraceServiceRequest with the OpenTelemetry protocol's own .proto definitions (as shipped
 * in @opentelemetry/otlp-grpc-exporter-base 0.38, loaded by protobufjs), not with the exporter's
 * serializer; it answers an empty ExportTraceServiceResponse.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import protobuf from 'protobufjs'

/** One span as the receiver decoded it, with its resource's attributes */
export interface ReceivedSpan {
  traceId: string
  spanId: string
  /** '' for a root span */
  parentSpanId: string
  traceState: string
  name: string
  /** OTLP SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer */
  kind: number
  startNs: bigint
  endNs: bigint
  attributes: Record<string, string | number | boolean>
  /** OTLP status code: 0 unset, 1 ok, 2 error */
  status: number
  statusMessage: string
  resource: Record<string, string | number | boolean>
  scope: string
}

export const SpanKind = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const

export interface OtlpReceiver {
  /** the base URL (…/v1/traces is where exporters post) */
  url: string
  spans: ReceivedSpan[]
  /** POSTs received, and how many carried a body that did not decode */
  requests: number
  bad: number
  /** answer every export with this status (to test failures), 200 when unset */
  failWith?: number
  stop: () => Promise<void>
}

let request: protobuf.Type | undefined

/** ExportTraceServiceRequest from the OpenTelemetry protocol's .proto files */
export function exportTraceServiceRequest (): protobuf.Type {
  if (request != null) return request
  const require = createRequire(import.meta.url)
  const protos = join(dirname(require.resolve('@opentelemetry/otlp-grpc-exporter-base/package.json')), 'build', 'protos')
  const root = new protobuf.Root()
  root.resolvePath = (_origin, target) => join(protos, target)
  root.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto', { keepCase: false })
  request = root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest')
  return request
}

function anyValue (v: any): string | number | boolean {
  // `value` names the member of the AnyValue oneof that is set
  const which: string | undefined = v?.value
  if (which == null) return ''
  const x = v[which]
  if (which === 'intValue') return Number(typeof x === 'object' && x != null ? x.toString() : x)
  if (which === 'stringValue' || which === 'boolValue' || which === 'doubleValue') return x
  return JSON.stringify(x)
}

function attributes (list: any[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {}
  for (const kv of list ?? []) out[kv.key] = anyValue(kv.value)
  return out
}

const hex = (b: Uint8Array | undefined): string => b == null ? '' : Buffer.from(b).toString('hex')

/** Every span of one ExportTraceServiceRequest body */
export function decodeSpans (body: Uint8Array): ReceivedSpan[] {
  const msg = exportTraceServiceRequest().decode(body) as any
  const out: ReceivedSpan[] = []
  for (const rs of msg.resourceSpans ?? []) {
    const resource = attributes(rs.resource?.attributes)
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          traceId: hex(s.traceId),
          spanId: hex(s.spanId),
          parentSpanId: hex(s.parentSpanId),
          traceState: s.traceState ?? '',
          name: s.name,
          kind: s.kind ?? 0,
          startNs: BigInt(String(s.startTimeUnixNano ?? 0)),
          endNs: BigInt(String(s.endTimeUnixNano ?? 0)),
          attributes: attributes(s.attributes),
          status: s.status?.code ?? 0,
          statusMessage: s.status?.message ?? '',
          resource,
          scope: ss.scope?.name ?? ''
        })
      }
    }
  }
  return out
}

export async function startOtlpReceiver (): Promise<OtlpReceiver> {
  exportTraceServiceRequest()
  let server: Server | undefined
  const r: OtlpReceiver = {
    url: '',
    spans: [],
    requests: 0,
    bad: 0,
    stop: async () => {
      server?.closeAllConnections()
      await new Promise<void>(resolve => { server?.close(() => { resolve() }) ?? resolve() })
    }
  }
  server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') { res.writeHead(404).end(); return }
      r.requests++
      if (r.failWith != null) { res.writeHead(r.failWith).end(); return }
      let body = Buffer.concat(chunks)
      try {
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body)
        if (!String(req.headers['content-type']).startsWith('application/x-protobuf')) throw new Error(`content-type ${String(req.headers['content-type'])}`)
        r.spans.push(...decodeSpans(body))
      } catch {
        r.bad++
        res.writeHead(400).end()
        return
      }
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()
    })
  })
  await new Promise<void>(resolve => { server?.listen(0, '127.0.0.1', resolve) })
  r.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return r
}
