/**
 * What each simulated router knows and how it picks, as router.ts pick() does: its own node at
 * its exact in-flight count, every other node at the in-flight of the newest advert its table
 * holds plus what it sent there since that advert (the real LoadTracker, one per router), a
 * peer that answered BUSY counted full until its next advert, slots capped and penalties from
 * BUSY answers (the real PeerPenalties, one per router, on the virtual clock); then the real
 * choosePeer.
 *
 * Up to `fullScanMaxNodes` nodes, pick() hands choosePeer every node, exactly as the agent
 * does. Above, building N candidates per invocation would make the run O(N^2), so it walks the
 * nodes that may be free (gossip.ts: every node minus those every advert in circulation shows
 * full) in a fresh random order (a partial Fisher-Yates shuffle) until it has found two with a
 * free slot and hands choosePeer those two (or its own node and one other, when its own node has
 * room: choosePeer always puts the router's own node in the pair then). The first free nodes
 * of a uniformly random order are a uniformly random choice among the free ones, which is what
 * choosePeer draws from the full list, so the choice has the same distribution; a walk that
 * finds too few has looked at every candidate, so "none free" and "only one free" are exact.
 * Tracker estimates are memoised between the tracker calls that can change them.
 */
import { canQueue, chooseQueue, choosePeer, type Candidate } from '../../node/src/router/choose.js'
import { LoadTracker, type Dispatch } from '../../node/src/router/load.js'
import { PENALTY, PeerPenalties } from '../../node/src/router/penalty.js'
import type { GossipModel } from './gossip.js'
import { inView, type ShardLayout } from './shards.js'

export interface SimCandidate extends Candidate { idx: number }

/** The nodes' true state, read by the views (the router's own entry is exact) */
export interface NodeState {
  readonly n: number
  readonly ids: readonly string[]
  readonly slots: Int32Array
  readonly inFlight: Int32Array
  /** each executor's queue of invocations waiting for a slot */
  readonly queues: ReadonlyArray<{ readonly length: number }>
}

export interface ViewsInit {
  /** @default 32 */
  fullScanMaxNodes?: number
  /** the virtual clock, for the penalties' decay */
  now: () => number
  /** sharded gossip: each router hears about (and routes to) only its view */
  layout?: ShardLayout
}

/** The simulated function's name, for the penalties' round-trip learning */
const FUNCTION = 'fn'

/** How stale and how wrong the chosen peer's estimate was, summed over remote picks */
export interface PickStats {
  picks: number
  advertAgeMs: number
  /** estimate minus the peer's true in-flight at the moment of the choice */
  estimateError: number
  absEstimateError: number
  /** estimate minus the advert's in-flight: this router's own correction */
  ownCorrection: number
  fullScans: number
  /** picks that walked the nodes, and nodes looked at by them */
  walks: number
  looked: number
}

/** Sums over sampled moments when a router found no free slot anywhere (see diagnoseWait) */
export interface WaitDiagnosis {
  samples: number
  /** slots really free in the mesh, and nodes with at least one */
  freeSlots: number
  nodesWithRoom: number
  /** the router's view of the other nodes */
  fullByAdvert: number
  markedBusy: number
  fullByOwnSends: number
  free: number
}

export class RouterViews {
  private readonly trackers: Array<LoadTracker | undefined>
  /**
   * per router: peer -> seq of the newest advert its tracker has been told about, -1 before
   * the router's first dispatch there (a flat array up to 2,048 nodes, else a map)
   */
  private readonly applied: Array<Int32Array | Map<number, number> | undefined>
  /**
   * per router (flat arrays only): the tracker's last estimate for each peer, -1 once any
   * tracker call for that peer may have changed it. Between such calls the router holds the
   * same advert and the tracker the same counts, so estimate() would return the same number.
   */
  private readonly memo: Array<Int32Array | undefined>
  private readonly penalties: Array<PeerPenalties | undefined>
  /** the slots each router believes a peer has: min(advertised, the mesh's cap) */
  private readonly believed: Int32Array
  private readonly now: () => number
  private readonly rr: Int32Array
  private readonly fullScanMaxNodes: number
  private readonly layout: ShardLayout | undefined
  readonly stats: PickStats = { picks: 0, advertAgeMs: 0, estimateError: 0, absEstimateError: 0, ownCorrection: 0, fullScans: 0, walks: 0, looked: 0 }
  measuring = false

  constructor (private readonly s: NodeState, private readonly gossip: GossipModel, private readonly rng: () => number, init: ViewsInit) {
    this.trackers = new Array(s.n).fill(undefined)
    this.penalties = new Array(s.n).fill(undefined)
    this.now = init.now
    // Every node is routable in every view, so every router computes the same cap.
    const cap = new PeerPenalties().slotCap(Array.from(s.slots))
    this.believed = Int32Array.from(s.slots, x => Math.min(x, cap))
    this.applied = new Array(s.n).fill(undefined)
    this.memo = new Array(s.n).fill(undefined)
    this.fullScanMaxNodes = init.fullScanMaxNodes ?? 32
    this.layout = init.layout
    // Each router's round-robin starts at its own place (agents do not start in lockstep).
    this.rr = Int32Array.from({ length: s.n }, () => Math.floor(rng() * s.n))
  }

