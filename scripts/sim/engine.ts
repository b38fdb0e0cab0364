/**
 * One discrete-event run of the mesh: Poisson arrivals, each at a uniformly random router (a
 * NATS queue group), routed by the policy; executors that refuse with BUSY when full (as
 * executor.ts does); adverts at the agent's cadence; when a router sees no free slot, fnmesh
 * sends the invocation to wait in an executor's own queue (handed the next slot there, for up to
 * queueWaitMs), the other policies wait at the router for a slot in their view (queueWaitMs,
 * maxQueued); then NO_CAPACITY. Virtual time, no timers: a run is a pure function
 * of its config.
 */
import { QUEUE_PER_SLOT } from '../../node/src/router/choose.js'
import type { Dispatch } from '../../node/src/router/load.js'
import { EventQueue } from './events.js'
import { GossipModel, type AdvertRecord } from './gossip.js'
import { resolve, type Percentiles, type ResolvedConfig, type RunResult, type SimConfig } from './model.js'
import { OracleTree } from './oracle.js'
import { deriveSeed, drawService, exponential, prng, serviceMean } from './rng.js'
import { RouterViews, type SimCandidate, type WaitDiagnosis } from './views.js'

const enum Ev { Arrival, Exec, Finish, Reply, Busy, Tick, Prompt, Wake, Timeout, Settle, QueueTimeout }

interface Invocation {
  arrive: number
  router: number
  serviceMs: number
  measured: boolean
  busy: number
  /** when it first found no free slot (NaN: never) */
  waitStart: number
  waiting: boolean
  timeoutSet: boolean
  start: number
  node: number
  dispatch: Dispatch | undefined
  remote: boolean
  /** when the current dispatch was sent */
  sentAt: number
  /** sent to wait in the executor's queue if the node is full (router.ts queueMs) */
  queueing: boolean
  /** waiting in node `node`'s executor queue */
  inQueue: boolean
}

export class Simulation {
  readonly c: ResolvedConfig
  private readonly n: number
  private readonly q = new EventQueue<Ev>()
  private readonly gossip: GossipModel
  private readonly views: RouterViews
  private readonly slots: Int32Array
  private readonly inFlight: Int32Array
  /** executor queues (fnmesh): invocations waiting at each node for a slot, in arrival order */
  private readonly execQueues: Invocation[][]
  private readonly ids: string[]
  private readonly waiters: Invocation[][]
  /** routers with waiters: they are woken by every advert that reaches them */
  private readonly listening = new Set<number>()
  /**
   * Per listening router, what its last failed pick proved: -1 = every node full in its view;
   * p = every node but p full, and only p's entry changed since; -2 = unknown (pick in full)
   */
  private readonly known: Int32Array
  private readonly tracked: boolean
  private readonly oracle: { nodes: SimCandidate[], tree: OracleTree, queue: Invocation[] } | undefined
  private readonly arrivals: () => number
  private readonly measureFrom: number
  private readonly measureTo: number
  private readonly meanGapMs: number
  // measurements
  private readonly area: Float64Array
  private readonly lastChange: Float64Array
  private readonly perNode: Float64Array
  /** executing node of each measured completion, in order (small meshes only) */
  private order: Int8Array | undefined
  private latency: Float64Array = new Float64Array(1 << 16)
  private queueDelay: Float64Array = new Float64Array(1 << 16)
  private done = 0
  /** every invocation ever created, finished and refused (conservation check) */
  readonly totals = { arrivals: 0, completed: 0, rejected: 0 }
  private m = { arrivals: 0, rejected: 0, busy: 0, waited: 0, remote: 0, execMsgs: 0 }
  private events = 0
  /** sampled moments a router starts waiting (a stream of its own: sampling changes no other draw) */
  private readonly diagnosis: WaitDiagnosis = { samples: 0, freeSlots: 0, nodesWithRoom: 0, fullByAdvert: 0, markedBusy: 0, fullByOwnSends: 0, free: 0 }
  private readonly diagnose: () => number

