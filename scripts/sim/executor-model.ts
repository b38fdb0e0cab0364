/**
 * The executors of every simulated node, by the agent's own admission rule
 * (node/src/executor/admit.ts): a node with a free slot runs the invocation, a full one keeps a
 * queued dispatch (at most QUEUE_PER_SLOT per slot) until a slot frees or the router's wait runs
 * out, else answers BUSY. A finishing invocation hands its slot to the oldest queued one at once.
 */
import { admit } from '../../node/src/executor/admit.js'
import { Ev, loadChanged, type Invocation, type World } from './world.js'

export class ExecutorModel {
  readonly slots: Int32Array
  readonly inFlight: Int32Array
  /** invocations waiting at each node for a slot, in arrival order */
  readonly queues: Invocation[][]

  constructor (private readonly w: World, slots: readonly number[]) {
    this.slots = Int32Array.from(slots)
    this.inFlight = new Int32Array(slots.length)
    this.queues = Array.from({ length: slots.length }, () => [])
  }

  /** Invocations running and queued at p: what its adverts say */
  load (p: number): number {
    return this.inFlight[p] + this.queues[p].length
  }

  /** An invocation reaches p's executor: true if it runs or waits there, false for BUSY */
  arrive (inv: Invocation, p: number): boolean {
    const now = this.w.q.now
    // The router's wait (router.ts queueMs) ends queueWaitMs after it first found no slot.
    const queueMs = inv.queueing ? (inv.waitStarted as number) + this.w.c.queueWaitMs - now : 0
    const a = admit({ running: true, refusing: '', slots: this.slots[p], inFlight: this.inFlight[p], queued: this.queues[p].length, queueMs })
    if (a.kind === 'run') { this.start(inv, p); return true }
    if (a.kind === 'refuse') return false
    this.queues[p].push(inv)
    inv.inQueue = true
    this.w.q.at((inv.waitStarted as number) + this.w.c.queueWaitMs, Ev.QueueTimeout, inv, p)
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
  finish (p: number): void {
    this.w.metrics.account(p, this.w.q.now, this.inFlight[p])
    this.inFlight[p]--
    loadChanged(this.w, p)
    const next = this.queues[p].shift()
    if (next !== undefined) {
      next.inQueue = false
      this.start(next, p)
    }
  }

  /** The wait of `inv` in p's queue ran out: true if it was still waiting (it leaves with BUSY) */
  queueTimeout (inv: Invocation, p: number): boolean {
    if (!inv.inQueue || inv.node !== p) return false
    const list = this.queues[p]
    list.splice(list.indexOf(inv), 1)
    inv.inQueue = false
    loadChanged(this.w, p)
    return true
  }
}
