/**
 * Mesh-wide usage without any node holding every record (owner-based placement): each node
 * answers with the (node, hour) ranges it holds that meet the query window, each with the hour's
 * digest (count and XOR of its records' leaves) and its totals within the window; the merge counts
 * each range once, from the copy holding the most records (copies with the same digest hold the
 * same records, so their totals are the same). Rows are per hour (per minute with minute
 * buckets), so merging a day of 1,000 nodes' ranges is a few hundred thousand rows.
 */
import type { Rollup, UsagePart } from '../../../../proto/codec.js'
import { HOUR_MS, MINUTE_MS, floorTo } from '../records/keys.js'
import { addInto, zero, type Totals } from '../records/rollup.js'
import type { MeterStore } from '../ledger/store.js'
import { toRange } from '../records/digest.js'
import { walkUsage, type FunctionTotals, type NodeTotals, type UsageOptions, type UsageResult } from './usage.js'

export interface PartsResult { parts: UsagePart[], rows: number }

const BUCKET_MS = { minute: MINUTE_MS, hour: HOUR_MS, day: 86_400_000 } as const

/** This node's ranges within the window of `q`, with their digests and totals (rows per hour, or per minute for minute buckets) */
export async function queryParts (store: MeterStore, q: UsageOptions = {}): Promise<PartsResult> {
  const fn = q.fn != null && q.fn !== '' ? q.fn : undefined
  const rowMs = q.bucket === 'minute' ? MINUTE_MS : HOUR_MS
  const parts = new Map<string, { nodeId: string, hourMs: number, rows: Map<string, Rollup> }>()
  let rows = 0
  await walkUsage(store, q.sinceMs ?? 0, q.untilMs, q.bucket === 'minute' ? 0 : 1, (bucketMs, name, nodeId, t) => {
    if (fn != null && name !== fn) return
    const hourMs = floorTo(bucketMs, HOUR_MS)
    const k = `${nodeId}|${hourMs}`
    const p = parts.get(k) ?? parts.set(k, { nodeId, hourMs, rows: new Map() }).get(k) as { nodeId: string, hourMs: number, rows: Map<string, Rollup> }
    const b = floorTo(bucketMs, rowMs)
    const rk = `${b}|${name}`
    let row = p.rows.get(rk)
    // The node is the range's: rows leave it out (52 bytes each on the wire).
    if (row == null) { p.rows.set(rk, row = { bucketMs: b, function: name, nodeId: '', ...zero() } as Rollup); rows++ }
    addInto(row as unknown as Totals, t)
  })
  return {
    rows,
    parts: [...parts.values()].map(p => ({ range: toRange(p.nodeId, p.hourMs, p.hourMs + HOUR_MS, store.tree.hour(p.nodeId, p.hourMs)), rows: [...p.rows.values()] } as UsagePart))
  }
}

const hex = (b: Uint8Array | undefined): string => Buffer.from(b ?? []).toString('hex')

/**
 * Merges the parts of every node that answered: each (node, hour) counted once, from the copy with
 * the most records (equal counts: the greater hash, so every merge picks the same). `bucket`
 * also totals per (bucket, function, node).
 */
export function mergeParts (answers: Iterable<readonly UsagePart[]>, fn?: string, bucket?: keyof typeof BUCKET_MS): UsageResult {
  const best = new Map<string, UsagePart>()
  for (const parts of answers) {
    for (const p of parts) {
      const r = p.range
      if (r == null) continue
      const k = `${r.nodeId}|${r.fromMs}`
      const have = best.get(k)
      if (have == null) { best.set(k, p); continue }
      const a = have.range.count
      const b = r.count
      if (b > a || (b === a && hex(r.hash) > hex(have.range.hash))) best.set(k, p)
    }
  }
  const bucketSize = bucket != null ? BUCKET_MS[bucket] : 0
  const functions = new Map<string, FunctionTotals>()
  const nodes = new Map<string, NodeTotals>()
  const buckets = new Map<string, Rollup>()
  for (const p of best.values()) {
    for (const row of p.rows) {
      if (fn != null && fn !== '' && row.function !== fn) continue
      const t = row as unknown as Totals
      const nodeId = p.range.nodeId
      let f = functions.get(row.function)
      if (f == null) functions.set(row.function, f = { name: row.function, byNode: {}, ...zero() })
      addInto(f, t)
      f.byNode[nodeId] = (f.byNode[nodeId] ?? 0) + Number(row.invocations)
      let n = nodes.get(nodeId)
      if (n == null) nodes.set(nodeId, n = { nodeId, ...zero() })
      addInto(n, t)
      if (bucketSize > 0) {
        const b = floorTo(Number(row.bucketMs), bucketSize)
        const key = `${b}|${row.function}|${nodeId}`
        let br = buckets.get(key)
        if (br == null) buckets.set(key, br = { bucketMs: b, function: row.function, nodeId, ...zero() } as Rollup)
        addInto(br as unknown as Totals, t)
      }
    }
  }
  return {
    functions: [...functions.values()].sort((a, b) => a.name.localeCompare(b.name)),
    nodes: [...nodes.values()].sort((a, b) => a.nodeId.localeCompare(b.nodeId)),
    buckets: [...buckets.values()].sort((a, b) => Number(a.bucketMs) - Number(b.bucketMs) || a.function.localeCompare(b.function) || a.nodeId.localeCompare(b.nodeId))
  }
}
