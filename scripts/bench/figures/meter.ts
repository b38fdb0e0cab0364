/**
 * Figure: meter write throughput. A node's own Meter.record (signed per batch, synced,
 * group-committed: records that arrive while a write is on disk share the next fsync and the
 * next signature) with many records in flight, and a replica's intake of pushed batches
 * (signature check + synced write), against raw `level` puts in the same run: single puts and
 * batches of 100, synced and not. Each measurement gets a fresh database in a temp folder; this
 * figure needs no mesh (replication is not part of it: see the replication lag figure).
 */
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { Level } from 'level'
import { encode, Outcome, type Encodable, type MeterRecord } from '../../../proto/codec.js'
import { silentLogger } from '../../../node/src/logger.js'
import { Intake } from '../../../node/src/metering/replication/intake.js'
import { BundleVerifier } from '../../../node/src/metering/records/signing.js'
import { MeterStore } from '../../../node/src/metering/ledger/store.js'
import { decode } from '../../../proto/codec.js'
import { newNodeKey, openLocalMeter, syntheticBatches } from '../meter-local.js'
import { BatchSigner } from '../../../node/src/metering/records/signing.js'
import { note, step } from '../progress.js'
import { compact, summarize, type LatencySummary } from '../stats.js'
import { row, type Figure } from '../types.js'

interface Rate { records: number, ms: number, perSecond: number, latency?: LatencySummary }

const record = (): Encodable<MeterRecord> => ({
  invocationId: randomUUID(),
  function: 'bench-echo',
  version: 1,
  nodeId: '12D3KooWBenchBenchBenchBenchBenchBenchBenchBenchBench',
  startMs: Date.now(),
  durationMs: 0.25,
  billedMs: 1,
  memoryMb: 128,
  outcome: Outcome.OUTCOME_OK,
  errorCode: '',
  cold: false,
  attempt: 1,
  trigger: 'sync'
})
const keyOf = (r: Encodable<MeterRecord>): string => `r!${String(r.startMs).padStart(15, '0')}!${String(r.invocationId)}`

