#!/usr/bin/env node
/**
 * The local write on the answer's path, one at a time: a node's Meter (sign, plan, one LevelDB
 * batch) with the store's writes as they are now (to the OS, fsync in the background), against
 * raw LevelDB batches of ~1 KB with and without `sync`. Needs `npm run build`.
 *   node scripts/ledger-write.mjs [--n 2000]
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { openLocalMeter } from '../dist/scripts/bench/meter-local.js'

const i = process.argv.indexOf('--n')
const n = i >= 0 ? Number(process.argv[i + 1]) : 2000
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))] }
const show = (name, xs) => console.log(`${name}: p50 ${pct(xs, 0.5).toFixed(3)} ms, p99 ${pct(xs, 0.99).toFixed(3)} ms (${xs.length})`)
const dir = mkdtempSync(join(tmpdir(), 'ledger-write-'))
try {
  const db = new ClassicLevel(join(dir, 'raw'), { valueEncoding: 'view' })
  await db.open()
  const value = new Uint8Array(1024).fill(7)
  for (const sync of [true, false]) {
    const xs = []
    for (let k = 0; k < n; k++) { const t0 = performance.now(); await db.batch([{ type: 'put', key: `${sync}-${k}`, value }], { sync }); xs.push(performance.now() - t0) }
    show(`raw LevelDB batch, sync: ${sync}`, xs)
  }
  await db.close()
  const m = await openLocalMeter(join(dir, 'meter'))
  const xs = []
  const now = Date.now()
  for (let k = 0; k < n; k++) {
    const t0 = performance.now()
    await m.meter.record({ invocationId: `inv-${k}`, function: 'f', version: 1, nodeId: m.nodeId, startMs: now, durationMs: 1.5, billedMs: 2, memoryMb: 128, outcome: 1, cold: false, attempt: 1, trigger: 'sync' })
    xs.push(performance.now() - t0)
  }
  show(`Meter.record (sign + plan + write${m.store.fsyncWindowMs != null ? `, fsync within ${m.store.fsyncWindowMs} ms in the background` : ', synced'})`, xs)
  if (m.store.syncStats != null) console.log(`background fsyncs: ${m.store.syncStats.syncs}, longest write-to-fsync ${m.store.syncStats.maxLagMs.toFixed(1)} ms`)
  await m.close()
} finally {
  rmSync(dir, { recursive: true, force: true })
}
