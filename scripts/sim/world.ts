/**
 * What the simulator's parts share: the event kinds, one simulated invocation, and the world
 * they all act on (virtual clock and event queue, config, gossip, measurements).
 */
import type { Dispatch } from '../../node/src/router/load.js'
import type { DispatchState } from '../../node/src/router/dispatch.js'
import type { EventQueue } from './events.js'
import type { GossipModel } from './gossip.js'
import type { Metrics } from './metrics.js'
import type { ResolvedConfig } from './model.js'

export const enum Ev { Arrival, Exec, Finish, Reply, Busy, Tick, Prompt, Wake, Timeout, Settle, QueueTimeout, ProbeAt, ProbeBack }

/** One invocation; its DispatchState part (attempts, busy, failures, waitStarted) is router/dispatch.ts's */
export interface Invocation extends DispatchState {
  arrive: number
  router: number
  serviceMs: number
  measured: boolean
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
  /** how long it may wait there (dispatch.ts queueBudget) */
  queueMs: number
  /** the expected slot time it counts for in an executor's queue */
  runMs: number
  /** waiting in node `node`'s executor queue */
  inQueue: boolean
  /** design "probe": the nodes probed for the current pick, and what each answered */
  probes?: number[]
  probeLoads?: number[]
}

export interface World {
  readonly c: ResolvedConfig
  readonly n: number
  readonly q: EventQueue<Ev>
  readonly gossip: GossipModel
  readonly metrics: Metrics
}

/** Node p's load changed: it advertises promptly (at most once per advertMinGapMs) */
export function loadChanged (w: World, p: number): void {
  // design "probe": no load adverts (membership only), routers ask the executors
  if (w.c.design === 'probe') return
  const at = w.gossip.promptAt(p, w.q.now)
  if (at !== undefined) w.q.at(at, Ev.Prompt, p, undefined)
}
