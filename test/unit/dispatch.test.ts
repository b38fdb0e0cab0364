/**
 * The pure dispatch rules (router/dispatch.ts) and the executor's admission rule
 * (executor/admit.ts), branch by branch: the real router and the simulator both follow them.
 */
import { describe, expect, it } from 'vitest'
import { MAX_QUEUE_MS, QUEUE_PER_SLOT, admit, type AdmitState } from '../../node/src/executor/admit.js'
import { BUSY_CODES, RETRYABLE_CODES, beforePick, dispatchState, nowhereToSend, onAnswer, queueBudget, sent, type DispatchRules } from '../../node/src/router/dispatch.js'

const fnmesh: DispatchRules = { queueWaitMs: 500, maxQueued: 10, queueAtExecutor: true }
const baseline: DispatchRules = { queueWaitMs: 500, maxQueued: 10, queueAtExecutor: false }
const at = (now: number, over: Partial<Parameters<typeof nowhereToSend>[2]> = {}): Parameters<typeof nowhereToSend>[2] => ({ now, deadline: 10_000, queueMs: 0, waiting: 0, allFailed: false, ...over })

describe('dispatch rules (router/dispatch.ts)', () => {
  it('refuses with CLIENT_TIMEOUT once the caller\'s deadline passed, not before', () => {
    const s = dispatchState()
    expect(beforePick(s, 99, 100)).toBeUndefined()
    expect(beforePick(s, 100, 100)).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_CLIENT_TIMEOUT', reason: 'deadline' })
  })

  it('counts attempts', () => {
    const s = dispatchState()
    sent(s); sent(s)
    expect(s.attempts).toBe(2)
  })

  it('gives a queue budget from the first time no slot was found, bounded by the caller\'s deadline', () => {
    const s = dispatchState()
    expect(queueBudget(s, fnmesh, 1000, 10_000)).toBe(500)
    expect(s.waitStarted).toBe(1000)
    expect(queueBudget(s, fnmesh, 1200, 10_000)).toBe(300)
    expect(queueBudget(s, fnmesh, 1600, 10_000)).toBe(-100)
    expect(queueBudget(dispatchState(), fnmesh, 1000, 1100)).toBe(100)
  })

  it('gives baseline policies no queue budget and leaves their wait unstarted', () => {
    const s = dispatchState()
    expect(queueBudget(s, baseline, 1000, 10_000)).toBe(0)
    expect(s.waitStarted).toBeUndefined()
  })

  it('refuses with NO_CAPACITY (within ms) when the executor-queue budget is spent', () => {
    const s = dispatchState()
    expect(nowhereToSend(s, fnmesh, at(2000, { queueMs: 0 }))).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_NO_CAPACITY', reason: 'no-slot-in-time' })
  })

  it('waits at the router when every executor queue is believed full but the budget is not spent', () => {
    const s = dispatchState()
    const budget = queueBudget(s, fnmesh, 1000, 10_000)
    expect(nowhereToSend(s, fnmesh, at(1000, { queueMs: budget }))).toEqual({ kind: 'wait', ms: 500 })
  })

  it('refuses with PEER_UNAVAILABLE when a peer failed and every routable one failed already', () => {
    const s = dispatchState()
    onAnswer(s, { kind: 'failed' }, 1)
    expect(nowhereToSend(s, baseline, at(0, { allFailed: true }))).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_PEER_UNAVAILABLE', reason: 'none-left' })
    // no failure yet: an empty view is waited on, not refused
    expect(nowhereToSend(dispatchState(), baseline, at(0, { allFailed: true })).kind).toBe('wait')
  })

  it('waits at the router up to queueWaitMs from the first wait, never past the deadline, then refuses', () => {
    const s = dispatchState()
    expect(nowhereToSend(s, baseline, at(1000))).toEqual({ kind: 'wait', ms: 500 })
    expect(s.waitStarted).toBe(1000)
    expect(nowhereToSend(s, baseline, at(1400))).toEqual({ kind: 'wait', ms: 100 })
    expect(nowhereToSend(s, baseline, at(1500))).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_NO_CAPACITY', reason: 'no-slot' })
    expect(nowhereToSend(dispatchState(), baseline, at(1000, { deadline: 1200 }))).toEqual({ kind: 'wait', ms: 200 })
  })

  it('refuses with NO_CAPACITY when maxQueued invocations already wait at the router', () => {
    expect(nowhereToSend(dispatchState(), baseline, at(0, { waiting: 10 }))).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_NO_CAPACITY', reason: 'no-slot' })
    expect(nowhereToSend(dispatchState(), baseline, at(0, { waiting: 9 })).kind).toBe('wait')
  })

  it('passes a result back as it is: success, function errors, a bad bundle', () => {
    for (const code of ['', 'FNMESH_ERR_FUNCTION', 'FNMESH_ERR_TIMEOUT', 'FNMESH_ERR_BUNDLE_INVALID', 'FNMESH_ERR_NOT_FOUND']) {
      expect(onAnswer(dispatchState(), { kind: 'result', code }, 3)).toEqual({ kind: 'final' })
    }
  })

  it('picks again after BUSY or DISK_FULL, at most 3 x mesh size times, then NO_CAPACITY', () => {
    expect([...BUSY_CODES].sort()).toEqual(['FNMESH_ERR_BUSY', 'FNMESH_ERR_DISK_FULL'])
    const s = dispatchState()
    for (let i = 0; i < 6; i++) expect(onAnswer(s, { kind: 'result', code: i % 2 === 0 ? 'FNMESH_ERR_BUSY' : 'FNMESH_ERR_DISK_FULL' }, 2)).toEqual({ kind: 'busy' })
    expect(onAnswer(s, { kind: 'result', code: 'FNMESH_ERR_BUSY' }, 2)).toEqual({ kind: 'busy', refuse: { kind: 'refuse', code: 'FNMESH_ERR_NO_CAPACITY', reason: 'all-full' } })
    // an empty table still allows 3
    const lone = dispatchState()
    for (let i = 0; i < 3; i++) expect(onAnswer(lone, { kind: 'result', code: 'FNMESH_ERR_BUSY' }, 0).refuse).toBeUndefined()
    expect(onAnswer(lone, { kind: 'result', code: 'FNMESH_ERR_BUSY' }, 0).refuse?.code).toBe('FNMESH_ERR_NO_CAPACITY')
  })

  it('replaces a failed peer once: the second failure is PEER_UNAVAILABLE, BUSY answers do not count', () => {
    expect([...RETRYABLE_CODES].sort()).toEqual(['FNMESH_ERR_DECODE', 'FNMESH_ERR_INTERNAL', 'FNMESH_ERR_METER_UNAVAILABLE', 'FNMESH_ERR_NATS_UNAVAILABLE'])
    for (const first of [{ kind: 'failed' } as const, { kind: 'result', code: 'FNMESH_ERR_INTERNAL' } as const]) {
      const s = dispatchState()
      expect(onAnswer(s, first, 5)).toEqual({ kind: 'failed' })
      expect(onAnswer(s, { kind: 'result', code: 'FNMESH_ERR_BUSY' }, 5)).toEqual({ kind: 'busy' })
      expect(onAnswer(s, { kind: 'result', code: 'FNMESH_ERR_METER_UNAVAILABLE' }, 5)).toEqual({ kind: 'failed', refuse: { kind: 'refuse', code: 'FNMESH_ERR_PEER_UNAVAILABLE', reason: 'failed-twice' } })
    }
  })
})

