/**
 * HTTP routes of a deploy (`--route 'GET /orders/{id}'`), as the SDK and CLI take them and as
 * they are stored in the spec (`HttpRoute`). Shared by the SDK (validation at deploy) and the
 * agent's gateway (matching), so both read a route key the same way.
 */
import { Ajv } from 'ajv'
import formatsModule from 'ajv-formats'
import type { HttpRoute } from '../proto/codec.js'
import { UsageError } from '../proto/errors.js'
import { checkSchemaPatterns, linearRegExp } from './schema-patterns.js'

export const HTTP_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'ANY'] as const
export type HttpMethod = typeof HTTP_METHODS[number]
export type AuthMode = 'none' | 'apikey' | 'jwt'
export const AUTH_MODES: readonly AuthMode[] = ['none', 'apikey', 'jwt']

/** One segment of a route's path */
export type Segment = { kind: 'literal', value: string } | { kind: 'param', name: string } | { kind: 'greedy', name: string }

export interface RouteKey {
  method: HttpMethod
  /** the path as written, e.g. /orders/{id} */
  path: string
  segments: Segment[]
}

export interface JwtOptions {
  /** HS256 secret (at least 32 bytes) */
  secret?: string | Uint8Array
  /** JWKS with the public keys of RS256 / ES256 tokens (the object, or its JSON text) */
  jwks?: object | string
  /** accepted audiences: the token's aud must hold one */
  audience: string | string[]
  /** when set, the token's iss must equal it */
  issuer?: string
  /** @default HS256 with a secret, RS256 and ES256 with a JWKS */
  algorithms?: string[]
}

export interface CorsOptions {
  /** "*" or exact origins like https://app.example.com. @default ["*"] */
  origins?: string[]
  /** @default the route's method (every method for ANY) */
  methods?: string[]
  /** request headers a browser may send. @default ["content-type", "authorization", "x-api-key"] */
  headers?: string[]
  exposeHeaders?: string[]
  /** how long a browser may cache a preflight answer. @default 600 */
  maxAgeS?: number
  credentials?: boolean
}

export interface RateLimitOptions {
  /** requests per second over the whole mesh */
  perSecond: number
  /** bucket size: requests admitted at once after a quiet spell. @default perSecond */
  burst?: number
}

/** A route with its own settings; anything left out comes from the deploy's defaults */
export interface HttpRouteOptions {
  route: string
  auth?: AuthMode
  jwt?: JwtOptions
  /** JSON Schema of the JSON body (the object, or its JSON text) */
  schema?: object | string
  cors?: CorsOptions | boolean
  rateLimit?: RateLimitOptions
}

