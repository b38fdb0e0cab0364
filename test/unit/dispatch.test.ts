/**
 * The pure dispatch rules (router/dispatch.ts) and the executor's admission rule
 * (executor/admit.ts), branch by branch: the real router and the simulator both follow them.
 */
import { describe, expect, it } from 'vitest'
import { DEFAULT_MAX_QUEUE, MAX_QUEUE_MS, admit, type AdmitState } from '../../node/src/executor/admit.js'
import { BUSY_CODES, RETRYABLE_CODES, beforePick, dispatchState, nowhereToSend, onAnswer, queueBudget, sent, type DispatchRules } from '../../node/src/router/dispatch.js'
import { DrainRate, RunTimes, expectedWaitAt, expectedWaitMs } from '../../node/src/wait.js'

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

  it('gives a queue budget of the time to the caller\'s deadline, less the run time and a margin, not queueWaitMs', () => {
    const s = dispatchState()
    // 9000 ms left: less 100 ms of run, less 25% (2250 ms) for the estimate's error
    expect(queueBudget(s, fnmesh, 1000, 10_000, 100)).toBe(6650)
    expect(s.waitStarted).toBe(1000)
    // 100 ms left: less 5 ms of run and 25 ms (25%; at least BUDGET_MARGIN_MS, 20 ms)
    expect(queueBudget(dispatchState(), fnmesh, 1000, 1100, 5)).toBe(70)
    // never below 0: no time left for a wait
    expect(queueBudget(dispatchState(), fnmesh, 1000, 1020, 5)).toBe(0)
    expect(queueBudget(dispatchState(), fnmesh, 1000, 1100, 500)).toBe(0)
  })

  it('gives baseline policies no queue budget and leaves their wait unstarted', () => {
    const s = dispatchState()
    expect(queueBudget(s, baseline, 1000, 10_000, 5)).toBe(0)
    expect(s.waitStarted).toBeUndefined()
  })

  it('refuses with NO_CAPACITY at once, never waiting at the router, when no executor queue fits (or no budget is left)', () => {
    expect(nowhereToSend(dispatchState(), fnmesh, at(2000, { queueMs: 0 }))).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_NO_CAPACITY', reason: 'no-slot-in-time' })
    expect(nowhereToSend(dispatchState(), fnmesh, at(1000, { queueMs: 8000 }))).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_NO_CAPACITY', reason: 'no-slot-in-time' })
  })

  it('refuses with PEER_UNAVAILABLE rather than NO_CAPACITY when every peer failed already, with executor queues too', () => {
    const s = dispatchState()
    onAnswer(s, { kind: 'failed' }, 1)
    expect(nowhereToSend(s, fnmesh, at(0, { queueMs: 8000, allFailed: true }))).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_PEER_UNAVAILABLE', reason: 'none-left' })
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
    expect([...RETRYABLE_CODES].sort()).toEqual(['FNMESH_ERR_DECODE', 'FNMESH_ERR_INTERNAL', 'FNMESH_ERR_METER_UNAVAILABLE', 'FNMESH_ERR_NATS_UNAVAILABLE', 'FNMESH_ERR_NO_MATCHING_NODE'])
    for (const first of [{ kind: 'failed' } as const, { kind: 'result', code: 'FNMESH_ERR_INTERNAL' } as const]) {
      const s = dispatchState()
      expect(onAnswer(s, first, 5)).toEqual({ kind: 'failed' })
      expect(onAnswer(s, { kind: 'result', code: 'FNMESH_ERR_BUSY' }, 5)).toEqual({ kind: 'busy' })
      expect(onAnswer(s, { kind: 'result', code: 'FNMESH_ERR_METER_UNAVAILABLE' }, 5)).toEqual({ kind: 'failed', refuse: { kind: 'refuse', code: 'FNMESH_ERR_PEER_UNAVAILABLE', reason: 'failed-twice' } })
    }
  })
})

