/**
 * The executor's queue: a router that sees no free slot anywhere sends the invocation with
 * queueMs, and a full executor keeps it (first come, first served, bounded by --max-queue and by
 * its expected wait against queueMs, no longer by 3 per slot) and hands it the next slot that frees. Driven with raw ExecRequests on fnmesh.exec.<node> against a real
 * agent with one slot, and end to end through the SDK.
 */
import { randomUUID } from 'node:crypto'
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decode, encode, type InvokeResult } from '../../proto/codec.js'
import { execSubject } from '../../proto/subjects.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'

describe('an executor with one slot and its queue', () => {
  let t: TestMesh
  let nc: NatsConnection
  let node: string
  let version: number

  /** An ExecRequest straight to the agent's executor; resolves with the result and when it came */
  const exec = async (ms: number, queueMs: number): Promise<{ res: InvokeResult, at: number }> => {
    const req = encode('ExecRequest', { invocationId: randomUUID(), function: 'slow', version, payload: Buffer.from(JSON.stringify({ ms })), attempt: 1, routerId: 'test', trigger: 'sync', queueMs })
    const msg = await nc.request(execSubject(node), req, { timeout: 15_000 })
    return { res: decode('InvokeResult', msg.data), at: Date.now() }
  }

  beforeAll(async () => {
    t = await startMesh({ nodes: 1, slots: [1] })
    version = (await t.mesh.deploy({ name: 'slow', path: fixture('slow.js') })).version
    node = t.cluster.agents[0].nodeId
    nc = await natsConnect({ servers: t.url })
    await t.mesh.invoke('slow', { ms: 1 }) // warm
  })

  afterAll(async () => {
    await nc?.close().catch(() => {})
    await t?.stop()
  })

  it('answers BUSY at once without queueMs, and with it runs the invocation as soon as the slot frees', async () => {
    const t0 = Date.now()
    const holder = exec(400, 0)
    await waitFor(async () => (await t.mesh.nodes())[0]?.inFlight === 1, { timeoutMs: 2000, intervalMs: 10, message: 'the first invocation taking the slot' })
    const refused = await exec(1, 0)
    expect(refused.res.ok).toBe(false)
    expect(refused.res.error?.code).toBe('FNMESH_ERR_BUSY')
    expect(refused.at - t0).toBeLessThan(400)
    const queued = await exec(1, 3000)
    const first = await holder
    expect(first.res.ok).toBe(true)
    expect(queued.res.ok).toBe(true)
    // it ran after the holder had its slot back, not before
    expect(queued.at).toBeGreaterThanOrEqual(first.at - 50)
    expect(queued.at - t0).toBeLessThan(3000)
  })

  it('serves its queue in arrival order, past the old bound of 3 per slot, while the expected wait fits', async () => {
    const holder = exec(500, 0)
    await waitFor(async () => (await t.mesh.nodes())[0]?.inFlight === 1, { timeoutMs: 2000, intervalMs: 10, message: 'the first invocation taking the slot' })
    const order: number[] = []
    const waiting = [0, 1, 2, 3, 4].map(async (i) => {
      // spaced so that they reach the executor in this order
      await new Promise(resolve => setTimeout(resolve, i * 30))
      const r = await exec(20, 5000)
      if (r.res.ok === true) order.push(i)
      return r
    })
    const results = await Promise.all(waiting)
    expect((await holder).res.ok).toBe(true)
    // The old rule kept 3 per slot and answered the 4th and 5th BUSY; the queue is now bounded by
    // --max-queue (10,000) and the deadline, and 5 waits of about 20 ms fit 5 s easily.
    expect(order).toEqual([0, 1, 2, 3, 4])
    expect(results.every(r => r.res.ok === true)).toBe(true)
  })

  it('gives up on a queued invocation after queueMs with BUSY, and keeps serving', async () => {
    const holder = exec(800, 0)
    await waitFor(async () => (await t.mesh.nodes())[0]?.inFlight === 1, { timeoutMs: 2000, intervalMs: 10, message: 'the first invocation taking the slot' })
    const t0 = Date.now()
    const late = await exec(1, 200)
    expect(late.res.error?.code).toBe('FNMESH_ERR_BUSY')
    expect(late.at - t0).toBeGreaterThanOrEqual(150)
    expect(late.at - t0).toBeLessThan(700)
    expect((await holder).res.ok).toBe(true)
    expect(await t.mesh.invoke('slow', { ms: 1 })).toEqual({ slept: 1 })
  })

  it('bounds a hostile queue_ms (2^32 - 1 ms) instead of letting the timer overflow', async () => {
    const holder = exec(300, 0)
    await waitFor(async () => (await t.mesh.nodes())[0]?.inFlight === 1, { timeoutMs: 2000, intervalMs: 10, message: 'the first invocation taking the slot' })
    // an overflowing timer would fire after 1 ms and refuse it; bounded, it waits for the slot
    const queued = await exec(1, 0xffffffff)
    expect((await holder).res.ok).toBe(true)
    expect(queued.res.ok, JSON.stringify(queued.res.error)).toBe(true)
  })

  it('lets SDK callers beyond the slots wait their turn instead of failing with NO_CAPACITY', async () => {
    // 4 calls of 100 ms on one slot: the router sees it full and queues at the executor.
    const calls = await Promise.allSettled([0, 1, 2, 3].map(async () => await t.mesh.invoke('slow', { ms: 100 }, { timeoutMs: 10_000 })))
    expect(calls.map(c => c.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'])
    // every run and the queue left nothing behind
    await waitFor(async () => (await t.mesh.nodes())[0]?.inFlight === 0, { timeoutMs: 3000, message: 'the node idle again' })
  })
})