  constructor (config: SimConfig) {
    const c = resolve(config)
    this.c = c
    const n = c.slots.length
    this.n = n
    this.slots = Int32Array.from(c.slots)
    this.inFlight = new Int32Array(n)
    this.execQueues = Array.from({ length: n }, () => [])
    this.ids = Array.from({ length: n }, (_, i) => `n${String(i).padStart(5, '0')}`)
    this.waiters = Array.from({ length: n }, () => [])
    this.known = new Int32Array(n).fill(-2)
    this.tracked = c.policy === 'fnmesh' || c.policy === 'round-robin'
    this.area = new Float64Array(n)
    this.lastChange = new Float64Array(n)
    this.perNode = new Float64Array(n)
    if (n <= 12) this.order = new Int8Array(1 << 16)
    this.measureFrom = c.warmupMs
    this.measureTo = c.warmupMs + c.durationMs
    const totalSlots = c.slots.reduce((a, b) => a + b, 0)
    this.meanGapMs = serviceMean(c.service) / (c.load * totalSlots)
    this.arrivals = prng(deriveSeed(c.seed, 'arrivals', n, c.load))
    this.gossip = new GossipModel({
      nodes: n,
      slots: this.slots,
      seed: deriveSeed(c.seed, 'gossip-delay', n),
      delayMinMs: c.gossipDelayMs[0],
      delayMaxMs: c.gossipDelayMs[1],
      intervalMs: c.advertIntervalMs,
      minGapMs: c.advertMinGapMs
    })
    const routing = prng(deriveSeed(c.seed, 'routing', n, c.load, c.policy))
    this.diagnose = prng(deriveSeed(c.seed, 'diagnose', n, c.load, c.policy))
    this.views = new RouterViews({ n, ids: this.ids, slots: this.slots, inFlight: this.inFlight, queues: this.execQueues }, this.gossip, routing, { fullScanMaxNodes: c.fullScanMaxNodes, now: () => this.q.now })
    if (c.policy === 'oracle') {
      const nodes = this.ids.map((id, i) => ({ idx: i, id, slots: c.slots[i], load: 0, warm: true }))
      this.oracle = { nodes, tree: new OracleTree(nodes), queue: [] }
    }
    // Agents start at different moments: each node's periodic and prompt adverts have their own phase.
    const phase = prng(deriveSeed(c.seed, 'advert-phase', n))
    for (let i = 0; i < n; i++) {
      this.q.at(phase() * c.advertIntervalMs, Ev.Tick, i, undefined)
      this.gossip.setLastSent(i, -phase() * c.advertMinGapMs)
    }
    this.q.at(exponential(this.arrivals, this.meanGapMs), Ev.Arrival, undefined, undefined)
  }

  /** Runs to the end of the window and until every invocation has an outcome */
  run (): RunResult {
    const t0 = performance.now()
    const q = this.q
    while (q.pop()) {
      this.events++
      if (!this.views.measuring && q.now >= this.measureFrom) this.views.measuring = true
      if (this.views.measuring && q.now >= this.measureTo) this.views.measuring = false
      const a = q.a
      switch (q.kind) {
        case Ev.Arrival: this.onArrival(); break
        case Ev.Exec: this.onExec(a, q.b); break
        case Ev.Finish: this.onFinish(a, q.b); break
        case Ev.Reply: this.onReply(a); break
        case Ev.Busy: this.onBusy(a); break
        case Ev.Tick: this.publish(a); q.at(q.now + this.c.advertIntervalMs, Ev.Tick, a, undefined); break
        case Ev.Prompt: this.gossip.promptFired(a); this.publish(a); break
        case Ev.Wake: this.changed(a, q.b); this.wake(a); break
        case Ev.Timeout: this.onTimeout(a); break
        case Ev.Settle: this.gossip.settle(a, q.now); break
        case Ev.QueueTimeout: this.onQueueTimeout(a, q.b); break
      }
      if (q.now >= this.measureTo && this.totals.arrivals === this.totals.completed + this.totals.rejected) break
    }
    if (this.totals.arrivals !== this.totals.completed + this.totals.rejected) {
      throw new Error(`Invocations lost: ${this.totals.arrivals} arrived, ${this.totals.completed} completed, ${this.totals.rejected} refused`)
    }
    return this.result(performance.now() - t0)
  }

  private get now (): number {
    return this.q.now
  }

  private inWindow (t: number): boolean {
    return t >= this.measureFrom && t < this.measureTo
  }

