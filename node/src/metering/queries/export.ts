/**
 * Raw records for billing systems, a page at a time: every record (one per run, so an event run
 * three times appears three times, each with its attempt), in key order (start minute, node, id,
 * leaf). A record's key is its identity: every copy of it has the same key on every node, so the
 * cursor (the last key of a page) means the same to any node.
 *
 * With owner-based placement no node holds every record: the answering agent asks every live
 * member for its own records after the cursor (a leg, `exportPage` on its ledger) and merges the
 * legs by key (`mergeLegs`): each record once, however many members hold it.
 */
import type { MeterRecord } from '../../../../proto/codec.js'
import type { MeterStore } from '../ledger/store.js'
import { END_OF_TIME, rawRecords } from './usage.js'

export interface ExportOptions { fn?: string, sinceMs?: number, untilMs?: number, afterKey?: string, limit?: number }

/** Records per page by default, and at most */
export const EXPORT_PAGE = 5000
export const MAX_PAGE = 20_000

export interface ExportLeg { records: MeterRecord[], keys: string[], nextKey: string }

export async function exportPage (store: MeterStore, q: ExportOptions): Promise<ExportLeg> {
  const limit = Math.min(Math.max(1, q.limit ?? EXPORT_PAGE), MAX_PAGE)
  const fn = q.fn != null && q.fn !== '' ? q.fn : undefined
  const until = q.untilMs != null && q.untilMs > 0 ? Math.min(q.untilMs, END_OF_TIME) : END_OF_TIME
  const records: MeterRecord[] = []
  const keys: string[] = []
  let nextKey = ''
  for await (const r of rawRecords(store, q.sinceMs ?? 0, until, q.afterKey ?? '')) {
    if (fn != null && r.function !== fn) continue
    // A decoded message reads its defaults from its prototype: keep the instance (encode ignores `key`).
    records.push(r)
    keys.push(r.key)
    if (records.length >= limit) { nextKey = r.key; break }
  }
  return { records, keys, nextKey }
}

/** Keys compared as the ledger orders them (UTF-8 bytes, not UTF-16 units: invocation ids may hold anything) */
export function byteOrder (a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}

/**
 * Records per leg when `members` legs make one page of `limit` records and each record is held
 * by about `holders` of them: enough for a full page from legs of an even share (half as much
 * again for an uneven one), at least 100 and at most `limit`. A smaller page is still correct.
 */
export function legLimit (limit: number, members: number, holders: number): number {
  return Math.min(limit, Math.max(100, Math.ceil(limit * Math.min(1, holders / Math.max(1, members)) * 1.5)))
}

/**
 * One page of the whole mesh from every member's leg after the same cursor: every record once
 * (copies share their key), in key order, at most `limit`. A leg that stopped at its limit may
 * hold more after its last key: the page ends at the lowest such last key (every leg sent all
 * it holds up to there), so no record is skipped; it is still at least one leg's length.
 * `nextKey` is '' when no leg has more and the page holds the rest.
 */
export function mergeLegs (legs: readonly ExportLeg[], limit: number): { records: MeterRecord[], keys: string[], nextKey: string } {
  let bound: string | undefined
  for (const l of legs) {
    if (l.nextKey === '') continue
    const last = l.keys[l.keys.length - 1] ?? l.nextKey
    if (bound == null || byteOrder(last, bound) < 0) bound = last
  }
  const byKey = new Map<string, MeterRecord>()
  for (const l of legs) {
    const n = Math.min(l.keys.length, l.records.length)
    for (let i = 0; i < n; i++) {
      const k = l.keys[i]
      if (bound != null && byteOrder(k, bound) > 0) break
      if (!byKey.has(k)) byKey.set(k, l.records[i])
    }
  }
  const keys = [...byKey.keys()].map(k => ({ k, b: Buffer.from(k, 'utf8') })).sort((x, y) => Buffer.compare(x.b, y.b)).map(x => x.k)
  const more = bound != null || keys.length > limit
  const page = keys.slice(0, Math.max(1, limit))
  return { records: page.map(k => byKey.get(k) as MeterRecord), keys: page, nextKey: more && page.length > 0 ? page[page.length - 1] : '' }
}
