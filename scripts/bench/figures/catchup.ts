/**
 * Figure: anti-entropy catch-up. One node holds 100,000 records of 3 nodes over 3 hours (as a
 * mesh under load would have pushed them: batches of 4, one signature each); another node, back
 * from being away the whole time, holds none. It runs anti-entropy sessions with the first over
 * real libp2p streams (TCP, Noise, yamux, in this process) until nothing differs. Then: a session
 * when already in sync, and one when 1% is missing. Baseline, same run: writing the same number
 * of records to a raw LevelDB in synced batches of 100 (the least a catch-up has to write).
 */
import { join } from 'node:path'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { Libp2p } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { Level } from 'level'
import { PeerTable } from '../../../node/src/gossip/peer-table.js'
import { silentLogger } from '../../../node/src/logger.js'
import { AntiEntropy } from '../../../node/src/metering/replication/antientropy.js'
import { Intake } from '../../../node/src/metering/replication/intake.js'
import { BatchSigner, BundleVerifier } from '../../../node/src/metering/records/signing.js'
import { MeterStore } from '../../../node/src/metering/ledger/store.js'
import { newNodeKey, syntheticBatches, type SyntheticBatch } from '../meter-local.js'
import { note, step } from '../progress.js'
import { row, type Figure } from '../types.js'

interface Side { host: Libp2p, store: MeterStore, ae: AntiEntropy }

async function side (dir: string): Promise<Side> {
  const host = await createLibp2p({ addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] }, transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()] }) as unknown as Libp2p
  const store = await MeterStore.open({ dir, logger: silentLogger() })
  const intake = new Intake(store, new BundleVerifier(), silentLogger())
  const ae = new AntiEntropy({ libp2p: host, table: new PeerTable(), store, intake, logger: silentLogger() }, { intervalMs: 3_600_000 })
  return { host, store, ae }
}

export const meterCatchup: Figure = {
  id: 'meter-catchup',
  title: 'Anti-entropy catch-up of a node that missed 100,000 records',
  run: async (ctx) => {
    const total = ctx.options.quick ? 30_000 : 100_000
    const dir = await ctx.cleanup.tempDir('catchup')
    const nodes = await Promise.all([1, 2, 3].map(async () => { const k = await newNodeKey(); return { signer: new BatchSigner(k.key, k.nodeId), nodeId: k.nodeId } }))
    const span = 3 * 3_600_000
    const from = Date.now() - span - 600_000
    const batches: SyntheticBatch[] = await step(`signing ${total} records of 3 nodes in batches of 4`, async () =>
      nodes.flatMap(n => [...syntheticBatches(n, Math.ceil(total / 3), 4, from, span)]))
    const records = batches.reduce((s, b) => s + b.records, 0)
    const full = await side(join(dir, 'full'))
    const empty = await side(join(dir, 'empty'))
    const partial = await side(join(dir, 'partial'))
    ctx.cleanup.defer('stop the catch-up hosts', async () => {
      for (const s of [full, empty, partial]) { await s.ae.stop(); await s.host.stop(); await s.store.close() }
    })
    await full.ae.start()
    const fill = async (s: Side, list: SyntheticBatch[]): Promise<void> => {
      for (let i = 0; i < list.length; i += 250) {
        ctx.signal.throwIfAborted()
        const part = list.slice(i, i + 250)
        const items = []
        const proofs = new Map()
        for (const b of part) {
          items.push(...b.items)
          proofs.set(b.proof.batchId, b.proof)
        }
        await s.store.ingest(items, proofs)
      }
    }
    await step(`storing them on the node that stayed`, async () => { await fill(full, batches) })
    // The partial node missed every hundredth batch: 1% of the records.
    await step('storing 99% of them on a third node', async () => { await fill(partial, batches.filter((_, i) => i % 100 !== 0)) })
    for (const s of [empty, partial]) await s.host.peerStore.merge(full.host.peerId, { multiaddrs: full.host.getMultiaddrs().map(m => m.decapsulateCode(421)) })
    const peer = full.host.peerId.toString()

    const catchUp = async (s: Side): Promise<{ ms: number, pulled: number, sessions: number, rounds: number }> => {
      const t0 = performance.now()
      let pulled = 0
      let sessions = 0
      let rounds = 0
      for (;;) {
        ctx.signal.throwIfAborted()
        const r = await s.ae.session(peer)
        pulled += r.pulled
        rounds += r.rounds
        sessions++
        if (r.complete) break
      }
      return { ms: performance.now() - t0, pulled, sessions, rounds }
    }
    const away = await step(`catch-up of ${records} records from nothing`, async () => await catchUp(empty))
    if (empty.store.tree.count !== records) throw new Error(`catch-up ended with ${empty.store.tree.count} of ${records} records`)
    const again = await step('a session when already in sync', async () => await catchUp(empty))
    const onePercent = await step('catch-up of the 1% a node missed', async () => await catchUp(partial))
    if (partial.store.tree.count !== records) throw new Error(`1% catch-up ended with ${partial.store.tree.count} of ${records} records`)

    const raw = await step(`raw level: ${records} records in synced batches of 100`, async () => {
      const db = new Level<string, Uint8Array>(join(dir, 'raw'), { keyEncoding: 'utf8', valueEncoding: 'view' })
      await db.open()
      try {
        const values = batches.flatMap(b => b.bundle.records.map(r => r.record))
        const t0 = performance.now()
        for (let i = 0; i < values.length; i += 100) {
          await db.batch(values.slice(i, i + 100).map((value, j) => ({ type: 'put' as const, key: `r!${i + j}`, value })), { sync: true })
        }
        return performance.now() - t0
      } finally {
        await db.close()
      }
    })
    note(`  catch-up: ${records} records in ${(away.ms / 1000).toFixed(1)} s (${Math.round(records / (away.ms / 1000))} rec/s), ${away.rounds} round trips; in sync: ${again.ms.toFixed(1)} ms; 1%: ${onePercent.ms.toFixed(0)} ms`)
    return {
      rows: [
        row(`catch-up of ${records.toLocaleString('en-US')} records`, 'ms', away.ms, `raw level write of them, batches of 100 synced`, raw, 'lower'),
        row('  catch-up rate', 'rec/s', records / (away.ms / 1000), 'raw level, batches of 100 synced', records / (raw / 1000), 'higher'),
        row(`catch-up of 1% (${onePercent.pulled.toLocaleString('en-US')} records)`, 'ms', onePercent.ms, 'the full catch-up', away.ms, 'lower'),
        row('session when in sync', 'ms', again.ms, 'the full catch-up', away.ms, 'lower')
      ],
      details: { records, batchSize: 4, spanHours: 3, fromNothing: away, inSync: again, onePercent, rawLevelMs: Math.round(raw) },
      notes: [
        `${records} records of 3 nodes over 3 hours, signed in batches of 4 (one Ed25519 signature per batch, as group commits under load produce), held by one node; the other starts empty. Both run in this process over real libp2p streams on loopback.`,
        'A session compares per-node digests, then day, hour and minute digests where they differ, then fetches whole minutes the catching-up node lacks (2,000 records a page) or compares keys where both hold some; every record fetched is verified (one signature check per batch, on the thread pool) and written synced.',
        `In sync, a session is one round trip of per-node digests. With 1% missing (one batch in a hundred, spread over every minute), it compares the keys of each minute and fetches only the missing records: ${onePercent.pulled} of them in ${onePercent.rounds} round trips.`
      ]
    }
  }
}