  private onArrival (): void {
    const now = this.now
    if (now >= this.measureTo) return
    const r = Math.floor(this.arrivals() * this.n)
    const inv: Invocation = {
      arrive: now,
      router: r,
      serviceMs: drawService(this.c.service, this.arrivals),
      measured: this.inWindow(now),
      busy: 0,
      waitStart: NaN,
      waiting: false,
      timeoutSet: false,
      start: NaN,
      node: -1,
      dispatch: undefined,
      remote: false,
      sentAt: NaN,
      queueing: false,
      inQueue: false
    }
    this.totals.arrivals++
    if (inv.measured) this.m.arrivals++
    this.q.at(now + exponential(this.arrivals, this.meanGapMs), Ev.Arrival, undefined, undefined)
    this.route(inv)
  }

  /**
   * The policy's choice for router r, or -1. A router that is waiting already knows from its
   * last failed pick that every node was full in its view; its view changes one entry at a time
   * (an advert arrives, a dispatch ends, its own node frees a slot), each followed by a wake, so
   * only that entry needs a look. That gives exactly the answer of a full pick (choosePeer with
   * one free candidate returns it without drawing) at O(1) instead of O(N) per wake.
   */
  private pick (r: number): number {
    if (!this.tracked) return this.pickFully(r)
    const k = this.listening.has(r) ? this.known[r] : -2
    if (k === -1) return -1
    if (k === -2) {
      const p = this.pickFully(r)
      this.known[r] = p < 0 ? -1 : -2
      return p
    }
    const p = this.views.pickOnly(r, k, this.now, this.c.policy === 'round-robin')
    if (p < 0) this.known[r] = -1
    return p
  }

  /** Node p's entry in router r's view changed (it may have a free slot now) */
  private changed (r: number, p: number): void {
    const k = this.known[r]
    if (k === -1) this.known[r] = p
    else if (k >= 0 && k !== p) this.known[r] = -2
  }

  private pickFully (r: number): number {
    const now = this.now
    switch (this.c.policy) {
      case 'fnmesh': return this.views.pickFnmesh(r, now)
      case 'round-robin': return this.views.pickRoundRobin(r, now)
      case 'random': return this.inFlight[r] < this.slots[r] ? r : -1
      case 'oracle': return (this.oracle as NonNullable<Simulation['oracle']>).tree.best()
    }
  }

  /** router.ts dispatchWithRetry: pick; nothing free -> wait (bounded) for a slot */
  private route (inv: Invocation): void {
    const p = this.pick(inv.router)
    if (p >= 0) { inv.queueing = false; this.dispatch(inv, p); return }
    const now = this.now
    if (this.c.policy === 'fnmesh') {
      // router.ts: nothing free in this view -> wait in the queue of the executor chooseQueue picks
      const firstWait = Number.isNaN(inv.waitStart)
      if (firstWait) inv.waitStart = now
      if (firstWait && inv.measured) this.m.waited++
      const q = now < inv.waitStart + this.c.queueWaitMs ? this.views.pickFnmeshQueue(inv.router, now) : -1
      if (q < 0) { this.reject(inv); return }
      inv.queueing = true
      this.dispatch(inv, q)
      return
    }
    if (Number.isNaN(inv.waitStart)) {
      inv.waitStart = now
      if (inv.measured) {
        this.m.waited++
        // Looking costs O(N): at most ~100 nodes' worth per wait on average.
        if (this.tracked && this.diagnose() < 100 / this.n) this.views.diagnoseWait(inv.router, now, this.diagnosis)
      }
    }
    const deadline = inv.waitStart + this.c.queueWaitMs
    const queue = this.oracle?.queue ?? this.waiters[inv.router]
    const queued = this.oracle == null ? queue.length : this.waiters[inv.router].length
    if (deadline <= now || queued >= this.c.maxQueued) { this.reject(inv); return }
    inv.waiting = true
    queue.push(inv)
    if (this.oracle != null) this.waiters[inv.router].push(inv)
    if (!inv.timeoutSet) {
      inv.timeoutSet = true
      this.q.at(deadline, Ev.Timeout, inv, undefined)
    }
    if (this.c.policy === 'round-robin' && !this.listening.has(inv.router)) this.listen(inv.router)
  }

  private dispatch (inv: Invocation, p: number): void {
    const r = inv.router
    inv.node = p
    if (this.oracle != null) {
      this.oracle.nodes[p].load++
      this.oracle.tree.update(p)
    }
    if (p === r) { this.arrive(inv, p); return }
    inv.remote = true
    inv.sentAt = this.now
    if (this.c.policy !== 'oracle') inv.dispatch = this.views.sent(r, p, this.now)
    if (this.inWindow(this.now)) this.m.execMsgs++
    this.q.at(this.now + this.c.hopMs, Ev.Exec, inv, p)
  }

