/**
 * Rollup arithmetic, pure. A rollup is the totals of the winning records of one (node,
 * function, bucket). All of its fields are whole numbers (GB-seconds are kept as MB x billed ms),
 * so sums are exact and every node gets the same totals whatever order records arrive in.
 *
 * Older than the retention, a minute of one node is kept only as a register: its digest plus its
 * rollups, sealed (signed) by that node. Registers merge as a max-register: the greater by
 * (count, hash, sealed at, rows hash) wins, so merging is commutative, associative and idempotent.
 */
import { createHash } from 'node:crypto'
import { decode, encode, Outcome, type MeterRecord, type Rollup, type RollupRegister } from '../../../../proto/codec.js'

export interface Totals {
  invocations: number
  errors: number
  coldStarts: number
  billedMs: number
  /** memory MB x billed ms */
  mbMs: number
  /** binding calls and their bytes (issue 17) */
  bindingCalls: number
  bindingBytes: number
}

export const zero = (): Totals => ({ invocations: 0, errors: 0, coldStarts: 0, billedMs: 0, mbMs: 0, bindingCalls: 0, bindingBytes: 0 })

export function totalsOf (r: MeterRecord): Totals {
  return {
    invocations: 1,
    errors: r.outcome === Outcome.OUTCOME_OK ? 0 : 1,
    coldStarts: r.cold ? 1 : 0,
    billedMs: r.billedMs,
    mbMs: r.memoryMb * r.billedMs,
    bindingCalls: r.bindingCalls ?? 0,
    bindingBytes: r.bindingBytes ?? 0
  }
}

/** into += sign x d */
export function addInto (into: Totals, d: Totals, sign = 1): Totals {
  into.invocations += sign * d.invocations
  into.errors += sign * d.errors
  into.coldStarts += sign * d.coldStarts
  into.billedMs += sign * d.billedMs
  into.mbMs += sign * d.mbMs
  into.bindingCalls += sign * d.bindingCalls
  into.bindingBytes += sign * d.bindingBytes
  return into
}

export const isZero = (t: Totals): boolean => t.invocations === 0 && t.errors === 0 && t.coldStarts === 0 && t.billedMs === 0 && t.mbMs === 0 && t.bindingCalls === 0 && t.bindingBytes === 0

export const gbSeconds = (mbMs: number): number => mbMs / 1024 / 1000

/** The stored value of a rollup row (its bucket, function and node are in the key) */
export const encodeTotals = (t: Totals): Uint8Array => encode('Rollup', t)

export function decodeTotals (bytes: Uint8Array): Totals {
  const r = decode('Rollup', bytes)
  return totalsOfRow(r)
}

export const totalsOfRow = (r: Rollup): Totals => ({ invocations: r.invocations, errors: r.errors, coldStarts: r.coldStarts, billedMs: r.billedMs, mbMs: r.mbMs, bindingCalls: r.bindingCalls ?? 0, bindingBytes: r.bindingBytes ?? 0 })

/** Hash of a register's rows, independent of their order */
export function rowsHash (rows: readonly Rollup[]): Buffer {
  const encoded = rows.map(r => Buffer.from(encode('Rollup', {
    bucketMs: r.bucketMs, function: r.function, nodeId: r.nodeId, invocations: r.invocations, errors: r.errors, coldStarts: r.coldStarts, billedMs: r.billedMs, mbMs: r.mbMs,
    // Only when set, so rows without bindings hash as they did before these fields existed (seals of older agents verify).
    ...(r.bindingCalls > 0 ? { bindingCalls: r.bindingCalls } : {}),
    ...(r.bindingBytes > 0 ? { bindingBytes: r.bindingBytes } : {})
  }))).sort(Buffer.compare)
  const h = createHash('sha256')
  for (const e of encoded) h.update(e)
  return h.digest()
}

/** > 0 if register `a` wins over `b`, < 0 if `b` wins, 0 if they are the same */
export function compareRegisters (a: RollupRegister, b: RollupRegister): number {
  const ca = a.digest?.count ?? 0
  const cb = b.digest?.count ?? 0
  if (ca !== cb) return ca - cb
  const h = Buffer.compare(Buffer.from(a.digest?.hash ?? []), Buffer.from(b.digest?.hash ?? []))
  if (h !== 0) return h
  if (a.sealedAtMs !== b.sealedAtMs) return a.sealedAtMs - b.sealedAtMs
  return Buffer.compare(rowsHash(a.rows), rowsHash(b.rows))
}

/** The merge of two registers: the greater one (commutative, associative, idempotent) */
export const mergeRegisters = (a: RollupRegister, b: RollupRegister): RollupRegister => compareRegisters(a, b) >= 0 ? a : b
