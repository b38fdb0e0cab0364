import { describe, expect, it } from 'vitest'
import type { CorsConfig } from '../../proto/codec.js'
import { FnmeshError } from '../../proto/errors.js'
import { corsHeaders, preflightHeaders } from '../../node/src/gateway/cors.js'
import { buildEvent, clfTime, isTextBody, type RequestInfo } from '../../node/src/gateway/event.js'
import { errorResponse, mapResult, statusOf } from '../../node/src/gateway/response.js'

const request = (over: Partial<RequestInfo> = {}): RequestInfo => ({
  method: 'POST',
  rawPath: '/orders/42',
  rawQueryString: 'a=1&a=2&b=x%20y',
  rawHeaders: ['Host', 'api.example.com', 'Content-Type', 'application/json', 'X-Multi', 'one', 'X-Multi', 'two', 'Cookie', 'c1=v1; c2=v2', 'Cookie', 'c3=v3', 'User-Agent', 'curl/8'],
  sourceIp: '127.0.0.1',
  protocol: 'HTTP/1.1',
  body: Buffer.from('{"qty":2}'),
  requestId: 'req-1',
  timeEpoch: Date.UTC(2020, 2, 12, 19, 3, 58),
  ...over
})

describe('the payload format 2.0 event', () => {
  it('has every field API Gateway HTTP APIs send, as they send them', () => {
    const e = buildEvent(request(), { routeKey: 'POST /orders/{id}', pathParameters: { id: '42' } }, { jwt: { claims: { sub: 'u' }, scopes: null } })
    expect(e).toMatchObject({
      version: '2.0',
      routeKey: 'POST /orders/{id}',
      rawPath: '/orders/42',
      rawQueryString: 'a=1&a=2&b=x%20y',
      cookies: ['c1=v1', 'c2=v2', 'c3=v3'],
      queryStringParameters: { a: '1,2', b: 'x y' },
      pathParameters: { id: '42' },
      body: '{"qty":2}',
      isBase64Encoded: false,
      requestContext: {
        authorizer: { jwt: { claims: { sub: 'u' }, scopes: null } },
        domainName: 'api.example.com',
        domainPrefix: 'api',
        http: { method: 'POST', path: '/orders/42', protocol: 'HTTP/1.1', sourceIp: '127.0.0.1', userAgent: 'curl/8' },
        requestId: 'req-1',
        routeKey: 'POST /orders/{id}',
        stage: '$default',
        time: '12/Mar/2020:19:03:58 +0000',
        timeEpoch: Date.UTC(2020, 2, 12, 19, 3, 58)
      }
    })
    expect(e.headers).toEqual({ host: 'api.example.com', 'content-type': 'application/json', 'x-multi': 'one,two', 'user-agent': 'curl/8' })
  })

  it('leaves out what the request does not have and sends binary bodies as base64', () => {
    const e = buildEvent(request({ rawQueryString: '', rawHeaders: ['Content-Type', 'image/png'], body: Buffer.from([0, 255, 1]) }), { routeKey: 'POST /x', pathParameters: {} })
    expect(e.cookies).toBeUndefined()
    expect(e.queryStringParameters).toBeUndefined()
    expect(e.pathParameters).toBeUndefined()
    expect(e.requestContext.authorizer).toBeUndefined()
    expect(e).toMatchObject({ body: 'AP8B', isBase64Encoded: true })
    expect(buildEvent(request({ body: Buffer.alloc(0) }), { routeKey: 'GET /', pathParameters: {} }).body).toBeUndefined()
  })

  it('treats text types and untyped UTF-8 as text, anything else as binary', () => {
    expect(isTextBody('text/plain; charset=utf-8', Buffer.from('hé'))).toBe(true)
    expect(isTextBody('application/vnd.api+json', Buffer.from('{}'))).toBe(true)
    expect(isTextBody(undefined, Buffer.from('plain'))).toBe(true)
    expect(isTextBody(undefined, Buffer.from([0xff, 0xfe]))).toBe(false)
    expect(isTextBody('application/octet-stream', Buffer.from('abc'))).toBe(false)
    expect(clfTime(0)).toBe('01/Jan/1970:00:00:00 +0000')
  })
})