  /** An ExecRequest reaches node p: executor.ts answers BUSY when every slot is taken */
  private onExec (inv: Invocation, p: number): void {
    if (this.inFlight[p] < this.slots[p]) { this.start(inv, p); return }
    if (inv.queueing && this.enqueue(inv, p)) return
    if (inv.measured) this.m.busy++
    if (this.inWindow(this.now)) this.m.execMsgs++
    this.q.at(this.now + this.c.hopMs, Ev.Busy, inv, p)
  }

  /** The router's own executor takes it: runs it, queues it, or the router has to re-pick */
  private arrive (inv: Invocation, p: number): void {
    if (this.inFlight[p] < this.slots[p]) { this.start(inv, p); return }
    if (inv.queueing && this.enqueue(inv, p)) return
    // executor.ts answers BUSY at once: router.ts marks nothing for its own node and re-picks
    if (++inv.busy > 3 * Math.max(1, this.n)) { this.reject(inv); return }
    this.route(inv)
  }

  /**
   * executor.ts: a full node keeps a queued dispatch (at most 3 x slots waiting) until a slot
   * frees or the router's wait runs out. True if it is queued.
   */
  private enqueue (inv: Invocation, p: number): boolean {
    if (this.execQueues[p].length >= QUEUE_PER_SLOT * this.slots[p]) return false
    const deadline = inv.waitStart + this.c.queueWaitMs
    if (deadline <= this.now) return false
    this.execQueues[p].push(inv)
    inv.inQueue = true
    this.q.at(deadline, Ev.QueueTimeout, inv, p)
    this.loadChanged(p)
    return true
  }

  /** The wait in p's queue ran out: BUSY back to the router, which gives up (its wait is over too) */
  private onQueueTimeout (inv: Invocation, p: number): void {
    if (!inv.inQueue || inv.node !== p) return
    const list = this.execQueues[p]
    list.splice(list.indexOf(inv), 1)
    inv.inQueue = false
    this.loadChanged(p)
    if (inv.remote) {
      if (inv.measured) this.m.busy++
      if (this.inWindow(this.now)) this.m.execMsgs++
      this.q.at(this.now + this.c.hopMs, Ev.Busy, inv, p)
    } else {
      this.reject(inv)
    }
  }

  private start (inv: Invocation, p: number): void {
    this.account(p)
    this.inFlight[p]++
    inv.start = this.now
    this.loadChanged(p)
    this.q.at(this.now + inv.serviceMs, Ev.Finish, inv, p)
  }

  private onFinish (inv: Invocation, p: number): void {
    this.account(p)
    this.inFlight[p]--
    this.loadChanged(p)
    // executor.ts: the freed slot goes to the longest-waiting queued invocation at once
    const next = this.execQueues[p].shift()
    if (next !== undefined) {
      next.inQueue = false
      this.start(next, p)
    }
    if (this.oracle != null) {
      this.oracle.nodes[p].load--
      this.oracle.tree.update(p)
    }
    if (inv.remote) {
      if (this.inWindow(this.now)) this.m.execMsgs++
      this.q.at(this.now + this.c.hopMs, Ev.Reply, inv, undefined)
    } else {
      this.complete(inv)
    }
    // The executor's onLoadChange wakes its own router's waiters.
    if (this.oracle != null) {
      this.drainOracle()
    } else {
      this.changed(p, p)
      this.wake(p)
    }
  }

  private onReply (inv: Invocation): void {
    if (inv.dispatch !== undefined) {
      this.views.finished(inv.router, inv.node, inv.dispatch, this.now)
      this.changed(inv.router, inv.node)
    }
    this.wake(inv.router)
    if (inv.dispatch !== undefined) this.views.answered(inv.router, inv.node, this.now - inv.sentAt)
    this.complete(inv)
  }

  /** router.ts: the dispatch ends (tracker, wake), then the peer counts as full, then pick again */
  private onBusy (inv: Invocation): void {
    const r = inv.router
    const p = inv.node
    if (inv.dispatch !== undefined) {
      this.views.finished(r, p, inv.dispatch, this.now)
      this.changed(r, p)
    }
    this.wake(r)
    this.views.markFull(r, p, this.now, inv.queueing)
    if (inv.dispatch !== undefined) this.views.busy(r, p)
    inv.dispatch = undefined
    inv.remote = false
    if (++inv.busy > 3 * Math.max(1, this.n)) { this.reject(inv); return }
    this.route(inv)
  }