export const meterWrites: Figure = {
  id: 'meter-writes',
  title: 'Meter writes: Meter.record and replica intake (signed, synced, group commit) vs raw level',
  run: async (ctx) => {
    const q = ctx.options.quick
    const dir = await ctx.cleanup.tempDir('level')
    let k = 0
    const fresh = (): string => join(dir, `db-${k++}`)
    const valueBytes = encode('MeterRecord', record()).byteLength

    const rawSingle = async (sync: boolean, count: number): Promise<Rate> => await withLevel(fresh(), async (db) => {
      const lat: number[] = []
      const t0 = performance.now()
      for (let i = 0; i < count; i++) {
        if (i % 100 === 0) ctx.signal.throwIfAborted()
        const r = record()
        const s = performance.now()
        await db.put(keyOf(r), encode('MeterRecord', r), { sync })
        lat.push(performance.now() - s)
      }
      return rate(count, performance.now() - t0, summarize(lat))
    })
    const rawBatches = async (sync: boolean, batches: number): Promise<Rate> => await withLevel(fresh(), async (db) => {
      const t0 = performance.now()
      for (let b = 0; b < batches; b++) {
        ctx.signal.throwIfAborted()
        const ops = Array.from({ length: 100 }, () => { const r = record(); return { type: 'put' as const, key: keyOf(r), value: encode('MeterRecord', r) } })
        await db.batch(ops, { sync })
      }
      return rate(batches * 100, performance.now() - t0)
    })
    const ledger = async (concurrency: number, count: number): Promise<Rate> => {
      const l = await openLocalMeter(fresh())
      try {
        const lat: number[] = []
        let next = 0
        const t0 = performance.now()
        await Promise.all(Array.from({ length: concurrency }, async () => {
          while (next++ < count) {
            ctx.signal.throwIfAborted()
            const s = performance.now()
            await l.meter.record({ ...record(), nodeId: l.nodeId })
            lat.push(performance.now() - s)
          }
        }))
        return rate(count, performance.now() - t0, summarize(lat))
      } finally {
        await l.close()
      }
    }

    const intake = async (batches: number): Promise<Rate> => {
      const store = await MeterStore.open({ dir: fresh(), logger: silentLogger() })
      try {
        const { key, nodeId } = await newNodeKey()
        // Signed before the clock starts: this measures the receiving side only.
        const all = [...syntheticBatches({ signer: new BatchSigner(key, nodeId), nodeId }, batches * 100, 100, Date.now() - 3_600_000, 3_600_000)]
          .map(b => decode('MeterBundle', encode('MeterBundle', b.bundle as never)))
        const taker = new Intake(store, new BundleVerifier(), silentLogger())
        const t0 = performance.now()
        for (const b of all) {
          ctx.signal.throwIfAborted()
          await taker.take('bench', b)
        }
        return rate(batches * 100, performance.now() - t0)
      } finally {
        await store.close()
      }
    }

    const n = (quick: number, full: number): number => q ? quick : full
    const measure = async (what: string, fn: () => Promise<Rate>): Promise<Rate> => {
      const rate = await fn()
      note(`  ${what}: ${Math.round(rate.perSecond)} rec/s`)
      return rate
    }
    const r = await step('meter writes: raw level, Meter.record and replica intake in temp folders', async () => ({
      levelPutSynced: await measure('level put, synced', async () => await rawSingle(true, n(1000, 3000))),
      levelPutUnsynced: await measure('level put, unsynced', async () => await rawSingle(false, n(5000, 20_000))),
      levelBatch100Synced: await measure('level batches of 100, synced', async () => await rawBatches(true, n(100, 300))),
      levelBatch100Unsynced: await measure('level batches of 100, unsynced', async () => await rawBatches(false, n(100, 300))),
      ledger1: await measure('Meter.record, 1 at a time', async () => await ledger(1, n(1000, 3000))),
      ledger8: await measure('Meter.record, 8 concurrent', async () => await ledger(8, n(5000, 15_000))),
      ledger64: await measure('Meter.record, 64 concurrent', async () => await ledger(64, n(10_000, 40_000))),
      ledger256: await measure('Meter.record, 256 concurrent', async () => await ledger(256, n(10_000, 40_000))),
      intake100: await measure('replica intake, batches of 100', async () => await intake(n(100, 300)))
    }))

    const rows = [
      row('meter record, 64 concurrent', 'rec/s', r.ledger64.perSecond, 'level batch of 100, synced', r.levelBatch100Synced.perSecond, 'higher'),
      row('meter record, 256 concurrent', 'rec/s', r.ledger256.perSecond, 'level batch of 100, synced', r.levelBatch100Synced.perSecond, 'higher'),
      row('meter record, 8 concurrent', 'rec/s', r.ledger8.perSecond, 'level put, synced, 1 at a time', r.levelPutSynced.perSecond, 'higher'),
      row('meter record, 1 at a time', 'rec/s', r.ledger1.perSecond, 'level put, synced, 1 at a time', r.levelPutSynced.perSecond, 'higher'),
      row('meter record, 1 at a time p50', 'ms', r.ledger1.latency?.p50 ?? NaN, 'level put, synced p50', r.levelPutSynced.latency?.p50 ?? NaN, 'lower'),
      row('replica intake, batches of 100', 'rec/s', r.intake100.perSecond, 'level batch of 100, synced', r.levelBatch100Synced.perSecond, 'higher')
    ]
    const details: Record<string, unknown> = { valueBytes }
    for (const [name, v] of Object.entries(r)) details[name] = { ...v, perSecond: Math.round(v.perSecond), ...(v.latency != null ? { latency: compact(v.latency) } : {}) }
    return {
      rows,
      details,
      notes: [
        `Records are MeterRecords of ${valueBytes} bytes. Meter.record encodes, checks and signs each group commit (one Ed25519 signature per batch), then writes per record the signed record, and per batch its proof, the minute and hour digests and the minute, hour and day rollups it moves, in one synced LevelDB batch after one read; the raw level figures write 1 key per record.`,
        'Replica intake: batches of 100 records signed beforehand, as a peer receives them: decode, one signature check per batch, one hash per record, the same write plan and one synced batch.',
        'level unsynced: single puts ' + Math.round(r.levelPutUnsynced.perSecond) + '/s, batches of 100 ' + Math.round(r.levelBatch100Unsynced.perSecond) + ' rec/s (the ceiling without fsync).',
        'Concurrent records: N callers in one process, each recording again as soon as its record resolves (an agent has at most its slot count in flight).'
      ]
    }
  }
}

function rate (records: number, ms: number, latency?: LatencySummary): Rate {
  return { records, ms: Math.round(ms), perSecond: records / (ms / 1000), ...(latency != null ? { latency } : {}) }
}

async function withLevel<T> (dir: string, fn: (db: Level<string, Uint8Array>) => Promise<T>): Promise<T> {
  const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' })
  await db.open()
  try {
    return await fn(db)
  } finally {
    await db.close()
  }
}
