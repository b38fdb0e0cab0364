// What one load probe costs over NATS (the probing design of docs/SCALING.md: a router asks an
// executor for its running and queued counts before it dispatches): CPU of the asking process,
// of the answering process and of nats-server, and the bytes on the wire, per probe. A probe is
// a request of 40 B to a per-node subject and an answer of 24 B, the sizes of the fields they
// would carry. Two runs: closed loop (8 in flight) and paced at 1,500 probes a second in bursts
// of 15 (about what a node of the simulated mesh sends at 95% load).
//
//   npm run build && node scripts/probe-cost.mjs [--out bench/results/<date>-<host>-probe-cost.json]
import { fork } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { connect } from '@nats-io/transport-node'
import { startNatsServer } from '../dist/node/src/dev/nats-server.js'
import { freePort } from '../dist/node/src/dev/nats-cluster.js'

const SUBJECT = 'fnmesh.probe.12D3KooWAJaEmhwduQsyh5Hj9tEmEYCWM5FfAC3rLjQH1qr4hLjt'

if (process.argv[2] === '--responder') {
  const nc = await connect({ servers: process.argv[3] })
  const answer = new Uint8Array(24)
  nc.subscribe(SUBJECT, { callback: (_e, m) => { m.respond(answer) } })
  await nc.flush()
  process.send('ready')
  process.on('message', (x) => {
    if (x === 'cpu') { const u = process.cpuUsage(); process.send(u.user + u.system) }
    if (x === 'stop') void nc.close().then(() => process.exit(0))
  })
} else {
  if (process.argv.includes('--help')) { process.stdout.write('usage: node scripts/probe-cost.mjs [--out file]\n'); process.exit(0) }
  const outAt = process.argv.indexOf('--out')
  const out = outAt > 0 ? process.argv[outAt + 1] : `bench/results/${new Date().toISOString().slice(0, 10)}-${hostname()}-probe-cost.json`
  const monitor = await freePort()
  const s = await startNatsServer({ extraConfig: `http: "127.0.0.1:${monitor}"` })
  const child = fork(new URL(import.meta.url).pathname, ['--responder', s.url])
  await new Promise((resolve) => child.once('message', resolve))
  const nc = await connect({ servers: s.url })
  const req = new Uint8Array(40)
  const serverCpuUs = () => { const f = readFileSync(`/proc/${s.pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) * 1e6 / 100 }
  const varz = async () => await (await fetch(`http://127.0.0.1:${monitor}/varz`)).json()
  const childCpuUs = async () => await new Promise((resolve) => { child.once('message', resolve); child.send('cpu') })
  const closed = async (n) => { let i = 0; await Promise.all(Array.from({ length: 8 }, async () => { while (i++ < n) await nc.request(SUBJECT, req, { timeout: 5000 }) })) }
  const paced = async (n) => {
    for (let sent = 0; sent < n; sent += 15) {
      await Promise.all(Array.from({ length: 15 }, async () => await nc.request(SUBJECT, req, { timeout: 5000 })))
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }
  await closed(5000)
  const runs = []
  for (const [mode, n, fn] of [['closed loop, 8 in flight', 40_000, closed], ['paced, bursts of 15 every 10 ms', 15_000, paced]]) {
    const c0 = process.cpuUsage(); const r0 = await childCpuUs(); const s0 = serverCpuUs(); const v0 = await varz(); const t0 = performance.now()
    await fn(n)
    const wall = performance.now() - t0
    const c1 = process.cpuUsage(c0); const r1 = await childCpuUs(); const s1 = serverCpuUs(); const v1 = await varz()
    const row = {
      mode,
      probes: n,
      probesPerSec: Math.round(n / wall * 1000),
      askerUsPerProbe: +((c1.user + c1.system) / n).toFixed(1),
      answererUsPerProbe: +((r1 - r0) / n).toFixed(1),
      natsServerUsPerProbe: +((s1 - s0) / n).toFixed(1),
      // bytes the clients sent to the server (request + answer) and received from it, per probe
      clientBytesOutPerProbe: +((v1.in_bytes - v0.in_bytes) / n).toFixed(1),
      clientBytesInPerProbe: +((v1.out_bytes - v0.out_bytes) / n).toFixed(1)
    }
    runs.push(row)
    process.stdout.write(JSON.stringify(row) + '\n')
  }
  child.send('stop')
  await nc.close()
  await s.stop()
  // Bytes on the wire per probe, from the NATS protocol lines (varz counts payloads only): the
  // request's PUB and its MSG delivery, the answer's PUB and its MSG delivery, with a request
  // inbox of nats.js's shape and 2-digit subscription ids.
  const reply = '_INBOX.' + 'X'.repeat(22) + '.' + 'Y'.repeat(22)
  const line = (...parts) => Buffer.byteLength(parts.join(' ') + '\r\n')
  const wire = {
    askerOut: line('PUB', SUBJECT, reply, '40') + 40 + 2,
    answererIn: line('MSG', SUBJECT, '12', reply, '40') + 40 + 2,
    answererOut: line('PUB', reply, '24') + 24 + 2,
    askerIn: line('MSG', reply, '12', '24') + 24 + 2
  }
  const wireBytesPerProbe = wire.askerOut + wire.answererIn + wire.answererOut + wire.askerIn
  process.stdout.write(`wire bytes per probe (both clients, in + out): ${wireBytesPerProbe}\n`)
  const doc = { kind: 'probe-cost', wire, wireBytesPerProbe, date: new Date().toISOString(), command: 'node scripts/probe-cost.mjs', host: hostname(), node: process.version, subject: SUBJECT, requestBytes: 40, answerBytes: 24, runs }
  writeFileSync(out, JSON.stringify(doc, null, 1) + '\n')
  process.stdout.write(`written ${out}\n`)
}
