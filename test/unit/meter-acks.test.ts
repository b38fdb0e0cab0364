import { describe, expect, it } from 'vitest'
import { gatherAcks } from '../../node/src/metering/replication/acks.js'

/** A push to `peer` that answers after `ms` with `ok` (and adds the peer to `acked` when ok) */
function pushes (acked: Set<string>, plan: Record<string, { ms: number, ok: boolean } | Array<{ ms: number, ok: boolean }>>): { push: (peer: string) => Promise<boolean>, calls: string[] } {
  const calls: string[] = []
  const tries = new Map<string, number>()
  const push = async (peer: string): Promise<boolean> => {
    calls.push(peer)
    const n = tries.get(peer) ?? 0
    tries.set(peer, n + 1)
    const p = plan[peer]
    const step = Array.isArray(p) ? p[Math.min(n, p.length - 1)] : p ?? { ms: 1, ok: true }
    await new Promise(resolve => setTimeout(resolve, step.ms))
    if (step.ok) acked.add(peer)
    return step.ok
  }
  return { push, calls }
}

describe('gathering the acks an answer waits for', () => {
  it('pushes to as many candidates as acks are needed, in order, and no more when they ack', async () => {
    const acked = new Set<string>()
    const { push, calls } = pushes(acked, {})
    expect(await gatherAcks({ candidates: ['a', 'b', 'c', 'd'], waits: [{ need: 2 }], acked, push, timeoutMs: 1000 })).toBe(true)
    expect(calls).toEqual(['a', 'b'])
  })

  it('makes up for an owner it cannot reach with the next candidate instead of waiting out the timeout', async () => {
    const acked = new Set<string>()
    const { push, calls } = pushes(acked, { a: { ms: 5, ok: false } })
    const t0 = Date.now()
    expect(await gatherAcks({ candidates: ['a', 'b', 'c'], waits: [{ need: 2 }], acked, push, timeoutMs: 5000 })).toBe(true)
    expect(Date.now() - t0).toBeLessThan(1000)
    expect([...acked].sort()).toEqual(['b', 'c'])
    expect(calls).toEqual(['a', 'b', 'c'])
  })

  it('does not count the router\'s ack for a carried record, nor push to it for that wait', async () => {
    const acked = new Set<string>()
    const { push, calls } = pushes(acked, { b: { ms: 5, ok: false } })
    expect(await gatherAcks({ candidates: ['b', 'router', 'x'], waits: [{ need: 1, not: 'router' }], acked, push, timeoutMs: 1000 })).toBe(true)
    expect(calls).toEqual(['b', 'x'])
    expect(acked.has('router')).toBe(false)
  })

  it('answers false when too few candidates ack before the deadline, trying the failed ones again meanwhile', async () => {
    const acked = new Set<string>()
    const { push, calls } = pushes(acked, { a: { ms: 1, ok: false }, b: { ms: 1, ok: true } })
    expect(await gatherAcks({ candidates: ['a', 'b'], waits: [{ need: 2 }], acked, push, timeoutMs: 300, retryGapMs: 50 })).toBe(false)
    expect(calls.filter(p => p === 'a').length).toBeGreaterThan(1)
    expect(calls.filter(p => p === 'b')).toHaveLength(1)
  })

  it('gets there on a retry when a candidate becomes reachable (a dial with no address yet)', async () => {
    const acked = new Set<string>()
    const { push } = pushes(acked, { a: [{ ms: 1, ok: false }, { ms: 1, ok: false }, { ms: 1, ok: true }] })
    expect(await gatherAcks({ candidates: ['a'], waits: [{ need: 1 }], acked, push, timeoutMs: 2000, retryGapMs: 20 })).toBe(true)
  })

  it('adds a second candidate beside a push that is slow to ack (the hedge)', async () => {
    const acked = new Set<string>()
    const { push, calls } = pushes(acked, { a: { ms: 2000, ok: true } })
    const t0 = Date.now()
    expect(await gatherAcks({ candidates: ['a', 'b'], waits: [{ need: 1 }], acked, push, timeoutMs: 1000, hedgeMs: 50 })).toBe(true)
    expect(Date.now() - t0).toBeLessThan(900)
    expect(calls).toEqual(['a', 'b'])
  })

  it('satisfies a wait for owners and a router\'s wait at once, each counting its own peers', async () => {
    const acked = new Set<string>()
    const { push, calls } = pushes(acked, {})
    expect(await gatherAcks({ candidates: ['a', 'r'], waits: [{ need: 2 }, { need: 1, not: 'r' }], acked, push, timeoutMs: 1000 })).toBe(true)
    expect(calls.sort()).toEqual(['a', 'r'])
  })
})