describe('admission (executor/admit.ts)', () => {
  const free: AdmitState = { running: true, refusing: '', slots: 2, inFlight: 1, queued: 0, queueMs: 0 }

  it('runs with a free slot', () => {
    expect(admit(free)).toEqual({ kind: 'run' })
  })

  it('refuses with BUSY while draining, whatever else', () => {
    expect(admit({ ...free, running: false, refusing: 'disk' })).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_BUSY', reason: 'draining' })
  })

  it('refuses with DISK_FULL when the meter takes no new work', () => {
    expect(admit({ ...free, refusing: 'disk full' })).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_DISK_FULL', reason: 'refusing' })
  })

  it('refuses with BUSY at the slot limit when the request may not queue', () => {
    expect(admit({ ...free, inFlight: 2 })).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_BUSY', reason: 'full' })
  })

  it('queues up to QUEUE_PER_SLOT per slot, for at most MAX_QUEUE_MS', () => {
    expect(admit({ ...free, inFlight: 2, queueMs: 300 })).toEqual({ kind: 'queue', ms: 300 })
    expect(admit({ ...free, inFlight: 2, queued: 2 * QUEUE_PER_SLOT - 1, queueMs: 300 }).kind).toBe('queue')
    expect(admit({ ...free, inFlight: 2, queued: 2 * QUEUE_PER_SLOT, queueMs: 300 })).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_BUSY', reason: 'full' })
    expect(admit({ ...free, inFlight: 2, queueMs: 10 * MAX_QUEUE_MS })).toEqual({ kind: 'queue', ms: MAX_QUEUE_MS })
  })
})
