import { describe, expect, it } from 'vitest'
import type { HttpRoute } from '../../proto/codec.js'
import { FnmeshError } from '../../proto/errors.js'
import { buildRoutes, parseRouteKey, routeShape } from '../../core/http-routes.js'
import { RouteTable } from '../../node/src/gateway/routes.js'
import { spec } from '../helpers/sandbox.js'

const route = (key: string): HttpRoute => {
  const [method, path] = key.split(' ')
  return { method, path, auth: 'none', jwt: null as never, schema: '', cors: null as never, ratePerS: 0, burst: 0 }
}
const table = (fns: Record<string, string[]>): RouteTable => {
  const t = new RouteTable()
  for (const [fn, keys] of Object.entries(fns)) t.set(fn, { ...spec({ name: fn, handler: 'index.handler' }), routes: keys.map(route) })
  return t
}
const found = (t: RouteTable, method: string, path: string): string => {
  const m = t.match(method, path)
  return m.kind === 'found' ? `${m.entry.fn} ${m.entry.routeKey} ${JSON.stringify(m.pathParameters)}` : m.kind === 'method' ? `405 ${m.allow.join(',')}` : '404'
}

describe('route keys', () => {
  it('parses methods, literal segments, parameters and a greedy last segment', () => {
    expect(parseRouteKey('get /orders/{id}')).toMatchObject({ method: 'GET', path: '/orders/{id}', segments: [{ kind: 'literal', value: 'orders' }, { kind: 'param', name: 'id' }] })
    expect(parseRouteKey('ANY /files/{proxy+}').segments[1]).toEqual({ kind: 'greedy', name: 'proxy' })
    expect(parseRouteKey('GET /').segments).toEqual([])
  })

  it.each([
    ['FETCH /x', 'method'], ['GET x', 'start with'], ['GET /{a}/{a}', 'twice'], ['GET /{p+}/x', 'last segment'],
    ['GET /a b', 'expected'], ['GET /a{b}', 'plain characters'], ['', 'expected']
  ])('refuses "%s"', (key, why) => {
    expect(() => parseRouteKey(key)).toThrow(why)
  })

  it('gives routes that differ only in parameter names the same shape', () => {
    expect(routeShape(parseRouteKey('GET /a/{x}'))).toBe(routeShape(parseRouteKey('GET /a/{y}')))
    expect(routeShape(parseRouteKey('GET /a/{x}'))).not.toBe(routeShape(parseRouteKey('POST /a/{x}')))
  })

  it('builds stored routes with defaults and refuses a route given twice, bad JWT settings or a broken schema', () => {
    const [r] = buildRoutes('f', ['GET /a'], { auth: 'apikey', rateLimit: { perSecond: 5 } })
    expect(r).toMatchObject({ method: 'GET', path: '/a', auth: 'apikey', ratePerS: 5, burst: 0 })
    expect(() => buildRoutes('f', ['GET /a/{x}', 'GET /a/{y}'])).toThrow(/twice/)
    expect(() => buildRoutes('f', ['GET /a'], { auth: 'jwt' })).toThrow(/secret/)
    expect(() => buildRoutes('f', ['GET /a'], { auth: 'jwt', jwt: { secret: 'short', audience: 'x' } })).toThrow(/32 bytes/)
    expect(() => buildRoutes('f', ['GET /a'], { auth: 'jwt', jwt: { secret: 'x'.repeat(32), audience: [] } })).toThrow(/audience/)
    expect(() => buildRoutes('f', ['GET /a'], { schema: { type: 'nonsense' } })).toThrow(FnmeshError)
    expect(() => buildRoutes('f', ['GET /a'], { schema: '{not json' })).toThrow(/not JSON/)
  })
})

describe('route matching', () => {
  const t = table({
    orders: ['GET /orders/{id}', 'POST /orders', 'GET /orders/special'],
    files: ['ANY /files/{proxy+}', 'GET /files/{name}/meta'],
    catchall: ['ANY /{proxy+}'],
    root: ['GET /']
  })

  it('prefers literal segments over parameters over greedy paths', () => {
    expect(found(t, 'GET', '/orders/special')).toBe('orders GET /orders/special {}')
    expect(found(t, 'GET', '/orders/42')).toBe('orders GET /orders/{id} {"id":"42"}')
    expect(found(t, 'GET', '/files/a/meta')).toBe('files GET /files/{name}/meta {"name":"a"}')
    expect(found(t, 'DELETE', '/files/a/b/c')).toBe('files ANY /files/{proxy+} {"proxy":"a/b/c"}')
    expect(found(t, 'GET', '/other/x')).toBe('catchall ANY /{proxy+} {"proxy":"other/x"}')
    expect(found(t, 'GET', '/')).toBe('root GET / {}')
  })

  it('falls through to a less specific route that takes the method', () => {
    // PUT /orders/1 is not an orders route, but ANY /{proxy+} takes it
    expect(found(t, 'PUT', '/orders/1')).toBe('catchall ANY /{proxy+} {"proxy":"orders/1"}')
  })

  it('answers 405 with the allowed methods when only other methods match, and 404 when no path does', () => {
    const t2 = table({ orders: ['GET /orders/{id}', 'POST /orders'] })
    expect(found(t2, 'PUT', '/orders')).toBe('405 POST,OPTIONS')
    expect(found(t2, 'DELETE', '/orders/1')).toBe('405 GET,HEAD,OPTIONS')
    expect(found(t2, 'GET', '/nothing')).toBe('404')
    expect(found(t2, 'GET', '/orders/1/extra')).toBe('404')
    expect(found(t2, 'GET', '/orders/')).toBe('405 POST,OPTIONS')
  })

  it('serves HEAD with a GET route, decodes parameters and ignores a trailing slash', () => {
    const t2 = table({ orders: ['GET /orders/{id}'] })
    expect(found(t2, 'HEAD', '/orders/7')).toBe('orders GET /orders/{id} {"id":"7"}')
    expect(found(t2, 'GET', '/orders/a%20b/')).toBe('orders GET /orders/{id} {"id":"a b"}')
    expect(found(t2, 'GET', '/orders/%E0%A4%A')).toBe('orders GET /orders/{id} {"id":"%E0%A4%A"}')
  })

  it('prefers an exact method over ANY on the same path, and the first function by name on a clash', () => {
    const t2 = table({ b: ['GET /x'], a: ['GET /x'], c: ['ANY /y'], d: ['GET /y'] })
    expect(found(t2, 'GET', '/x')).toMatch(/^a /)
    expect(t2.conflicts).toHaveLength(1)
    expect(found(t2, 'GET', '/y')).toMatch(/^d /)
    expect(found(t2, 'POST', '/y')).toMatch(/^c /)
  })

  it('drops the routes of a deleted function', () => {
    const t2 = table({ a: ['GET /x'] })
    t2.set('a', null)
    expect(found(t2, 'GET', '/x')).toBe('404')
    expect(t2.size).toBe(0)
  })
})
