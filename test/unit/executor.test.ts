/**
 * The executor with stubbed neighbours: a fake sandbox pool whose workers finish when the test
 * says so, a fake function cache and meter, a fake NATS connection. Covers the slot limit, the
 * queue (bounded by maxQueue and by the expected wait against queue_ms, first come first served,
 * giving up after queue_ms), drain, abort and
 * the start/stop contract.
 */
import { describe, expect, it } from 'vitest'
import type { Encodable, ExecRequest, MeterRecord } from '../../proto/codec.js'
import { Executor } from '../../node/src/executor/executor.js'
import { silentLogger } from '../../node/src/logger.js'

const NODE = '12D3KooWTestNode'

function setup (slots: number, refusing = '', maxQueue?: number) {
  const started: string[] = []
  const finish = new Map<string, () => void>()
  const records: Array<Encodable<MeterRecord>> = []
  const subscribed: string[] = []
  const spec = { name: 'f', version: 1, memoryMb: 128, timeoutMs: 3000 }
  const pool = {
    hasIdle: () => false,
    acquire: async (_s: unknown, _r: unknown, o: { invocationId: string }) => ({
      cold: false,
      worker: {
        invoke: async (id: string) => {
          started.push(id)
          await new Promise<void>(resolve => { finish.set(id, resolve) })
          return { ok: true, durationMs: 1, payload: '"done"' }
        }
      }
    }),
    release: () => {}
  }
  const nc = { subscribe: (subject: string) => { subscribed.push(subject); return { unsubscribe: () => {} } } }
  const executor = new Executor({
    nc: nc as any,
    nodeId: NODE,
    functions: { spec: async () => spec, taskRoot: async () => '/nonexistent' } as any,
    pool: pool as any,
    meter: { record: async (r) => { records.push(r) }, refusing: () => refusing },
    logger: silentLogger(),
    onLoadChange: () => {}
  }, { slots, maxQueue })
  const done = async (id: string): Promise<void> => {
    await until(() => finish.has(id), `${id} to start`)
    finish.get(id)?.()
  }
  return { executor, started, records, subscribed, done }
}