  private onTimeout (inv: Invocation): void {
    if (!inv.waiting) return
    this.unqueue(inv)
    // The timer resolves the wait; the loop picks once more before giving up.
    const p = this.pick(inv.router)
    if (p >= 0) this.dispatch(inv, p)
    else this.reject(inv)
  }

  private unqueue (inv: Invocation): void {
    inv.waiting = false
    const own = this.waiters[inv.router]
    const i = own.indexOf(inv)
    if (i >= 0) own.splice(i, 1)
    if (this.oracle != null) {
      const j = this.oracle.queue.indexOf(inv)
      if (j >= 0) this.oracle.queue.splice(j, 1)
    }
    if (own.length === 0) this.stopListening(inv.router)
  }

  /**
   * Router.wake(): every waiter of router r picks again, in order. Once one finds nothing free,
   * the others would too (a failed pick changes nothing), so they keep their places unasked.
   */
  private wake (r: number): void {
    const list = this.waiters[r]
    if (list.length === 0 || this.oracle != null) return
    if (this.tracked && this.known[r] === -1) return
    this.waiters[r] = []
    for (let i = 0; i < list.length; i++) {
      const inv = list[i]
      inv.waiting = false
      this.route(inv)
      if (inv.waiting) {
        for (let j = i + 1; j < list.length; j++) this.waiters[r].push(list[j])
        break
      }
    }
    if (this.waiters[r].length === 0) this.stopListening(r)
  }

  private stopListening (r: number): void {
    this.listening.delete(r)
    this.known[r] = -2
  }

  /** The oracle hands a freed slot to the longest-waiting invocation at once */
  private drainOracle (): void {
    const o = this.oracle as NonNullable<Simulation['oracle']>
    while (o.queue.length > 0) {
      const p = o.tree.best()
      if (p < 0) return
      const inv = o.queue[0]
      this.unqueue(inv)
      this.dispatch(inv, p)
    }
  }

  /** r starts waiting: it must hear every advert reaching it from now on */
  private listen (r: number): void {
    this.listening.add(r)
    for (const { rec, at } of this.gossip.inFlightTo(r, this.now)) this.q.at(at, Ev.Wake, r, rec.node)
  }

  private loadChanged (p: number): void {
    const at = this.gossip.promptAt(p, this.now)
    if (at !== undefined) this.q.at(at, Ev.Prompt, p, undefined)
  }

  private publish (p: number): void {
    const rec: AdvertRecord = this.gossip.publish(p, this.now, this.inFlight[p] + this.execQueues[p].length, this.inWindow(this.now))
    this.q.at(this.now + this.gossip.delayMaxMs, Ev.Settle, p, undefined)
    for (const r of this.listening) {
      if (r !== p) this.q.at(this.gossip.arrival(rec, r), Ev.Wake, r, p)
    }
  }

  private complete (inv: Invocation): void {
    this.totals.completed++
    if (!inv.measured) return
    if (this.done === this.latency.length) {
      const grow = (a: Float64Array): Float64Array => { const b = new Float64Array(a.length * 2); b.set(a); return b }
      this.latency = grow(this.latency)
      this.queueDelay = grow(this.queueDelay)
    }
    this.latency[this.done] = this.now - inv.arrive
    this.queueDelay[this.done] = inv.start - inv.arrive
    if (this.order !== undefined) {
      if (this.done === this.order.length) {
        const b = new Int8Array(this.order.length * 2)
        b.set(this.order)
        this.order = b
      }
      this.order[this.done] = inv.node
    }
    this.done++
    this.perNode[inv.node]++
    if (inv.remote) this.m.remote++
  }

  private reject (inv: Invocation): void {
    inv.waiting = false
    this.totals.rejected++
    if (inv.measured) this.m.rejected++
  }

  /** Slot-time of node p inside the window, up to now */
  private account (p: number): void {
    const a = Math.max(this.lastChange[p], this.measureFrom)
    const b = Math.min(this.now, this.measureTo)
    if (b > a) this.area[p] += this.inFlight[p] * (b - a)
    this.lastChange[p] = this.now
  }

