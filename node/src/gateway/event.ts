/**
 * An HTTP request -> the API Gateway HTTP API payload format 2.0 event, pure. Field by field as
 * AWS builds it: lower-cased headers with repeated ones joined by commas, cookies taken out of
 * the headers into `cookies`, repeated query parameters joined by commas, a text body as a
 * string and anything else base64 with `isBase64Encoded`.
 */

export interface RequestInfo {
  method: string
  /** the path as sent, percent-encoded */
  rawPath: string
  rawQueryString: string
  /** Node's rawHeaders: name, value, name, value... */
  rawHeaders: string[]
  sourceIp: string
  protocol: string
  body: Buffer
  requestId: string
  timeEpoch: number
}

export interface EventRoute {
  routeKey: string
  pathParameters: Record<string, string>
}

export interface HttpApiEvent {
  version: '2.0'
  routeKey: string
  rawPath: string
  rawQueryString: string
  cookies?: string[]
  headers: Record<string, string>
  queryStringParameters?: Record<string, string>
  pathParameters?: Record<string, string>
  requestContext: {
    accountId: string
    apiId: string
    authorizer?: Record<string, unknown>
    domainName: string
    domainPrefix: string
    http: { method: string, path: string, protocol: string, sourceIp: string, userAgent: string }
    requestId: string
    routeKey: string
    stage: string
    time: string
    timeEpoch: number
  }
  body?: string
  isBase64Encoded: boolean
}

const TEXT_TYPES = /^(text\/|application\/(json|xml|javascript|x-www-form-urlencoded|graphql|x-ndjson|ld\+json|problem\+json)\b|application\/[\w.+-]+\+(json|xml)\b)/i
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
const utf8 = new TextDecoder('utf-8', { fatal: true })

/** Headers as the event has them: lower-case names, repeated values joined with "," */
export function eventHeaders (rawHeaders: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i].toLowerCase()
    out[name] = out[name] != null ? `${out[name]},${rawHeaders[i + 1]}` : rawHeaders[i + 1]
  }
  return out
}

/** True if a body of this content type (or none) travels as text */
export function isTextBody (contentType: string | undefined, body: Buffer): boolean {
  if (body.byteLength === 0) return true
  if (contentType != null && contentType !== '') {
    if (!TEXT_TYPES.test(contentType.trim())) return false
  }
  try {
    utf8.decode(body)
    return true
  } catch {
    return false
  }
}

/** "12/Mar/2020:19:03:58 +0000", as requestContext.time */
export function clfTime (ms: number): string {
  const d = new Date(ms)
  const p = (n: number): string => String(n).padStart(2, '0')
  return `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`
}

export function buildEvent (req: RequestInfo, route: EventRoute, authorizer?: Record<string, unknown>): HttpApiEvent {
  const headers = eventHeaders(req.rawHeaders)
  let cookies: string[] | undefined
  if (headers.cookie != null) {
    cookies = []
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      if (req.rawHeaders[i].toLowerCase() === 'cookie') cookies.push(...req.rawHeaders[i + 1].split(';').map(c => c.trim()).filter(Boolean))
    }
    delete headers.cookie
  }
  let query: Record<string, string> | undefined
  if (req.rawQueryString !== '') {
    query = {}
    for (const [k, v] of new URLSearchParams(req.rawQueryString)) query[k] = query[k] != null ? `${query[k]},${v}` : v
  }
  const host = headers.host ?? 'localhost'
  const event: HttpApiEvent = {
    version: '2.0',
    routeKey: route.routeKey,
    rawPath: req.rawPath,
    rawQueryString: req.rawQueryString,
    ...(cookies != null && cookies.length > 0 ? { cookies } : {}),
    headers,
    ...(query != null ? { queryStringParameters: query } : {}),
    ...(Object.keys(route.pathParameters).length > 0 ? { pathParameters: route.pathParameters } : {}),
    requestContext: {
      accountId: 'fnmesh',
      apiId: 'fnmesh',
      ...(authorizer != null ? { authorizer } : {}),
      domainName: host,
      domainPrefix: host.split('.')[0].split(':')[0],
      http: {
        method: req.method,
        path: req.rawPath,
        protocol: req.protocol,
        sourceIp: req.sourceIp,
        userAgent: headers['user-agent'] ?? ''
      },
      requestId: req.requestId,
      routeKey: route.routeKey,
      stage: '$default',
      time: clfTime(req.timeEpoch),
      timeEpoch: req.timeEpoch
    },
    isBase64Encoded: false
  }
  if (req.body.byteLength > 0) {
    if (isTextBody(headers['content-type'], req.body)) event.body = req.body.toString('utf8')
    else {
      event.body = req.body.toString('base64')
      event.isBase64Encoded = true
    }
  }
  return event
}