async function until (fn: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!fn()) {
    if (Date.now() > end) throw new Error(`Timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 2))
  }
}

const req = (id: string, queueMs = 0): Encodable<ExecRequest> => ({ invocationId: id, function: 'f', version: 1, payload: Buffer.from('{}'), attempt: 1, trigger: 'sync', queueMs })

describe('executor: slots and queue', () => {
  it('answers BUSY at the slot limit when the request may not queue', async () => {
    const { executor, done } = setup(2)
    const a = executor.execute(req('a'))
    const b = executor.execute(req('b'))
    await until(() => executor.inFlight === 2, 'two running')
    const c = await executor.execute(req('c'))
    expect(c.error?.code).toBe('FNMESH_ERR_BUSY')
    expect(c.error?.errorMessage).toMatch(/no free slot \(2 in flight, 0 waiting\)/)
    await done('a'); await done('b')
    expect((await a).ok).toBe(true)
    expect((await b).ok).toBe(true)
    expect(executor.inFlight).toBe(0)
  })

  it('queues up to maxQueue, far past 3 per slot, refuses the next at once, and hands slots over first come first served', async () => {
    // The old bound was 3 per slot; the queue is now bounded by maxQueue and the deadline only.
    const { executor, started, done } = setup(1, '', 6)
    const first = executor.execute(req('first'))
    await until(() => started.length === 1, 'the first to start')
    const queued = Array.from({ length: 6 }, (_, i) => executor.execute(req(`q${i}`, 5000)))
    await until(() => executor.load === 1 + 6, 'the queue to fill')
    const t0 = Date.now()
    const over = await executor.execute(req('over', 5000))
    expect(over.error?.code).toBe('FNMESH_ERR_BUSY')
    expect(over.error?.errorMessage).toMatch(/queue is full \(6\)/)
    expect(Date.now() - t0).toBeLessThan(50)
    await done('first')
    for (let i = 0; i < 6; i++) await done(`q${i}`)
    expect((await Promise.all([first, ...queued])).every(r => r.ok === true)).toBe(true)
    expect(started).toEqual(['first', 'q0', 'q1', 'q2', 'q3', 'q4', 'q5'])
    expect(executor.load).toBe(0)
  })

  it('refuses BUSY at once when the expected wait from observed slot times is over queue_ms, and queues when it fits', async () => {
    const { executor, done } = setup(1)
    executor.runTimes.observe('f@1', 50)
    const first = executor.execute(req('first'))
    await until(() => executor.inFlight === 1, 'the first to run')
    expect(executor.expectedWait()).toBe(50)
    const q = executor.execute(req('q', 5000))
    await until(() => executor.load === 2, 'one queued')
    // one queued of 50 ms ahead, then one slot to free: (50 + 50) / 1 slot
    expect(executor.expectedWait()).toBe(100)
    const t0 = Date.now()
    const out = await executor.execute(req('short', 99))
    expect(out.error?.code).toBe('FNMESH_ERR_BUSY')
    expect(out.error?.errorMessage).toMatch(/expected wait of 100 ms is over the 99 ms/)
    expect(Date.now() - t0).toBeLessThan(50)
    const fits = executor.execute(req('fits', 100))
    await until(() => executor.load === 3, 'the second queued')
    await done('first'); await done('q'); await done('fits')
    expect((await Promise.all([first, q, fits])).every(r => r.ok === true)).toBe(true)
    expect(executor.expectedWait()).toBe(0)
  })

  it('gives up on a queued invocation after its queue_ms with BUSY and leaves the queue', async () => {
    const { executor, done } = setup(1)
    const first = executor.execute(req('first'))
    await until(() => executor.inFlight === 1, 'the first to run')
    const t0 = Date.now()
    const out = await executor.execute(req('late', 60))
    expect(out.error?.code).toBe('FNMESH_ERR_BUSY')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(55)
    expect(executor.load).toBe(1)
    await done('first')
    await first
  })

  it('answers DISK_FULL when the meter refuses new work', async () => {
    const { executor, started } = setup(1, 'disk 99% full')
    const out = await executor.execute(req('a'))
    expect(out.error?.code).toBe('FNMESH_ERR_DISK_FULL')
    expect(started).toEqual([])
  })
})

describe('executor: lifecycle and abort', () => {
  it('subscribes on start() with the connection from its components, once', () => {
    const { executor, subscribed } = setup(1)
    expect(executor.isStarted()).toBe(false)
    executor.start()
    executor.start()
    expect(executor.isStarted()).toBe(true)
    // its invocations, and the load probes of routers that route by probing (router/probe.ts)
    expect(subscribed).toEqual([`fnmesh.exec.${NODE}`, `fnmesh.probe.${NODE}`])
    executor.stop()
    expect(executor.isStarted()).toBe(false)
  })

  it('resolves every drain() caller once the last invocation finished, and refuses the queue with BUSY', async () => {
    const { executor, done } = setup(1)
    const running = executor.execute(req('a'))
    await until(() => executor.inFlight === 1, 'a to run')
    const waiting = executor.execute(req('w', 5000))
    let first = false
    let second = false
    void executor.drain().then(() => { first = true })
    void executor.drain().then(() => { second = true })
    expect((await waiting).error?.code).toBe('FNMESH_ERR_BUSY')
    expect((await executor.execute(req('b'))).error?.errorMessage).toMatch(/draining/)
    await new Promise(resolve => setTimeout(resolve, 10))
    expect([first, second]).toEqual([false, false])
    await done('a')
    await running
    await until(() => first && second, 'both drains')
  })

  it('stops a queued invocation\'s wait when aborted: ABORTED, out of the queue, no slot taken', async () => {
    const { executor, started, done } = setup(1)
    const first = executor.execute(req('first'))
    await until(() => executor.inFlight === 1, 'first to run')
    const ac = new AbortController()
    const pending = executor.execute(req('q', 60_000), { signal: ac.signal })
    await until(() => executor.load === 2, 'q to queue')
    ac.abort()
    const out = await pending
    expect(out.error?.code).toBe('FNMESH_ERR_ABORTED')
    expect(executor.load).toBe(1)
    await done('first')
    await first
    expect(started).toEqual(['first'])
    expect((await executor.execute(req('x'), { signal: AbortSignal.abort() })).error?.code).toBe('FNMESH_ERR_ABORTED')
  })
})
