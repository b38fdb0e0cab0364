/**
 * CORS per route, pure: the headers of an answer to a request from an allowed origin, and the
 * gateway's own answer to a preflight (as API Gateway answers it when CORS is configured,
 * without running the function).
 */
import type { CorsConfig } from '../../../proto/codec.js'

function allowedOrigin (c: CorsConfig, origin: string | undefined): string | undefined {
  if (origin == null || origin === '') return undefined
  if (c.allowOrigins.includes(origin)) return origin
  if (c.allowOrigins.includes('*')) return c.allowCredentials ? origin : '*'
  return undefined
}

/** Headers to add to an actual response; none when the origin is not allowed */
export function corsHeaders (c: CorsConfig, origin: string | undefined): Record<string, string> {
  const allow = allowedOrigin(c, origin)
  const out: Record<string, string> = { vary: 'Origin' }
  if (allow == null) return out
  out['access-control-allow-origin'] = allow
  if (c.allowCredentials) out['access-control-allow-credentials'] = 'true'
  if (c.exposeHeaders.length > 0) out['access-control-expose-headers'] = c.exposeHeaders.join(', ')
  return out
}

/** True if this OPTIONS request is a CORS preflight */
export function isPreflight (headers: Record<string, string | string[] | undefined>): boolean {
  return headers.origin != null && headers['access-control-request-method'] != null
}

/**
 * The answer to a preflight: 204 with the allowed methods and headers when the origin, method
 * and headers are allowed, else 204 without CORS headers (the browser then refuses).
 */
export function preflightHeaders (c: CorsConfig, routeMethods: string[], headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const origin = typeof headers.origin === 'string' ? headers.origin : undefined
  const allow = allowedOrigin(c, origin)
  const base: Record<string, string> = { vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers' }
  if (allow == null) return base
  const methods = c.allowMethods.length > 0 ? c.allowMethods : routeMethods
  const wanted = String(headers['access-control-request-method'] ?? '').toUpperCase()
  if (!methods.includes(wanted) && !methods.includes('*')) return base
  const asked = String(headers['access-control-request-headers'] ?? '').toLowerCase().split(',').map(h => h.trim()).filter(Boolean)
  if (!c.allowHeaders.includes('*') && asked.some(h => !c.allowHeaders.includes(h))) return base
  return {
    ...base,
    'access-control-allow-origin': allow,
    'access-control-allow-methods': methods.join(', '),
    'access-control-allow-headers': c.allowHeaders.join(', '),
    'access-control-max-age': String(c.maxAgeS),
    ...(c.allowCredentials ? { 'access-control-allow-credentials': 'true' } : {})
  }
}
