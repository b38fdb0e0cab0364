/**
 * The router's dispatch rules, pure (no I/O, no timers): given where one invocation stands and
 * what just happened, the next step: send to the picked peer, send it to wait in an executor's
 * queue, wait at the router, pick again, or refuse with which code. router.ts drives it with
 * NATS and real time; the simulator (scripts/sim/router-model.ts) with virtual time, so the
 * bounds below exist once:
 *
 * - the queue budget (least-loaded): an invocation that finds no free slot may wait in an
 *   executor's queue as long as the caller's deadline allows, less its expected run time and a
 *   margin for the estimate's error (queueBudget); it goes where the expected wait (../wait.ts)
 *   fits that budget (choose.ts chooseQueue), and is refused with FNMESH_ERR_NO_CAPACITY at once
 *   when no peer's does, never after waiting at the router;
 * - the wait deadline (baseline policies): an invocation that finds no free slot may wait at the
 *   router `queueWaitMs` from the first time it found none (never past the caller's deadline);
 * - the busy bound: a peer answering BUSY (or DISK_FULL) is marked full and another picked, at
 *   most 3 x (mesh size) times;
 * - the failure bound: a peer that failed (no answer, garbage, a node-level error) is replaced
 *   once; a second failure, or none left to try, is FNMESH_ERR_PEER_UNAVAILABLE;
 * - the router's own queue (baseline policies): at most `maxQueued` waiters.
 */

/** Answers with which a peer says "full, try elsewhere" (the function did not run) */
export const BUSY_CODES: ReadonlySet<string> = new Set(['FNMESH_ERR_BUSY', 'FNMESH_ERR_DISK_FULL'])

/**
 * Answers with which a peer says "not me, try elsewhere" without the function having run (a
 * peer whose labels do not satisfy the function's constraints: this router's view was stale).
 * A bad bundle (a path escaping it, two files at one path, a digest that does not match what the
 * registry holds) is bad on every node: FNMESH_ERR_BUNDLE_INVALID goes back, not a retry.
 */
export const RETRYABLE_CODES: ReadonlySet<string> = new Set(['FNMESH_ERR_NATS_UNAVAILABLE', 'FNMESH_ERR_INTERNAL', 'FNMESH_ERR_METER_UNAVAILABLE', 'FNMESH_ERR_DECODE', 'FNMESH_ERR_NO_MATCHING_NODE'])

/** How many failed peers end the invocation */
export const MAX_FAILURES = 2

/** Share of the time left that the queue budget keeps back for the error of the wait estimate */
export const BUDGET_SLACK = 0.25
/** ...and at least this many ms (the answer's trip back, timers) */
export const BUDGET_MARGIN_MS = 20

export interface DispatchRules {
  /** baseline policies: how long an invocation may wait at the router for a slot, from the first time it found none */
  queueWaitMs: number
  /** max invocations waiting at the router (baseline policies) */
  maxQueued: number
  /** true (least-loaded): with no free slot in view, wait in an executor's queue */
  queueAtExecutor: boolean
}

/** Where one invocation stands; one per invocation, changed only by the functions below */
export interface DispatchState {
  /** dispatches sent */
  attempts: number
  /** BUSY answers */
  busy: number
  /** peers that failed */
  failures: number
  /** when it first found no free slot (undefined: never) */
  waitStarted: number | undefined
}

export function dispatchState (): DispatchState {
  return { attempts: 0, busy: 0, failures: 0, waitStarted: undefined }
}

export type RefusalReason = 'deadline' | 'no-slot-in-time' | 'no-slot' | 'all-full' | 'failed-twice' | 'none-left'

export interface Refusal {
  kind: 'refuse'
  code: 'FNMESH_ERR_CLIENT_TIMEOUT' | 'FNMESH_ERR_NO_CAPACITY' | 'FNMESH_ERR_PEER_UNAVAILABLE'
  reason: RefusalReason
}

