/**
 * Capacity adverts in the simulator, with the agent's cadence (gossip/gossip.ts): every node
 * publishes every `intervalMs` (500 ms) and, after a load change, again at
 * max(now + 20 ms, last publish + `minGapMs` (100 ms)); each advert reaches every other node
 * after its own delay, drawn from [delayMinMs, delayMaxMs].
 *
 * Delivery is evaluated lazily instead of as N - 1 events per advert (which would be 10^9
 * events per simulated second at 10,000 nodes): the delay of advert (node, seq) to a receiver
 * is a hash of the three, so "what does router r hold for node p at time t" is exactly the
 * newest advert of p whose publish time plus its delay to r is at most t, as a peer table that
 * keeps the highest `seq` it has received would hold. Only adverts younger than the largest
 * delay can still be in flight, so each node keeps its last few.
 *
 * It also keeps the set of nodes that some router may still see with a free slot: those with an
 * advert that may be held somewhere (the newest one surely delivered, and any younger) showing
 * one. A node outside it is full in every view (the router only ever adds to the advert's
 * count), so pickers walk this set instead of all N nodes.
 */
import { hashUnit } from './rng.js'

export interface AdvertRecord {
  seq: number
  /** virtual time it was published, ms */
  pub: number
  /** the publisher's in-flight count when it was built */
  inFlight: number
  node: number
}

export interface GossipInit {
  nodes: number
  /** each node's slots */
  slots: ArrayLike<number>
  seed: number
  delayMinMs: number
  delayMaxMs: number
  /** @default 500 */
  intervalMs?: number
  /** @default 100 */
  minGapMs?: number
  /** @default 20 */
  coalesceMs?: number
}

export class GossipModel {
  readonly intervalMs: number
  readonly minGapMs: number
  readonly coalesceMs: number
  readonly delayMinMs: number
  readonly delayMaxMs: number
  private readonly seed: number
  /** per node: adverts, oldest first; the first one has reached every node */
  private readonly hist: AdvertRecord[][]
  private readonly lastSent: Float64Array
  private readonly promptPending: Uint8Array
  /** every node's adverts that may still be in flight to someone, oldest first */
  private recentAll: AdvertRecord[] = []
  private recentHead = 0
  /** adverts published inside the measured window */
  published = 0
  /** nodes some router may see with a free slot: members[0, memberCount), pos[node] or -1 */
  readonly members: Int32Array
  readonly pos: Int32Array
  memberCount = 0
  private readonly slots: ArrayLike<number>

  constructor (init: GossipInit) {
    if (!(init.delayMinMs >= 0 && init.delayMaxMs >= init.delayMinMs)) throw new Error(`Invalid gossip delay range ${init.delayMinMs}-${init.delayMaxMs} ms`)
    this.intervalMs = init.intervalMs ?? 500
    this.minGapMs = init.minGapMs ?? 100
    this.coalesceMs = init.coalesceMs ?? 20
    this.delayMinMs = init.delayMinMs
    this.delayMaxMs = init.delayMaxMs
    this.seed = init.seed
    this.lastSent = new Float64Array(init.nodes).fill(-Infinity)
    this.promptPending = new Uint8Array(init.nodes)
    // Every table starts full: an idle advert everyone has had by time 0.
    this.hist = Array.from({ length: init.nodes }, (_, node) => [{ seq: 1, pub: -init.delayMaxMs, inFlight: 0, node }])
    this.slots = init.slots
    this.members = Int32Array.from({ length: init.nodes }, (_, i) => i)
    this.pos = Int32Array.from({ length: init.nodes }, (_, i) => i)
    this.memberCount = init.nodes
  }

  /** Drops adverts every node has had a newer one of, and updates `node`'s membership */
  settle (node: number, now: number): void {
    const h = this.hist[node]
    while (h.length >= 2 && h[1].pub + this.delayMaxMs <= now) h.shift()
    let free = false
    for (let k = 0; k < h.length; k++) if (h[k].inFlight < this.slots[node]) { free = true; break }
    const i = this.pos[node]
    if (free && i < 0) {
      this.members[this.memberCount] = node
      this.pos[node] = this.memberCount++
    } else if (!free && i >= 0) {
      const last = this.members[--this.memberCount]
      this.members[i] = last
      this.pos[last] = i
      this.pos[node] = -1
    }
  }

  /**
   * Sets when `node` last published (before time 0), so that agents that did not start in the
   * same millisecond do not send their prompt adverts in lockstep
   */
  setLastSent (node: number, atMs: number): void {
    this.lastSent[node] = atMs
  }

  /** Swaps two places of the member list (for walks in random order) */
  swapMembers (i: number, j: number): void {
    const a = this.members[i]
    const b = this.members[j]
    this.members[i] = b
    this.members[j] = a
    this.pos[b] = i
    this.pos[a] = j
  }

  /** When advert `rec` reaches `receiver` */
  arrival (rec: AdvertRecord, receiver: number): number {
    return rec.pub + this.delayMinMs + (this.delayMaxMs - this.delayMinMs) * hashUnit(this.seed, rec.node, rec.seq, receiver)
  }

  /** The advert of `node` that `receiver`'s peer table holds at `now` */
  view (receiver: number, node: number, now: number): AdvertRecord {
    const h = this.hist[node]
    for (let k = h.length - 1; k > 0; k--) {
      const a = h[k]
      if (a.pub + this.delayMinMs > now) continue
      if (a.pub + this.delayMaxMs <= now || this.arrival(a, receiver) <= now) return a
    }
    return h[0]
  }

  /** Publishes `node`'s advert now; returns it */
  publish (node: number, now: number, inFlight: number, measured: boolean): AdvertRecord {
    const h = this.hist[node]
    const rec: AdvertRecord = { seq: h[h.length - 1].seq + 1, pub: now, inFlight, node }
    h.push(rec)
    // Keep one advert that has surely reached everyone, and those that may not have yet; the
    // caller calls settle() again when this one has reached everyone.
    this.settle(node, now)
    this.lastSent[node] = now
    if (measured) this.published++
    this.recentAll.push(rec)
    while (this.recentHead < this.recentAll.length && this.recentAll[this.recentHead].pub + this.delayMaxMs <= now) this.recentHead++
    if (this.recentHead > 4096 && this.recentHead * 2 > this.recentAll.length) {
      this.recentAll = this.recentAll.slice(this.recentHead)
      this.recentHead = 0
    }
    return rec
  }

  /**
   * `node`'s load changed at `now`: when its prompt advert goes out, or undefined if one is
   * already scheduled (as Gossip.loadChanged coalesces)
   */
  promptAt (node: number, now: number): number | undefined {
    if (this.promptPending[node] === 1) return undefined
    this.promptPending[node] = 1
    return now + Math.max(this.coalesceMs, this.lastSent[node] + this.minGapMs - now)
  }

  /** The prompt advert scheduled by promptAt is going out now (a periodic one does not cancel it) */
  promptFired (node: number): void {
    this.promptPending[node] = 0
  }

  /** Adverts still travelling to `receiver` at `now` (with their arrival times) */
  inFlightTo (receiver: number, now: number): Array<{ rec: AdvertRecord, at: number }> {
    const out: Array<{ rec: AdvertRecord, at: number }> = []
    for (let i = this.recentHead; i < this.recentAll.length; i++) {
      const rec = this.recentAll[i]
      if (rec.node === receiver) continue
      const at = this.arrival(rec, receiver)
      if (at > now) out.push({ rec, at })
    }
    return out
  }
}
