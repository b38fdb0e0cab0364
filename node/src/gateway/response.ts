/**
 * A function's result -> the HTTP response, pure, as API Gateway HTTP APIs map payload format
 * 2.0 results: an object with `statusCode` gives the status, headers, cookies and body (base64
 * when `isBase64Encoded`); anything else (an object without statusCode, a string, a number,
 * null) is a 200 with content-type application/json and the result's JSON as the body. A result
 * that claims a response but breaks its shape is FNMESH_ERR_RESPONSE_INVALID (502), never a crash.
 * Also the one error shape every gateway error takes.
 */
import { CATALOGUE, fnmeshError, type ErrorCode } from '../../../proto/errors.js'

export interface HttpResponse {
  status: number
  /** header name (lower case) -> value(s) */
  headers: Record<string, string | string[]>
  body: Buffer
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
// Set by the gateway itself or by Node: a function may not choose them.
const RESERVED = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'x-request-id'])

function invalid (why: string): never {
  throw fnmeshError('FNMESH_ERR_RESPONSE_INVALID', `The function's response is invalid: ${why}`)
}

function headerValue (name: string, v: unknown): string {
  if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') invalid(`header "${name}" has a ${v === null ? 'null' : typeof v} value`)
  const s = String(v)
  if (/[\r\n\0]/.test(s)) invalid(`header "${name}" holds a line break`)
  return s
}

/** Maps the function's result (its JSON text) to a response */
export function mapResult (jsonText: string): HttpResponse {
  let value: unknown
  try {
    value = jsonText === '' ? null : JSON.parse(jsonText)
  } catch {
    invalid('the result is not JSON')
  }
  if (value == null || typeof value !== 'object' || Array.isArray(value) || !('statusCode' in value)) {
    return { status: 200, headers: { 'content-type': 'application/json' }, body: Buffer.from(jsonText === '' ? 'null' : jsonText, 'utf8') }
  }
  const r = value as Record<string, unknown>
  const status = typeof r.statusCode === 'string' && /^\d+$/.test(r.statusCode) ? Number(r.statusCode) : r.statusCode
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 100 || status > 599) invalid(`statusCode ${JSON.stringify(r.statusCode)} is not a status from 100 to 599`)
  const headers: Record<string, string | string[]> = {}
  const add = (rawName: string, value: string): void => {
    const name = rawName.toLowerCase()
    if (!TOKEN.test(name)) invalid(`header name "${rawName.slice(0, 64)}" is not a valid token`)
    if (RESERVED.has(name)) return
    const prev = headers[name]
    headers[name] = prev == null ? value : name === 'set-cookie' ? [...(Array.isArray(prev) ? prev : [prev]), value] : `${String(prev)}, ${value}`
  }
  if (r.headers != null) {
    if (typeof r.headers !== 'object' || Array.isArray(r.headers)) invalid('headers is not an object')
    for (const [k, v] of Object.entries(r.headers as Record<string, unknown>)) {
      if (Array.isArray(v)) for (const x of v) add(k, headerValue(k, x))
      else add(k, headerValue(k, v))
    }
  }
  // Payload format 1.0's multiValueHeaders: some adapters still send them.
  if (r.multiValueHeaders != null && typeof r.multiValueHeaders === 'object') {
    for (const [k, vs] of Object.entries(r.multiValueHeaders as Record<string, unknown>)) {
      if (!Array.isArray(vs)) invalid(`multiValueHeaders "${k}" is not a list`)
      if (headers[k.toLowerCase()] != null) continue
      for (const x of vs) add(k, headerValue(k, x))
    }
  }
  if (r.cookies != null) {
    if (!Array.isArray(r.cookies)) invalid('cookies is not a list')
    for (const c of r.cookies) add('set-cookie', headerValue('set-cookie', c))
  }
  let body = Buffer.alloc(0)
  if (r.body != null) {
    if (typeof r.body !== 'string') invalid(`body is a ${typeof r.body}: it must be a string (JSON.stringify it)`)
    if (r.isBase64Encoded === true) {
      if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(r.body.replace(/\s/g, ''))) invalid('body is marked base64 but is not')
      body = Buffer.from(r.body, 'base64')
    } else body = Buffer.from(r.body, 'utf8')
  }
  return { status, headers, body }
}

/** HTTP status of each code the gateway can answer with (anything else: 500) */
const STATUS: Partial<Record<ErrorCode, number>> = {
  FNMESH_ERR_ROUTE_NOT_FOUND: 404,
  FNMESH_ERR_NOT_FOUND: 404,
  FNMESH_ERR_METHOD_NOT_ALLOWED: 405,
  FNMESH_ERR_INVALID_JSON: 400,
  FNMESH_ERR_VALIDATION_FAILED: 400,
  FNMESH_ERR_INVALID_ARGUMENT: 400,
  FNMESH_ERR_PAYLOAD_TOO_LARGE: 413,
  FNMESH_ERR_UNAUTHORIZED: 401,
  FNMESH_ERR_FORBIDDEN: 403,
  FNMESH_ERR_RATE_LIMITED: 429,
  FNMESH_ERR_THROTTLED: 429,
  FNMESH_ERR_NO_CAPACITY: 503,
  FNMESH_ERR_NO_AGENTS: 503,
  FNMESH_ERR_NO_MATCHING_NODE: 503,
  FNMESH_ERR_BUSY: 503,
  FNMESH_ERR_NATS_UNAVAILABLE: 503,
  FNMESH_ERR_METER_UNAVAILABLE: 503,
  FNMESH_ERR_PEER_UNAVAILABLE: 502,
  FNMESH_ERR_CLIENT_TIMEOUT: 504,
  FNMESH_ERR_TIMEOUT: 504,
  FNMESH_ERR_RESPONSE_INVALID: 502,
  FNMESH_ERR_UNSIGNED_DEPLOY: 502,
  FNMESH_ERR_SIGNATURE_INVALID: 502,
  FNMESH_ERR_SPEC_ROLLBACK: 502,
  FNMESH_ERR_INVALID_SPEC: 502,
  FNMESH_ERR_BUNDLE_INVALID: 502,
  FNMESH_ERR_BUNDLE_TOO_LARGE: 502,
  FNMESH_ERR_DECODE: 502,
  FNMESH_ERR_INTERNAL: 500
}

export function statusOf (code: string): number {
  const s = STATUS[code as ErrorCode]
  if (s != null) return s
  return (CATALOGUE as Record<string, { family: string }>)[code]?.family === 'function' ? 502 : 500
}

/**
 * The one error body: the Lambda error shape (errorType, errorMessage) with the fnmesh code and
 * the request id; never a stack trace. `details` lists validation problems.
 */
export function errorResponse (code: string, errorType: string, errorMessage: string, requestId: string, extra: { details?: unknown[], headers?: Record<string, string> } = {}): HttpResponse {
  const body = { code, errorType, errorMessage, requestId, ...(extra.details != null ? { details: extra.details } : {}) }
  return { status: statusOf(code), headers: { 'content-type': 'application/json', ...extra.headers }, body: Buffer.from(JSON.stringify(body), 'utf8') }
}