  /** True if router r hears about node p (itself included) */
  inView (r: number, p: number): boolean {
    return this.layout === undefined || p === r || inView(this.layout, r, p)
  }

  private penaltiesOf (r: number): PeerPenalties {
    let p = this.penalties[r]
    if (p === undefined) {
      p = new PeerPenalties({ now: this.now })
      this.penalties[r] = p
    }
    return p
  }

  /** r's penalty for peer p (0 for itself) */
  penalty (r: number, p: number): number {
    if (p === r) return 0
    return this.penalties[r]?.score(this.s.ids[p]) ?? 0
  }

  /** p answered r's dispatch BUSY */
  busy (r: number, p: number): void {
    this.penaltiesOf(r).add(this.s.ids[p], PENALTY.busy)
  }

  /** p ran r's dispatch; the round trip took `rttMs` */
  answered (r: number, p: number, rttMs: number): void {
    this.penaltiesOf(r).answered(this.s.ids[p], FUNCTION, rttMs)
  }

  /** The slots r counts p as having */
  slotsOf (r: number, p: number): number {
    return p === r ? this.s.slots[p] : this.believed[p]
  }

  tracker (r: number): LoadTracker {
    let t = this.trackers[r]
    if (t === undefined) {
      t = new LoadTracker()
      this.trackers[r] = t
      const flat = this.s.n <= 2048
      this.applied[r] = flat ? new Int32Array(this.s.n).fill(-1) : new Map()
      if (flat) this.memo[r] = new Int32Array(this.s.n).fill(-1)
    }
    return t
  }

  private seen (r: number, p: number): number {
    const a = this.applied[r]
    if (a === undefined) return -1
    if (a instanceof Int32Array) return a[p]
    return a.get(p) ?? -1
  }

  private setSeen (r: number, p: number, seq: number): void {
    const a = this.applied[r]
    if (a instanceof Int32Array) a[p] = seq
    else a?.set(p, seq)
  }

  /**
   * Tells r's tracker about p's adverts that reached r since it last looked. One onAdvert()
   * stands for any number of them: the tracker keeps only whether the epoch moved.
   */
  private sync (r: number, p: number, seq: number, seen: number): void {
    if (seq > seen) {
      this.trackers[r]?.onAdvert(this.s.ids[p])
      this.setSeen(r, p, seq)
      this.forget(r, p)
    }
  }

  private forget (r: number, p: number): void {
    const m = this.memo[r]
    if (m !== undefined) m[p] = -1
  }

  private syncNow (r: number, p: number, now: number): void {
    const seen = this.seen(r, p)
    if (seen >= 0) this.sync(r, p, this.gossip.view(r, p, now).seq, seen)
  }

  /**
   * r's estimate of p's in-flight count, as router.ts pick() computes it (exact for itself);
   * for a node that is not free it may stop at a lower count that already reaches its slots
   */
  loadOf (r: number, p: number, now: number): number {
    const s = this.s
    if (p === r) return s.inFlight[p]
    // Every advert anyone may hold shows p full: full in r's view too.
    if (this.gossip.pos[p] < 0) return s.slots[p]
    const v = this.gossip.view(r, p, now)
    const slots = this.believed[p]
    // The tracker only adds to the advert's count (or says full): an advert showing the node
    // full is the answer "not free" already. Without a dispatch from r to p, the tracker would
    // return the advert's count as it is.
    if (v.inFlight >= slots) return v.inFlight
    const t = this.trackers[r]
    if (t === undefined) return v.inFlight
    const seen = this.seen(r, p)
    if (seen < 0) return v.inFlight
    this.sync(r, p, v.seq, seen)
    const m = this.memo[r]
    if (m === undefined) return t.estimate(s.ids[p], v.inFlight, slots)
    if (m[p] < 0) m[p] = t.estimate(s.ids[p], v.inFlight, slots)
    return m[p]
  }

  /**
   * r's estimate of p's load, running and queued, as router.ts computes it for chooseQueue: the
   * advert's count plus what r sent since (loadOf may stop at the slots, which says "not free"
   * but not how deep the queue is)
   */
  queueLoadOf (r: number, p: number, now: number): number {
    const s = this.s
    if (p === r) return s.inFlight[p] + s.queues[p].length
    const v = this.gossip.view(r, p, now)
    const t = this.trackers[r]
    const seen = this.seen(r, p)
    if (t === undefined || seen < 0) return v.inFlight
    this.sync(r, p, v.seq, seen)
    return t.estimate(s.ids[p], v.inFlight, this.believed[p])
  }

