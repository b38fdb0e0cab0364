/**
 * Bounded storage and damaged storage: raw records past the retention are dropped while every
 * total stays; seals carry compacted minutes to a node that never saw the records; a ledger with
 * a truncated file is repaired, says so, keeps the damaged copy and every record it can read.
 */
import { readdir, stat, truncate } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { silentLogger } from '../../node/src/logger.js'
import { exportPage } from '../../node/src/metering/queries/export.js'
import { DAY_MS, MINUTE_MS } from '../../node/src/metering/records/keys.js'
import { Meter } from '../../node/src/metering/meter.js'
import { MeterStore } from '../../node/src/metering/ledger/store.js'
import { minuteRows, queryUsage, recount } from '../../node/src/metering/queries/usage.js'
import { intakeOf, rec, recordingLogger, signed, T0, tempStores, testNode } from '../helpers/meter.js'

const RETENTION = 30 * DAY_MS

describe('meter compaction, seals and repair', () => {
  const stores = tempStores()
  afterEach(async () => { await stores.cleanup() })

  it('drops raw records older than the retention and keeps every total, and refuses raw records that old', async () => {
    const node = await testNode()
    let now = Date.now()
    const store = await stores.open({ retentionMs: RETENTION, now: () => now })
    const old = Array.from({ length: 30 }, (_, i) => rec(node, { invocationId: `old-${i}`, startMs: T0 + i * 1000, billedMs: 10 }))
    const fresh = Array.from({ length: 5 }, (_, i) => rec(node, { invocationId: `new-${i}`, startMs: T0 + 2 * DAY_MS + i, billedMs: 10 }))
    const s = signed(node, [...old, ...fresh])
    await store.ingest(s.items, s.proofs)
    const before = await queryUsage(store, { bucket: 'hour' })
    expect(await store.compact()).toBe(0)
    // A month and a day later: the first day is past the retention.
    now = T0 + RETENTION + DAY_MS
    expect(await store.compact()).toBe(30)
    expect(await queryUsage(store, { bucket: 'hour' })).toEqual(before)
    expect((await exportPage(store, {})).records.map(r => r.invocationId)).toEqual(fresh.map(r => r.invocationId))
    let raw = 0
    for await (const _ of store.db.keys({ gte: 'r!', lt: 'r!~' })) raw++
    expect(raw).toBe(5)
    // Late copies of compacted records are not taken again: no double counting.
    expect(await store.ingest(s.items, s.proofs)).toEqual({ stored: 0, known: 5, stale: 30 })
    expect(await queryUsage(store, { bucket: 'hour' })).toEqual(before)
    expect(await minuteRows(store)).toEqual(await recount(store))
  })

  it('carries compacted minutes to a node that never saw their records, through seals, once and only once', async () => {
    const a = await testNode()
    const storeA = await stores.open({ retentionMs: RETENTION })
    const meter = new Meter({ store: storeA, signer: a.signer, logger: silentLogger() }, { sealAfterMs: 0 })
    for (let i = 0; i < 40; i++) await meter.record(rec(a, { invocationId: `s-${i}`, startMs: T0 + i * 7000, billedMs: 5 + i, function: i % 2 === 0 ? 'x' : 'y' }))
    expect(await meter.seal(T0 + 10 * MINUTE_MS)).toBe(5)
    // Sealing again with nothing new signs nothing.
    expect(await meter.seal(T0 + 10 * MINUTE_MS)).toBe(0)
    const seals = []
    for await (const [, v] of storeA.db.iterator({ gte: 's!', lt: 's!~' })) seals.push(v)
    const { decode } = await import('../../proto/codec.js')
    const registers = seals.map(v => decode('RollupRegister', v))
    // B's clock is past the retention for those minutes: it takes seals, not records.
    const storeB = await stores.open({ retentionMs: RETENTION, now: () => T0 + RETENTION + DAY_MS })
    const log = recordingLogger()
    const intake = intakeOf(storeB, log)
    expect(await intake.take(a.nodeId, undefined, registers)).toMatchObject({ rejected: 0 })
    const want = await queryUsage(storeA, { bucket: 'minute' })
    expect(await queryUsage(storeB, { bucket: 'minute' })).toEqual(want)
    expect(storeB.tree.perNode()).toEqual(storeA.tree.perNode())
    // Again: nothing changes. A forged seal (another key) is refused.
    await intake.take(a.nodeId, undefined, registers)
    expect(await queryUsage(storeB, { bucket: 'minute' })).toEqual(want)
    const forger = await testNode()
    const forged = forger.signer.seal({ ...registers[0].digest, count: registers[0].digest.count + 5 }, registers[0].rows)
    expect(await intake.take(forger.nodeId, undefined, [forged])).toMatchObject({ rejected: 1 })
    expect(log.lines.some(l => l.msg === 'rejected meter data from a peer' && /forged/.test(l.reasons.join(' ')))).toBe(true)
    expect(await queryUsage(storeB, { bucket: 'minute' })).toEqual(want)
    await meter.stop()
  })

  it('recounts, on open, a ledger written when one record per invocation id was billed', async () => {
    const [a, b] = [await testNode(), await testNode()]
    const dir = join(await stores.dir(), 'ledger')
    const first = await MeterStore.open({ dir, logger: silentLogger() })
    // An id run twice, on two nodes; the old rule billed only the later attempt.
    for (const [node, r] of [[a, rec(a, { invocationId: 'x', billedMs: 10 })], [b, rec(b, { invocationId: 'x', billedMs: 30, attempt: 2 })]] as const) {
      const s = signed(node, [r])
      await first.ingest(s.items, s.proofs)
    }
    // What the old ledger held beside the records: its index, and rollups of the winner alone.
    const rows: string[] = []
    for await (const k of first.db.keys({ gte: 'u!', lt: 'u!~' })) rows.push(k)
    await first.db.batch([...rows.map(key => ({ type: 'del' as const, key })), { type: 'put', key: 'i!x', value: Buffer.from('2!0!r!x') }])
    await first.close()
    const log = recordingLogger()
    const store = await MeterStore.open({ dir, logger: log })
    try {
      expect(store.recovered).toBe('')
      expect(log.lines.some(l => /^recounted the meter rollups/.test(l.msg))).toBe(true)
      expect((await queryUsage(store)).functions.map(f => [f.invocations, f.billedMs])).toEqual([[2, 40]])
      expect(await minuteRows(store, 0)).toEqual(await recount(store, 0))
      for await (const _ of store.db.keys({ gte: 'i!', lt: 'i!~' })) throw new Error('an index entry left')
    } finally {
      await store.close()
    }
  })

  it('repairs a ledger whose manifest was truncated, keeps the damaged copy, logs why and keeps every record', async () => {
    const node = await testNode()
    const dir = join(await stores.dir(), 'ledger')
    const first = await MeterStore.open({ dir, logger: silentLogger() })
    const s = signed(node, Array.from({ length: 200 }, (_, i) => rec(node, { invocationId: `m-${i}`, startMs: T0 + i })))
    await first.ingest(s.items, s.proofs)
    const usage = await queryUsage(first)
    await first.close()
    const manifest = (await readdir(dir)).find(f => f.startsWith('MANIFEST')) as string
    await truncate(join(dir, manifest), 10)
    const log = recordingLogger()
    const store = await MeterStore.open({ dir, logger: log })
    try {
      expect(store.recovered).toMatch(/^ledger damaged \(.*\); the damaged files were kept at .*\.corrupt-/)
      expect(log.lines.find(l => l.level === 'error')?.msg).toBe('the meter ledger is damaged: moving it aside and repairing a copy')
      expect((await readdir(dirname(dir))).some(f => f.startsWith('ledger.corrupt-'))).toBe(true)
      expect(await queryUsage(store)).toEqual(usage)
      expect(await minuteRows(store, 0)).toEqual(await recount(store, 0))
    } finally {
      await store.close()
    }
  })

  it('repairs a ledger with a truncated table at open, and rebuilds totals that match the records it still holds', async () => {
    const node = await testNode()
    const dir = join(await stores.dir(), 'ledger')
    const first = await MeterStore.open({ dir, logger: silentLogger() })
    for (let b = 0; b < 10; b++) {
      const s = signed(node, Array.from({ length: 300 }, (_, i) => rec(node, { invocationId: `t-${b}-${i}`, startMs: T0 + b * MINUTE_MS + i })))
      await first.ingest(s.items, s.proofs)
    }
    await first.close()
    // Reopening turns the write-ahead log into a table; then cut that table in half (never while
    // open: LevelDB maps tables into memory, and a mapped file that shrinks kills the process).
    await (await MeterStore.open({ dir, logger: silentLogger() })).close()
    const tables = await Promise.all((await readdir(dir)).filter(f => f.endsWith('.ldb')).map(async f => ({ f, size: (await stat(join(dir, f))).size })))
    const biggest = tables.sort((x, y) => y.size - x.size)[0]
    await truncate(join(dir, biggest.f), Math.floor(biggest.size / 2))
    const log = recordingLogger()
    const store = await MeterStore.open({ dir, logger: log })
    try {
      expect(store.recovered).toMatch(/^ledger damaged \(IO error: .*\.ldb/)
      expect(log.lines.some(l => l.msg === 'the meter ledger is damaged: moving it aside and repairing a copy')).toBe(true)
      expect(log.lines.some(l => l.msg === 'rebuilt the meter index, digests and rollups from the records the repair kept')).toBe(true)
      // What survived is consistent: totals equal a recount of the records still readable.
      expect(await minuteRows(store, 0)).toEqual(await recount(store, 0))
      const held = (await exportPage(store, { limit: 20_000 })).records.length
      expect((await queryUsage(store)).functions[0]?.invocations ?? 0).toBe(held)
      expect(store.tree.count).toBe(held)
      expect(await store.verify()).toBe('')
    } finally {
      await store.close()
    }
  })

  it('repairs when its background check hits a damaged block, and keeps serving', async () => {
    const node = await testNode()
    const log = recordingLogger()
    const store = await stores.open({ logger: log })
    const s = signed(node, Array.from({ length: 50 }, (_, i) => rec(node, { invocationId: `v-${i}` })))
    await store.ingest(s.items, s.proofs)
    const usage = await queryUsage(store)
    // The first full read fails as a truncated table does (the real thing is tested at open).
    const db = store.db
    const real = db.iterator.bind(db)
    let failed = false
    db.iterator = ((options?: unknown) => {
      if (options != null || failed) return real(options as never)
      failed = true
      const err = Object.assign(new Error('IO error: 000005.ldb: Invalid argument'), { code: 'LEVEL_IO_ERROR' })
      return { [Symbol.asyncIterator]: async function * () { throw err }, close: async () => {} } as never
    }) as typeof db.iterator
    expect(await store.verify()).toMatch(/^ledger damaged \(IO error: 000005\.ldb: Invalid argument\)/)
    expect(store.db).not.toBe(db)
    expect(await queryUsage(store)).toEqual(usage)
    const more = signed(node, [rec(node)])
    expect(await store.ingest(more.items, more.proofs)).toMatchObject({ stored: 1 })
  })
})