describe('the response mapping', () => {
  it('maps statusCode, headers, cookies and body', () => {
    const r = mapResult(JSON.stringify({ statusCode: 201, headers: { 'X-A': 'a', 'x-n': 5, 'x-list': ['1', '2'] }, cookies: ['a=1; Path=/', 'b=2'], body: 'hi' }))
    expect(r.status).toBe(201)
    expect(r.headers).toEqual({ 'x-a': 'a', 'x-n': '5', 'x-list': '1, 2', 'set-cookie': ['a=1; Path=/', 'b=2'] })
    expect(r.body.toString()).toBe('hi')
  })

  it('turns a bare value into a 200 JSON response, as API Gateway does', () => {
    for (const v of [{ a: 1 }, 'text', 42, null, [1, 2]]) {
      const r = mapResult(JSON.stringify(v))
      expect(r).toMatchObject({ status: 200, headers: { 'content-type': 'application/json' } })
      expect(JSON.parse(r.body.toString())).toEqual(v)
    }
  })

  it('decodes a base64 body and takes multiValueHeaders from adapters that send them', () => {
    const r = mapResult(JSON.stringify({ statusCode: '200', isBase64Encoded: true, body: Buffer.from([1, 2, 3]).toString('base64'), multiValueHeaders: { 'x-m': ['a', 'b'] } }))
    expect([...r.body]).toEqual([1, 2, 3])
    expect(r.headers['x-m']).toBe('a, b')
  })

  it.each([
    [{ statusCode: 'teapot' }, /statusCode/],
    [{ statusCode: 99 }, /statusCode/],
    [{ statusCode: 200, body: { a: 1 } }, /body is a object/],
    [{ statusCode: 200, headers: { 'x-a': 'a\r\nx-b: b' } }, /line break/],
    [{ statusCode: 200, headers: { 'bad header': 'x' } }, /token/],
    [{ statusCode: 200, headers: { 'x-a': null } }, /null/],
    [{ statusCode: 200, cookies: 'a=1' }, /cookies/],
    [{ statusCode: 200, isBase64Encoded: true, body: '%%%' }, /base64/]
  ])('refuses a broken response %j with FNMESH_ERR_RESPONSE_INVALID', (value, why) => {
    let err: unknown
    try { mapResult(JSON.stringify(value)) } catch (e) { err = e }
    expect(err).toBeInstanceOf(FnmeshError)
    expect((err as FnmeshError).code).toBe('FNMESH_ERR_RESPONSE_INVALID')
    expect((err as Error).message).toMatch(why)
  })

  it('keeps the gateway\'s own headers out of the function\'s hands', () => {
    const r = mapResult(JSON.stringify({ statusCode: 200, headers: { 'content-length': '999', 'x-request-id': 'forged' } }))
    expect(r.headers).toEqual({})
  })

  it('answers errors in one shape with the code and request id and no trace', () => {
    const r = errorResponse('FNMESH_ERR_FUNCTION_ERROR', 'TypeError', 'boom', 'req-9')
    expect(r.status).toBe(502)
    expect(JSON.parse(r.body.toString())).toEqual({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'TypeError', errorMessage: 'boom', requestId: 'req-9' })
    expect(statusOf('FNMESH_ERR_RATE_LIMITED')).toBe(429)
    expect(statusOf('FNMESH_ERR_TIMEOUT')).toBe(504)
    expect(statusOf('FNMESH_ERR_OUT_OF_MEMORY')).toBe(502)
    expect(statusOf('FNMESH_ERR_SOMETHING_NEW')).toBe(500)
  })
})

describe('CORS', () => {
  const cors: CorsConfig = { allowOrigins: ['https://app.example.com'], allowMethods: [], allowHeaders: ['content-type'], exposeHeaders: ['x-request-id'], maxAgeS: 60, allowCredentials: false }

  it('allows listed origins only', () => {
    expect(corsHeaders(cors, 'https://app.example.com')).toMatchObject({ 'access-control-allow-origin': 'https://app.example.com', 'access-control-expose-headers': 'x-request-id' })
    expect(corsHeaders(cors, 'https://evil.example.com')['access-control-allow-origin']).toBeUndefined()
    expect(corsHeaders({ ...cors, allowOrigins: ['*'] }, 'https://x.example')['access-control-allow-origin']).toBe('*')
  })

  it('answers a preflight for an allowed method and headers, and not otherwise', () => {
    const ok = preflightHeaders(cors, ['POST'], { origin: 'https://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'Content-Type' })
    expect(ok).toMatchObject({ 'access-control-allow-methods': 'POST', 'access-control-max-age': '60' })
    expect(preflightHeaders(cors, ['POST'], { origin: 'https://app.example.com', 'access-control-request-method': 'DELETE' })['access-control-allow-origin']).toBeUndefined()
    expect(preflightHeaders(cors, ['POST'], { origin: 'https://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-secret' })['access-control-allow-origin']).toBeUndefined()
  })
})