  /** As candidate(), with the load chooseQueue weighs */
  queueCandidate (r: number, p: number, now: number): SimCandidate {
    return { ...this.candidate(r, p, now), load: this.queueLoadOf(r, p, now) }
  }

  candidate (r: number, p: number, now: number): SimCandidate {
    const s = this.s
    return p === r
      ? { idx: p, id: s.ids[p], slots: s.slots[p], load: s.inFlight[p] + s.queues[p].length, warm: true, self: true, waitAboveMs: this.trackers[r]?.waitAbove(s.ids[p]) }
      : { idx: p, id: s.ids[p], slots: this.believed[p], load: this.loadOf(r, p, now), warm: true, penalty: this.penalty(r, p), waitAboveMs: this.trackers[r]?.waitAbove(s.ids[p]) }
  }

  private isFree (c: Candidate): boolean {
    return c.slots > 0 && c.load < c.slots
  }

  /** fnmesh: power of two choices with the own-outstanding correction; -1 when nothing is free */
  pickFnmesh (r: number, now: number): number {
    const n = this.s.n
    let chosen: SimCandidate | undefined
    if (n <= this.fullScanMaxNodes && this.layout === undefined) {
      chosen = choosePeer(this.all(r, now), this.rng)
    } else {
      chosen = choosePeer(this.twoFree(r, now), this.rng)
    }
    if (chosen === undefined) return -1
    if (this.measuring && chosen.idx !== r) this.record(r, chosen, now)
    return chosen.idx
  }

  /**
   * Router r found no free slot: where to queue (router.ts pickQueue: chooseQueue over every
   * node up to fullScanMaxNodes, else over its own node and one other at random)
   */
  pickFnmeshQueue (r: number, now: number, budgetMs: number, runMs: number): number {
    const s = this.s
    let chosen: SimCandidate | undefined
    if (s.n <= this.fullScanMaxNodes && this.layout === undefined) {
      const all = new Array<SimCandidate>(s.n)
      for (let p = 0; p < s.n; p++) all[p] = this.queueCandidate(r, p, now)
      chosen = chooseQueue(all, budgetMs, runMs, this.rng)
    } else {
      // chooseQueue samples among the nodes whose expected wait fits the budget: draw until two
      // such (its own node first), as a filter over all of them would give
      // (every node: gossip.members holds only those that may have a free slot)
      const two: SimCandidate[] = []
      const own = this.queueCandidate(r, r, now)
      if (canQueue(own, budgetMs, runMs)) two.push(own)
      const view = this.layout?.view[r]
      const among = view?.length ?? s.n
      for (let tries = 0; two.length < 2 && tries < 4 * among; tries++) {
        const p = view !== undefined ? view[Math.floor(this.rng() * among)] : Math.floor(this.rng() * s.n)
        if (p === r || two.some(c => c.idx === p)) continue
        const c = this.queueCandidate(r, p, now)
        if (canQueue(c, budgetMs, runMs)) two.push(c)
      }
      chosen = chooseQueue(two, budgetMs, runMs, this.rng)
    }
    if (chosen === undefined) return -1
    if (this.measuring && chosen.idx !== r) this.record(r, chosen, now)
    return chosen.idx
  }

  /** Round-robin over the nodes in id order, skipping those estimated full (router.ts "round-robin") */
  pickRoundRobin (r: number, now: number): number {
    const n = this.s.n
    for (let i = 0; i < n; i++) {
      const p = (this.rr[r] + i) % n
      if (this.loadOf(r, p, now) < this.slotsOf(r, p)) {
        this.rr[r] = (this.rr[r] + i + 1) % n
        if (this.measuring && p !== r) this.record(r, this.candidate(r, p, now), now)
        return p
      }
    }
    if (this.measuring) this.stats.fullScans++
    return -1
  }

  /**
   * The pick when every node but p is known to be full: p if it has a free slot (what
   * choosePeer returns for a single free candidate, and where round-robin's scan stops)
   */
  pickOnly (r: number, p: number, now: number, roundRobin: boolean): number {
    const c = this.candidate(r, p, now)
    if (!this.isFree(c)) return -1
    if (roundRobin) this.rr[r] = (p + 1) % this.s.n
    if (this.measuring && p !== r) this.record(r, c, now)
    return p
  }

  private all (r: number, now: number): SimCandidate[] {
    const out = new Array<SimCandidate>(this.s.n)
    for (let p = 0; p < this.s.n; p++) out[p] = this.candidate(r, p, now)
    return out
  }

