/**
 * Digests of key ranges for anti-entropy: the records of one node within a time range, as a
 * count and the XOR of their SHA-256 leaves. XOR makes a digest order-free and cheap to keep up
 * to date (add a record: XOR its leaf in). Minute digests live in LevelDB; hour digests are also
 * kept in memory here, and day and per-node digests are folded from them on demand, so comparing
 * two nodes that agree costs one small message per node id.
 */
import type { RangeDigest } from '../../../../proto/codec.js'
import { DAY_MS, HOUR_MS, floorTo } from './keys.js'

export interface Digest { count: number, hash: Buffer }

export const HASH_BYTES = 32
export const emptyDigest = (): Digest => ({ count: 0, hash: Buffer.alloc(HASH_BYTES) })

export function xorInto (into: Buffer, other: Uint8Array): void {
  for (let i = 0; i < HASH_BYTES; i++) into[i] ^= other[i] ?? 0
}

export const sameDigest = (a: { count: number, hash: Uint8Array }, b: { count: number, hash: Uint8Array }): boolean =>
  a.count === b.count && (a.count === 0 || Buffer.compare(Buffer.from(a.hash), Buffer.from(b.hash)) === 0)

/** Stored form: 8-byte count, 32-byte hash */
export function encodeDigest (d: Digest): Buffer {
  const out = Buffer.alloc(8 + HASH_BYTES)
  out.writeBigUInt64BE(BigInt(d.count), 0)
  d.hash.copy(out, 8)
  return out
}

export function decodeDigest (bytes: Uint8Array): Digest {
  const b = Buffer.from(bytes)
  if (b.length !== 8 + HASH_BYTES) return emptyDigest()
  return { count: Number(b.readBigUInt64BE(0)), hash: Buffer.from(b.subarray(8)) }
}

export const toRange = (nodeId: string, fromMs: number, toMs: number, d: Digest): RangeDigest =>
  ({ nodeId, fromMs, toMs, count: d.count, hash: d.count === 0 ? Buffer.alloc(0) : d.hash })

/** Which (node, hour) ranges a digest covers (owner-based placement); undefined = all */
export type HourFilter = ((nodeId: string, hourMs: number) => boolean) | undefined

/** Hour digests per node, in memory; coarser levels are folded from them */
export class DigestTree {
  private readonly hours = new Map<string, Map<number, Digest>>()

  /** Sets the digest of one hour (as stored) */
  setHour (nodeId: string, hourMs: number, d: Digest): void {
    let m = this.hours.get(nodeId)
    if (d.count === 0) {
      // An hour emptied (dropped after a handoff): forget it, so digests of the node stay comparable.
      m?.delete(hourMs)
      if (m?.size === 0) this.hours.delete(nodeId)
      return
    }
    if (m == null) this.hours.set(nodeId, m = new Map())
    m.set(hourMs, { count: d.count, hash: Buffer.from(d.hash) })
  }

  clear (): void {
    this.hours.clear()
  }

  hour (nodeId: string, hourMs: number): Digest {
    return this.hours.get(nodeId)?.get(hourMs) ?? emptyDigest()
  }

  nodeIds (): string[] {
    return [...this.hours.keys()].sort()
  }

  /** Records held, every node's */
  get count (): number {
    let n = 0
    for (const m of this.hours.values()) for (const d of m.values()) n += d.count
    return n
  }

  /** Every non-empty hour held: node, hour and digest */
  * entries (): Generator<{ nodeId: string, hourMs: number, digest: Digest }> {
    for (const [nodeId, m] of this.hours) for (const [hourMs, digest] of m) if (digest.count > 0) yield { nodeId, hourMs, digest }
  }

  /** One digest per node over all time (from 0 to 0 means all time); nodes with nothing kept are left out */
  perNode (keep?: HourFilter): RangeDigest[] {
    const out: RangeDigest[] = []
    for (const id of this.nodeIds()) {
      const d = this.fold(id, keep == null ? () => true : (h) => keep(id, h))
      if (keep == null || d.count > 0) out.push(toRange(id, 0, 0, d))
    }
    return out
  }

  /** The non-empty days of `nodeId` */
  days (nodeId: string, keep?: HourFilter): RangeDigest[] {
    const days = new Map<number, Digest>()
    for (const [hourMs, d] of this.hours.get(nodeId) ?? []) {
      if (keep != null && !keep(nodeId, hourMs)) continue
      const day = floorTo(hourMs, DAY_MS)
      const acc = days.get(day) ?? emptyDigest()
      acc.count += d.count
      xorInto(acc.hash, d.hash)
      days.set(day, acc)
    }
    return [...days.entries()].sort((a, b) => a[0] - b[0]).map(([day, d]) => toRange(nodeId, day, day + DAY_MS, d))
  }

  /** The non-empty hours of `nodeId` within the day starting at `dayMs` */
  hoursOf (nodeId: string, dayMs: number, keep?: HourFilter): RangeDigest[] {
    const out: RangeDigest[] = []
    for (const [hourMs, d] of this.hours.get(nodeId) ?? []) {
      if (keep != null && !keep(nodeId, hourMs)) continue
      if (hourMs >= dayMs && hourMs < dayMs + DAY_MS && d.count > 0) out.push(toRange(nodeId, hourMs, hourMs + HOUR_MS, d))
    }
    return out.sort((a, b) => a.fromMs - b.fromMs)
  }

  private fold (nodeId: string, keep: (hourMs: number) => boolean): Digest {
    const acc = emptyDigest()
    for (const [hourMs, d] of this.hours.get(nodeId) ?? []) {
      if (!keep(hourMs)) continue
      acc.count += d.count
      xorInto(acc.hash, d.hash)
    }
    return acc
  }
}