const PARAM = /^\{([A-Za-z_][A-Za-z0-9_]*)(\+?)\}$/
const LITERAL = /^[A-Za-z0-9._~!$&'()*,;=:@%-]+$/
const MAX_ROUTES = 64
const MAX_SCHEMA_BYTES = 64 * 1024
const MAX_ROUTES_BYTES = 512 * 1024

/** Parses "METHOD /path/{param}/{proxy+}" */
export function parseRouteKey (text: string): RouteKey {
  const bad = (why: string): never => { throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Route "${text}" is invalid: ${why}`) }
  const m = /^\s*([A-Za-z]+)\s+(\S+)\s*$/.exec(String(text))
  if (m == null) return bad('expected "METHOD /path", e.g. "GET /orders/{id}"')
  const method = m[1].toUpperCase() as HttpMethod
  if (!HTTP_METHODS.includes(method)) bad(`method "${m[1]}" is not one of ${HTTP_METHODS.join(', ')}`)
  const path = m[2]
  if (!path.startsWith('/') || path.length > 1024) bad('the path must start with "/" and be at most 1024 characters')
  const parts = path === '/' ? [] : path.slice(1).replace(/\/$/, '').split('/')
  if (parts.length > 64) bad('more than 64 segments')
  const names = new Set<string>()
  const segments = parts.map((part, i): Segment => {
    const p = PARAM.exec(part)
    if (p != null) {
      if (names.has(p[1])) bad(`parameter "${p[1]}" appears twice`)
      names.add(p[1])
      if (p[2] === '+') {
        if (i !== parts.length - 1) bad(`greedy parameter "{${p[1]}+}" must be the last segment`)
        return { kind: 'greedy', name: p[1] }
      }
      return { kind: 'param', name: p[1] }
    }
    if (!LITERAL.test(part)) bad(`segment "${part}" must be plain characters or one {param}`)
    return { kind: 'literal', value: part }
  })
  return { method, path, segments }
}

/** The route key with parameter names erased: two routes with the same shape conflict */
export function routeShape (key: RouteKey): string {
  return `${key.method} /${key.segments.map(s => s.kind === 'literal' ? s.value : s.kind === 'param' ? '{}' : '{+}').join('/')}`
}

export interface RouteDefaults {
  auth?: AuthMode
  jwt?: JwtOptions
  schema?: object | string
  cors?: CorsOptions | boolean
  rateLimit?: RateLimitOptions
}

/** Deploy options -> the routes stored in the spec, checked */
export function buildRoutes (fn: string, routes: Array<string | HttpRouteOptions>, defaults: RouteDefaults = {}): HttpRoute[] {
  if (!Array.isArray(routes)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Routes of "${fn}" must be a list`)
  if (routes.length > MAX_ROUTES) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `"${fn}" has more than ${MAX_ROUTES} routes`)
  const seen = new Set<string>()
  const out = routes.map((r): HttpRoute => {
    const o: HttpRouteOptions = typeof r === 'string' ? { route: r } : r
    const key = parseRouteKey(o.route)
    const shape = routeShape(key)
    if (seen.has(shape)) throw new UsageError('FNMESH_ERR_ROUTE_CONFLICT', `Route "${o.route}" of "${fn}" is given twice`)
    seen.add(shape)
    const auth = o.auth ?? defaults.auth ?? 'none'
    if (!AUTH_MODES.includes(auth)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Auth "${String(auth)}" of route "${o.route}" is not one of ${AUTH_MODES.join(', ')}`)
    const jwt = o.jwt ?? defaults.jwt
    const rate = o.rateLimit ?? defaults.rateLimit
    const cors = o.cors ?? defaults.cors
    return {
      method: key.method,
      path: key.path,
      auth,
      jwt: auth === 'jwt' ? buildJwt(o.route, jwt) : null as never,
      schema: schemaText(o.route, o.schema ?? defaults.schema),
      cors: cors != null && cors !== false ? buildCors(o.route, cors === true ? {} : cors) : null as never,
      ratePerS: rate != null ? positive(o.route, 'rate limit', rate.perSecond) : 0,
      burst: rate?.burst != null ? positive(o.route, 'burst', rate.burst) : 0
    }
  })
  const bytes = JSON.stringify(out).length
  if (bytes > MAX_ROUTES_BYTES) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Routes of "${fn}" take ${bytes} bytes with their schemas and keys: the limit is ${MAX_ROUTES_BYTES}`)
  return out
}

function positive (route: string, what: string, n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > 1_000_000) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `The ${what} of route "${route}" is ${String(n)}: expected a whole number from 1 to 1000000`)
  return n
}

