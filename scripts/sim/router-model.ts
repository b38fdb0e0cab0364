/**
 * The routers of every simulated node: the policy's pick (RouterViews drives the agent's own
 * choose.ts and load.ts), and the dispatch rules of the agent's router/dispatch.ts: nothing free
 * -> fnmesh sends the invocation to wait in an executor's queue whose expected wait fits the
 * caller's deadline (queueBudget, chooseQueue; none fits: NO_CAPACITY at once), the baselines
 * wait at the router (queueWaitMs, maxQueued); BUSY -> marked full, picked again, within the busy
 * bound; then NO_CAPACITY. Each router's own node is reached by a direct call, others by a
 * message that takes hopMs.
 */
import { nowhereToSend, onAnswer, queueBudget, sent, type DispatchRules } from '../../node/src/router/dispatch.js'
import { bestFree, bestQueue, probeSet, SlotSampler, type ProbeCandidate } from './probe.js'
import { prng, deriveSeed } from './rng.js'
import type { ExecutorModel } from './executor-model.js'
import type { OracleModel } from './oracle.js'
import type { RouterViews } from './views.js'
import { Ev, type Invocation, type World } from './world.js'

const BUSY = { kind: 'result', code: 'FNMESH_ERR_BUSY' } as const

export class RouterModel {
  private readonly rules: DispatchRules
  /** the policies whose routers keep a view of every node (LoadTracker, adverts) */
  readonly tracked: boolean
  private readonly waiters: Invocation[][]
  /** routers with waiters: they are woken by every advert that reaches them */
  readonly listening = new Set<number>()
  /**
   * Per listening router, what its last failed pick proved: -1 = every node full in its view;
   * p = every node but p full, and only p's entry changed since; -2 = unknown (pick in full)
   */
  private readonly known: Int32Array

  /** design "probe" (probe.ts): each router's memory (the node it last chose, -1 none), the slot sampler, its rng */
  private readonly probing: boolean
  private readonly memory: Int32Array
  private readonly sampler: SlotSampler | undefined
  private readonly probeRng: () => number

  constructor (private readonly w: World, private readonly views: RouterViews, private readonly exec: ExecutorModel, private readonly oracle: OracleModel<Invocation> | undefined, private readonly diagnose: () => number) {
    const c = w.c
    this.rules = { queueWaitMs: c.queueWaitMs, maxQueued: c.maxQueued, queueAtExecutor: c.policy === 'fnmesh' }
    this.probing = c.policy === 'fnmesh' && c.design === 'probe'
    this.tracked = (c.policy === 'fnmesh' || c.policy === 'round-robin') && !this.probing
    this.memory = new Int32Array(this.probing ? w.n : 0).fill(-1)
    this.sampler = this.probing ? new SlotSampler(exec.slots) : undefined
    this.probeRng = prng(deriveSeed(c.seed, 'probes', w.n, c.load))
    this.waiters = Array.from({ length: w.n }, () => [])
    this.known = new Int32Array(w.n).fill(-2)
  }

  private get now (): number {
    return this.w.q.now
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
    const p = this.views.pickOnly(r, k, this.now, this.w.c.policy === 'round-robin')
    if (p < 0) this.known[r] = -1
    return p
  }

  /** Node p's entry in router r's view changed (it may have a free slot now) */
  changed (r: number, p: number): void {
    const k = this.known[r]
    if (k === -1) this.known[r] = p
    else if (k >= 0 && k !== p) this.known[r] = -2
  }

  private pickFully (r: number): number {
    const now = this.now
    switch (this.w.c.policy) {
      case 'fnmesh': return this.views.pickFnmesh(r, now)
      case 'round-robin': return this.views.pickRoundRobin(r, now)
      case 'random': return this.exec.inFlight[r] < this.exec.slots[r] ? r : -1
      case 'oracle': return (this.oracle as OracleModel<Invocation>).best()
    }
  }

  /** router.ts dispatchWithRetry, by dispatch.ts: pick; nothing free -> queue at an executor or wait (bounded) */
  route (inv: Invocation): void {
    if (this.probing) { this.probe(inv); return }
    const p = this.pick(inv.router)
    if (p >= 0) { inv.queueing = false; this.send(inv, p); return }
    const now = this.now
    const m = this.w.metrics
    const firstWait = inv.waitStarted === undefined
    const deadline = inv.arrive + this.w.c.deadlineMs
    const runMs = this.exec.runMs(inv.router)
    const queueMs = queueBudget(inv, this.rules, now, deadline, runMs)
    if (this.rules.queueAtExecutor) {
      if (firstWait && inv.measured) m.m.waited++
      const q = queueMs > 0 ? this.views.pickFnmeshQueue(inv.router, now, queueMs, runMs) : -1
      if (q >= 0) { inv.queueing = true; inv.queueMs = queueMs; this.send(inv, q); return }
    } else if (firstWait && inv.measured) {
      m.m.waited++
      // Looking costs O(N): at most ~100 nodes' worth per wait on average.
      if (this.tracked && this.diagnose() < 100 / this.w.n) this.views.diagnoseWait(inv.router, now, m.diagnosis)
    }
    const own = this.waiters[inv.router]
    const next = nowhereToSend(inv, this.rules, { now, deadline, queueMs, waiting: own.length, allFailed: false })
    if (next.kind === 'refuse') { m.reject(inv); return }
    inv.waiting = true
    own.push(inv)
    this.oracle?.queue.push(inv)
    if (!inv.timeoutSet) {
      inv.timeoutSet = true
      this.w.q.at((inv.waitStarted as number) + this.w.c.queueWaitMs, Ev.Timeout, inv, undefined)
    }
    if (this.tracked && !this.listening.has(inv.router)) this.listen(inv.router)
  }

