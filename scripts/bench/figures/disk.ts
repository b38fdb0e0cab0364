/**
 * Figure: disk use of the ledger per million invocations, measured by writing records the way a
 * node stores them (3 nodes' records, batches of 8 under one signature, spread over a day), then
 * compacting LevelDB and counting the bytes of the folder; then the same ledger after the
 * retention passed (raw records dropped, rollups, digests and seals kept). Baseline, same run:
 * the bare MeterRecords in a raw LevelDB, one key each.
 */
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { Level } from 'level'
import { silentLogger } from '../../../node/src/logger.js'
import { BatchSigner } from '../../../node/src/metering/records/signing.js'
import { MeterStore } from '../../../node/src/metering/ledger/store.js'
import { newNodeKey, syntheticBatches } from '../meter-local.js'
import { note, step, ticker } from '../progress.js'
import { row, type Figure } from '../types.js'

async function folderBytes (dir: string): Promise<number> {
  let n = 0
  for (const f of await readdir(dir)) n += (await stat(join(dir, f))).size
  return n
}

/** LevelDB's own compaction, so the size does not depend on when it last ran */
async function settle (db: Level<string, Uint8Array>): Promise<void> {
  await (db as unknown as { compactRange: (a: string, b: string) => Promise<void> }).compactRange('\x00', '\xff')
}

export const meterDisk: Figure = {
  id: 'meter-disk',
  title: 'Meter ledger disk use per million invocations',
  run: async (ctx) => {
    const total = ctx.options.quick ? 100_000 : 1_000_000
    const dir = await ctx.cleanup.tempDir('disk')
    const nodes = await Promise.all([1, 2, 3].map(async () => { const k = await newNodeKey(); return { signer: new BatchSigner(k.key, k.nodeId), nodeId: k.nodeId } }))
    const day = 86_400_000
    const from = Date.now() - 2 * day
    let now = Date.now()
    const store = await MeterStore.open({ dir: join(dir, 'ledger'), logger: silentLogger(), now: () => now })
    const rawDb = new Level<string, Uint8Array>(join(dir, 'raw'), { keyEncoding: 'utf8', valueEncoding: 'view' })
    await rawDb.open()
    try {
      await step(`writing ${total.toLocaleString('en-US')} records to a ledger and to a raw LevelDB`, async () => {
        const tick = ticker('records', total)
        let done = 0
        const gens = nodes.map(n => syntheticBatches(n, Math.ceil(total / 3), 8, from, day))
        for (;;) {
          ctx.signal.throwIfAborted()
          const items = []
          const proofs = new Map()
          for (const g of gens) {
            for (let k = 0; k < 40; k++) {
              const b = g.next()
              if (b.done === true) break
              items.push(...b.value.items)
              proofs.set(b.value.proof.batchId, b.value.proof)
            }
          }
          if (items.length === 0) break
          await store.ingest(items, proofs)
          await rawDb.batch(items.map(v => ({ type: 'put' as const, key: v.record.invocationId, value: v.bytes })))
          done += items.length
          tick(done)
        }
      })
      const count = store.tree.count
      const ledgerBytes = await step('compacting LevelDB and measuring', async () => { await settle(store.db); await settle(rawDb); return await folderBytes(join(dir, 'ledger')) })
      const rawBytes = await folderBytes(join(dir, 'raw'))
      // A month later: the retention has passed for all of it.
      now = Date.now() + 32 * day
      const dropped = await step('compacting past the retention', async () => await store.compact())
      await settle(store.db)
      const afterBytes = await folderBytes(join(dir, 'ledger'))
      const perMillion = (bytes: number): number => bytes / count * 1_000_000 / 1e6
      note(`  ledger: ${(ledgerBytes / count).toFixed(0)} B/record (${perMillion(ledgerBytes).toFixed(0)} MB per million); after the retention: ${(afterBytes / 1e6).toFixed(1)} MB in all; raw records alone: ${(rawBytes / count).toFixed(0)} B/record`)
      return {
        rows: [
          row('ledger per million records', 'MB', perMillion(ledgerBytes), 'bare records in LevelDB', perMillion(rawBytes), 'lower'),
          row('  after the retention (rollups only)', 'MB', perMillion(afterBytes), 'the ledger before', perMillion(ledgerBytes), 'lower')
        ],
        details: { records: count, ledgerBytes, rawBytes, afterRetentionBytes: afterBytes, droppedByCompaction: dropped, bytesPerRecord: ledgerBytes / count, rawBytesPerRecord: rawBytes / count, batchSize: 8, nodes: 3, functions: 4, spanHours: 24 },
        notes: [
          `${count} records of 3 nodes and 4 functions over 24 hours, signed in batches of 8, written as a node stores them: each record (its exact signed bytes and its batch id), per batch its proof (32 bytes of leaf per record plus the signature), per minute and hour the digests, per minute, hour and day and (function, node) the rollups. LevelDB compresses blocks with Snappy and was compacted before measuring.`,
          'After the retention only rollups, digests and seals remain: their size grows with (nodes x functions x minutes), not with invocations. Rollups of the minute level are kept forever (an active function on a node costs about one row a minute).',
          'Baseline: the same encoded MeterRecords, one key each (the invocation id), in a raw LevelDB: what any durable per-invocation record costs.'
        ]
      }
    } finally {
      await rawDb.close()
      await store.close()
    }
  }
}