const refuse = (code: Refusal['code'], reason: RefusalReason): Refusal => ({ kind: 'refuse', code, reason })

/** Before each pick: the caller's deadline */
export function beforePick (s: DispatchState, now: number, deadline: number): Refusal | undefined {
  return now >= deadline ? refuse('FNMESH_ERR_CLIENT_TIMEOUT', 'deadline') : undefined
}

/** A peer with a free slot was picked: send it (queueMs 0), or to the one picked to queue at */
export function sent (s: DispatchState): void {
  s.attempts++
}

/**
 * No free slot in the view. With executor queues: how long the invocation may wait in one for a
 * slot (> 0: pick where with chooseQueue and send it there with this queue_ms): the time to the
 * caller's deadline, less the function's expected slot time `runMs` (it must still run and
 * answer) and a margin for the estimate's error (BUDGET_SLACK of the time left, at least
 * BUDGET_MARGIN_MS). 0 otherwise.
 */
export function queueBudget (s: DispatchState, rules: DispatchRules, now: number, deadline: number, runMs: number): number {
  if (!rules.queueAtExecutor) return 0
  s.waitStarted ??= now
  const left = deadline - now
  return Math.max(0, Math.floor(left - runMs - Math.max(BUDGET_MARGIN_MS, left * BUDGET_SLACK)))
}

export interface NowhereToSend {
  now: number
  deadline: number
  /** what queueBudget gave (executor queues only) */
  queueMs: number
  /** invocations already waiting at this router */
  waiting: number
  /** every routable peer failed this invocation already */
  allFailed: boolean
}

/**
 * Nowhere to send it (no free slot, no queue whose expected wait fits): with executor queues,
 * refuse at once; baselines wait at the router for `ms`, or refuse.
 */
export function nowhereToSend (s: DispatchState, rules: DispatchRules, x: NowhereToSend): { kind: 'wait', ms: number } | Refusal {
  // After a failure with no other peer left to try, waiting would not help.
  if (s.failures > 0 && x.allFailed) return refuse('FNMESH_ERR_PEER_UNAVAILABLE', 'none-left')
  // Every queue's expected wait is over what the deadline leaves: waiting would only make the refusal late.
  if (rules.queueAtExecutor) return refuse('FNMESH_ERR_NO_CAPACITY', 'no-slot-in-time')
  s.waitStarted ??= x.now
  const ms = Math.min(s.waitStarted + rules.queueWaitMs, x.deadline) - x.now
  if (ms <= 0 || x.waiting >= rules.maxQueued) return refuse('FNMESH_ERR_NO_CAPACITY', 'no-slot')
  return { kind: 'wait', ms }
}

/** What a peer's answer means: `failed` = no readable answer at all */
export type Answer = { kind: 'failed' } | { kind: 'result', code: string }

export type AfterAnswer =
  /** the result goes back to the caller as it is */
  | { kind: 'final', refuse?: undefined }
  /** the peer was full: count it full (its queue too, when it was sent to queue), pick again unless `refuse` */
  | { kind: 'busy', refuse?: Refusal }
  /** the peer failed: leave it out, pick another unless `refuse` */
  | { kind: 'failed', refuse?: Refusal }

/** A peer answered (or failed to); `meshSize` = entries in the peer table */
export function onAnswer (s: DispatchState, answer: Answer, meshSize: number): AfterAnswer {
  if (answer.kind === 'result' && BUSY_CODES.has(answer.code)) {
    if (++s.busy > 3 * Math.max(1, meshSize)) return { kind: 'busy', refuse: refuse('FNMESH_ERR_NO_CAPACITY', 'all-full') }
    return { kind: 'busy' }
  }
  if (answer.kind === 'failed' || RETRYABLE_CODES.has(answer.code)) {
    if (++s.failures >= MAX_FAILURES) return { kind: 'failed', refuse: refuse('FNMESH_ERR_PEER_UNAVAILABLE', 'failed-twice') }
    return { kind: 'failed' }
  }
  return { kind: 'final' }
}
