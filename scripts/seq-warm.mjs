#!/usr/bin/env node
/**
 * Sequential warm sync invocations on a fresh mesh of N agents (default 2), 1 KB echo, against
 * raw NATS request-reply on the same server, in alternating blocks. Issue 13's figure for the
 * cost of the metering guarantee on the answer's path. Needs `npm run build`.
 *
 *   node scripts/seq-warm.mjs [--agents 2] [--calls 3000] [--block 250] [-- extra agent flags...]
 *   e.g. node scripts/seq-warm.mjs -- --ack-replicas 0
 */
import { writeFileSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startDevCluster } from '../dist/node/src/dev/cluster.js'
import { connect } from '../dist/sdk/src/client.js'

const argv = process.argv.slice(2)
const dash = argv.indexOf('--')
const extra = dash >= 0 ? argv.slice(dash + 1) : []
const own = dash >= 0 ? argv.slice(0, dash) : argv
const opt = (name, dflt) => { const i = own.indexOf(name); return i >= 0 ? Number(own[i + 1]) : dflt }
const agents = opt('--agents', 2)
const calls = opt('--calls', 3000)
const block = opt('--block', 250)

const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))] }
const cluster = await startDevCluster({ nodes: agents, args: extra, env: { FNMESH_LOG_LEVEL: 'warn' } })
const mesh = await connect({ servers: cluster.nats.url })
const raw = await connect({ servers: cluster.nats.url })
try {
  const dir = mkdtempSync(join(tmpdir(), 'seq-warm-'))
  writeFileSync(join(dir, 'index.mjs'), 'export const handler = async (event) => event\n')
  await mesh.deploy({ name: 'seq-echo', path: dir, timeoutMs: 10_000 })
  const nc = raw.nc
  const event = { pad: 'x'.repeat(1000) }
  const bytes = new TextEncoder().encode(JSON.stringify(event))
  const sub = nc.subscribe('seqwarm.raw', { callback: (_e, m) => m.respond(m.data) })
  const meshCall = async () => { await mesh.invoke('seq-echo', event, { timeoutMs: 10_000 }) }
  const rawCall = async () => { await nc.request('seqwarm.raw', bytes, { timeout: 10_000 }) }
  for (let i = 0; i < 500; i++) { await meshCall(); await rawCall() }
  const t = { mesh: [], raw: [] }
  for (let done = 0; done < calls; done += block) {
    for (const [k, f] of [['mesh', meshCall], ['raw', rawCall]]) {
      for (let i = 0; i < block; i++) { const t0 = performance.now(); await f(); t[k].push(performance.now() - t0) }
    }
  }
  const f = (k) => `p50 ${pct(t[k], 0.5).toFixed(2)} ms, p99 ${pct(t[k], 0.99).toFixed(2)} ms`
  console.log(`${agents} agents ${extra.join(' ') || '(defaults)'}: fnmesh ${f('mesh')}; raw NATS ${f('raw')} (${t.mesh.length} calls each)`)
  sub.unsubscribe()
} finally {
  await mesh.close().catch(() => {})
  await raw.close().catch(() => {})
  await cluster.stop()
}
