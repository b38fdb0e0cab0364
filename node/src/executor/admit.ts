/**
 * The executor's admission rule, pure (no I/O, no timers): whether an invocation that reaches
 * this node runs now, waits in the executor's FIFO queue, or is refused, and with which code.
 * executor.ts applies it to real invocations; the simulator (scripts/sim/executor-model.ts) to
 * simulated ones, so both follow the same bounds.
 */

/** An executor keeps at most this many invocations waiting per slot */
export const QUEUE_PER_SLOT = 3

/** The longest a queued invocation waits, whatever queue_ms a router sent (its own wait is at most 60 s) */
export const MAX_QUEUE_MS = 60_000

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
  /** how long the invocation may wait in the queue (the request's queue_ms; 0: not at all) */
  queueMs: number
}

export type Admission =
  | { kind: 'run' }
  /** wait in the queue up to `ms` for the next slot that frees */
  | { kind: 'queue', ms: number }
  | { kind: 'refuse', code: 'FNMESH_ERR_BUSY' | 'FNMESH_ERR_DISK_FULL', reason: 'draining' | 'refusing' | 'full' }

/** What the executor does with one invocation that just arrived */
export function admit (s: AdmitState): Admission {
  if (!s.running) return { kind: 'refuse', code: 'FNMESH_ERR_BUSY', reason: 'draining' }
  if (s.refusing !== '') return { kind: 'refuse', code: 'FNMESH_ERR_DISK_FULL', reason: 'refusing' }
  if (s.inFlight < s.slots) return { kind: 'run' }
  if (s.queueMs <= 0 || s.queued >= QUEUE_PER_SLOT * s.slots) return { kind: 'refuse', code: 'FNMESH_ERR_BUSY', reason: 'full' }
  return { kind: 'queue', ms: Math.min(s.queueMs, MAX_QUEUE_MS) }
}
