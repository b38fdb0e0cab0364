/**
 * Keeping the ledger bounded, and the registers (seals) that make compacted history portable.
 *
 * Raw records older than the retention are dropped in chunks (with their batch proofs); their rollups and digests stay. Each node seals its own settled minutes: a
 * signed register of the minute's digest and rollups, copied to peers like records. For a minute
 * older than the retention, a seal that wins the max-register order replaces what a node holds
 * (rows and digest), so a node that joins late, or missed records, still ends with the same totals.
 */
import { decode, encode, type Rollup, type RollupRegister } from '../../../../proto/codec.js'
import { decodeDigest, emptyDigest, encodeDigest, toRange, xorInto, type Digest } from '../records/digest.js'
import { HOUR_MS, LEVELS, LEVEL_MS, MINUTE_MS, floorTo, hourDigestKey, minuteDigestKey, pad, parseRollupKey, recordPrefix, rollupKey, rollupPrefix, sealKey } from '../records/keys.js'
import { applyDigestDeltas, applyRollupDeltas, type Op, type Plan, type Reader } from './plan.js'
import { addInto, compareRegisters, decodeTotals, totalsOfRow, zero, type Totals } from '../records/rollup.js'
import type { Db } from './recovery.js'

const CHUNK = 2000

/** One chunk of compaction: raw records and proofs older than `horizonMs` */
export async function compactChunk (db: Db, horizonMs: number): Promise<{ ops: Op[], records: number, more: boolean }> {
  const ops: Op[] = []
  const keys: string[] = []
  for await (const key of db.keys({ gte: 'r!', lt: recordPrefix(horizonMs), limit: CHUNK })) keys.push(key)
  for (const key of keys) ops.push({ type: 'del', key })
  let proofs = 0
  // A batch signed before the horizon holds only records that started before it.
  for await (const key of db.keys({ gte: 'p!', lt: `p!${pad(horizonMs)}`, limit: CHUNK })) { ops.push({ type: 'del', key }); proofs++ }
  return { ops, records: keys.length, more: keys.length === CHUNK || proofs === CHUNK }
}

/** What this node holds for (node, minute): digest and rows, as a register (unsigned) */
export async function localRegister (db: Db, read: Reader, nodeId: string, minuteMs: number): Promise<RollupRegister> {
  const [d] = await read.getMany([minuteDigestKey(nodeId, minuteMs)])
  const digest = d != null ? decodeDigest(d) : emptyDigest()
  const rows: Rollup[] = []
  for await (const [key, value] of db.iterator({ gte: rollupPrefix('m', minuteMs), lt: rollupPrefix('m', minuteMs + MINUTE_MS) })) {
    const k = parseRollupKey(key)
    if (k == null || k.nodeId !== nodeId) continue
    rows.push({ bucketMs: minuteMs, function: k.fn, nodeId, ...decodeTotals(value) } as Rollup)
  }
  return { digest: toRange(nodeId, minuteMs, minuteMs + MINUTE_MS, digest), rows, sealedAtMs: 0, signature: Buffer.alloc(0) } as unknown as RollupRegister
}

/** The stored seals of `nodeId` for `minutes` */
export async function sealsOf (db: Db, nodeId: string, minutes: readonly number[]): Promise<RollupRegister[]> {
  const got = await db.getMany(minutes.map(m => sealKey(nodeId, m)))
  return got.filter((v): v is Uint8Array => v != null).map(v => decode('RollupRegister', v))
}

/**
 * Plans merging verified seals: each is kept if it beats the stored seal; for a minute older
 * than the horizon it also replaces the node's rows and digest, and drops leftover raw records,
 * if it beats what this node holds.
 */
