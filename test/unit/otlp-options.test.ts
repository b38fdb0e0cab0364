import { describe, expect, it } from 'vitest'
import { resolveConfig } from '../../node/src/config.js'
import { otlpOptions } from '../../node/src/cli/options.js'

describe('tracing options', () => {
  it('is off unless --otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT says otherwise', () => {
    expect(otlpOptions({}, {})).toBeUndefined()
    expect(resolveConfig({ name: 'n' }).otlp).toBeUndefined()
    expect(otlpOptions({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })?.endpoint).toBe('http://collector:4318')
    expect(otlpOptions({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_SDK_DISABLED: 'true' })).toBeUndefined()
    // the flag wins over the environment, and OTEL_SDK_DISABLED does not turn off an explicit flag
    expect(otlpOptions({ otlpEndpoint: 'http://a:1' }, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:2', OTEL_SDK_DISABLED: 'true' })?.endpoint).toBe('http://a:1')
  })

  it('takes headers, the service name and the batch delay, and refuses a header without a value', () => {
    const o = otlpOptions({ otlpEndpoint: 'http://a:1', otlpHeader: ['x-api-key=s3cr=t', 'x-tenant = t1'], otlpServiceName: 'edge' }, { OTEL_BSP_SCHEDULE_DELAY: '250' })
    expect(o).toEqual({ endpoint: 'http://a:1', headers: { 'x-api-key': 's3cr=t', 'x-tenant': 't1' }, serviceName: 'edge', exportDelayMs: 250 })
    expect(otlpOptions({ otlpEndpoint: 'http://a:1' }, { OTEL_SERVICE_NAME: 'svc', OTEL_BSP_SCHEDULE_DELAY: 'soon' })).toMatchObject({ serviceName: 'svc', exportDelayMs: undefined })
    expect(() => otlpOptions({ otlpEndpoint: 'http://a:1', otlpHeader: ['novalue'] }, {})).toThrow(/NAME=VALUE/)
  })

  it('adds /v1/traces to a base URL as OTEL_EXPORTER_OTLP_ENDPOINT does, and keeps a traces URL as it is', () => {
    const url = (endpoint: string): string | undefined => resolveConfig({ name: 'n', otlp: { endpoint } }).otlp?.url
    expect(url('http://127.0.0.1:4318')).toBe('http://127.0.0.1:4318/v1/traces')
    expect(url('http://127.0.0.1:4318/')).toBe('http://127.0.0.1:4318/v1/traces')
    expect(url('https://otel.example/prefix')).toBe('https://otel.example/prefix/v1/traces')
    expect(url('http://127.0.0.1:4318/v1/traces')).toBe('http://127.0.0.1:4318/v1/traces')
    expect(resolveConfig({ name: 'n', otlp: { endpoint: 'http://c:1' } }).otlp).toMatchObject({ serviceName: 'fnmesh-agent', exportDelayMs: 1000, headers: {} })
  })

  it('refuses what is not an http(s) URL, credentials in the URL, and headers that could split a request', () => {
    const bad = (otlp: Parameters<typeof resolveConfig>[0]['otlp']): void => { expect(() => resolveConfig({ name: 'n', otlp })).toThrow(expect.objectContaining({ code: 'FNMESH_ERR_INVALID_ARGUMENT' })) }
    bad({ endpoint: 'ftp://x' })
    bad({ endpoint: 'not a url' })
    bad({ endpoint: 'http://user:pw@x:4318' })
    bad({ endpoint: 'http://x', headers: { 'bad name': 'v' } })
    bad({ endpoint: 'http://x', headers: { ok: 'a\r\nInjected: 1' } })
    bad({ endpoint: 'http://x', serviceName: 'has spaces' })
    bad({ endpoint: 'http://x', exportDelayMs: 1 })
  })
})
