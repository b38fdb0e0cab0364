/**
 * The HTTP gateway on 3 real agents (--http on loopback) and a real nats-server: real HTTP
 * requests to every agent, handlers written for API Gateway HTTP APIs (one wrapped by
 * serverless-http around Express), each auth mode, JSON Schema, the mesh-wide rate limit with
 * requests spread over the 3 agents, and every kind of bad input.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { fixtureWithPackages, http, httpPorts } from '../helpers/http.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { sleep, waitFor } from '../helpers/wait.js'

const SECRET = 'a-test-secret-of-at-least-32-bytes!!'

describe('the HTTP gateway of a 3-agent mesh', () => {
  let t: TestMesh
  let ports: number[]
  let dir: string
  const cli = async (args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> => await runCli([...args, '--nats', t.url])

  /**
   * Waits until every gateway routes `path`: each agent learns a deployed route from its spec
   * watch a few ms after the deploy returns (until then the gateway answers FNMESH_ERR_ROUTE_NOT_FOUND).
   */
  const routed = async (path: string): Promise<void> => {
    for (const port of ports) {
      await waitFor(async () => (await http(port, 'OPTIONS', path)).json?.code !== 'FNMESH_ERR_ROUTE_NOT_FOUND', { timeoutMs: 5000, intervalMs: 20, message: `the route ${path} on the gateway at port ${port}` })
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-gw-'))
    t = await startMesh({ nodes: 3, slots: 4, args: ['--http', '127.0.0.1:0'] })
    ports = httpPorts(t.cluster.agents)
    expect(ports.every(p => p > 0), `gateway ports ${ports.join(',')}`).toBe(true)
    await t.mesh.deploy({ name: 'api', path: fixture('http/api.js'), routes: ['GET /orders/{id}', 'POST /orders', 'ANY /misc/{proxy+}'], cors: { origins: ['https://app.example'] } })
    await routed('/orders/1')
    await routed('/misc/ready')
  })

  afterAll(async () => {
    await t?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('answers a handler written for HTTP APIs through every agent, with the payload 2.0 event and its response mapped back', async () => {
    for (const port of ports) {
      const r = await http(port, 'GET', '/orders/42?a=1&a=2&b=x', { headers: { cookie: 'c1=v1; c2=v2', 'x-custom': 'yes' } })
      expect(r.status).toBe(201)
      expect(r.headers.get('x-fn')).toBe('api')
      expect(r.cookies).toEqual(['session=abc; Path=/; HttpOnly', 'theme=dark'])
      const id = r.headers.get('x-request-id')
      expect(id).toMatch(/^[0-9a-f-]{36}$/)
      expect(r.json).toMatchObject({
        version: '2.0',
        routeKey: 'GET /orders/{id}',
        rawPath: '/orders/42',
        rawQueryString: 'a=1&a=2&b=x',
        pathParameters: { id: '42' },
        queryStringParameters: { a: '1,2', b: 'x' },
        cookies: ['c1=v1', 'c2=v2'],
        isBase64Encoded: false,
        http: { method: 'GET', path: '/orders/42', sourceIp: '127.0.0.1' },
        requestId: id,
        awsRequestId: id,
        stage: '$default'
      })
      expect(r.json.headers['x-custom']).toBe('yes')
      expect(r.json.headers.cookie).toBeUndefined()
    }
    const post = await http(ports[1], 'POST', '/orders', { headers: { 'content-type': 'application/json' }, body: '{"sku":"A1"}' })
    expect(post.json).toMatchObject({ body: '{"sku":"A1"}', isBase64Encoded: false })
    const bin = await http(ports[2], 'POST', '/misc/upload', { headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from([0, 1, 2, 255]) })
    expect(bin.json).toMatchObject({ body: 'AAEC/w==', isBase64Encoded: true, pathParameters: { proxy: 'upload' } })
  })

  it('sends requests on to the least-loaded peers like any invocation when its own node is full', async () => {
    await t.mesh.deploy({ name: 'spread', path: fixture('slow.js'), routes: ['GET /spread'] })
    await routed('/spread')
    // 12 at once at one gateway whose node has 4 slots: at least 8 must run on the other nodes
    const statuses = await Promise.all(Array.from({ length: 12 }, async () => (await http(ports[0], 'GET', '/spread')).status))
    expect(statuses.every(s => s === 200), JSON.stringify(statuses)).toBe(true)
    // usage() answers from one agent's replica: the records made elsewhere reach it within the
    // replication lag (the answer waited for one peer's copy, not every peer's)
    let byNode: Record<string, number> = {}
    await waitFor(async () => {
      const usage = await t.mesh.usage({ fn: 'spread' })
      byNode = usage.functions.find(f => f.name === 'spread')?.byNode ?? {}
      return Object.values(byNode).reduce((a, b) => a + b, 0) === 12
    }, { timeoutMs: 5000, intervalMs: 100, message: 'all 12 requests metered in the replica that answers usage' })
    expect(Object.keys(byNode).length, JSON.stringify(byNode)).toBeGreaterThanOrEqual(2)
    expect(byNode[t.cluster.agents[0].nodeId] ?? 0).toBeLessThan(12)
  })

  it('maps bare results, binary responses, function errors and broken responses as API Gateway does', async () => {
    const bare = await http(ports[0], 'GET', '/misc/x/bare')
    expect(bare.status).toBe(200)
    expect(bare.headers.get('content-type')).toBe('application/json')
    expect(bare.json).toEqual({ bare: true, id: null })
    expect((await http(ports[0], 'GET', '/misc/text')).text).toBe('"just text"')
    const binary = await fetch(`http://127.0.0.1:${ports[1]}/misc/binary`, { signal: AbortSignal.timeout(20_000) })
    expect([...new Uint8Array(await binary.arrayBuffer())]).toEqual([0, 1, 2, 255])
    const boom = await http(ports[2], 'GET', '/misc/boom')
    expect(boom.status).toBe(502)
    expect(boom.json).toEqual({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'TypeError', errorMessage: 'boom at /misc/boom', requestId: boom.headers.get('x-request-id') })
    expect(boom.text).not.toMatch(/at .*\.js:\d+/)
    const bad = await http(ports[0], 'GET', '/misc/bad')
    expect(bad.status).toBe(502)
    expect(bad.json.code).toBe('FNMESH_ERR_RESPONSE_INVALID')
    // a function that never answers: killed at its timeout, a 504, no hang
    await t.mesh.deploy({ name: 'hangs', path: fixture('hang.js'), routes: ['GET /hangs'], timeoutMs: 1000 })
    await routed('/hangs')
    const hung = await http(ports[1], 'GET', '/hangs', { timeoutMs: 20_000 })
    expect([hung.status, hung.json.code]).toEqual([504, 'FNMESH_ERR_TIMEOUT'])
  })

  it('answers bad input with the right status, one error shape and a request id, and keeps serving', async () => {
    const cases: Array<[string, string, number, string, { headers?: Record<string, string>, body?: string | Buffer }?]> = [
      ['GET', '/nowhere', 404, 'FNMESH_ERR_ROUTE_NOT_FOUND'],
      ['DELETE', '/orders', 405, 'FNMESH_ERR_METHOD_NOT_ALLOWED'],
      ['POST', '/orders', 400, 'FNMESH_ERR_INVALID_JSON', { headers: { 'content-type': 'application/json' }, body: '{"sku":' }]
    ]
    for (const [method, path, status, code, opts] of cases) {
      const r = await http(ports[0], method, path, opts)
      expect(r.status, `${method} ${path}`).toBe(status)
      expect(r.json).toMatchObject({ code, requestId: r.headers.get('x-request-id') })
      expect(typeof r.json.errorMessage).toBe('string')
    }
    expect((await http(ports[0], 'DELETE', '/orders')).headers.get('allow')).toBe('POST, OPTIONS')
    // over 6 MB: refused from Content-Length, before the body is read, and the connection closed
    const big = await rawRequest(ports[1], `POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: ${6 * 1024 * 1024 + 1}\r\n\r\n`)
    expect(big).toMatch(/^HTTP\/1\.1 413/)
    expect(big).toContain('"code":"FNMESH_ERR_PAYLOAD_TOO_LARGE"')
    // a client that sends the whole body anyway gets the 413 or a closed connection, never a hang:
    // the request's own deadline aborts with a TimeoutError, which fails here (a closed connection
    // is fetch's TypeError "fetch failed", its cause EPIPE or ECONNRESET)
    const chunked = await http(ports[2], 'POST', '/orders', { body: Buffer.alloc(6 * 1024 * 1024 + 1, 97), timeoutMs: 10_000 }).catch((err: Error) => err)
    if (chunked instanceof Error) {
      expect(chunked.name, `a 6 MB + 1 POST got neither a 413 nor a closed connection within 10 s: ${chunked.message}`).not.toBe('TimeoutError')
      expect(chunked.message).toBe('fetch failed')
    } else {
      expect(chunked.status).toBe(413)
    }
    const head = await http(ports[0], 'HEAD', '/orders/7')
    expect(head.status).toBe(201)
    expect(head.text).toBe('')
    const options = await http(ports[0], 'OPTIONS', '/orders')
    expect(options.status).toBe(204)
    const preflight = await http(ports[1], 'OPTIONS', '/orders', { headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } })
    expect(preflight.status).toBe(204)
    expect(preflight.headers.get('access-control-allow-origin')).toBe('https://app.example')
    expect(preflight.headers.get('access-control-allow-methods')).toBe('POST')
    const cors = await http(ports[2], 'GET', '/orders/1', { headers: { origin: 'https://app.example' } })
    expect(cors.headers.get('access-control-allow-origin')).toBe('https://app.example')
    expect((await http(ports[2], 'GET', '/orders/1', { headers: { origin: 'https://evil.example' } })).headers.get('access-control-allow-origin')).toBeNull()
    // a malformed request line never reaches a handler and never hangs
    const raw = await rawRequest(ports[0], 'GET /orders/1 HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n')
    expect(raw).toMatch(/^HTTP\/1\.1 400/)
    expect((await http(ports[0], 'GET', '/orders/9')).status).toBe(201)
  })

  it('runs an Express app wrapped by serverless-http unmodified', async () => {
    const path = await fixtureWithPackages(dir, 'http-express', ['express', 'serverless-http'])
    await t.mesh.deploy({ name: 'shop', path, routes: ['ANY /shop/{proxy+}'], timeoutMs: 10_000 })
    await routed('/shop/ready')
    const get = await http(ports[1], 'GET', '/shop/items/7?q=blue', { headers: { 'x-user': 'ann' } })
    expect(get.status).toBe(200)
    expect(get.json).toEqual({ id: '7', q: 'blue', user: 'ann' })
    expect(get.headers.get('x-powered-by-test')).toBe('express')
    const post = await http(ports[2], 'POST', '/shop/items', { headers: { 'content-type': 'application/json' }, body: '{"name":"hat"}' })
    expect(post.status).toBe(201)
    expect(post.json).toEqual({ created: { name: 'hat' } })
    expect(post.cookies.some(c => c.startsWith('cart=c1'))).toBe(true)
    expect((await http(ports[0], 'GET', '/shop/none')).json).toEqual({ express404: '/shop/none' })
  })

  it('admits and refuses API keys: created once by the CLI, hashed in KV, revoked everywhere', async () => {
    await t.mesh.deploy({ name: 'keyed', path: fixture('http/api.js'), routes: ['GET /keyed'], auth: 'apikey' })
    await routed('/keyed')
    const created = await cli(['keys', 'create', 'ci-bot'])
    expect(created.code).toBe(0)
    const key = created.stdout.trim()
    expect(key).toMatch(/^fnm_[A-Za-z0-9_-]{43}$/)
    const list = await cli(['keys', 'list', '--json'])
    expect(list.stdout).not.toContain(key)
    expect(JSON.parse(list.stdout)).toMatchObject([{ name: 'ci-bot', prefix: key.slice(0, 10) }])
    expect((await http(ports[0], 'GET', '/keyed')).json.code).toBe('FNMESH_ERR_UNAUTHORIZED')
    expect((await http(ports[0], 'GET', '/keyed')).status).toBe(401)
    const wrong = await http(ports[0], 'GET', '/keyed', { headers: { 'x-api-key': key.slice(0, -2) + 'xx' } })
    expect([wrong.status, wrong.json.code]).toEqual([403, 'FNMESH_ERR_FORBIDDEN'])
    for (const port of ports) {
      const ok = await waitFor(async () => { const r = await http(port, 'GET', '/keyed', { headers: { 'x-api-key': key } }); return r.status === 201 ? r : undefined }, { timeoutMs: 5000, message: `key admitted on port ${port}` })
      expect(ok.json.authorizer).toEqual({ apiKey: { name: 'ci-bot' } })
    }
    expect((await cli(['keys', 'revoke', 'ci-bot'])).code).toBe(0)
    for (const port of ports) {
      await waitFor(async () => (await http(port, 'GET', '/keyed', { headers: { 'x-api-key': key } })).status === 403, { timeoutMs: 5000, message: `revoked key refused on port ${port}` })
    }
  })

  it('admits and refuses JWTs: HS256 with a secret, RS256 and ES256 with a JWKS file; expiry and audience checked', async () => {
    const secretFile = join(dir, 'secret')
    await writeFile(secretFile, SECRET)
    const dep = await cli(['deploy', fixture('http/api.js'), '--name', 'jwt-hs', '--route', 'GET /jwt/hs', '--auth', 'jwt', '--jwt-secret', secretFile, '--jwt-audience', 'orders-api', '--jwt-issuer', 'https://issuer.test'])
    expect(dep.code, dep.stderr).toBe(0)
    const rsa = await generateKeyPair('RS256')
    const ec = await generateKeyPair('ES256')
    const jwks = { keys: [{ ...(await exportJWK(rsa.publicKey)), kid: 'r1', alg: 'RS256' }, { ...(await exportJWK(ec.publicKey)), kid: 'e1', alg: 'ES256' }] }
    await writeFile(join(dir, 'jwks.json'), JSON.stringify(jwks))
    const dep2 = await cli(['deploy', fixture('http/api.js'), '--name', 'jwt-pk', '--route', 'GET /jwt/pk', '--auth', 'jwt', '--jwt-jwks', join(dir, 'jwks.json'), '--jwt-audience', 'orders-api'])
    expect(dep2.code, dep2.stderr).toBe(0)
    await routed('/jwt/hs')
    await routed('/jwt/pk')
    const token = async (key: Parameters<SignJWT['sign']>[0], alg: string, over: { aud?: string, exp?: number, kid?: string, iss?: string } = {}): Promise<string> =>
      await new SignJWT({ sub: 'user-1', scope: 'orders:read orders:write' }).setProtectedHeader({ alg, ...(over.kid != null ? { kid: over.kid } : {}) })
        .setAudience(over.aud ?? 'orders-api').setIssuer(over.iss ?? 'https://issuer.test').setIssuedAt().setExpirationTime(over.exp ?? Math.floor(Date.now() / 1000) + 300).sign(key)
    const hs = new TextEncoder().encode(SECRET)
    const bearer = (tok: string): { headers: Record<string, string> } => ({ headers: { authorization: `Bearer ${tok}` } })
    const ok = await http(ports[0], 'GET', '/jwt/hs', bearer(await token(hs, 'HS256')))
    expect(ok.status).toBe(201)
    expect(ok.json.authorizer.jwt).toMatchObject({ claims: { sub: 'user-1', aud: 'orders-api' }, scopes: ['orders:read', 'orders:write'] })
    expect((await http(ports[1], 'GET', '/jwt/pk', bearer(await token(rsa.privateKey, 'RS256', { kid: 'r1' })))).status).toBe(201)
    expect((await http(ports[2], 'GET', '/jwt/pk', bearer(await token(ec.privateKey, 'ES256', { kid: 'e1' })))).status).toBe(201)
    const refused: Array<[string, string, { headers?: Record<string, string> }]> = [
      ['missing', '/jwt/hs', {}],
      ['expired', '/jwt/hs', bearer(await token(hs, 'HS256', { exp: Math.floor(Date.now() / 1000) - 600 }))],
      ['wrong audience', '/jwt/hs', bearer(await token(hs, 'HS256', { aud: 'other-api' }))],
      ['wrong issuer', '/jwt/hs', bearer(await token(hs, 'HS256', { iss: 'https://evil.test' }))],
      ['wrong secret', '/jwt/hs', bearer(await token(new TextEncoder().encode('x'.repeat(40)), 'HS256'))],
      ['HS256 on a JWKS route', '/jwt/pk', bearer(await token(hs, 'HS256'))],
      ['unknown key', '/jwt/pk', bearer(await token((await generateKeyPair('RS256')).privateKey, 'RS256', { kid: 'r1' }))],
      ['garbage', '/jwt/pk', { headers: { authorization: 'Bearer not.a.jwt' } }]
    ]
    for (const [why, path, opts] of refused) {
      const r = await http(ports[0], 'GET', path, opts)
      expect([r.status, r.json.code], why).toEqual([401, 'FNMESH_ERR_UNAUTHORIZED'])
    }
  })

  it('rejects a body that breaks the route\'s JSON Schema before the function runs, with the list of problems', async () => {
    const schema = { type: 'object', required: ['sku', 'qty'], additionalProperties: false, properties: { sku: { type: 'string', pattern: '^[A-Z][0-9]+$' }, qty: { type: 'integer', minimum: 1 }, email: { type: 'string', format: 'email' } } }
    await writeFile(join(dir, 'schema.json'), JSON.stringify(schema))
    expect((await cli(['deploy', fixture('http/api.js'), '--name', 'validated', '--route', 'POST /validated', '--schema', join(dir, 'schema.json')])).code).toBe(0)
    await routed('/validated')
    const post = async (port: number, body: string): Promise<Awaited<ReturnType<typeof http>>> => await http(port, 'POST', '/validated', { headers: { 'content-type': 'application/json' }, body })
    const good = await post(ports[0], '{"sku":"A1","qty":2}')
    expect(good.status).toBe(201)
    const bad = await post(ports[1], '{"sku":"a1","qty":0,"email":"nope","extra":1}')
    expect(bad.status).toBe(400)
    expect(bad.json.code).toBe('FNMESH_ERR_VALIDATION_FAILED')
    expect(bad.json.details).toEqual(expect.arrayContaining([
      { path: '', message: 'must not have property "extra"' },
      { path: '/sku', message: 'must match pattern "^[A-Z][0-9]+$"' },
      { path: '/qty', message: 'must be >= 1' },
      { path: '/email', message: 'must match format "email"' }
    ]))
    expect((await post(ports[2], '{"qty":2}')).json.details).toEqual([{ path: '', message: 'must have property "sku"' }])
    expect((await post(ports[2], 'not json')).json.code).toBe('FNMESH_ERR_INVALID_JSON')
    // Only the valid request ran: the meter of every node counts one invocation of "validated".
    // (usage answers from one agent's replica: a record made elsewhere reaches it within the replication lag)
    const usage = await waitFor(async () => {
      const u = await t.mesh.usage({ fn: 'validated' })
      return (u.functions.find(f => f.name === 'validated')?.invocations ?? 0) >= 1 ? u : undefined
    }, { timeoutMs: 5000, intervalMs: 100, message: 'the valid request metered' })
    expect(usage.missing).toEqual([])
    await sleep(300)
    expect((await t.mesh.usage({ fn: 'validated' })).functions.find(f => f.name === 'validated')?.invocations).toBe(1)
  })

  it('holds a route\'s mesh-wide rate limit within its tolerance with requests spread over the 3 agents, answering 429 with Retry-After', async () => {
    const rate = 10
    const burst = 10
    expect((await cli(['deploy', fixture('http/api.js'), '--name', 'limited', '--route', 'GET /limited/{n}', '--rate-limit', String(rate), '--burst', String(burst)])).code).toBe(0)
    // warm each agent's route table and a sandbox without spending tokens: a 404 path of the same prefix
    for (const port of ports) await waitFor(async () => (await http(port, 'GET', '/limited')).status === 404, { timeoutMs: 5000, message: 'route table' })
    // 40 requests per second offered for 3 s, round-robin over the agents, each bounded
    const offered = 120
    const statuses: number[] = []
    const retryAfter: string[] = []
    const started = Date.now()
    const calls: Array<Promise<void>> = []
    for (let i = 0; i < offered; i++) {
      const due = started + i * 25
      await sleep(Math.max(0, due - Date.now()))
      calls.push(http(ports[i % 3], 'GET', `/limited/${i}`).then(r => {
        statuses.push(r.status)
        if (r.status === 429) { retryAfter.push(r.headers.get('retry-after') ?? ''); expect(r.json.code).toBe('FNMESH_ERR_RATE_LIMITED') }
      }))
    }
    const lastStart = Date.now()
    await Promise.all(calls)
    const seconds = (lastStart - started) / 1000
    const admitted = statuses.filter(s => s === 201).length
    const bound = burst + rate * seconds
    console.log(`rate limit ${rate}/s burst ${burst}: ${admitted} admitted of ${offered} over ${seconds.toFixed(2)} s (token bucket bound ${bound.toFixed(1)}, tolerance +10%: ${(bound * 1.1).toFixed(1)}); statuses ${JSON.stringify(countBy(statuses))}`)
    expect(statuses.every(s => s === 201 || s === 429), JSON.stringify(countBy(statuses))).toBe(true)
    expect(admitted).toBeLessThanOrEqual(Math.floor(bound * 1.1))
    expect(admitted).toBeGreaterThanOrEqual(Math.floor(rate * seconds * 0.7))
    expect(retryAfter.length).toBeGreaterThan(0)
    expect(retryAfter.every(v => /^[1-9]\d*$/.test(v))).toBe(true)
  })

  it('holds an API key\'s rate limit across the agents', async () => {
    await t.mesh.deploy({ name: 'keyed-rate', path: fixture('http/api.js'), routes: ['GET /keyed-rate'], auth: 'apikey' })
    await routed('/keyed-rate')
    const { key } = await t.mesh.keys.create('metered', { ratePerSecond: 5, burst: 5 })
    for (const port of ports) await waitFor(async () => (await http(port, 'GET', '/nowhere-yet', { headers: { 'x-api-key': key } })).status === 404, { timeoutMs: 5000, message: 'warm' })
    await sleep(300)
    const started = Date.now()
    const results = await Promise.all(Array.from({ length: 30 }, async (_, i) => { await sleep(i * 50); return (await http(ports[i % 3], 'GET', '/keyed-rate', { headers: { 'x-api-key': key } })).status }))
    const seconds = (Date.now() - started) / 1000
    const admitted = results.filter(s => s === 201).length
    expect(results.every(s => s === 201 || s === 429)).toBe(true)
    expect(admitted).toBeLessThanOrEqual(Math.floor((5 + 5 * seconds) * 1.1))
    expect(admitted).toBeGreaterThanOrEqual(5)
  })
})

function countBy (xs: number[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const x of xs) out[x] = (out[x] ?? 0) + 1
  return out
}

async function rawRequest (port: number, text: string): Promise<string> {
  const { connect } = await import('node:net')
  return await new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => { s.write(text) })
    let out = ''
    const timer = setTimeout(() => { s.destroy(); reject(new Error('no answer to a raw request within 5 s')) }, 5000)
    s.setEncoding('utf8').on('data', (d: string) => { out += d }).on('close', () => { clearTimeout(timer); resolve(out) }).on('error', reject)
  })
}
