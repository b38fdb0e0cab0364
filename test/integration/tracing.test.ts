/**
 * Issue 14's traces on a real mesh: 2 agents with --http and --otlp-endpoint pointing at a real
 * OTLP/HTTP receiver in this test, which decodes what they export with the OpenTelemetry
 * protocol's .proto files. One HTTP request with a traceparent must give one trace through the
 * gateway, the router, the executor (wherever the router sent it) and the function's run, and
 * the function must see that trace in `context` and in _X_AMZN_TRACE_ID. An agent started
 * without --otlp-endpoint exports nothing.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixture } from '../helpers/fixtures.js'
import { http, httpPorts } from '../helpers/http.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { SpanKind, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../helpers/otlp.js'
import { waitFor } from '../helpers/wait.js'
import { parseTraceparent, toXRay } from '../../core/trace-context.js'

const newIds = (): { traceId: string, spanId: string, traceparent: string } => {
  const traceId = randomBytes(16).toString('hex')
  const spanId = randomBytes(8).toString('hex')
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01` }
}

interface Seen { traceparent: string | null, tracestate: string | null, xray: string | null, requestId: string }

describe('traces across a 2-agent mesh exported over OTLP', () => {
  let t: TestMesh
  let r: OtlpReceiver
  const trace = (id: string): ReceivedSpan[] => r.spans.filter(s => s.traceId === id)
  const one = (spans: ReceivedSpan[], pred: (s: ReceivedSpan) => boolean, what: string): ReceivedSpan => {
    const found = spans.filter(pred)
    expect(found, `${what} in ${JSON.stringify(spans.map(s => [s.name, s.spanId, s.parentSpanId]))}`).toHaveLength(1)
    return found[0]
  }
  const nodeIds = (): string[] => t.cluster.agents.map(a => a.nodeId)
  /** waits until the spans named (and the executor's, and its meter span) of `traceId` arrived: they come in batches */
  const settled = async (traceId: string, names: string[] = []): Promise<ReceivedSpan[]> => await waitFor(() => {
    const spans = trace(traceId)
    const have = new Set(spans.map(s => s.name))
    return have.has('meter') && spans.some(s => s.kind === SpanKind.server && s.attributes['faas.trigger'] != null) && names.every(n => have.has(n)) ? spans : undefined
  }, { timeoutMs: 15_000, message: `the spans of trace ${traceId} (${names.join(', ')})` })

  beforeAll(async () => {
    r = await startOtlpReceiver()
    t = await startMesh({ nodes: 2, slots: 2, argsOf: () => ['--http', '127.0.0.1:0', '--otlp-endpoint', r.url], env: { OTEL_BSP_SCHEDULE_DELAY: '100' } })
    await t.mesh.deploy({ name: 'tr', path: fixture('trace.js'), routes: ['GET /tr/{id}'] })
    await t.mesh.deploy({ name: 'trev', path: fixture('trace.js'), triggers: ['trtest.>'] })
    await t.mesh.deploy({ name: 'trboom', path: fixture('throw.js'), routes: ['GET /trboom'] })
  })

  afterAll(async () => {
    await t?.stop()
    await r?.stop()
  })

  it('follows an HTTP request with a traceparent through gateway, router, executor and the run, and gives the function that trace', async () => {
    const ids = newIds()
    const port = httpPorts(t.cluster.agents)[0]
    const res = await http(port, 'GET', '/tr/42', { headers: { traceparent: ids.traceparent, tracestate: 'vendor=abc' } })
    expect(res.status).toBe(200)
    const seen = res.json as Seen
    const spans = await settled(ids.traceId, ['GET /tr/{id}', 'route tr', 'dispatch', 'run'])
    const gateway = one(spans, s => s.kind === SpanKind.server && s.attributes['http.route'] != null, 'the gateway span')
    expect(gateway.name).toBe('GET /tr/{id}')
    expect(gateway.parentSpanId).toBe(ids.spanId)
    expect(gateway.traceState).toBe('vendor=abc')
    expect(gateway.attributes['http.request.method']).toBe('GET')
    expect(gateway.attributes['http.response.status_code']).toBe(200)
    expect(gateway.resource['service.instance.id']).toBe(t.cluster.agents[0].nodeId)
    const route = one(spans, s => s.name === 'route tr', 'the route span')
    expect(route.kind).toBe(SpanKind.client)
    expect(route.parentSpanId).toBe(gateway.spanId)
    expect(route.attributes['faas.invoked_name']).toBe('tr')
    expect(route.resource['service.instance.id']).toBe(t.cluster.agents[0].nodeId)
    const dispatch = one(spans, s => s.name === 'dispatch', 'the dispatch span')
    expect(dispatch.parentSpanId).toBe(route.spanId)
    const executor = one(spans, s => s.kind === SpanKind.server && s.name === 'tr', 'the executor span')
    expect(executor.parentSpanId).toBe(dispatch.spanId)
    expect(executor.attributes['faas.trigger']).toBe('http')
    expect(executor.attributes['faas.invocation.id']).toBe(seen.requestId)
    expect(executor.attributes['faas.invocation.id']).toBe(res.headers.get('x-request-id'))
    expect(executor.attributes['faas.version']).toBe('1')
    expect(typeof executor.attributes['faas.coldstart']).toBe('boolean')
    // the executor ran on whichever node the router picked, and said which
    expect(nodeIds()).toContain(executor.resource['service.instance.id'])
    expect(dispatch.attributes['fnmesh.peer.id']).toBe(executor.resource['service.instance.id'])
    const run = one(spans, s => s.name === 'run', 'the run span')
    expect(run.parentSpanId).toBe(executor.spanId)
    expect(one(spans, s => s.name === 'meter', 'the meter span').parentSpanId).toBe(executor.spanId)
    if (executor.attributes['faas.coldstart'] === true) expect(one(spans, s => s.name === 'cold start', 'the cold start span').attributes['faas.coldstart']).toBe(true)
    // the function's context is the run span, in W3C and X-Ray form
    expect(seen.traceparent).toBe(`00-${ids.traceId}-${run.spanId}-01`)
    expect(seen.tracestate).toBe('vendor=abc')
    expect(seen.xray).toBe(toXRay(parseTraceparent(seen.traceparent)!))
    expect(seen.xray).toBe(`Root=1-${ids.traceId.slice(0, 8)}-${ids.traceId.slice(8)};Parent=${run.spanId};Sampled=1`)
    // every span of the trace has a parent in it, but the gateway's (the caller's)
    const idsInTrace = new Set(spans.map(s => s.spanId))
    for (const s of spans) if (s !== gateway) expect(idsInTrace.has(s.parentSpanId), s.name).toBe(true)
    expect(r.bad).toBe(0)
  })

  it('marks the spans of a failed run ERROR with its FNMESH code, and a 4xx of the gateway with its code only', async () => {
    const ids = newIds()
    const res = await http(httpPorts(t.cluster.agents)[0], 'GET', '/trboom', { headers: { traceparent: ids.traceparent } })
    expect(res.status).toBe(502)
    const spans = await settled(ids.traceId, ['GET /trboom', 'route trboom', 'dispatch', 'run'])
    for (const name of ['GET /trboom', 'route trboom', 'dispatch', 'trboom', 'run']) {
      const s = one(spans, x => x.name === name, name)
      expect(s.status, name).toBe(2)
      expect(s.attributes['fnmesh.error.code'], name).toBe(res.json.code)
    }
    expect(res.json.code).toBe('FNMESH_ERR_FUNCTION_ERROR')
    const missing = newIds()
    expect((await http(httpPorts(t.cluster.agents)[0], 'GET', '/nowhere', { headers: { traceparent: missing.traceparent } })).status).toBe(404)
    const gateway = await waitFor(() => trace(missing.traceId)[0], { timeoutMs: 10_000, message: 'the 404 request\'s span' })
    expect(gateway).toMatchObject({ name: 'GET', parentSpanId: missing.spanId, status: 0 })
    expect(gateway.attributes).toMatchObject({ 'http.response.status_code': 404, 'fnmesh.error.code': 'FNMESH_ERR_ROUTE_NOT_FOUND' })
  })

  it('continues the trace an SDK invoke() gives, through a NATS header', async () => {
    const ids = newIds()
    const seen = await t.mesh.invoke<Seen>('tr', { n: 1 }, { traceparent: ids.traceparent })
    const spans = await settled(ids.traceId, ['route tr', 'run'])
    const route = one(spans, s => s.name === 'route tr', 'the route span')
    expect(route.parentSpanId).toBe(ids.spanId)
    expect(route.attributes['fnmesh.trigger']).toBe('sync')
    const executor = one(spans, s => s.kind === SpanKind.server && s.name === 'tr', 'the executor span')
    expect(executor.attributes['faas.trigger']).toBe('other')
    const run = one(spans, s => s.name === 'run', 'the run span')
    expect(seen.traceparent).toBe(`00-${ids.traceId}-${run.spanId}-01`)
    expect(seen.xray).toContain(`Root=1-${ids.traceId.slice(0, 8)}-`)
  })

  it('continues the trace of a CloudEvent, binary (ce-traceparent) and structured (traceparent attribute)', async () => {
    const binary = newIds()
    await t.mesh.publish('trtest.binary', { x: 1 }, { traceparent: binary.traceparent, tracestate: 'k=v' })
    const structured = newIds()
    await t.mesh.publish('trtest.structured', { specversion: '1.0', id: `ev-${structured.spanId}`, source: '/test', type: 'test.structured', traceparent: structured.traceparent, data: { y: 2 } })
    for (const ids of [binary, structured]) {
      const spans = await settled(ids.traceId, ['run'])
      const executor = one(spans, s => s.kind === SpanKind.server && s.name === 'trev', 'the event run\'s executor span')
      expect(executor.parentSpanId).toBe(ids.spanId)
      expect(executor.attributes['faas.trigger']).toBe('pubsub')
      expect(one(spans, s => s.name === 'run', 'the run span').parentSpanId).toBe(executor.spanId)
    }
    expect(one(trace(binary.traceId), s => s.name === 'trev', 'the binary event\'s span').traceState).toBe('k=v')
  })

  it('starts a new trace for an invalid traceparent, never failing the request', async () => {
    const bad = `00-${'A'.repeat(32)}-${'b'.repeat(16)}-01`
    const res = await http(httpPorts(t.cluster.agents)[1], 'GET', '/tr/1', { headers: { traceparent: bad } })
    expect(res.status).toBe(200)
    const seen = res.json as Seen
    const tp = parseTraceparent(seen.traceparent)
    expect(tp).toBeDefined()
    const spans = await settled(tp!.traceId, ['GET /tr/{id}'])
    const gateway = one(spans, s => s.kind === SpanKind.server && s.attributes['http.route'] != null, 'the gateway span')
    expect(gateway.parentSpanId).toBe('')
    expect(gateway.resource['service.instance.id']).toBe(t.cluster.agents[1].nodeId)
    // an SDK call with garbage is not refused either
    const viaSdk = await t.mesh.invoke<Seen>('tr', {}, { traceparent: 'not a traceparent' })
    expect(parseTraceparent(viaSdk.traceparent)).toBeDefined()
  })

  it('exports nothing from an agent without --otlp-endpoint, which still hands the caller\'s trace to the function', async () => {
    const plain = await t.cluster.addAgent(2, ['--http', '127.0.0.1:0'])
    await t.waitForNodes(3)
    expect(plain.ready.otlp).toBeUndefined()
    const port = plain.ready.httpPort as number
    const traced: string[] = []
    for (let i = 0; i < 6; i++) {
      const ids = newIds()
      traced.push(ids.traceId)
      const res = await http(port, 'GET', `/tr/${i}`, { headers: { traceparent: ids.traceparent } })
      expect(res.status).toBe(200)
      const seen = res.json as Seen
      // run here: the caller's context as it came; run on a traced peer: that peer's run span
      expect(parseTraceparent(seen.traceparent)?.traceId).toBe(ids.traceId)
      expect(seen.xray).toContain(`Root=1-${ids.traceId.slice(0, 8)}-${ids.traceId.slice(8)};`)
    }
    // let any batch the traced agents export land before looking
    await new Promise(resolve => setTimeout(resolve, 1000))
    expect(r.spans.filter(s => s.resource['service.instance.id'] === plain.nodeId)).toEqual([])
    // the gateway and router of the plain agent made no span of these traces
    for (const id of traced) expect(trace(id).filter(s => s.attributes['http.route'] != null || s.name.startsWith('route '))).toEqual([])
  })
})
