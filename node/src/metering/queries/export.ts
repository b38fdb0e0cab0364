/**
 * Raw records for billing systems, a page at a time: every record (one per run, so an event run
 * three times appears three times, each with its attempt), in key order (start minute, node, id). The
 * cursor is the last key read; every node holds the same records once replication settles, but
 * a cursor is only meaningful to the node that issued it.
 */
import type { MeterRecord } from '../../../../proto/codec.js'
import type { MeterStore } from '../ledger/store.js'
import { END_OF_TIME, rawRecords } from './usage.js'

export interface ExportOptions { fn?: string, sinceMs?: number, untilMs?: number, afterKey?: string, limit?: number }

/** Records per page by default, and at most */
export const EXPORT_PAGE = 5000
const MAX_PAGE = 20_000

export async function exportPage (store: MeterStore, q: ExportOptions): Promise<{ records: MeterRecord[], nextKey: string }> {
  const limit = Math.min(Math.max(1, q.limit ?? EXPORT_PAGE), MAX_PAGE)
  const fn = q.fn != null && q.fn !== '' ? q.fn : undefined
  const until = q.untilMs != null && q.untilMs > 0 ? Math.min(q.untilMs, END_OF_TIME) : END_OF_TIME
  const records: MeterRecord[] = []
  let nextKey = ''
  for await (const r of rawRecords(store, q.sinceMs ?? 0, until, q.afterKey ?? '')) {
    if (fn != null && r.function !== fn) continue
    // A decoded message reads its defaults from its prototype: keep the instance (encode ignores `key`).
    records.push(r)
    if (records.length >= limit) { nextKey = r.key; break }
  }
  return { records, nextKey }
}
