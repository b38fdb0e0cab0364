/**
 * The gateway's route table, pure: every deployed function's HTTP routes, matched as API Gateway
 * HTTP APIs do. Among the routes whose path and method match, the most specific path wins,
 * compared segment by segment (a literal beats a {param}, which beats a {greedy+}); at equal
 * paths an exact method beats ANY. A path that matches only with other methods is a 405 with
 * the allowed ones; no path at all is a 404. HEAD falls back to GET routes.
 */
import type { HttpRoute } from '../../../proto/codec.js'
import { parseRouteKey, routeShape, type RouteKey } from '../../../core/http-routes.js'
import type { StoredSpec } from '../../../core/registry.js'

export interface RouteEntry {
  fn: string
  spec: StoredSpec
  route: HttpRoute
  key: RouteKey
  /** "GET /orders/{id}": the event's routeKey */
  routeKey: string
  /** per segment: 3 literal, 2 param, 1 greedy (compared in order, higher first) */
  rank: number[]
}

export type Match =
  | { kind: 'found', entry: RouteEntry, pathParameters: Record<string, string> }
  | { kind: 'method', allow: string[], entries: RouteEntry[] }
  | { kind: 'none' }

const ALL_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS']

export class RouteTable {
  private readonly byFn = new Map<string, RouteEntry[]>()
  private sorted: RouteEntry[] = []
  /** route shapes claimed by more than one function (the first in name order serves them) */
  conflicts: string[] = []

  /** Replaces the routes of `fn` (null: it was deleted or is not trusted) */
  set (fn: string, spec: StoredSpec | null): void {
    const routes = spec?.routes ?? []
    if (spec == null || routes.length === 0) this.byFn.delete(fn)
    else {
      const entries: RouteEntry[] = []
      for (const route of routes) {
        let key: RouteKey
        try { key = parseRouteKey(`${route.method} ${route.path}`) } catch { continue }
        entries.push({ fn, spec, route, key, routeKey: `${key.method} ${key.path}`, rank: key.segments.map(s => s.kind === 'literal' ? 3 : s.kind === 'param' ? 2 : 1) })
      }
      this.byFn.set(fn, entries)
    }
    this.rebuild()
  }

  get size (): number {
    return this.sorted.length
  }

  /** Matches a request; `path` is the raw path (percent-encoded, no query) */
  match (method: string, path: string): Match {
    const parts = splitPath(path)
    const matches: Array<{ entry: RouteEntry, params: Record<string, string> }> = []
    for (const entry of this.sorted) {
      const params = matchPath(entry.key, parts)
      if (params != null) matches.push({ entry, params })
    }
    if (matches.length === 0) return { kind: 'none' }
    const m = method.toUpperCase()
    const pick = (want: string): typeof matches[number] | undefined => matches.find(x => x.entry.key.method === want || x.entry.key.method === 'ANY')
    // sorted puts more specific paths first, and an exact method before ANY on the same path
    const found = pick(m) ?? (m === 'HEAD' ? pick('GET') : undefined)
    if (found != null) return { kind: 'found', entry: found.entry, pathParameters: found.params }
    const allow = new Set<string>()
    for (const x of matches) for (const a of x.entry.key.method === 'ANY' ? ALL_METHODS : [x.entry.key.method]) allow.add(a)
    if (allow.has('GET')) allow.add('HEAD')
    allow.add('OPTIONS')
    return { kind: 'method', allow: [...allow], entries: matches.map(x => x.entry) }
  }

  private rebuild (): void {
    const all = [...this.byFn.values()].flat()
    all.sort(compareEntries)
    const seen = new Map<string, string>()
    const conflicts: string[] = []
    this.sorted = all.filter(e => {
      const shape = routeShape(e.key)
      const owner = seen.get(shape)
      if (owner != null) { conflicts.push(`${shape} (${owner}, ${e.fn})`); return false }
      seen.set(shape, e.fn)
      return true
    })
    this.conflicts = conflicts
  }
}

function compareEntries (a: RouteEntry, b: RouteEntry): number {
  const n = Math.max(a.rank.length, b.rank.length)
  for (let i = 0; i < n; i++) {
    const d = (b.rank[i] ?? 0) - (a.rank[i] ?? 0)
    if (d !== 0) return d
  }
  const am = a.key.method === 'ANY' ? 1 : 0
  const bm = b.key.method === 'ANY' ? 1 : 0
  if (am !== bm) return am - bm
  return a.fn < b.fn ? -1 : a.fn > b.fn ? 1 : 0
}

/** "/a/b/" -> ["a", "b"]; "/" -> [] */
export function splitPath (path: string): string[] {
  const trimmed = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path
  return trimmed === '/' || trimmed === '' ? [] : trimmed.slice(1).split('/')
}

function decode (segment: string): string {
  try { return decodeURIComponent(segment) } catch { return segment }
}

/** The path parameters if `parts` matches `key`, else null */
export function matchPath (key: RouteKey, parts: string[]): Record<string, string> | null {
  const segs = key.segments
  const params: Record<string, string> = {}
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i]
    if (s.kind === 'greedy') {
      if (i >= parts.length) return null
      params[s.name] = parts.slice(i).map(decode).join('/')
      return params
    }
    if (i >= parts.length) return null
    if (s.kind === 'literal') {
      if (decode(parts[i]) !== decode(s.value)) return null
    } else {
      if (parts[i] === '') return null
      params[s.name] = decode(parts[i])
    }
  }
  return parts.length === segs.length ? params : null
}