function buildJwt (route: string, jwt: JwtOptions | undefined): HttpRoute['jwt'] {
  const bad = (why: string): never => { throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `JWT settings of route "${route}" are invalid: ${why}`) }
  if (jwt == null) return bad('auth "jwt" needs a secret (HS256) or a JWKS (RS256, ES256) and an audience')
  const audience = (Array.isArray(jwt.audience) ? jwt.audience : [jwt.audience]).filter(a => typeof a === 'string' && a !== '')
  if (audience.length === 0) bad('give at least one audience')
  const secret = jwt.secret == null ? new Uint8Array(0) : typeof jwt.secret === 'string' ? Buffer.from(jwt.secret, 'utf8') : jwt.secret
  if ((secret.byteLength > 0) === (jwt.jwks != null)) bad('give either a secret or a JWKS')
  if (secret.byteLength > 0 && secret.byteLength < 32) bad('an HS256 secret must be at least 32 bytes')
  let jwks = ''
  if (jwt.jwks != null) {
    let parsed: any
    try { parsed = typeof jwt.jwks === 'string' ? JSON.parse(jwt.jwks) : jwt.jwks } catch { bad('the JWKS is not JSON') }
    if (!Array.isArray(parsed?.keys) || parsed.keys.length === 0) bad('the JWKS has no "keys"')
    if (parsed.keys.some((k: any) => k?.d != null || k?.k != null)) bad('the JWKS holds private or symmetric key material: give public keys only')
    jwks = JSON.stringify(parsed)
  }
  const algorithms = jwt.algorithms ?? (secret.byteLength > 0 ? ['HS256'] : ['RS256', 'ES256'])
  for (const a of algorithms) if (!['HS256', 'RS256', 'ES256'].includes(a)) bad(`algorithm "${a}" is not one of HS256, RS256, ES256`)
  return { secret, jwks, audience, issuer: jwt.issuer ?? '', algorithms }
}

/** A header name or method: an HTTP token (what a header value listing them may hold) */
const TOKEN = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$/
const ORIGIN = /^(\*|[a-z][a-z0-9+.-]*:\/\/[^\s,/]{1,253})$/i

function buildCors (route: string, c: CorsOptions): HttpRoute['cors'] {
  const bad = (why: string): never => { throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `CORS settings of route "${route}" are invalid: ${why}`) }
  const list = (what: string, v: unknown, re: RegExp): string[] => {
    if (!Array.isArray(v) || v.length > 64 || v.some(x => typeof x !== 'string' || !re.test(x))) bad(`${what} must be a list of at most 64 ${re === ORIGIN ? 'origins ("*" or scheme://host[:port])' : 'HTTP tokens'}`)
    return v as string[]
  }
  const maxAgeS = c.maxAgeS ?? 600
  if (!Number.isInteger(maxAgeS) || maxAgeS < 0 || maxAgeS > 86_400) bad(`max age ${String(maxAgeS)} is not a whole number of seconds from 0 to 86400`)
  return {
    allowOrigins: list('origins', c.origins ?? ['*'], ORIGIN),
    allowMethods: list('methods', c.methods ?? [], TOKEN).map(m => m.toUpperCase()),
    allowHeaders: list('headers', c.headers ?? ['content-type', 'authorization', 'x-api-key'], TOKEN).map(h => h.toLowerCase()),
    exposeHeaders: list('expose headers', c.exposeHeaders ?? [], TOKEN).map(h => h.toLowerCase()),
    maxAgeS,
    allowCredentials: c.credentials === true
  }
}

/** An Ajv instance as the gateway uses it: every error reported, the common formats known */
export function newAjv (): Ajv {
  // Patterns run in RE2 (linear time): a backtracking pattern cannot stall the gateway.
  const ajv = new Ajv({ allErrors: true, strict: false, code: { regExp: linearRegExp } })
  // ajv-formats is CommonJS: under NodeNext its default import is module.exports.
  const addFormats = ((formatsModule as any).default ?? formatsModule) as (a: Ajv) => Ajv
  addFormats(ajv)
  return ajv
}

function schemaText (route: string, schema: object | string | undefined): string {
  if (schema == null) return ''
  const bad = (why: string): never => { throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `JSON Schema of route "${route}" is invalid: ${why}`) }
  let parsed: unknown
  try { parsed = typeof schema === 'string' ? JSON.parse(schema) : schema } catch (err: any) { bad(`not JSON (${String(err?.message)})`) }
  if (parsed == null || typeof parsed !== 'object' || Array.isArray(parsed)) bad('expected a JSON object')
  const text = JSON.stringify(parsed)
  if (text.length > MAX_SCHEMA_BYTES) bad(`larger than ${MAX_SCHEMA_BYTES} bytes`)
  checkSchemaPatterns(parsed as object, `JSON Schema of route "${route}"`)
  // Compiled here so a broken schema fails the deploy, not every request.
  try { newAjv().compile(parsed as object) } catch (err: any) { bad(String(err?.message ?? err)) }
  return text
}
