/**
 * The executor's admission rule, pure (no I/O, no timers): whether an invocation that reaches
 * this node runs now, waits in the executor's FIFO queue, or is refused, and with which code.
 * executor.ts applies it to real invocations; the simulator (scripts/sim/executor-model.ts) to
 * simulated ones, so both follow the same bounds:
 *
 * - a free slot: run;
 * - no free slot: wait in the FIFO queue when the router allowed it (queue_ms > 0), the queue
 *   holds fewer than `maxQueue` (--max-queue) and the expected wait (../wait.ts) fits in
 *   queue_ms, which the router derived from the caller's deadline; otherwise BUSY at once, so
 *   the router tries elsewhere or refuses the caller at once, rather than after a wait.
 */

/** Invocations an executor keeps waiting at most, unless --max-queue says otherwise */
export const DEFAULT_MAX_QUEUE = 10_000

/** The longest a queued invocation waits, whatever queue_ms a router sent (a function runs 15 min at most) */
export const MAX_QUEUE_MS = 15 * 60_000

export interface AdmitState {
  /** false once the executor drains or stopped */
  running: boolean
  /** why the node takes no new work (its disk is too full to meter), or '' */
  refusing: string
  slots: number
  /** invocations holding a slot */
  inFlight: number
  /** invocations waiting in the queue */
  queued: number
  /** most invocations the queue holds (--max-queue) */
  maxQueue: number
  /** how long the invocation may wait in the queue (the request's queue_ms; 0: not at all) */
  queueMs: number
  /** the expected wait for a slot here (wait.ts expectedWaitMs) */
  waitMs: number
}

export type RefuseReason = 'draining' | 'refusing' | 'full' | 'queue-full' | 'too-long'

export type Admission =
  | { kind: 'run' }
  /** wait in the queue up to `ms` for the next slot that frees */
  | { kind: 'queue', ms: number }
  | { kind: 'refuse', code: 'FNMESH_ERR_BUSY' | 'FNMESH_ERR_DISK_FULL', reason: RefuseReason }

const busy = (reason: RefuseReason): Admission => ({ kind: 'refuse', code: 'FNMESH_ERR_BUSY', reason })

/** What the executor does with one invocation that just arrived */
export function admit (s: AdmitState): Admission {
  if (!s.running) return busy('draining')
  if (s.refusing !== '') return { kind: 'refuse', code: 'FNMESH_ERR_DISK_FULL', reason: 'refusing' }
  if (s.inFlight < s.slots) return { kind: 'run' }
  if (s.queueMs <= 0) return busy('full')
  if (s.queued >= s.maxQueue) return busy('queue-full')
  if (s.waitMs > s.queueMs) return busy('too-long')
  return { kind: 'queue', ms: Math.min(s.queueMs, MAX_QUEUE_MS) }
}