  /**
   * The candidates choosePeer needs to make the choice it would make from the full list: when
   * r's own node has a free slot, choosePeer pairs it with a uniformly random other free node,
   * so r and the first free node of a uniformly random order of the others; when it has none,
   * a uniformly random pair of free nodes, so the first two. The others walked are the gossip
   * members (nodes some advert in circulation shows with room), in a partial shuffle.
   */
  private twoFree (r: number, now: number): SimCandidate[] {
    const g = this.gossip
    const s = this.s
    const out: SimCandidate[] = []
    if (s.slots[r] > 0 && s.inFlight[r] < s.slots[r]) out.push({ idx: r, id: s.ids[r], slots: s.slots[r], load: s.inFlight[r], warm: true, self: true })
    const view = this.layout?.view[r]
    if (view !== undefined) {
      // Its own view in a fresh random order (a partial shuffle of the router's own list)
      const m = view.length
      for (let k = 0; k < m; k++) {
        const j = k + Math.floor(this.rng() * (m - k))
        const p = view[j]
        view[j] = view[k]
        view[k] = p
        if (g.pos[p] < 0) continue
        const load = this.loadOf(r, p, now)
        const slots = this.believed[p]
        if (slots > 0 && load < slots) {
          out.push({ idx: p, id: s.ids[p], slots, load, warm: true, penalty: this.penalty(r, p) })
          if (out.length === 2) {
            if (this.measuring) { this.stats.walks++; this.stats.looked += k + 1 }
            return out
          }
        }
      }
      if (this.measuring) { this.stats.fullScans++; this.stats.walks++; this.stats.looked += m }
      return out
    }
    const m = g.memberCount
    for (let k = 0; k < m; k++) {
      const j = k + Math.floor(this.rng() * (m - k))
      g.swapMembers(k, j)
      const p = g.members[k]
      if (p === r) continue
      const load = this.loadOf(r, p, now)
      const slots = this.believed[p]
      if (slots > 0 && load < slots) {
        out.push({ idx: p, id: s.ids[p], slots, load, warm: true, penalty: this.penalty(r, p) })
        if (out.length === 2) {
          if (this.measuring) { this.stats.walks++; this.stats.looked += k + 1 }
          return out
        }
      }
    }
    if (this.measuring) { this.stats.fullScans++; this.stats.walks++; this.stats.looked += m }
    return out
  }

  /**
   * Why router r, about to wait, sees no free slot, against the truth: per other node, full in
   * its view by the advert it holds, by a BUSY answer (marked full until the next advert), or by
   * what it sent since; and how many slots are really free (added to `into`)
   */
  diagnoseWait (r: number, now: number, into: WaitDiagnosis): void {
    const s = this.s
    into.samples++
    const t = this.trackers[r]
    for (let p = 0; p < s.n; p++) {
      const free = s.slots[p] - s.inFlight[p]
      if (free > 0) { into.freeSlots += free; into.nodesWithRoom++ }
      if (p === r) continue
      const v = this.gossip.view(r, p, now)
      if (v.inFlight >= this.believed[p]) { into.fullByAdvert++; continue }
      const seen = this.seen(r, p)
      if (t === undefined || seen < 0) { into.free++; continue }
      this.sync(r, p, v.seq, seen)
      // estimate() answers `slots` for a peer marked full, else the advert plus what r sent since.
      if (t.estimate(s.ids[p], -1e9, 1e9) >= 1e9) into.markedBusy++
      else if (t.estimate(s.ids[p], v.inFlight, this.believed[p]) >= this.believed[p]) into.fullByOwnSends++
      else into.free++
    }
  }

  private record (r: number, c: SimCandidate, now: number): void {
    const v = this.gossip.view(r, c.idx, now)
    const st = this.stats
    st.picks++
    st.advertAgeMs += now - v.pub
    const err = c.load - this.s.inFlight[c.idx]
    st.estimateError += err
    st.absEstimateError += Math.abs(err)
    st.ownCorrection += c.load - v.inFlight
  }

  /** r sends an invocation to p (not itself) */
  sent (r: number, p: number, now: number): Dispatch {
    const t = this.tracker(r)
    if (this.seen(r, p) >= 0) this.syncNow(r, p, now)
    else this.setSeen(r, p, this.gossip.view(r, p, now).seq)
    this.forget(r, p)
    return t.sent(this.s.ids[p])
  }

  /** p answered r's dispatch `d` */
  finished (r: number, p: number, d: Dispatch, now: number): void {
    this.syncNow(r, p, now)
    this.tracker(r).finished(d)
    this.forget(r, p)
  }

  /** p answered BUSY (to a dispatch allowed to wait `queueMs` in its queue, when > 0) */
  markFull (r: number, p: number, now: number, queueMs = 0): void {
    this.syncNow(r, p, now)
    if (queueMs > 0) this.tracker(r).markQueueRefused(this.s.ids[p], queueMs)
    else this.tracker(r).markFull(this.s.ids[p])
    this.forget(r, p)
  }
}
