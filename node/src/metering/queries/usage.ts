/**
 * Usage from one node's replica: totals per function, per node and per bucket, and raw records
 * for export. A time range is cut into whole days, hours and minutes (read from the rollups of
 * that level) plus the partial minutes at its ends (read from raw records), so a query over a
 * month reads a few hundred rows. Every record counts: one record is one run (record.ts).
 */
import { decode, type MeterRecord, type Rollup } from '../../../../proto/codec.js'
import { DAY_MS, HOUR_MS, MINUTE_MS, floorTo, parseRecordKey, parseRollupKey, recordPrefix, rollupPrefix, type Level } from '../records/keys.js'
import { addInto, decodeTotals, totalsOf, zero, type Totals } from '../records/rollup.js'
import type { MeterStore } from '../ledger/store.js'

export type BucketName = 'minute' | 'hour' | 'day'
const BUCKET_LEVEL: Record<BucketName, Level> = { minute: 'm', hour: 'h', day: 'd' }
const SIZES: Array<[Level, number]> = [['m', MINUTE_MS], ['h', HOUR_MS], ['d', DAY_MS]]
/** "No end": 15 digits of epoch ms */
export const END_OF_TIME = 999_999_999_999_999

export interface UsageOptions { fn?: string, sinceMs?: number, untilMs?: number, bucket?: BucketName }

export interface FunctionTotals extends Totals { name: string, byNode: Record<string, number> }
export interface NodeTotals extends Totals { nodeId: string }
export interface UsageResult { functions: FunctionTotals[], nodes: NodeTotals[], buckets: Rollup[] }

type Segment = { level: Level | 'raw', from: number, to: number }

/** [from, to) as whole units of the coarsest levels up to `maxLevel`, raw at the edges */
export function segments (from: number, to: number, maxLevel: number): Segment[] {
  if (from >= to) return []
  if (maxLevel < 0) return [{ level: 'raw', from, to }]
  const [level, size] = SIZES[maxLevel]
  const a = Math.ceil(from / size) * size
  const b = floorTo(to, size)
  if (a >= b) return segments(from, to, maxLevel - 1)
  return [...segments(from, a, maxLevel - 1), { level, from: a, to: b }, ...segments(b, to, maxLevel - 1)]
}

export async function queryUsage (store: MeterStore, q: UsageOptions = {}): Promise<UsageResult> {
  const fn = q.fn != null && q.fn !== '' ? q.fn : undefined
  const bucketLevel = q.bucket != null ? BUCKET_LEVEL[q.bucket] : undefined
  const bucketSize = q.bucket != null ? SIZES.find(s => s[0] === bucketLevel)?.[1] ?? DAY_MS : 0
  const functions = new Map<string, FunctionTotals>()
  const nodes = new Map<string, NodeTotals>()
  const buckets = new Map<string, Rollup>()
  const add = (bucketMs: number, name: string, nodeId: string, t: Totals): void => {
    if (fn != null && name !== fn) return
    const f = functions.get(name) ?? functions.set(name, { name, byNode: {}, ...zero() }).get(name) as FunctionTotals
    addInto(f, t)
    f.byNode[nodeId] = (f.byNode[nodeId] ?? 0) + t.invocations
    addInto(nodes.get(nodeId) ?? nodes.set(nodeId, { nodeId, ...zero() }).get(nodeId) as NodeTotals, t)
    if (bucketSize > 0) {
      const b = floorTo(bucketMs, bucketSize)
      const key = `${b}|${name}|${nodeId}`
      const row = buckets.get(key) ?? buckets.set(key, { bucketMs: b, function: name, nodeId, ...zero() }).get(key) as Rollup
      addInto(row, t)
    }
  }
  const maxLevel = bucketLevel != null ? SIZES.findIndex(s => s[0] === bucketLevel) : SIZES.length - 1
  await walkUsage(store, q.sinceMs ?? 0, q.untilMs, maxLevel, add)
  return {
    functions: [...functions.values()].sort((a, b) => a.name.localeCompare(b.name)),
    nodes: [...nodes.values()].sort((a, b) => a.nodeId.localeCompare(b.nodeId)),
    buckets: [...buckets.values()].sort((a, b) => a.bucketMs - b.bucketMs || a.function.localeCompare(b.function) || a.nodeId.localeCompare(b.nodeId))
  }
}

