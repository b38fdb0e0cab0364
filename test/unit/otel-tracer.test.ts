/**
 * The OpenTelemetry side of tracing (node/src/tracing/otel.ts) against a real OTLP/HTTP receiver
 * that decodes with the OpenTelemetry protocol's .proto files: what a collector would get.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { OtelTracer } from '../../node/src/tracing/otel.js'
import type { Logger } from '../../node/src/logger.js'
import { SpanKind, startOtlpReceiver, type OtlpReceiver } from '../helpers/otlp.js'
import { waitFor } from '../helpers/wait.js'

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const PARENT = '00f067aa0ba902b7'

function recordingLogger (lines: Array<{ level: string, fields: Record<string, unknown>, msg: string }>): Logger {
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) => { lines.push({ level, fields, msg }) }
  const logger = { warn: at('warn'), info: at('info'), error: at('error'), debug: at('debug'), trace: at('trace'), child: () => logger }
  return logger as unknown as Logger
}

describe('the OTLP tracer', () => {
  let r: OtlpReceiver
  beforeAll(async () => { r = await startOtlpReceiver() })
  afterAll(async () => { await r?.stop() })

  it('exports spans that continue a remote parent, with their resource, kinds, attributes and error status', async () => {
    const tracer = new OtelTracer({ url: `${r.url}/v1/traces`, nodeId: 'node-a', nodeName: 'agent-a', exportDelayMs: 50, logger: recordingLogger([]) })
    const server = tracer.start('GET /x', { kind: 'server', remote: { traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: 'congo=t61rcWkgMzE' }, attributes: { 'http.request.method': 'GET', skipped: undefined } })
    const child = tracer.start('run', { parent: server, startMs: Date.now() - 5 })
    child.fail('FNMESH_ERR_TIMEOUT', 'Task timed out')
    child.end()
    child.end()
    server.end()
    expect(server.traceparent).toMatch(new RegExp(`^00-${TRACE}-[0-9a-f]{16}-01$`))
    expect(server.tracestate).toBe('congo=t61rcWkgMzE')
    await tracer.shutdown()
    const spans = r.spans.filter(s => s.traceId === TRACE)
    expect(spans.map(s => s.name).sort()).toEqual(['GET /x', 'run'])
    const s = spans.find(x => x.name === 'GET /x')!
    const c = spans.find(x => x.name === 'run')!
    expect(s.parentSpanId).toBe(PARENT)
    expect(s.kind).toBe(SpanKind.server)
    expect(s.traceState).toBe('congo=t61rcWkgMzE')
    expect(s.attributes).toEqual({ 'http.request.method': 'GET' })
    expect(s.resource['service.name']).toBe('fnmesh-agent')
    expect(s.resource['service.instance.id']).toBe('node-a')
    expect(s.resource['fnmesh.node.name']).toBe('agent-a')
    expect(`00-${TRACE}-${s.spanId}-01`).toBe(server.traceparent)
    expect(c.parentSpanId).toBe(s.spanId)
    expect(c.kind).toBe(SpanKind.internal)
    expect(c.status).toBe(2)
    expect(c.attributes['fnmesh.error.code']).toBe('FNMESH_ERR_TIMEOUT')
    expect(c.endNs).toBeGreaterThan(c.startNs)
    expect(r.bad).toBe(0)
  })

  it('starts a new trace when the remote parent is invalid', async () => {
    const tracer = new OtelTracer({ url: `${r.url}/v1/traces`, nodeId: 'node-a', nodeName: 'agent-a', exportDelayMs: 50, logger: recordingLogger([]) })
    const span = tracer.start('invalid parent', { kind: 'server', remote: { traceparent: `00-${TRACE.toUpperCase()}-${PARENT}-01` } })
    span.end()
    await tracer.shutdown()
    const got = r.spans.find(x => x.name === 'invalid parent')!
    expect(got.parentSpanId).toBe('')
    expect(got.traceId).not.toBe(TRACE)
  })

  it('logs failed exports once, without throwing, and keeps working', async () => {
    const lines: Array<{ level: string, fields: Record<string, unknown>, msg: string }> = []
    r.failWith = 503
    const tracer = new OtelTracer({ url: `${r.url}/v1/traces`, nodeId: 'node-a', nodeName: 'agent-a', exportDelayMs: 20, exportTimeoutMs: 2000, logger: recordingLogger(lines) })
    try {
      const before = r.requests
      for (let i = 0; i < 3; i++) {
        tracer.start(`lost ${i}`).end()
        await waitFor(() => r.requests > before + i, { timeoutMs: 10_000, message: 'an export attempt' })
      }
      await waitFor(() => lines.length > 0, { timeoutMs: 10_000, message: 'the failure logged' })
      expect(lines.filter(l => l.level === 'warn')).toHaveLength(1)
      expect(lines[0].msg).toMatch(/exporting spans over OTLP failed/)
    } finally {
      r.failWith = undefined
      await tracer.shutdown()
    }
  })
})