  /** design "probe": its own node if it has a free slot, else ask d executors (a hop each way) */
  private probe (inv: Invocation): void {
    const r = inv.router
    if (this.exec.inFlight[r] < this.exec.slots[r] && this.exec.queues[r].length === 0) { inv.queueing = false; this.send(inv, r); return }
    const set = probeSet(r, this.w.n, this.w.c.probes, this.memory[r], this.sampler as SlotSampler, this.probeRng)
    if (set.length === 0) { this.probeBack(inv, [], []); return }
    inv.probes = set
    const m = this.w.metrics
    if (inv.measured) m.m.probes += set.length
    if (m.inWindow(this.now)) m.m.probeMsgs += set.length
    this.w.q.at(this.now + this.w.c.hopMs, Ev.ProbeAt, inv, undefined)
  }

  /** The probes reach their executors: each answers what it runs and queues now */
  onProbeAt (inv: Invocation): void {
    const set = inv.probes as number[]
    inv.probeLoads = set.map(p => this.exec.load(p))
    if (this.w.metrics.inWindow(this.now)) this.w.metrics.m.probeMsgs += set.length
    this.w.q.at(this.now + this.w.c.hopMs, Ev.ProbeBack, inv, undefined)
  }

  onProbeBack (inv: Invocation): void {
    this.probeBack(inv, inv.probes as number[], inv.probeLoads as number[])
  }

  /** The answers are in: the best free node (its own included, at its exact load), else the best queue, else NO_CAPACITY */
  private probeBack (inv: Invocation, set: number[], loads: number[]): void {
    const r = inv.router
    const own: ProbeCandidate = { id: String(r), idx: r, slots: this.exec.slots[r], load: this.exec.load(r), warm: true, self: true }
    const cands: ProbeCandidate[] = [own, ...set.map((p, i) => ({ id: String(p), idx: p, slots: this.exec.slots[p], load: loads[i], warm: true }))]
    const free = bestFree(cands)
    if (free !== undefined) {
      if (free.idx !== r) this.memory[r] = free.idx
      inv.queueing = false
      this.send(inv, free.idx)
      return
    }
    const now = this.now
    const deadline = inv.arrive + this.w.c.deadlineMs
    const runMs = this.exec.runMs(r)
    const queueMs = queueBudget(inv, this.rules, now, deadline, runMs)
    if (inv.waitStarted === undefined && inv.measured) this.w.metrics.m.waited++
    const q = queueMs > 0 ? bestQueue(cands, queueMs, runMs) : undefined
    if (q === undefined) { this.w.metrics.reject(inv); return }
    if (q.idx !== r) this.memory[r] = q.idx
    inv.queueing = true
    inv.queueMs = queueMs
    this.send(inv, q.idx)
  }

  private send (inv: Invocation, p: number): void {
    const r = inv.router
    sent(inv)
    inv.node = p
    this.oracle?.add(p, 1)
    if (p === r) { this.local(inv, p); return }
    inv.remote = true
    inv.sentAt = this.now
    if (this.tracked) inv.dispatch = this.views.sent(r, p, this.now)
    if (this.w.metrics.inWindow(this.now)) this.w.metrics.m.execMsgs++
    this.w.q.at(this.now + this.w.c.hopMs, Ev.Exec, inv, p)
  }

  /** The router's own executor, called directly: runs it, queues it, or BUSY at once (nothing marked for its own node) */
  private local (inv: Invocation, p: number): void {
    if (this.exec.arrive(inv, p)) return
    if (onAnswer(inv, BUSY, this.w.n).refuse != null) { this.w.metrics.reject(inv); return }
    this.route(inv)
  }

  /** The result came back from a peer */
  onReply (inv: Invocation): void {
    if (inv.dispatch !== undefined) {
      this.views.finished(inv.router, inv.node, inv.dispatch, this.now)
      this.changed(inv.router, inv.node)
    }
    this.wake(inv.router)
    if (inv.dispatch !== undefined) this.views.answered(inv.router, inv.node, this.now - inv.sentAt)
    this.w.metrics.complete(inv, this.now)
  }

  /** router.ts: the dispatch ends (tracker, wake), then the peer counts as full, then pick again */
  onBusy (inv: Invocation): void {
    const r = inv.router
    const p = inv.node
    if (inv.dispatch !== undefined) {
      this.views.finished(r, p, inv.dispatch, this.now)
      this.changed(r, p)
    }
    this.wake(r)
    if (this.tracked) this.views.markFull(r, p, this.now, inv.queueing ? inv.queueMs : 0)
    if (inv.dispatch !== undefined) this.views.busy(r, p)
    inv.dispatch = undefined
    inv.remote = false
    if (onAnswer(inv, BUSY, this.w.n).refuse != null) { this.w.metrics.reject(inv); return }
    this.route(inv)
  }

  /** The wait at the router ran out: the timer resolves it; the loop picks once more before giving up */
  onTimeout (inv: Invocation): void {
    if (!inv.waiting) return
    this.unqueue(inv)
    const p = this.pick(inv.router)
    if (p >= 0) { inv.queueing = false; this.send(inv, p) } else this.w.metrics.reject(inv)
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
  wake (r: number): void {
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
  drainOracle (): void {
    const o = this.oracle as OracleModel<Invocation>
    while (o.queue.length > 0) {
      const p = o.best()
      if (p < 0) return
      const inv = o.queue[0]
      this.unqueue(inv)
      this.send(inv, p)
    }
  }

  /** r starts waiting: it must hear every advert reaching it from now on */
  private listen (r: number): void {
    this.listening.add(r)
    for (const { rec, at } of this.w.gossip.inFlightTo(r, this.now)) if (this.views.inView(r, rec.node)) this.w.q.at(at, Ev.Wake, r, rec.node)
  }
}
