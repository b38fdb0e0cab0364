#!/usr/bin/env node
/**
 * Owner-based placement of the meter ledger (issue 16), measured in-process. Needs `npm run build`.
 *
 *   node scripts/ledger-placement.mjs disk [--n 100000] [--nodes 7] [--replicas 2]
 *     N real ledgers (LevelDB, signed records, ~--n records of N nodes over the last 48 hours):
 *     bytes on disk per node when every node holds every record (today's whole-mesh ledger) and
 *     when each holds only the ranges it owns (its own and those rendezvous hashing gives it).
 *
 *   node scripts/ledger-placement.mjs merge [--nodes 1000] [--replicas 2] [--hours 24] [--functions 5]
 *     The mesh-wide usage query at N simulated nodes: each node's leg (its owned (node, hour)
 *     ranges with digests and per-function rows) encoded as the UsageReply it sends, then the
 *     answering agent's work timed: decode every leg and merge (each range once).
 *
 *   node scripts/ledger-placement.mjs ack [--nodes 3] [--calls 300] [--rounds 2]
 *     Warm invoke latency on a real mesh (nats-server + agents, --sandbox none) with
 *     --ack-replicas 1 and 2, alternating, --rounds times each: what the third copy before the
 *     answer costs. Sequential calls of a trivial function after 30 warm-up calls.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { decode, encode } from '../dist/proto/codec.js'
import { MemberView } from '../dist/node/src/metering/replication/placement.js'
import { mergeParts } from '../dist/node/src/metering/queries/parts.js'
import { MeterStore } from '../dist/node/src/metering/ledger/store.js'
import { BatchSigner } from '../dist/node/src/metering/records/signing.js'
import { HOUR_MS, floorTo } from '../dist/node/src/metering/records/keys.js'

const arg = (name, dflt) => { const i = process.argv.indexOf(`--${name}`); return i >= 0 ? Number(process.argv[i + 1]) : dflt }
const mode = process.argv[2] ?? 'merge'
const quiet = { info () {}, warn () {}, error () {}, debug () {}, trace () {}, fatal () {}, child () { return quiet } }

function folderBytes (dir) {
  let n = 0
  for (const f of readdirSync(dir)) n += statSync(join(dir, f)).size
  return n
}

if (mode === 'ack') {
  const { startDevCluster } = await import('../dist/node/src/dev/cluster.js')
  const { connect } = await import('../dist/sdk/src/client.js')
  const nodes = arg('nodes', 3)
  const calls = arg('calls', 300)
  const rounds = arg('rounds', 2)
  const fn = new URL('../test/fixtures/functions/ok.js', import.meta.url).pathname
  const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor(xs.length * p))]
  const results = { 1: [], 2: [] }
  for (let round = 0; round < rounds; round++) {
    for (const ack of [1, 2]) {
      const cluster = await startDevCluster({ nodes, slots: 2, args: ['--sandbox', 'none', '--meter-replicas', '2', '--ack-replicas', String(ack)] })
      const mesh = await connect({ servers: cluster.natsUrls })
      try {
        for (let t0 = Date.now(); (await mesh.nodes({ timeoutMs: 2000 })).length < nodes;) {
          if (Date.now() - t0 > 60_000) throw new Error('the mesh did not form')
          await new Promise(resolve => setTimeout(resolve, 500))
        }
        await mesh.deploy({ name: 'ok', path: fn })
        for (let i = 0; i < 30; i++) await mesh.invoke('ok', { i })
        const ms = []
        for (let i = 0; i < calls; i++) {
          const t = performance.now()
          await mesh.invokeDetailed('ok', { i })
          ms.push(performance.now() - t)
        }
        ms.sort((a, b) => a - b)
        results[ack].push(pct(ms, 0.5))
        console.log(`round ${round + 1}, --ack-replicas ${ack}: ${calls} warm invokes on ${nodes} agents, p50 ${pct(ms, 0.5).toFixed(1)} ms, p90 ${pct(ms, 0.9).toFixed(1)} ms, p99 ${pct(ms, 0.99).toFixed(1)} ms`)
      } finally {
        await mesh.close().catch(() => {})
        await cluster.stop()
      }
    }
  }
  const med = xs => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  console.log(`median of the rounds' p50: --ack-replicas 1 ${med(results[1]).toFixed(1)} ms, --ack-replicas 2 ${med(results[2]).toFixed(1)} ms`)
} else if (mode === 'disk') {
  const total = arg('n', 100_000)
  const nodes = arg('nodes', 7)
  const replicas = arg('replicas', 2)
  const dir = mkdtempSync(join(tmpdir(), 'ledger-placement-'))
  try {
    const signers = []
    for (let i = 0; i < nodes; i++) {
      const key = await generateKeyPair('Ed25519')
      signers.push(new BatchSigner(key, peerIdFromPrivateKey(key).toString()))
    }
    const view = new MemberView(signers.map(s => s.nodeId), replicas)
    const open = async (name) => await MeterStore.open({ dir: join(dir, name), logger: quiet, fsyncWindowMs: 50 })
    const whole = await open('whole')
    const placed = await Promise.all(signers.map(async (_, i) => await open(`node-${i}`)))
    const now = Date.now()
    const from = now - 48 * HOUR_MS
    const t0 = performance.now()
    const BATCH = 500
    for (let k = 0; k < total; k += BATCH * nodes) {
      for (const [i, s] of signers.entries()) {
        const records = []
        for (let j = 0; j < BATCH && k + i * BATCH + j < total; j++) {
          const n = k + i * BATCH + j
          records.push({ invocationId: `inv-${n}-${randomBytes(4).toString('hex')}`, function: `fn-${n % 5}`, version: 1, nodeId: s.nodeId, startMs: from + Math.floor((n / total) * 48 * HOUR_MS), durationMs: 12.5, billedMs: 13, memoryMb: 128, outcome: 1, cold: false, attempt: 1, trigger: 'sync' })
        }
        if (records.length === 0) continue
        const { proof, verified } = s.sign(records.map(r => encode('MeterRecord', r)))
        const proofs = new Map([[proof.batchId, proof]])
        await whole.ingest(verified, proofs)
        // Each node stores the records of the ranges it owns.
        await Promise.all(placed.map(async (store, p) => {
          const mine = verified.filter(v => view.isOwner(signers[p].nodeId, v.record.nodeId, floorTo(v.record.startMs, HOUR_MS)))
          if (mine.length > 0) await store.ingest(mine, proofs)
        }))
      }
    }
    const counts = placed.map(s => s.tree.count)
    // Compacted, so every ledger is in LevelDB's (compressed) tables, not partly in its log.
    for (const s of [whole, ...placed]) await s.db.compactRange('\x00', '\xff')
    await whole.close()
    for (const s of placed) await s.close()
    const wholeBytes = folderBytes(join(dir, 'whole'))
    const bytes = placed.map((_, i) => folderBytes(join(dir, `node-${i}`)))
    const mean = bytes.reduce((a, b) => a + b, 0) / bytes.length
    const mb = (b) => (b / 1e6).toFixed(1)
    console.log(`${total} records of ${nodes} nodes over 48 h, R = ${replicas} (${((performance.now() - t0) / 1000).toFixed(1)} s)`)
    console.log(`whole-mesh ledger (every node): ${mb(wholeBytes)} MB per node = ${mb(wholeBytes * 1e6 / total)} MB per million records`)
    console.log(`placed: records per node ${counts.join(', ')}`)
    console.log(`placed: MB per node ${bytes.map(mb).join(', ')}; mean ${mb(mean)} MB = ${(mean / wholeBytes).toFixed(3)} of the whole (expected (R+1)/N = ${((replicas + 1) / nodes).toFixed(3)}); max ${(Math.max(...bytes) / wholeBytes).toFixed(3)}`)
    console.log(`per million invocations: ${mb(mean * 1e6 / total)} MB per node placed vs ${mb(wholeBytes * 1e6 / total)} MB whole`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
} else {
  const nodes = arg('nodes', 1000)
  const replicas = arg('replicas', 2)
  const hours = arg('hours', 24)
  const functions = arg('functions', 5)
  const members = Array.from({ length: nodes }, (_, i) => `12D3KooWsim${String(i).padStart(6, '0')}`)
  const view = new MemberView(members, replicas)
  const h0 = floorTo(Date.now(), HOUR_MS) - hours * HOUR_MS
  const legs = new Map(members.map(m => [m, []]))
  let t = performance.now()
  let ranges = 0
  let invocations = 0
  for (const origin of members) {
    for (let h = 0; h < hours; h++) {
      const hourMs = h0 + h * HOUR_MS
      const count = 50 + ((ranges * 7919) % 100)
      const rows = Array.from({ length: functions }, (_, f) => ({ bucketMs: hourMs, function: `fn-${f}`, invocations: Math.floor(count / functions) + (f < count % functions ? 1 : 0), errors: 0, coldStarts: 0, billedMs: count * 10, mbMs: count * 1280, bindingCalls: 0, bindingBytes: 0 }))
      invocations += count
      const part = { range: { nodeId: origin, fromMs: hourMs, toMs: hourMs + HOUR_MS, count, hash: randomBytes(32) }, rows }
      for (const o of view.owners(origin, hourMs)) legs.get(o).push(part)
      ranges++
    }
  }
  const wire = [...legs.values()].map(parts => encode('UsageReply', { parts, answered: ['x'] }))
  const setup = performance.now() - t
  const bytes = wire.map(b => b.byteLength)
  const times = []
  const decodes = []
  let merged
  const cpus = []
  for (let run = 0; run < 5; run++) {
    const c0 = process.cpuUsage()
    t = performance.now()
    const decoded = wire.map(b => decode('UsageReply', b).parts)
    decodes.push(performance.now() - t)
    merged = mergeParts(decoded)
    times.push(performance.now() - t)
    const c = process.cpuUsage(c0)
    cpus.push((c.user + c.system) / 1000)
  }
  cpus.sort((a, b) => a - b)
  decodes.sort((a, b) => a - b)
  const total = merged.functions.reduce((n, f) => n + f.invocations, 0)
  if (total !== invocations) throw new Error(`merged ${total} invocations, expected ${invocations}`)
  times.sort((a, b) => a - b)
  console.log(`${nodes} nodes, R = ${replicas}, ${hours} h window, ${functions} functions: ${ranges} ranges, ${ranges * (replicas + 1)} copies (setup ${(setup / 1000).toFixed(1)} s)`)
  console.log(`leg size: mean ${(bytes.reduce((a, b) => a + b, 0) / bytes.length / 1024).toFixed(1)} KiB, max ${(Math.max(...bytes) / 1024).toFixed(1)} KiB; all legs ${(bytes.reduce((a, b) => a + b, 0) / 1e6).toFixed(1)} MB`)
  console.log(`decode + merge of ${nodes} legs: median ${times[2].toFixed(0)} ms, min ${times[0].toFixed(0)} ms, max ${times[4].toFixed(0)} ms; totals ${total} invocations, each range once (decode alone: median ${decodes[2].toFixed(0)} ms); CPU time of decode + merge: median ${cpus[2].toFixed(0)} ms`)
}
