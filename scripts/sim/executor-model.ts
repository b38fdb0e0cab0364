/**
 * The executors of every simulated node, by the agent's own admission rule
 * (node/src/executor/admit.ts) and wait estimate (node/src/wait.ts, from each node's observed run
 * times): a node with a free slot runs the invocation, a full one keeps a queued dispatch (at
 * most maxQueue) when its expected wait fits the dispatch's queue_ms, until a slot frees or
 * queue_ms runs out, else answers BUSY at once. A finishing invocation hands its slot to the
 * oldest queued one at once.
 */
import { admit } from '../../node/src/executor/admit.js'
import { RunTimes, expectedWaitMs } from '../../node/src/wait.js'
import { Ev, loadChanged, type Invocation, type World } from './world.js'

export class ExecutorModel {
  readonly slots: Int32Array
  readonly inFlight: Int32Array
  /** invocations waiting at each node for a slot, in arrival order */
  readonly queues: Invocation[][]
  /** per node: observed run times, and the expected run time of everything in its queue */
  private readonly runTimes: RunTimes[]
  private readonly aheadMs: Float64Array

  constructor (private readonly w: World, slots: readonly number[]) {
    this.slots = Int32Array.from(slots)
    this.inFlight = new Int32Array(slots.length)
    this.queues = Array.from({ length: slots.length }, () => [])
    this.runTimes = Array.from({ length: slots.length }, () => new RunTimes())
    this.aheadMs = new Float64Array(slots.length)
  }

  /** The expected run time node p has observed (the simulation runs one function) */
  runMs (p: number): number {
    return this.runTimes[p].estimate('fn')
  }

  /** Invocations running and queued at p: what its adverts say */
  load (p: number): number {
    return this.inFlight[p] + this.queues[p].length
  }

  /** An invocation reaches p's executor: true if it runs or waits there, false for BUSY */
  arrive (inv: Invocation, p: number): boolean {
    const now = this.w.q.now
    const queueMs = inv.queueing ? inv.queueMs : 0
    const waitMs = expectedWaitMs({ slots: this.slots[p], running: this.inFlight[p], aheadMs: this.aheadMs[p], runMs: this.runTimes[p].estimate() })
    const a = admit({ running: true, refusing: '', slots: this.slots[p], inFlight: this.inFlight[p], queued: this.queues[p].length, maxQueue: this.w.c.maxQueue, queueMs, waitMs })
    if (a.kind === 'run') { this.start(inv, p); return true }
    if (a.kind === 'refuse') return false
    this.queues[p].push(inv)
    inv.inQueue = true
    inv.runMs = this.runMs(p)
    this.aheadMs[p] += inv.runMs
    this.w.q.at(now + a.ms, Ev.QueueTimeout, inv, p)
    loadChanged(this.w, p)
    return true
  }

  private start (inv: Invocation, p: number): void {
    const now = this.w.q.now
    this.w.metrics.account(p, now, this.inFlight[p])
    this.inFlight[p]++
    inv.start = now
    loadChanged(this.w, p)
    this.w.q.at(now + inv.serviceMs, Ev.Finish, inv, p)
  }

  /** An invocation at p finished: its slot goes to the longest-waiting queued invocation at once */
  finish (p: number, inv: Invocation): void {
    this.runTimes[p].observe('fn', inv.serviceMs)
    this.w.metrics.account(p, this.w.q.now, this.inFlight[p])
    this.inFlight[p]--
    loadChanged(this.w, p)
    const next = this.queues[p].shift()
    if (next !== undefined) {
      this.aheadMs[p] -= next.runMs
      next.inQueue = false
      this.start(next, p)
    }
  }

  /** The wait of `inv` in p's queue ran out: true if it was still waiting (it leaves with BUSY) */
  queueTimeout (inv: Invocation, p: number): boolean {
    if (!inv.inQueue || inv.node !== p) return false
    const list = this.queues[p]
    list.splice(list.indexOf(inv), 1)
    this.aheadMs[p] -= inv.runMs
    inv.inQueue = false
    loadChanged(this.w, p)
    return true
  }
}
