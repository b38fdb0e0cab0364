/**
 * What the parts tell the metrics: a small sink the agent hands them. Only metrics/prom.ts
 * knows prom-client; parts call these methods on their hot paths, so an implementation must keep
 * them cheap (pre-bound label children, no allocation per call beyond a key lookup).
 */

/** How an invocation ended, as the `outcome` label says (OTel FaaS: success or an error kind) */
export type InvocationOutcome = 'success' | 'error' | 'timeout' | 'crash' | 'out_of_memory'

export interface InvocationSample {
  function: string
  version: number
  /** sync, http, event, schedule... (the ExecRequest's trigger) */
  trigger: string
  outcome: InvocationOutcome
  /** the run's duration in the sandbox */
  durationMs: number
  /** the error code when it did not succeed */
  code?: string
  /** ms spent loading the function on a cold start; undefined when warm */
  initMs?: number
}

/** How a node settled an event it pulled */
export type EventResult = 'acked' | 'retried' | 'dead_lettered' | 'handed_back'

export interface MetricsSink {
  /** one invocation ran here (and was metered) */
  invocation: (s: InvocationSample) => void
  /** an invocation was refused here for want of a slot (FNMESH_ERR_BUSY) */
  throttle: (fn: string) => void
  /** an invocation got a slot after waiting `ms` in this node's queue (0 when it did not wait) */
  queueWait: (ms: number) => void
  /** a run of `fn` started (+1) or ended (-1) on this node */
  running: (fn: string, delta: 1 | -1) => void
  /** an event of `fn` was pulled: `backlog` still pending on its consumer, `ageMs` since it was stored */
  eventPulled: (fn: string, backlog: number, ageMs: number) => void
  /** how this node settled an event of `fn` */
  eventSettled: (fn: string, result: EventResult) => void
}

/** The sink when metrics are off: every call does nothing */
export const noMetrics: MetricsSink = {
  invocation: () => {},
  throttle: () => {},
  queueWait: () => {},
  running: () => {},
  eventPulled: () => {},
  eventSettled: () => {}
}
