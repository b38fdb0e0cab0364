/**
 * The meter store and a node's own Meter on a real LevelDB: group-committed synced writes, one
 * billed record per invocation id, totals per function, node and bucket, exact time filters,
 * export, and the lifecycle (reopen, close, lock, failed writes).
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import { Outcome, decode, encode, type Encodable, type MeterBundle, type MeterRecord } from '../../proto/codec.js'
import { InternalError } from '../../proto/errors.js'
import { silentLogger } from '../../node/src/logger.js'
import { exportPage } from '../../node/src/metering/queries/export.js'
import { DAY_MS, HOUR_MS, MINUTE_MS } from '../../node/src/metering/records/keys.js'
import { Meter } from '../../node/src/metering/meter.js'
import { MeterStore } from '../../node/src/metering/ledger/store.js'
import { minuteRows, queryUsage, recount, segments } from '../../node/src/metering/queries/usage.js'
import { intakeOf, rec, signed, T0, tempStores, testNode, type TestNode } from '../helpers/meter.js'

async function waitFor (cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

async function rejection (p: Promise<unknown>): Promise<any> {
  return await p.then(() => { throw new Error('expected a rejection') }, (err: unknown) => err)
}

describe('meter store', () => {
  const stores = tempStores()
  let node: TestNode
  const meters: Meter[] = []
  const meterOf = (store: MeterStore): Meter => { const m = new Meter({ store, signer: node.signer, logger: silentLogger() }); meters.push(m); return m }
  const put = async (store: MeterStore, who: TestNode, records: Array<Encodable<MeterRecord>>): Promise<void> => {
    const s = signed(who, records)
    await store.ingest(s.items, s.proofs)
  }

  afterEach(async () => {
    vi.restoreAllMocks()
    for (const m of meters.splice(0)) await m.stop()
    await stores.cleanup()
  })

  it('totals invocations, errors, billed time, GB-seconds, cold starts and nodes per function and per node', async () => {
    node = await testNode()
    const [n2, n3] = [await testNode(), await testNode()]
    const store = await stores.open()
    await put(store, node, [rec(node, { billedMs: 1500, memoryMb: 512, cold: true }), rec(node, { billedMs: 3000, memoryMb: 512, outcome: Outcome.OUTCOME_TIMEOUT })])
    await put(store, n2, [rec(n2, { billedMs: 250, memoryMb: 512, outcome: Outcome.OUTCOME_ERROR, errorCode: 'FNMESH_ERR_FUNCTION_ERROR' })])
    await put(store, n3, [rec(n3, { function: 'echo', billedMs: 1, memoryMb: 1024, cold: true })])
    const u = await queryUsage(store)
    expect(u.functions.map(f => f.name)).toEqual(['echo', 'resize'])
    const [echo, resize] = u.functions
    expect(resize).toMatchObject({ invocations: 3, errors: 2, billedMs: 4750, coldStarts: 1, byNode: { [node.nodeId]: 2, [n2.nodeId]: 1 } })
    // 512 MB = 0.5 GB; 4.75 s billed, kept exactly as MB x ms
    expect(resize.mbMs / 1024 / 1000).toBeCloseTo(0.5 * 4.75, 12)
    expect(echo).toMatchObject({ invocations: 1, errors: 0, billedMs: 1, coldStarts: 1, mbMs: 1024 })
    expect(u.nodes.find(n => n.nodeId === n2.nodeId)).toMatchObject({ invocations: 1, errors: 1, billedMs: 250 })
  })

  it('is empty when nothing was recorded', async () => {
    node = await testNode()
    const store = await stores.open()
    expect(await queryUsage(store, { bucket: 'hour' })).toEqual({ functions: [], nodes: [], buckets: [] })
    expect((await exportPage(store, {})).records).toEqual([])
  })

  it('filters by start time to the millisecond, at the edges of minutes, hours and days', async () => {
    node = await testNode()
    const store = await stores.open()
    const times = [T0 - DAY_MS - 1, T0 - HOUR_MS, T0 - 1, T0, T0 + 1, T0 + MINUTE_MS - 1, T0 + MINUTE_MS, T0 + HOUR_MS + 59_999]
    await put(store, node, times.map((t, i) => rec(node, { invocationId: `t${i}`, startMs: t })))
    const count = async (sinceMs: number, untilMs?: number): Promise<number> => (await queryUsage(store, { sinceMs, untilMs })).functions[0]?.invocations ?? 0
    for (const since of [0, T0 - DAY_MS, T0 - 1, T0, T0 + 1, T0 + MINUTE_MS, T0 + HOUR_MS + 59_999, T0 + HOUR_MS + 60_000]) {
      for (const until of [0, T0, T0 + 1, T0 + MINUTE_MS, T0 + 2 * HOUR_MS]) {
        const want = times.filter(t => t >= since && (until === 0 || t < until)).length
        expect(await count(since, until === 0 ? undefined : until), `since ${since - T0} until ${until === 0 ? 'end' : until - T0}`).toBe(want)
      }
    }
    // The range is read as whole days, hours and minutes plus raw records at the ends.
    const D0 = Math.floor(T0 / DAY_MS) * DAY_MS - DAY_MS
    expect(segments(D0 - HOUR_MS - MINUTE_MS - 1, D0 + DAY_MS + HOUR_MS + MINUTE_MS + 5, 2).map(s => s.level)).toEqual(['raw', 'm', 'h', 'd', 'h', 'm', 'raw'])
    expect(segments(D0, D0 + 2 * DAY_MS, 1).map(s => s.level)).toEqual(['h'])
  })

  it('totals per minute, hour and day bucket, and they add up to the whole', async () => {
    node = await testNode()
    const store = await stores.open()
    await put(store, node, [0, 1, 2, 61, 62, 125, 24 * 60 + 3].map((m, i) => rec(node, { invocationId: `b${i}`, startMs: T0 - DAY_MS + m * MINUTE_MS, billedMs: 10 })))
    for (const [bucket, size, n] of [['minute', MINUTE_MS, 7], ['hour', HOUR_MS, 4], ['day', DAY_MS, 2]] as const) {
      const u = await queryUsage(store, { bucket })
      expect(u.buckets, bucket).toHaveLength(n)
      for (const b of u.buckets) expect(b.bucketMs % size).toBe(0)
      expect(u.buckets.reduce((s, b) => s + b.invocations, 0)).toBe(7)
      expect(u.buckets.reduce((s, b) => s + b.billedMs, 0)).toBe(70)
    }
    const hours = (await queryUsage(store, { bucket: 'hour' })).buckets.map(b => [(b.bucketMs - (T0 - DAY_MS)) / HOUR_MS, b.invocations])
    expect(hours).toEqual([[0, 3], [1, 2], [2, 1], [24, 1]])
  })

  it('filters by function, and treats an empty name as all functions', async () => {
    node = await testNode()
    const store = await stores.open()
    await put(store, node, [rec(node, { function: 'a' }), rec(node, { function: 'b' }), rec(node, { function: 'b' })])
    expect((await queryUsage(store, { fn: 'b' })).functions).toMatchObject([{ name: 'b', invocations: 2 }])
    expect((await queryUsage(store, { fn: 'nope' })).functions).toEqual([])
    expect((await queryUsage(store, { fn: '' })).functions.map(u => u.name)).toEqual(['a', 'b'])
  })

  it('bills a record once however often it is written, and every run of an id: the same record twice, three re-runs', async () => {
    node = await testNode()
    const store = await stores.open()
    const meter = meterOf(store)
    const r = rec(node, { invocationId: 'dup', billedMs: 100 })
    await meter.record(r)
    await meter.record(r)
    await Promise.all([meter.record(rec(node, { invocationId: 'rerun', startMs: T0 + 10, billedMs: 1 })), meter.record(rec(node, { invocationId: 'rerun', startMs: T0 + 20, billedMs: 2 })), meter.record(rec(node, { invocationId: 'rerun', startMs: T0 - 30, billedMs: 3 }))])
    const u = await queryUsage(store)
    expect(u.functions[0]).toMatchObject({ invocations: 4, billedMs: 106 })
    const exported = (await exportPage(store, {})).records.map(x => [x.invocationId, x.billedMs])
    expect(exported.sort()).toEqual([['dup', 100], ['rerun', 1], ['rerun', 2], ['rerun', 3]])
    expect(await minuteRows(store, 0)).toEqual(await recount(store, 0))
  })

  it('writes 500 concurrent records with a few group commits, unsynced, then one background fsync, and counts all of them', async () => {
    node = await testNode()
    const store = await stores.open({ fsyncWindowMs: 40 })
    const meter = meterOf(store)
    const batch = vi.spyOn(store.db, 'batch')
    const results = await Promise.allSettled(Array.from({ length: 500 }, (_, i) => meter.record(rec(node, { startMs: T0 + i }))))
    expect(results.filter(r => r.status === 'fulfilled')).toHaveLength(500)
    expect((await queryUsage(store)).functions[0].invocations).toBe(500)
    expect(batch.mock.calls.length).toBeLessThan(10)
    // No fsync on the answer's path: the batches reach the OS, the window's fsync covers them.
    for (const call of batch.mock.calls) expect(call[1]).toBeUndefined()
    await waitFor(() => !store.unsynced)
    expect(store.syncStats.syncs).toBeGreaterThanOrEqual(1)
    expect(store.syncStats.syncs).toBeLessThanOrEqual(2)
  })

  it('fsyncs in the background within the window after a write, once per window however many writes, and not when idle', async () => {
    node = await testNode()
    const window = 60
    const store = await stores.open({ fsyncWindowMs: window })
    const meter = meterOf(store)
    const fsyncs: number[] = []
    const sync = store.sync.bind(store)
    vi.spyOn(store, 'sync').mockImplementation(async () => { fsyncs.push(performance.now()); await sync() })
    const wrote = performance.now()
    await meter.record(rec(node, { invocationId: 'one' }))
    expect(store.unsynced).toBe(true)
    expect(store.syncStats.syncs).toBe(0)
    await waitFor(() => !store.unsynced)
    expect(store.syncStats.syncs).toBe(1)
    // The fsync started no later than the window after the write (timer slack allowed).
    expect(fsyncs[0] - wrote).toBeLessThan(window + 25)
    expect(store.syncStats.maxLagMs).toBeLessThan(window + 100)
    // A stream of writes: one fsync per window, each write covered within the window.
    const t0 = performance.now()
    for (let i = 0; i < 20; i++) {
      await meter.record(rec(node, { invocationId: `s${i}`, startMs: T0 + i }))
      await new Promise(resolve => setTimeout(resolve, 10))
    }
    await waitFor(() => !store.unsynced)
    const elapsed = performance.now() - t0
    const streamSyncs = store.syncStats.syncs - 1
    expect(streamSyncs).toBeGreaterThanOrEqual(1)
    expect(streamSyncs).toBeLessThanOrEqual(Math.ceil(elapsed / window) + 1)
    expect(store.syncStats.maxLagMs).toBeLessThan(window + 100)
    // Idle: nothing to cover, no fsync.
    const idle = store.syncStats.syncs
    await new Promise(resolve => setTimeout(resolve, window * 3))
    expect(store.syncStats.syncs).toBe(idle)
    expect(store.syncStats.failures).toBe(0)
  })

  it('fsyncs what is unsynced when it closes', async () => {
    node = await testNode()
    const store = await stores.open({ fsyncWindowMs: 10_000 })
    await meterOf(store).record(rec(node))
    expect(store.unsynced).toBe(true)
    await store.close()
    expect(store.unsynced).toBe(false)
    expect(store.syncStats.syncs).toBe(1)
  })

  it('resolves a carried record with its signed bundle once written, and the bundle verifies and stores on another ledger', async () => {
    node = await testNode()
    const store = await stores.open()
    const replicate = vi.fn(async (_b: unknown, _n: number, _urgent?: boolean) => true)
    const meter = new Meter({ store, signer: node.signer, replicator: { replicate, pushSeals: () => {} }, logger: silentLogger() })
    meters.push(meter)
    const [carried, waited] = await Promise.all([meter.record(rec(node, { invocationId: 'carried' }), { carry: true }), meter.record(rec(node, { invocationId: 'waited' }))])
    expect(waited).toBeUndefined()
    expect(carried?.records).toHaveLength(1)
    // Every batch with a record whose answer waits for a peer is urgent; carried-only batches are not.
    await meter.record(rec(node, { invocationId: 'alone' }), { carry: true })
    expect(replicate.mock.calls.at(-1)?.[2]).toBe(false)
    const other = await stores.open()
    const ack = await intakeOf(other).take(node.nodeId, decode('MeterBundle', encode('MeterBundle', carried as Encodable<MeterBundle>)))
    expect(ack).toMatchObject({ stored: 1, rejected: 0 })
    expect((await exportPage(other, {})).records.map(r => r.invocationId)).toEqual(['carried'])
  })

  it('with --ack-replicas 2 resolves a carried record only once the replicator has the owners\' acks, naming the router whose ack does not count', async () => {
    node = await testNode()
    const store = await stores.open()
    let release: () => void = () => {}
    const acked = new Promise<void>(resolve => { release = resolve })
    const replicate = vi.fn(async (_b: unknown, _n: number, _urgent?: boolean, _hours?: number[], _carriedTo?: string[]) => { await acked; return true })
    const meter = new Meter({ store, signer: node.signer, replicator: { replicate, pushSeals: () => {} }, logger: silentLogger() }, { carryWaitsForAcks: true })
    meters.push(meter)
    let done = false
    const carried = meter.record(rec(node, { invocationId: 'carried' }), { carry: true, router: 'router-node' }).then((b) => { done = true; return b })
    await new Promise(resolve => setTimeout(resolve, 200))
    expect(done).toBe(false)
    expect(replicate.mock.calls[0]?.[2]).toBe(false)
    expect(replicate.mock.calls[0]?.[4]).toEqual(['router-node'])
    release()
    expect((await carried)?.records).toHaveLength(1)
  })

  it('with --ack-replicas 2 (strict acks), rejects a record whose acks did not come within the ack timeout (waited for, or carried), and keeps it written here', async () => {
    node = await testNode()
    const store = await stores.open()
    const replicate = vi.fn(async (_b: unknown, _n: number, _urgent?: boolean, _hours?: number[], _carriedTo?: string[]) => false)
    const meter = new Meter({ store, signer: node.signer, replicator: { replicate, pushSeals: () => {} }, logger: silentLogger() }, { carryWaitsForAcks: true, strictAcks: true })
    meters.push(meter)
    await expect(meter.record(rec(node, { invocationId: 'waited' }))).rejects.toMatchObject({ code: 'FNMESH_ERR_METER_UNAVAILABLE' })
    await expect(meter.record(rec(node, { invocationId: 'carried' }), { carry: true, router: 'router-node' })).rejects.toMatchObject({ code: 'FNMESH_ERR_METER_UNAVAILABLE' })
    // Not acknowledged is not unwritten: both stay in the ledger (and are pushed again), billed as run.
    expect((await exportPage(store, {})).records.map(r => r.invocationId).sort()).toEqual(['carried', 'waited'])
  })

  it('with --ack-replicas 1 (the default), answers a record whose ack did not come within the ack timeout (the function ran: a second run for a late ack would do its work twice), and counts it', async () => {
    node = await testNode()
    const store = await stores.open()
    const replicate = vi.fn(async (_b: unknown, _n: number, _urgent?: boolean, _hours?: number[], _carriedTo?: string[]) => false)
    const meter = new Meter({ store, signer: node.signer, replicator: { replicate, pushSeals: () => {} }, logger: silentLogger() }, {})
    meters.push(meter)
    await expect(meter.record(rec(node, { invocationId: 'late' }))).resolves.toBeUndefined()
    expect(meter.answeredShort).toBe(1)
    expect((await exportPage(store, {})).records.map(r => r.invocationId)).toEqual(['late'])
  })

  it('exports every record, page by page, in start-minute order, a retry beside the run it retried', async () => {
    node = await testNode()
    const other = await testNode()
    const store = await stores.open()
    await put(store, node, Array.from({ length: 25 }, (_, i) => rec(node, { invocationId: `e${String(i).padStart(2, '0')}`, startMs: T0 + i * MINUTE_MS, function: i % 2 === 0 ? 'even' : 'odd' })))
    // e03 also ran on another node as a retry: a second run, exported beside the first.
    await put(store, other, [rec(other, { invocationId: 'e03', startMs: T0 + 3 * MINUTE_MS + 5, attempt: 2, function: 'odd' })])
    const all = []
    let after = ''
    let pages = 0
    for (;;) {
      const page = await exportPage(store, { afterKey: after, limit: 7 })
      all.push(...page.records)
      pages++
      if (page.nextKey === '') break
      after = page.nextKey
    }
    expect(pages).toBe(4)
    const ids = Array.from({ length: 25 }, (_, i) => `e${String(i).padStart(2, '0')}`)
    expect(all.map(r => r.invocationId)).toEqual([...ids.slice(0, 4), 'e03', ...ids.slice(4)])
    expect(all.filter(r => r.invocationId === 'e03').map(r => r.nodeId).sort()).toEqual([node.nodeId, other.nodeId].sort())
    expect((await exportPage(store, { fn: 'even', sinceMs: T0 + 10 * MINUTE_MS, untilMs: T0 + 20 * MINUTE_MS })).records.map(r => r.invocationId)).toEqual(['e10', 'e12', 'e14', 'e16', 'e18'])
  })

  it('keeps records, rollups and digests across close and reopen', async () => {
    node = await testNode()
    const dir = `${await stores.dir()}/ledger`
    const first = await MeterStore.open({ dir, logger: silentLogger() })
    await put(first, node, [rec(node, { invocationId: 'kept-1', billedMs: 40 }), rec(node, { invocationId: 'kept-2', billedMs: 60 })])
    const digests = first.tree.perNode()
    await first.close()
    const second = await MeterStore.open({ dir, logger: silentLogger() })
    try {
      expect(second.tree.perNode()).toEqual(digests)
      expect((await queryUsage(second)).functions[0]).toMatchObject({ invocations: 2, billedMs: 100 })
      await put(second, node, [rec(node, { invocationId: 'kept-1', billedMs: 40 })])
      expect((await queryUsage(second)).functions[0].invocations).toBe(2)
    } finally {
      await second.close()
    }
  })

  it('writes records still queued when the meter stops, then refuses new ones with FNMESH_ERR_METER_UNAVAILABLE', async () => {
    node = await testNode()
    const store = await stores.open()
    const meter = meterOf(store)
    const pending = Array.from({ length: 20 }, () => meter.record(rec(node)))
    await meter.stop()
    await Promise.all(pending)
    expect((await queryUsage(store)).functions[0].invocations).toBe(20)
    const err = await rejection(meter.record(rec(node)))
    expect(err).toBeInstanceOf(InternalError)
    expect(err.code).toBe('FNMESH_ERR_METER_UNAVAILABLE')
    await store.close()
    await store.close()
    const closed = await rejection(store.ingest([], new Map()))
    expect(closed.message).toBe('Cannot record usage: the ledger is closed')
  })

  it('refuses a record this node could not sign for, before writing anything', async () => {
    node = await testNode()
    const store = await stores.open()
    const err = await rejection(meterOf(store).record(rec({ nodeId: 'someone-else' })))
    expect(err.code).toBe('FNMESH_ERR_METER_UNAVAILABLE')
    expect(err.message).toMatch(/the record is invalid \(it names node "someone-else" but is signed by/)
  })

  it('refuses a second store on the same folder with FNMESH_ERR_METER_UNAVAILABLE', async () => {
    const dir = `${await stores.dir()}/ledger`
    const first = await MeterStore.open({ dir, logger: silentLogger() })
    try {
      const err = await rejection(MeterStore.open({ dir, logger: silentLogger() }))
      expect(err).toBeInstanceOf(InternalError)
      expect(err.code).toBe('FNMESH_ERR_METER_UNAVAILABLE')
      expect(err.message).toMatch(/^Cannot open the meter ledger at ".*": .*lock/i)
    } finally {
      await first.close()
    }
  })

  it('rejects every record of a group commit whose write fails, tells the disk guard, then recovers', async () => {
    node = await testNode()
    const failures: unknown[] = []
    const store = await stores.open({ onWriteError: (e) => { failures.push(e) } })
    const meter = meterOf(store)
    vi.spyOn(store.db, 'batch').mockRejectedValueOnce(new Error('IO error: No space left on device'))
    const err = await rejection(meter.record(rec(node, { invocationId: 'lost' })))
    expect(err.code).toBe('FNMESH_ERR_METER_UNAVAILABLE')
    expect(err.message).toBe('Cannot record usage: IO error: No space left on device')
    expect(failures).toHaveLength(1)
    await meter.record(rec(node, { invocationId: 'after' }))
    expect((await exportPage(store, {})).records.map(r => r.invocationId)).toEqual(['after'])
    expect(await minuteRows(store, 0)).toEqual(await recount(store, 0))
  })
})
