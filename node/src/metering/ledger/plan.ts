/**
 * The write plan of one group commit, pure apart from reads: given verified records, which are
 * new (a record is identified by its key: copies merge, distinct records all count), and how the
 * digests and rollups move. The store runs
 * plans one at a time (single writer), so each read-modify-write sees the previous one's result.
 */
import { decode, encode, type MeterProof, type MeterRecord } from '../../../../proto/codec.js'
import { decodeDigest, emptyDigest, encodeDigest, xorInto, type Digest } from '../records/digest.js'
import { HOUR_MS, LEVELS, LEVEL_MS, MINUTE_MS, floorTo, hourDigestKey, minuteDigestKey, parseRecordKey, proofKey, rollupKey } from '../records/keys.js'
import { addInto, decodeTotals, encodeTotals, isZero, totalsOf, zero, type Totals } from '../records/rollup.js'
import type { VerifiedRecord } from '../records/signing.js'

export type Op = { type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }

/** Reads by key: staged values of this plan first, then the store's cache, then LevelDB */
export interface Reader {
  getMany: (keys: string[]) => Promise<Array<Uint8Array | undefined>>
  get: (key: string) => Promise<Uint8Array | undefined>
}

export type Outcome = 'stored' | 'known' | 'stale'

export interface Plan {
  ops: Op[]
  outcome: Map<string, Outcome>
  /** new values of digest and rollup keys (undefined: deleted), for the store's cache */
  staged: Map<string, Uint8Array | undefined>
  /** hour digests after the plan, for the in-memory tree */
  hours: Array<{ nodeId: string, hourMs: number, digest: Digest }>
  stored: number
}

/** Adds each rollup level's delta for a record's totals to `deltas` */
export function addRollupDelta (deltas: Map<string, Totals>, record: MeterRecord, sign: number): void {
  const t = totalsOf(record)
  for (const level of LEVELS) {
    const key = rollupKey(level, floorTo(record.startMs, LEVEL_MS[level]), record.function, record.nodeId)
    addInto(deltas.get(key) ?? deltas.set(key, zero()).get(key) as Totals, t, sign)
  }
}

/** Applies rollup deltas onto the stored rows: puts or deletes */
export async function applyRollupDeltas (read: Reader, deltas: Map<string, Totals>, ops: Op[], staged: Map<string, Uint8Array | undefined>): Promise<void> {
  const keys = [...deltas.keys()]
  const current = await read.getMany(keys)
  keys.forEach((key, i) => {
    const value = current[i]
    const next = addInto(value != null ? decodeTotals(value) : zero(), deltas.get(key) as Totals)
    if (isZero(next)) {
      ops.push({ type: 'del', key })
      staged.set(key, undefined)
    } else {
      const bytes = encodeTotals(next)
      ops.push({ type: 'put', key, value: bytes })
      staged.set(key, bytes)
    }
  })
}

/** Adds digest deltas (count, XOR) onto stored minute and hour digests */
export async function applyDigestDeltas (read: Reader, deltas: Map<string, Digest>, ops: Op[], staged: Map<string, Uint8Array | undefined>, hours: Plan['hours']): Promise<void> {
  const keys = [...deltas.keys()]
  const current = await read.getMany(keys)
  keys.forEach((key, i) => {
    const d = deltas.get(key) as Digest
    const next = current[i] != null ? decodeDigest(current[i] as Uint8Array) : emptyDigest()
    next.count += d.count
    xorInto(next.hash, d.hash)
    const bytes = encodeDigest(next)
    ops.push({ type: 'put', key, value: bytes })
    staged.set(key, bytes)
    if (key.startsWith('h!')) {
      const end = key.lastIndexOf('!')
      hours.push({ nodeId: key.slice(2, end), hourMs: Number(key.slice(end + 1)), digest: next })
    }
  })
}