/** Level index of a bucket (minute 0, hour 1, day 2) */
export const levelIndex = (bucket: BucketName): number => SIZES.findIndex(s => s[0] === BUCKET_LEVEL[bucket])

/**
 * Feeds `add` the totals of [since, until) from rows of levels up to `maxLevel` (0 minute, 1 hour,
 * 2 day) and raw records at the edges; each row it feeds lies within one bucket of `maxLevel`
 */
export async function walkUsage (store: MeterStore, sinceMs: number, untilMs: number | undefined, maxLevel: number, add: (bucketMs: number, fn: string, nodeId: string, t: Totals) => void): Promise<void> {
  const horizon = store.horizonMs()
  for (const seg of segments(sinceMs, Math.min(untilMs != null && untilMs > 0 ? untilMs : END_OF_TIME, END_OF_TIME), maxLevel)) {
    if (seg.level === 'raw' && floorTo(seg.from, MINUTE_MS) < horizon) {
      // Compacted: only the whole minute's rollup is left.
      const m = floorTo(seg.from, MINUTE_MS)
      await scanRows(store, 'm', m, m + MINUTE_MS, add)
    } else if (seg.level === 'raw') {
      for await (const r of rawRecords(store, seg.from, seg.to)) add(r.startMs, r.function, r.nodeId, totalsOf(r))
    } else {
      await scanRows(store, seg.level, seg.from, seg.to, add)
    }
  }
}

async function scanRows (store: MeterStore, level: Level, from: number, to: number, add: (bucketMs: number, fn: string, nodeId: string, t: Totals) => void): Promise<void> {
  for await (const [key, value] of store.db.iterator({ gte: rollupPrefix(level, from), lt: rollupPrefix(level, to) })) {
    const k = parseRollupKey(key)
    if (k != null) add(k.bucketMs, k.fn, k.nodeId, decodeTotals(value))
  }
}

/** The raw records that started in [from, to), in key order, from `afterKey` on */
export async function * rawRecords (store: MeterStore, from: number, to: number, afterKey = ''): AsyncGenerator<MeterRecord & { key: string }> {
  const start = recordPrefix(floorTo(from, MINUTE_MS))
  const lt = recordPrefix(floorTo(Math.max(from, to - 1), MINUTE_MS) + MINUTE_MS)
  const it = afterKey >= start ? store.db.iterator({ gt: afterKey, lt }) : store.db.iterator({ gte: start, lt })
  for await (const [key, value] of it) {
    let record: MeterRecord
    try { record = decode('MeterRecord', decode('SignedRecord', value).record) } catch { continue }
    if (record.startMs < from || record.startMs >= to) continue
    yield Object.assign(record, { key })
  }
}

/** Rollups per (minute, function, node) recounted from the raw records alone: what the rollups must equal */
export async function recount (store: MeterStore, sinceMs = store.horizonMs()): Promise<Map<string, Totals>> {
  const out = new Map<string, Totals>()
  for await (const [k, value] of store.db.iterator({ gte: recordPrefix(floorTo(sinceMs, MINUTE_MS)), lt: 'r!~' })) {
    if (parseRecordKey(k) == null) continue
    const record = decode('MeterRecord', decode('SignedRecord', value).record)
    const key = `${floorTo(record.startMs, MINUTE_MS)}|${record.function}|${record.nodeId}`
    addInto(out.get(key) ?? out.set(key, zero()).get(key) as Totals, totalsOf(record))
  }
  return out
}

/** The minute rollups from `sinceMs` on, keyed as recount() keys them */
export async function minuteRows (store: MeterStore, sinceMs = store.horizonMs()): Promise<Map<string, Totals>> {
  const out = new Map<string, Totals>()
  await scanRows(store, 'm', floorTo(sinceMs, MINUTE_MS), END_OF_TIME, (b, fn, node, t) => { out.set(`${b}|${fn}|${node}`, t) })
  return out
}
