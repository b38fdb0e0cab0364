/**
 * Every public async SDK method honours `{ signal, timeoutMs }` (README): deploy, functions and the
 * dead-letter calls, publish, keys, init and meter status on a real nats-server with one agent. An abort rejects at once with
 * FNMESH_ERR_ABORTED and leaves nothing behind (no spec stored, no temporary consumer); a tiny
 * timeout gives FNMESH_ERR_CLIENT_TIMEOUT.
 */
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DLQ_STREAM } from '../../core/events.js'
import { FnmeshError } from '../../proto/errors.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { sleep, waitFor } from '../helpers/wait.js'

/** The code a call rejects with, and how long it took to */
async function outcome (call: () => Promise<unknown>): Promise<{ code: string, ms: number }> {
  const started = Date.now()
  try {
    await call()
  } catch (err) {
    expect(err).toBeInstanceOf(FnmeshError)
    return { code: (err as FnmeshError).code, ms: Date.now() - started }
  }
  throw new Error('expected a rejection')
}

/** Calls `start` with a signal and aborts it after `afterMs` (0: at once, once the call began) */
async function aborted (start: (signal: AbortSignal) => Promise<unknown>, afterMs = 0): Promise<{ code: string, ms: number }> {
  const ac = new AbortController()
  return await outcome(async () => {
    const p = start(ac.signal)
    if (afterMs > 0) await sleep(afterMs)
    ac.abort()
    return await p
  })
}

describe('the SDK honours signal and timeoutMs on every call', () => {
  let t: TestMesh
  let raw: NatsConnection
  let jsm: JetStreamManager

  const dlqConsumers = async (): Promise<string[]> => {
    const names: string[] = []
    for await (const c of jsm.consumers.list(DLQ_STREAM)) if (c.name.startsWith('fnmesh_dlq_')) names.push(c.name)
    return names
  }

  beforeAll(async () => {
    t = await startMesh({ nodes: 1, slots: 2 })
    raw = await connect({ servers: t.url })
    jsm = await jetstreamManager(raw)
    // One dead letter, so listing it pulls through a temporary consumer.
    await t.mesh.deploy({ name: 'bounds-dead', path: fixture('throw.js'), triggers: ['bounds.>'], retries: 0 })
    await t.mesh.publish('bounds.one', { n: 1 })
    await waitFor(async () => (await t.mesh.dlqList({ fn: 'bounds-dead' })).length === 1, { timeoutMs: 15_000, message: 'one dead letter' })
  })

  afterAll(async () => {
    await raw?.close()
    await t?.stop()
  })

  it('rejects an aborted deploy at once with FNMESH_ERR_ABORTED and stores no spec', async () => {
    const already = new AbortController()
    already.abort()
    expect((await outcome(async () => await t.mesh.deploy({ name: 'bounds-pre', path: fixture('ok.js') }, { signal: already.signal }))).code).toBe('FNMESH_ERR_ABORTED')
    const r = await aborted(async (signal) => await t.mesh.deploy({ name: 'bounds-abort', path: fixture('ok.js') }, { signal }))
    expect(r.code).toBe('FNMESH_ERR_ABORTED')
    expect(r.ms).toBeLessThan(500)
    // Whatever the deploy was doing when aborted, it stores nothing afterwards.
    await sleep(1000)
    const names = (await t.mesh.functions()).map(f => f.name)
    expect(names).toContain('bounds-dead')
    expect(names).not.toContain('bounds-abort')
    expect(names).not.toContain('bounds-pre')
  })

  it('rejects aborted functions and dead-letter calls at once with FNMESH_ERR_ABORTED', async () => {
    for (const [what, call] of [
      ['functions', async (signal: AbortSignal) => await t.mesh.functions({ signal })],
      ['dlqList', async (signal: AbortSignal) => await t.mesh.dlqList({ signal })],
      ['dlqReplay', async (signal: AbortSignal) => await t.mesh.dlqReplay({ fn: 'no-such-fn', signal })],
      ['dlqPurge', async (signal: AbortSignal) => await t.mesh.dlqPurge({ fn: 'no-such-fn', signal })],
      ['publish', async (signal: AbortSignal) => await t.mesh.publish('unbound.two', { n: 2 }, { signal })]
    ] as const) {
      const r = await aborted(call)
      expect(r, what).toEqual({ code: 'FNMESH_ERR_ABORTED', ms: expect.any(Number) })
      expect(r.ms, what).toBeLessThan(500)
    }
  })

  it('rejects aborted key, init and meter status calls at once, and an aborted key create stores no key', async () => {
    for (const [what, call] of [
      ['keys.create', async (signal: AbortSignal) => await t.mesh.keys.create('bounds-key', { signal })],
      ['keys.list', async (signal: AbortSignal) => await t.mesh.keys.list({ signal })],
      ['keys.revoke', async (signal: AbortSignal) => await t.mesh.keys.revoke('bounds-none', { signal })],
      ['init', async (signal: AbortSignal) => await t.mesh.init({ signal })],
      ['meterStatus', async (signal: AbortSignal) => await t.mesh.meterStatus({ signal })]
    ] as const) {
      const r = await aborted(call)
      expect(r, what).toEqual({ code: 'FNMESH_ERR_ABORTED', ms: expect.any(Number) })
      expect(r.ms, what).toBeLessThan(500)
    }
    await sleep(500)
    expect((await t.mesh.keys.list()).map(k => k.name)).not.toContain('bounds-key')
  })

  it('deletes the temporary dead-letter consumer at once when a list is aborted part way', async () => {
    for (const afterMs of [2, 5, 10, 20, 50]) {
      const ac = new AbortController()
      const listed = t.mesh.dlqList({ signal: ac.signal }).then(() => 'listed', (err: FnmeshError) => err.code)
      await sleep(afterMs)
      ac.abort()
      // A list may finish before the abort: then it simply returned.
      expect(['listed', 'FNMESH_ERR_ABORTED']).toContain(await listed)
    }
    await waitFor(async () => (await dlqConsumers()).length === 0, { timeoutMs: 1500, message: 'no temporary dead-letter consumer left' })
    // Still readable afterwards.
    expect(await t.mesh.dlqList({ fn: 'bounds-dead' })).toHaveLength(1)
  }, 15_000)

  it('gives FNMESH_ERR_CLIENT_TIMEOUT when timeoutMs is too short, and FNMESH_ERR_INVALID_ARGUMENT when it is not a duration', async () => {
    expect((await outcome(async () => await t.mesh.deploy({ name: 'bounds-slow', path: fixture('ok.js') }, { timeoutMs: 1 }))).code).toBe('FNMESH_ERR_CLIENT_TIMEOUT')
    expect((await outcome(async () => await t.mesh.functions({ timeoutMs: 1 }))).code).toBe('FNMESH_ERR_CLIENT_TIMEOUT')
    expect((await outcome(async () => await t.mesh.dlqList({ timeoutMs: 1 }))).code).toBe('FNMESH_ERR_CLIENT_TIMEOUT')
    expect((await outcome(async () => await t.mesh.functions({ timeoutMs: 0 }))).code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    await sleep(1000)
    expect((await t.mesh.functions()).map(f => f.name)).not.toContain('bounds-slow')
    await waitFor(async () => (await dlqConsumers()).length === 0, { timeoutMs: 3000, message: 'no temporary dead-letter consumer left' })
  })
})