export async function planRegisters (store: { db: Db, reader: Reader, horizonMs: () => number }, registers: readonly RollupRegister[]): Promise<Pick<Plan, 'ops' | 'staged' | 'hours' | 'stored'> & { adopted: number }> {
  const plan = { ops: [] as Op[], staged: new Map<string, Uint8Array | undefined>(), hours: [] as Plan['hours'], stored: 0, adopted: 0 }
  const horizon = store.horizonMs()
  const seen = new Set<string>()
  const rollups = new Map<string, Totals>()
  const hourDeltas = new Map<string, Digest>()
  for (const reg of registers) {
    const nodeId = reg.digest.nodeId
    const minuteMs = reg.digest.fromMs
    const sKey = sealKey(nodeId, minuteMs)
    if (seen.has(sKey)) continue
    seen.add(sKey)
    const [stored] = await store.db.getMany([sKey])
    if (stored != null && compareRegisters(reg, decode('RollupRegister', stored)) <= 0) continue
    plan.ops.push({ type: 'put', key: sKey, value: encode('RollupRegister', reg) })
    if (minuteMs >= horizon) continue
    const local = await localRegister(store.db, store.reader, nodeId, minuteMs)
    if (stored != null) local.sealedAtMs = decode('RollupRegister', stored).sealedAtMs
    if (compareRegisters(reg, local) <= 0) continue
    plan.adopted++
    // Rows: new minus old, at every level.
    for (const [rows, sign] of [[local.rows, -1], [reg.rows, 1]] as const) {
      for (const r of rows) {
        for (const level of LEVELS) {
          const key = rollupKey(level, floorTo(minuteMs, LEVEL_MS[level]), r.function, nodeId)
          addInto(rollups.get(key) ?? rollups.set(key, zero()).get(key) as Totals, totalsOfRow(r), sign)
        }
      }
    }
    // Digest: the seal's replaces ours; the hour moves by the difference.
    const next = { count: reg.digest.count, hash: Buffer.from(reg.digest.hash) }
    const mBytes = encodeDigest(next)
    plan.ops.push({ type: 'put', key: minuteDigestKey(nodeId, minuteMs), value: mBytes })
    plan.staged.set(minuteDigestKey(nodeId, minuteMs), mBytes)
    const hKey = hourDigestKey(nodeId, floorTo(minuteMs, HOUR_MS))
    const hd = hourDeltas.get(hKey) ?? hourDeltas.set(hKey, emptyDigest()).get(hKey) as Digest
    hd.count += next.count - local.digest.count
    xorInto(hd.hash, next.hash)
    xorInto(hd.hash, local.digest.hash)
    // Raw records of that minute are superseded by the seal.
    for await (const key of store.db.keys({ gte: recordPrefix(minuteMs, nodeId), lt: `${recordPrefix(minuteMs, nodeId)}~` })) plan.ops.push({ type: 'del', key })
  }
  await applyRollupDeltas(store.reader, rollups, plan.ops, plan.staged)
  await applyDigestDeltas(store.reader, hourDeltas, plan.ops, plan.staged, plan.hours)
  return plan
}

/**
 * Plans dropping one node's hour (owner-based placement: this node no longer owns it, and its
 * owners confirmed holding it): the raw records, the minute and hour digests, the seals and the
 * minute and hour rollup rows of that node, and the hour's share of its day rows. Undefined if
 * the hour's digest is no longer `expect` (records arrived since the owners confirmed).
 */
export async function planDrop (db: Db, read: Reader, nodeId: string, hourMs: number, expect: { count: number, hash: Uint8Array }): Promise<{ ops: Op[], records: number } | undefined> {
  const [h] = await read.getMany([hourDigestKey(nodeId, hourMs)])
  const held = h != null ? decodeDigest(h) : emptyDigest()
  if (held.count !== expect.count || !held.hash.equals(Buffer.from(expect.hash))) return undefined
  const ops: Op[] = [{ type: 'del', key: hourDigestKey(nodeId, hourMs) }]
  let records = 0
  for (let m = hourMs; m < hourMs + HOUR_MS; m += MINUTE_MS) {
    for await (const key of db.keys({ gte: recordPrefix(m, nodeId), lt: `${recordPrefix(m, nodeId)}~` })) { ops.push({ type: 'del', key }); records++ }
    ops.push({ type: 'del', key: minuteDigestKey(nodeId, m) }, { type: 'del', key: sealKey(nodeId, m) })
  }
  for await (const key of db.keys({ gte: rollupPrefix('m', hourMs), lt: rollupPrefix('m', hourMs + HOUR_MS) })) {
    if (parseRollupKey(key)?.nodeId === nodeId) ops.push({ type: 'del', key })
  }
  // The day rows lose the hour's totals.
  const dayDeltas = new Map<string, Totals>()
  for await (const [key, value] of db.iterator({ gte: rollupPrefix('h', hourMs), lt: rollupPrefix('h', hourMs + HOUR_MS) })) {
    const k = parseRollupKey(key)
    if (k?.nodeId !== nodeId) continue
    ops.push({ type: 'del', key })
    const dKey = rollupKey('d', floorTo(hourMs, LEVEL_MS.d), k.fn, nodeId)
    addInto(dayDeltas.get(dKey) ?? dayDeltas.set(dKey, zero()).get(dKey) as Totals, decodeTotals(value), -1)
  }
  await applyRollupDeltas(read, dayDeltas, ops, new Map())
  return { ops, records }
}