  private result (wallMs: number): RunResult {
    const n = this.n
    const c = this.c
    for (let p = 0; p < n; p++) {
      if (this.lastChange[p] < this.measureTo) {
        const a = Math.max(this.lastChange[p], this.measureFrom)
        if (this.measureTo > a) this.area[p] += this.inFlight[p] * (this.measureTo - a)
        this.lastChange[p] = this.measureTo
      }
    }
    const util = Array.from(this.area, (a, p) => a / (this.slots[p] * c.durationMs))
    const mean = util.reduce((a, b) => a + b, 0) / n
    const sd = Math.sqrt(util.reduce((a, b) => a + (b - mean) ** 2, 0) / n)
    const max = Math.max(...util)
    const seconds = c.durationMs / 1000
    const st = this.views.stats
    const tracked = c.policy === 'fnmesh' || c.policy === 'round-robin'
    return {
      nodes: n,
      totalSlots: c.slots.reduce((a, b) => a + b, 0),
      load: c.load,
      policy: c.policy,
      simulatedMs: c.warmupMs + c.durationMs,
      arrivals: this.m.arrivals,
      completed: this.done,
      rejected: this.m.rejected,
      rejectionRate: this.m.arrivals > 0 ? this.m.rejected / this.m.arrivals : 0,
      latencyMs: percentiles(this.latency.subarray(0, this.done)),
      queueDelayMs: percentiles(this.queueDelay.subarray(0, this.done)),
      utilisation: { mean, min: Math.min(...util), max, maxOverMean: max / mean, cv: sd / mean },
      busyPerInvocation: this.m.busy / Math.max(1, this.m.arrivals),
      waitedFraction: this.m.waited / Math.max(1, this.m.arrivals),
      remoteFraction: this.m.remote / Math.max(1, this.done),
      advertsPerNodePerSec: this.gossip.published / n / seconds,
      // Each message has a sender and a receiver: per node, both ends count.
      execMsgsPerNodePerSec: 2 * this.m.execMsgs / n / seconds,
      staleness: tracked && st.picks > 0
        ? { advertAgeMs: st.advertAgeMs / st.picks, estimateError: st.estimateError / st.picks, absEstimateError: st.absEstimateError / st.picks, ownCorrection: st.ownCorrection / st.picks, fullScanFraction: st.fullScans / Math.max(1, this.m.arrivals) }
        : null,
      waits: this.tracked && this.diagnosis.samples > 0 ? perSample(this.diagnosis) : null,
      perNode: n <= 12 ? Array.from(this.perNode) : null,
      windows: this.order !== undefined ? windows(this.order.subarray(0, this.done), n, WINDOW) : null,
      events: this.events,
      wallMs
    }
  }
}

function perSample (d: WaitDiagnosis): NonNullable<RunResult['waits']> {
  const k = d.samples
  return { samples: k, freeSlots: d.freeSlots / k, nodesWithRoom: d.nodesWithRoom / k, fullByAdvert: d.fullByAdvert / k, markedBusy: d.markedBusy / k, fullByOwnSends: d.fullByOwnSends / k }
}

/** Completions per window for `windows` */
export const WINDOW = 300

/**
 * How many of each run of `size` consecutive completions each node took: the 5th, 50th and 95th
 * percentile over the consecutive windows (what a short real run of `size` calls could show)
 */
function windows (order: Int8Array, n: number, size: number): RunResult['windows'] {
  const counts: number[][] = Array.from({ length: n }, () => [])
  for (let start = 0; start + size <= order.length; start += size) {
    const c = new Array<number>(n).fill(0)
    for (let i = start; i < start + size; i++) c[order[i]]++
    for (let p = 0; p < n; p++) counts[p].push(c[p])
  }
  const q = (xs: number[], f: number): number => {
    const s = [...xs].sort((a, b) => a - b)
    return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.max(0, Math.ceil(f * s.length) - 1))]
  }
  return { size, count: counts[0]?.length ?? 0, p5: counts.map(c => q(c, 0.05)), p50: counts.map(c => q(c, 0.5)), p95: counts.map(c => q(c, 0.95)) }
}

function percentiles (xs: Float64Array): Percentiles {
  const s = Float64Array.from(xs).sort()
  const n = s.length
  if (n === 0) return { p50: NaN, p99: NaN, p999: NaN, mean: NaN, max: NaN }
  const at = (q: number): number => s[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]
  let sum = 0
  for (let i = 0; i < n; i++) sum += s[i]
  return { p50: at(0.5), p99: at(0.99), p999: at(0.999), mean: sum / n, max: s[n - 1] }
}

/** Runs one configuration */
export function simulate (config: SimConfig): RunResult {
  return new Simulation(config).run()
}