/** Adds one record's leaf to the digest deltas of its minute and hour */
export function addDigestDelta (deltas: Map<string, Digest>, nodeId: string, startMs: number, leaf: Uint8Array, count = 1): void {
  for (const key of [minuteDigestKey(nodeId, floorTo(startMs, MINUTE_MS)), hourDigestKey(nodeId, floorTo(startMs, HOUR_MS))]) {
    const d = deltas.get(key) ?? deltas.set(key, emptyDigest()).get(key) as Digest
    d.count += count
    xorInto(d.hash, leaf)
  }
}

/**
 * Plans storing `items` (verified) with their `proofs`. Records in minutes older than
 * `horizonMs` are stale: only rollup registers speak for those minutes.
 */
export async function planIngest (read: Reader, items: readonly VerifiedRecord[], proofs: ReadonlyMap<string, MeterProof>, horizonMs: number, knownProofs: Set<string>): Promise<Plan> {
  const plan: Plan = { ops: [], outcome: new Map(), staged: new Map(), hours: [], stored: 0 }
  const fresh: VerifiedRecord[] = []
  const candidates = new Map<string, VerifiedRecord>()
  for (const it of items) {
    if (plan.outcome.has(it.key) || candidates.has(it.key)) continue
    if (floorTo(it.record.startMs, MINUTE_MS) < horizonMs) plan.outcome.set(it.key, 'stale')
    else candidates.set(it.key, it)
  }
  // One read for what decides the plan: which records and proofs are already stored.
  const keys = [...candidates.keys()]
  const cand = [...candidates.values()]
  const needProofs = [...new Set(cand.map(f => f.batchId))].filter(id => !knownProofs.has(id))
  const got = await read.getMany([...keys, ...needProofs.map(proofKey)])
  keys.forEach((key, i) => {
    if (got[i] != null) plan.outcome.set(key, 'known')
    else fresh.push(candidates.get(key) as VerifiedRecord)
  })
  if (fresh.length === 0) return plan

  // Proofs the new records need that are not stored yet.
  const freshBatches = new Set(fresh.map(f => f.batchId))
  needProofs.forEach((id, i) => {
    const proof = proofs.get(id)
    if (got[keys.length + i] == null && proof != null && freshBatches.has(id)) plan.ops.push({ type: 'put', key: proofKey(id), value: encode('MeterProof', proof) })
  })

  // Every new record is billed: one run, one record (see record.ts).
  const rollups = new Map<string, Totals>()
  const digests = new Map<string, Digest>()
  for (const f of fresh) {
    const record = f.record
    plan.ops.push({ type: 'put', key: f.key, value: encode('SignedRecord', { record: f.bytes, batchId: f.batchId, leaf: f.leafIndex }) })
    plan.outcome.set(f.key, 'stored')
    plan.stored++
    addDigestDelta(digests, record.nodeId, record.startMs, f.leaf)
    addRollupDelta(rollups, record, 1)
  }
  // One more read for the digests and rollups they move (mostly from the store's cache).
  const pre = await prefetch(read, [...digests.keys(), ...rollups.keys()])
  await applyDigestDeltas(pre, digests, plan.ops, plan.staged, plan.hours)
  await applyRollupDeltas(pre, rollups, plan.ops, plan.staged)
  return plan
}

/** A reader that answers `keys` from one getMany done now, and anything else from `read` */
async function prefetch (read: Reader, keys: string[]): Promise<Reader> {
  const values = await read.getMany(keys)
  const map = new Map(keys.map((k, i) => [k, values[i]]))
  const getMany = async (ks: string[]): Promise<Array<Uint8Array | undefined>> =>
    ks.every(k => map.has(k)) ? ks.map(k => map.get(k)) : await read.getMany(ks)
  return { getMany, get: async (k) => (await getMany([k]))[0] }
}

/** The MeterRecord stored under a record key, if readable */
export async function readRecord (read: Reader, key: string): Promise<MeterRecord | undefined> {
  if (parseRecordKey(key) == null) return undefined
  const bytes = await read.get(key)
  if (bytes == null) return undefined
  try {
    return decode('MeterRecord', decode('SignedRecord', bytes).record)
  } catch {
    return undefined
  }
}
