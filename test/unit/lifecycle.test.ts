import { describe, expect, it } from 'vitest'
import { Idle, Once, Waiters } from '../../node/src/lifecycle.js'

describe('lifecycle primitives', () => {
  it('Once runs its step once and gives every caller the same promise', async () => {
    let runs = 0
    const once = new Once(async () => { runs++; await new Promise(resolve => setTimeout(resolve, 5)); return runs })
    const [a, b] = [once.run(), once.run()]
    expect(a).toBe(b)
    expect(await a).toBe(1)
    expect(await once.run()).toBe(1)
    expect(runs).toBe(1)
  })

  it('Idle resolves every caller once the work in hand reaches zero, and at once when there is none', async () => {
    const idle = new Idle()
    await idle.whenIdle()
    idle.enter(); idle.enter()
    const seen: string[] = []
    const first = idle.whenIdle().then(() => { seen.push('first') })
    const second = idle.whenIdle().then(() => { seen.push('second') })
    idle.leave()
    await new Promise(resolve => setTimeout(resolve, 5))
    expect(seen).toEqual([])
    idle.leave()
    await Promise.all([first, second])
    expect(seen.sort()).toEqual(['first', 'second'])
    idle.leave() // below zero is ignored
    expect(idle.size).toBe(0)
  })

  it('Waiters wakes the longest waiter first and drops those that gave up', async () => {
    const w = new Waiters<string>()
    const order: number[] = []
    const a = w.wait('k').then(ok => { order.push(1); return ok })
    const b = w.wait('k', { timeoutMs: 10 })
    const c = w.wait('k').then(ok => { order.push(3); return ok })
    expect(await b).toBe(false)
    expect(w.size('k')).toBe(2)
    expect(w.wake('k')).toBe(true)
    expect(w.wake('k')).toBe(true)
    expect(await a).toBe(true)
    expect(await c).toBe(true)
    expect(order).toEqual([1, 3])
    expect(w.wake('k')).toBe(false)
  })

  it('Waiters gives up on abort, at once when already aborted, and wakeAll wakes every key', async () => {
    const w = new Waiters<string>()
    const ac = new AbortController()
    const a = w.wait('x', { signal: ac.signal })
    ac.abort()
    expect(await a).toBe(false)
    expect(await w.wait('x', { signal: ac.signal })).toBe(false)
    expect(w.size()).toBe(0)
    const p = [w.wait('x'), w.wait('y')]
    w.wakeAll()
    expect(await Promise.all(p)).toEqual([true, true])
  })

  it('Idle gives up a wait after its timeout or abort and still wakes the others', async () => {
    const idle = new Idle()
    idle.enter()
    expect(await idle.whenIdle({ timeoutMs: 5 })).toBe(false)
    const ac = new AbortController()
    const aborted = idle.whenIdle({ signal: ac.signal })
    const waiting = idle.whenIdle({ timeoutMs: 10_000 })
    ac.abort()
    expect(await aborted).toBe(false)
    expect(await idle.whenIdle({ signal: ac.signal })).toBe(false)
    idle.leave()
    expect(await waiting).toBe(true)
    expect(await idle.whenIdle({ signal: ac.signal })).toBe(true)
  })
})
