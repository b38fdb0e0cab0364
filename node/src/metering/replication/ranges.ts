/**
 * What anti-entropy reads from a store: digests of the children of a key range (all time ->
 * days -> hours -> minutes), the record keys of one node's minute, and records with the proofs
 * they need. Pages are bounded so no message grows past the wire caps.
 */
import { decode, type MeterBundle, type MeterProof, type RangeDigest, type SignedRecord } from '../../../../proto/codec.js'
import { decodeDigest, toRange, type HourFilter } from '../records/digest.js'
import { DAY_MS, HOUR_MS, MINUTE_MS, minuteDigestKey, parseDigestKey, proofKey, recordPrefix } from '../records/keys.js'
import type { MeterStore } from '../ledger/store.js'

/** Records per page and bytes per bundle, well under the 4 MiB frame cap */
export const PAGE_RECORDS = 2000
const PAGE_BYTES = 2 * 1024 * 1024

/** Digests of the non-empty children of `range`: per node (no range), days, hours or minutes */
export async function childDigests (store: MeterStore, range?: RangeDigest, keep?: HourFilter): Promise<RangeDigest[]> {
  if (range == null) return store.tree.perNode(keep)
  const span = range.toMs - range.fromMs
  if (range.fromMs === 0 && range.toMs === 0) return store.tree.days(range.nodeId, keep)
  if (span === DAY_MS) return store.tree.hoursOf(range.nodeId, range.fromMs, keep)
  if (span === HOUR_MS) {
    if (keep != null && !keep(range.nodeId, range.fromMs)) return []
    const out: RangeDigest[] = []
    for await (const [key, value] of store.db.iterator({ gte: minuteDigestKey(range.nodeId, range.fromMs), lt: minuteDigestKey(range.nodeId, range.toMs) })) {
      const k = parseDigestKey(key)
      const d = decodeDigest(value)
      if (k != null && d.count > 0) out.push(toRange(range.nodeId, k.bucketMs, k.bucketMs + MINUTE_MS, d))
    }
    return out
  }
  return []
}

/** A minute of one node: the unit in which anti-entropy lists and moves records */
export interface MinuteRange { nodeId: string, fromMs: number }

/**
 * Walks the records of `ranges` in order, starting after `afterKey` in the first one, until
 * `limit` records (or `maxBytes` of values) are read. `more` says a page follows; it resumes at
 * the range holding `lastKey` (see resumeAt).
 */
async function walk (store: MeterStore, ranges: readonly MinuteRange[], afterKey: string, limit: number, maxBytes: number, values: boolean): Promise<{ keys: string[], values: Uint8Array[], more: boolean, lastKey: string }> {
  const out = { keys: [] as string[], values: [] as Uint8Array[], more: false, lastKey: '' }
  let bytes = 0
  for (const [i, r] of ranges.entries()) {
    const prefix = recordPrefix(r.fromMs, r.nodeId)
    const after = i === 0 && afterKey > prefix ? afterKey : undefined
    const opts = { ...(after != null ? { gt: after } : { gte: prefix }), lt: `${prefix}~` }
    const it = values ? store.db.iterator(opts) : store.db.keys(opts)
    for await (const entry of it as AsyncIterable<string | [string, Uint8Array]>) {
      if (out.keys.length >= limit || bytes >= maxBytes) { out.more = true; return out }
      const key = typeof entry === 'string' ? entry : entry[0]
      out.keys.push(key)
      out.lastKey = key
      if (typeof entry !== 'string') { out.values.push(entry[1]); bytes += entry[1].byteLength }
    }
  }
  return out
}

/** Where a paged walk resumes: the ranges from the one holding `lastKey` on */
export function resumeAt<R extends MinuteRange> (ranges: readonly R[], lastKey: string): R[] {
  const i = ranges.findIndex(r => lastKey.startsWith(recordPrefix(r.fromMs, r.nodeId)))
  return i < 0 ? [] : ranges.slice(i)
}

/** Record keys of the minute ranges, a page at a time */
export async function keysIn (store: MeterStore, ranges: readonly MinuteRange[], afterKey = '', limit = PAGE_RECORDS * 5): Promise<{ keys: string[], more: boolean, lastKey: string }> {
  const w = await walk(store, ranges, afterKey, limit, Infinity, false)
  return { keys: w.keys, more: w.more, lastKey: w.lastKey }
}

/** The stored records with these keys, and their proofs */
export async function fetchKeys (store: MeterStore, keys: readonly string[]): Promise<MeterBundle> {
  const values = await store.db.getMany(keys.slice(0, PAGE_RECORDS) as string[])
  return await bundleOf(store, values.filter((v): v is Uint8Array => v != null))
}

/** Every record of the minute ranges, with their proofs, a page at a time */
export async function fetchRanges (store: MeterStore, ranges: readonly MinuteRange[], afterKey = ''): Promise<{ bundle: MeterBundle, more: boolean, lastKey: string }> {
  const w = await walk(store, ranges, afterKey, PAGE_RECORDS, PAGE_BYTES, true)
  return { bundle: await bundleOf(store, w.values), more: w.more, lastKey: w.lastKey }
}

async function bundleOf (store: MeterStore, values: Uint8Array[]): Promise<MeterBundle> {
  const records: SignedRecord[] = []
  for (const v of values) {
    try { records.push(decode('SignedRecord', v)) } catch {}
  }
  const ids = [...new Set(records.map(r => r.batchId))]
  const proofs = (await store.db.getMany(ids.map(proofKey))).filter((v): v is Uint8Array => v != null).map(v => decode('MeterProof', v) as MeterProof)
  return { records, proofs } as unknown as MeterBundle
}
