// Real agents under load, routing by gossiped load (least-loaded) and by probes (--routing probe),
// one after the other on the same machine: throughput, latency, the agents' CPU per invocation,
// load probes per second. What the probing design costs and saves on a real
// mesh (docs/SCALING.md), beside the simulator's model of it.
//
//   npm run build && node scripts/probe-load.mjs [--agents 6] [--slots 2] [--seconds 20] [--ms 20] [--out file]
import { readFileSync, writeFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { hostname, loadavg } from 'node:os'
import { join } from 'node:path'
import { startDevCluster } from '../dist/node/src/dev/cluster.js'
import { connect } from '../dist/sdk/src/client.js'

const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : dflt }
if (process.argv.includes('--help')) { process.stdout.write('usage: node scripts/probe-load.mjs [--agents 6] [--slots 2] [--seconds 20] [--ms 20] [--out file]\n'); process.exit(0) }
const AGENTS = Number(arg('--agents', 6))
const SLOTS = Number(arg('--slots', 2))
const SECONDS = Number(arg('--seconds', 20))
const MS = Number(arg('--ms', 20))
const OUT = arg('--out', `bench/results/${new Date().toISOString().slice(0, 10)}-${hostname()}-probe-load.json`)
// closed loop at about 80% of the slots: callers = 0.8 x slots (each holds one slot while it runs)
const CALLERS = Math.max(1, Math.round(0.8 * AGENTS * SLOTS))

const cpuUs = (pid) => { try { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) * 1e4 } catch { return 0 } }
const pct = (xs, q) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] }

const results = []
for (const routing of ['least-loaded', 'probe']) {
  const cluster = await startDevCluster({ nodes: AGENTS, slots: SLOTS, args: ['--routing', routing, '--sandbox', 'none'] })
  const mesh = await connect({ servers: cluster.natsUrls })
  try {
    for (const deadline = Date.now() + 30_000; (await mesh.nodes({ timeoutMs: 2000 })).length < AGENTS;) {
      if (Date.now() > deadline) throw new Error('agents did not find each other within 30 s')
      await new Promise(resolve => setTimeout(resolve, 200))
    }
    const dir = join(cluster.dir, 'fn')
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, 'index.mjs'), 'export const handler = async (e) => { await new Promise(r => setTimeout(r, e.ms)); return e.ms }\n')
    await mesh.deploy({ name: 'load', path: dir, timeoutMs: 10_000 })
    // counted on the same NATS: every load probe, and the agents' discovery traffic is not gossip
    let probes = 0
    const sub = mesh.nc.subscribe('fnmesh.probe.*', { callback: () => { probes++ } })
    const drive = async (seconds) => {
      const lat = []
      let errors = 0
      const end = Date.now() + seconds * 1000
      await Promise.all(Array.from({ length: CALLERS }, async () => {
        while (Date.now() < end) {
          const t = performance.now()
          try { await mesh.invoke('load', { ms: MS }, { timeoutMs: 10_000 }); lat.push(performance.now() - t) } catch { errors++ }
        }
      }))
      return { lat, errors }
    }
    await drive(3) // warm every sandbox
    const pids = cluster.agents.map(a => a.pid)
    const c0 = pids.map(cpuUs)
    const p0 = probes
    const t0 = performance.now()
    const { lat, errors } = await drive(SECONDS)
    const wall = (performance.now() - t0) / 1000
    const cpu = pids.map((p, i) => (cpuUs(p) - c0[i]) / 1e6 / wall)
    sub.unsubscribe()
    const row = {
      routing,
      agents: AGENTS,
      slots: SLOTS,
      callers: CALLERS,
      functionMs: MS,
      invocationsPerSec: +(lat.length / wall).toFixed(1),
      errors,
      p50Ms: +pct(lat, 0.5).toFixed(2),
      p99Ms: +pct(lat, 0.99).toFixed(2),
      corePerAgent: +(cpu.reduce((a, b) => a + b, 0) / AGENTS).toFixed(4),
      cpuUsPerInvocation: +(cpu.reduce((a, b) => a + b, 0) * 1e6 / (lat.length / wall)).toFixed(0),
      probesPerSec: +((probes - p0) / wall).toFixed(1),
      probesPerInvocation: +((probes - p0) / Math.max(1, lat.length)).toFixed(3),
      load1: +loadavg()[0].toFixed(2)
    }
    results.push(row)
    process.stdout.write(JSON.stringify(row) + '\n')
  } finally {
    await mesh.close().catch(() => {})
    await cluster.stop()
  }
}
writeFileSync(OUT, JSON.stringify({ kind: 'probe-load', date: new Date().toISOString(), command: `node scripts/probe-load.mjs ${process.argv.slice(2).join(' ')}`.trim(), host: hostname(), results }, null, 1) + '\n')
process.stdout.write(`written ${OUT}\n`)
