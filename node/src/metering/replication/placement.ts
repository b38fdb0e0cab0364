/**
 * Owner-based placement of meter records (issue 16): a range is one node's records of one hour
 * (the unit the digest tree already keeps). It is owned by the node that ran the records, while
 * that node is live, plus the R live members ranked highest by rendezvous hashing (HRW) of the
 * range; when the node that ran them is not live, by the R+1 highest. Every member computes the
 * same owners from the same member list, and a membership change moves only the ranges whose
 * top ranks it touched (about (R+1)/N of them per member joining or leaving).
 *
 * With R >= N-1 every member owns every range: the whole mesh holds everything, as before.
 */
import type { PeerTable } from '../../gossip/peer-table.js'
import { HOUR_MS, floorTo } from '../records/keys.js'

/** The placement unit: one node's records of one hour */
export const RANGE_MS = HOUR_MS

export const rangeOf = (startMs: number): number => floorTo(startMs, RANGE_MS)

/** 32-bit FNV-1a of a string */
function fnv (s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** murmur3's finaliser: every input bit moves every output bit */
function fmix (h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** HRW score of `member` for the range hashed to `rangeHash` (higher ranks first) */
export const score = (memberHash: number, rangeHash: number): number => fmix(memberHash ^ fmix((rangeHash + 0x9e3779b9) >>> 0))

export const rangeHash = (nodeId: string, hourMs: number): number => fnv(`${nodeId}|${hourMs}`)

/** A fixed member list with owners computed (and cached) per range */
export class MemberView {
  readonly members: readonly string[]
  readonly key: string
  private readonly hashes: Map<string, number>
  private readonly cache = new Map<string, string[]>()

  constructor (members: Iterable<string>, readonly replicas: number) {
    this.members = [...new Set(members)].sort()
    this.key = `${replicas}|${this.members.join(',')}`
    this.hashes = new Map(this.members.map(m => [m, fnv(m)]))
  }

  has (nodeId: string): boolean {
    return this.hashes.has(nodeId)
  }

  /** Every member holds every range (R >= N-1): placement changes nothing */
  get everyone (): boolean {
    return this.members.length <= this.replicas + 1
  }

  /** The live owners of (nodeId, hour): the node itself first when it is a member, then by HRW rank */
  owners (nodeId: string, hourMs: number): string[] {
    const k = `${nodeId}|${hourMs}`
    let out = this.cache.get(k)
    if (out != null) return out
    const origin = this.hashes.has(nodeId)
    const want = origin ? this.replicas : this.replicas + 1
    const rh = rangeHash(nodeId, hourMs)
    const ranked: Array<[string, number]> = []
    for (const m of this.members) if (m !== nodeId) ranked.push([m, score(this.hashes.get(m) as number, rh)])
    ranked.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    out = [...(origin ? [nodeId] : []), ...ranked.slice(0, want).map(r => r[0])]
    if (this.cache.size > 200_000) this.cache.clear()
    this.cache.set(k, out)
    return out
  }

  isOwner (member: string, nodeId: string, hourMs: number): boolean {
    if (this.everyone) return this.has(member)
    return this.owners(nodeId, hourMs).includes(member)
  }
}

/** The agent's placement: the live members of its peer table, as a view rebuilt when they change */
export class Placement {
  private view: MemberView
  private dirty = true
  /** when the member list last changed (Date.now) */
  changedAt = Date.now()

  constructor (private readonly table: PeerTable, readonly self: string, readonly replicas: number) {
    this.view = new MemberView([self], replicas)
    const reset = (): void => { this.dirty = true }
    table.on('added', reset)
    table.on('removed', reset)
    table.on('updated', reset)
  }

  /**
   * Live members now: this node and every peer in the table (a suspect peer too: it is dropped
   * from the table once its adverts stop, so a flapping connection does not move ranges)
   */
  current (): MemberView {
    if (!this.dirty) return this.view
    this.dirty = false
    const members = this.table.all().map(e => e.advert.nodeId)
    members.push(this.self)
    const next = new MemberView(members, this.replicas)
    if (next.key !== this.view.key) {
      this.changedAt = Date.now()
      this.view = next
    }
    return this.view
  }
}