describe('admission (executor/admit.ts)', () => {
  const free: AdmitState = { running: true, refusing: '', slots: 2, inFlight: 1, queued: 0, maxQueue: DEFAULT_MAX_QUEUE, queueMs: 0, waitMs: 0 }

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

  it('queues far beyond 3 per slot while the expected wait fits queue_ms, for at most MAX_QUEUE_MS', () => {
    expect(admit({ ...free, inFlight: 2, queueMs: 300, waitMs: 300 })).toEqual({ kind: 'queue', ms: 300 })
    expect(admit({ ...free, inFlight: 2, queued: 500, queueMs: 60_000, waitMs: 1255 })).toEqual({ kind: 'queue', ms: 60_000 })
    expect(admit({ ...free, inFlight: 2, queueMs: 100 * MAX_QUEUE_MS })).toEqual({ kind: 'queue', ms: MAX_QUEUE_MS })
  })

  it('refuses with BUSY at once when the expected wait is over queue_ms', () => {
    expect(admit({ ...free, inFlight: 2, queueMs: 300, waitMs: 301 })).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_BUSY', reason: 'too-long' })
  })

  it('refuses with BUSY at once when maxQueue invocations wait already, whatever the wait', () => {
    expect(admit({ ...free, inFlight: 2, queued: 9, maxQueue: 10, queueMs: 60_000 }).kind).toBe('queue')
    expect(admit({ ...free, inFlight: 2, queued: 10, maxQueue: 10, queueMs: 60_000 })).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_BUSY', reason: 'queue-full' })
    expect(admit({ ...free, inFlight: 2, maxQueue: 0, queueMs: 60_000 })).toEqual({ kind: 'refuse', code: 'FNMESH_ERR_BUSY', reason: 'queue-full' })
  })
})

describe('expected wait (wait.ts)', () => {
  it('is 0 with a free slot', () => {
    expect(expectedWaitMs({ slots: 2, running: 1, aheadMs: 100, runMs: 10 })).toBe(0)
    expect(expectedWaitAt(2, 1, 10)).toBe(0)
  })

  it('is the slot time queued ahead plus one run, over the slots', () => {
    expect(expectedWaitMs({ slots: 2, running: 2, aheadMs: 0, runMs: 10 })).toBe(5)
    expect(expectedWaitMs({ slots: 2, running: 2, aheadMs: 90, runMs: 10 })).toBe(50)
    // a router's view: load 12 on 2 slots = 10 queued of 10 ms each
    expect(expectedWaitAt(2, 12, 10)).toBe(55)
    expect(expectedWaitMs({ slots: 0, running: 0, aheadMs: 10, runMs: 10 })).toBe(20)
  })

  it('learns slot times per function, falls back to the mean of all, and is 0 before any run', () => {
    const t = new RunTimes(2)
    expect(t.estimate('a@1')).toBe(0)
    t.observe('a@1', 10)
    expect(t.estimate('a@1')).toBe(10)
    expect(t.estimate('b@1')).toBe(10)
    expect(t.estimate()).toBe(10)
    t.observe('a@1', 20)
    expect(t.estimate('a@1')).toBeCloseTo(12)
    t.observe('b@1', 100)
    t.observe('c@1', 50)
    // at most 2 functions remembered: the oldest goes
    expect(t.estimate('c@1')).toBe(50)
    expect(t.estimate('a@1')).toBeCloseTo(t.estimate())
  })

  it('measures how fast slots free while others wait, pessimistically, and forgets gaps with nobody waiting', () => {
    const d = new DrainRate()
    expect(d.waitBehind(10)).toBe(0)
    d.released(0, true)
    d.released(10, true)
    expect(d.gap).toBe(10)
    expect(d.waitBehind(3)).toBe(40)
    d.released(30, true)
    // gap 20: mean 12, deviation 0.2 x 10 = 2
    expect(d.gap).toBeCloseTo(12)
    expect(d.waitBehind(3)).toBeCloseTo(4 * 12 + 2 * 2 * 2)
    // a release with nobody waiting ends the run: the idle time after it is no gap
    d.released(40, false)
    d.released(1000, true)
    expect(d.gap).toBeCloseTo(12)
  })
})
