/**
 * After a repair, what LevelDB kept may be any subset of what it had: the digests and rollups
 * are rebuilt from what survived. Raw records (inside the retention) are the source for
 * their minutes; minute rollups and digests of compacted minutes are kept as they are; hour and
 * day levels are summed again from the minutes. Anti-entropy then compares the honest digests
 * with peers and brings back whatever the damage took.
 */
import { decode, type MeterRecord } from '../../../../proto/codec.js'
import { decodeDigest, emptyDigest, encodeDigest, xorInto, type Digest } from '../records/digest.js'
import { DAY_MS, HOUR_MS, MINUTE_MS, floorTo, hourDigestKey, minuteDigestKey, parseDigestKey, parseRecordKey, parseRollupKey, rollupKey } from '../records/keys.js'
import { leafHash } from '../records/record.js'
import { addInto, decodeTotals, encodeTotals, totalsOf, zero, type Totals } from '../records/rollup.js'
import type { Op } from './plan.js'
import type { Db } from './recovery.js'

const CHUNK = 5000

async function writeChunked (db: Db, ops: Op[]): Promise<void> {
  for (let i = 0; i < ops.length; i += CHUNK) await db.batch(ops.slice(i, i + CHUNK), { sync: i + CHUNK >= ops.length })
}

/** Rebuilds the derived keys of `db`; returns the number of raw records it counted */
export async function rebuildDerived (db: Db, horizonMs: number): Promise<number> {
  const ops: Op[] = []
  // 1. Drop every derived key that raw records speak for, and all coarser levels (and the
  // invocation-id index "i!" of ledgers written before records were billed by identity).
  for await (const key of db.keys({ gte: 'i!', lt: 'i!~' })) ops.push({ type: 'del', key })
  for await (const key of db.keys({ gte: 'h!', lt: 'h!~' })) ops.push({ type: 'del', key })
  for (const level of ['h', 'd']) for await (const key of db.keys({ gte: `u!${level}!`, lt: `u!${level}!~` })) ops.push({ type: 'del', key })
  const minuteRows = new Map<string, Totals>()
  for await (const [key, value] of db.iterator({ gte: 'u!m!', lt: 'u!m!~' })) {
    const k = parseRollupKey(key)
    if (k == null || k.bucketMs >= horizonMs) ops.push({ type: 'del', key })
    else minuteRows.set(key, decodeTotals(value))
  }
  const minuteDigests = new Map<string, Digest>()
  for await (const [key, value] of db.iterator({ gte: 'm!', lt: 'm!~' })) {
    const k = parseDigestKey(key)
    if (k == null || k.bucketMs >= horizonMs) ops.push({ type: 'del', key })
    else minuteDigests.set(key, decodeDigest(value))
  }
  // 2. Raw records: digests and rollups of every record.
  let raw = 0
  for await (const [key, value] of db.iterator({ gte: 'r!', lt: 'r!~' })) {
    const k = parseRecordKey(key)
    let record: MeterRecord
    let leaf: Buffer
    try {
      if (k == null) throw new Error('bad key')
      const signed = decode('SignedRecord', value)
      record = decode('MeterRecord', signed.record)
      leaf = leafHash(signed.record)
    } catch {
      ops.push({ type: 'del', key })
      continue
    }
    raw++
    const dKey = minuteDigestKey(record.nodeId, k.minuteMs)
    const d = minuteDigests.get(dKey) ?? minuteDigests.set(dKey, emptyDigest()).get(dKey) as Digest
    d.count++
    xorInto(d.hash, leaf)
    const rKey = rollupKey('m', floorTo(record.startMs, MINUTE_MS), record.function, record.nodeId)
    addInto(minuteRows.get(rKey) ?? minuteRows.set(rKey, zero()).get(rKey) as Totals, totalsOf(record))
  }
  // 3. Minutes written out; hours and days summed from them.
  const coarse = new Map<string, Totals>()
  for (const [key, t] of minuteRows) {
    ops.push({ type: 'put', key, value: encodeTotals(t) })
    const k = parseRollupKey(key)
    if (k == null) continue
    for (const [level, size] of [['h', HOUR_MS], ['d', DAY_MS]] as const) {
      const ck = rollupKey(level, floorTo(k.bucketMs, size), k.fn, k.nodeId)
      addInto(coarse.get(ck) ?? coarse.set(ck, zero()).get(ck) as Totals, t)
    }
  }
  for (const [key, t] of coarse) ops.push({ type: 'put', key, value: encodeTotals(t) })
  const hours = new Map<string, Digest>()
  for (const [key, d] of minuteDigests) {
    ops.push({ type: 'put', key, value: encodeDigest(d) })
    const k = parseDigestKey(key)
    if (k == null) continue
    const hk = hourDigestKey(k.nodeId, floorTo(k.bucketMs, HOUR_MS))
    const h = hours.get(hk) ?? hours.set(hk, emptyDigest()).get(hk) as Digest
    h.count += d.count
    xorInto(h.hash, d.hash)
  }
  for (const [key, d] of hours) ops.push({ type: 'put', key, value: encodeDigest(d) })
  await writeChunked(db, ops)
  return raw
}

