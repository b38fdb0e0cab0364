/**
 * Issue 5 on a real mesh of 3 agents (R = 2): the same totals from every agent after a burst,
 * rollups equal to a recount of the exported raw records, forged and garbage meter data refused
 * with a logged reason while the agents keep serving, and the usage CLI's buckets and prices.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AgentProcess } from '../../node/src/dev/cluster.js'
import { PUSH_PROTOCOL, SYNC_PROTOCOL } from '../../node/src/metering/replication/wire.js'
import { decode, encode } from '../../proto/codec.js'
import type { UsageReport } from '../../sdk/src/client.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { countBy, startLoad } from '../helpers/load.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { bundleOf, rec, testNode } from '../helpers/meter.js'
import { exchange, testHost } from '../helpers/p2p.js'
import { waitFor, within } from '../helpers/wait.js'

interface Row { invocations: number, errors: number, coldStarts: number, billedMs: number, gbSeconds: number }

async function logLines (t: TestMesh, agent: AgentProcess): Promise<Array<Record<string, any>>> {
  const text = await readFile(join(t.cluster.dir, `${agent.name}.log`), 'utf8')
  return text.split('\n').filter(l => l.startsWith('{')).map(l => { try { return JSON.parse(l) } catch { return {} } })
}

async function cliJson<T> (t: TestMesh, args: string[]): Promise<T> {
  const res = await runCli([...args, '--nats', t.url], { timeoutMs: 20_000 })
  expect(res.stderr, `fnmesh ${args.join(' ')}`).toBe('')
  expect(res.code).toBe(0)
  return JSON.parse(res.stdout) as T
}

/** What must be equal on every agent: totals per function and per node */
const comparable = (u: UsageReport): unknown => ({ functions: u.functions, nodes: u.nodes.map(n => ({ ...n, name: '' })), totals: u.totals })

describe('metering on a mesh of 3 agents', () => {
  let t: TestMesh
  const made = { ok: 0, fails: 0 }

  beforeAll(async () => {
    t = await startMesh({ nodes: 3, slots: 4, args: ['--sync-interval', '1s'] })
    await t.mesh.deploy({ name: 'ok', path: fixture('ok.js'), memoryMb: 256 })
    await t.mesh.deploy({ name: 'fails', path: fixture('throw.js') })
  })

  afterAll(async () => {
    await t?.stop()
  })

  it('gives the same totals from every agent after a burst, equal to the invocations made', async () => {
    const load = startLoad(t.mesh, 'ok', { concurrency: 8, total: 240, event: i => ({ i }) })
    await within(load.done, 45_000, 'the burst')
    for (let i = 0; i < 3; i++) {
      const errors = await Promise.all(Array.from({ length: 4 }, async () => await t.mesh.invoke('fails', {}).then(() => 'ok', (e) => e.code)))
      expect(errors).toEqual(Array(4).fill('FNMESH_ERR_FUNCTION_ERROR'))
    }
    expect(load.records.filter(r => !r.ok).map(r => `${r.code}: ${r.message}`)).toEqual([])
    made.ok += 240
    made.fails += 12
    const ran = countBy(load.records, r => r.nodeId)
    expect(Object.keys(ran)).toHaveLength(3)
    const ids = t.cluster.agents.map(a => a.nodeId)
    let reports: UsageReport[] = []
    await waitFor(async () => {
      reports = await Promise.all(ids.map(async id => await t.mesh.usage({ via: id, timeoutMs: 5000 })))
      return reports.every(r => r.missing.length === 0 && r.totals.invocations === 252 && JSON.stringify(comparable(r)) === JSON.stringify(comparable(reports[0])))
    }, { timeoutMs: 15_000, message: 'every agent reporting the same 252 invocations' })
    const ok = reports[0].functions.find(f => f.name === 'ok')
    const fails = reports[0].functions.find(f => f.name === 'fails')
    console.log('usage of "ok" on every agent:', { invocations: ok?.invocations, billedMs: ok?.billedMs, gbSeconds: ok?.gbSeconds, byNode: ok?.byNode })
    expect(ok).toMatchObject({ invocations: 240, errors: 0 })
    expect(ok?.byNode).toEqual(ran)
    expect(fails).toMatchObject({ invocations: 12, errors: 12 })
    // GB-seconds: 256 MB = 0.25 GB times the billed seconds.
    expect(ok?.gbSeconds).toBeCloseTo(0.25 * (ok?.billedMs ?? 0) / 1000, 9)
    for (const [i, r] of reports.entries()) expect(r.answered).toEqual([ids[i]])

    // The CLI's contract shape, from each agent.
    for (const id of ids) {
      const u = await cliJson<{ functions: Array<{ name: string, invocations: number, errors: number, billedMs: number, gbSeconds: number, byNode: Record<string, number> }> }>(t, ['usage', '--json', '--via', id])
      expect(u.functions.map(f => [f.name, f.invocations, f.errors, f.billedMs, f.gbSeconds, f.byNode])).toEqual(reports[0].functions.map(f => [f.name, f.invocations, f.errors, f.billedMs, f.gbSeconds, f.byNode]))
    }
    // Every agent's records reached R = 2 peers (here: both others).
    await waitFor(async () => (await t.mesh.meterStatus()).every(s => s.underReplicated === 0 && s.records === 252), { timeoutMs: 10_000, message: 'no under-replicated records' })
    const status = await t.mesh.meterStatus()
    console.log('replication lag per agent (ms, p50/p99):', status.map(s => `${s.lagP50Ms.toFixed(1)}/${s.lagP99Ms.toFixed(1)} over ${s.lagSamples}`).join(', '))
    expect(status.map(s => s.ownRecords).reduce((a, b) => a + b, 0)).toBe(252)
  })

  it('reports rollups equal to a recount from the raw records each agent exports', async () => {
    for (const a of t.cluster.agents) {
      const exported = await cliJson<Array<{ invocationId: string, function: string, nodeId: string, startMs: number, billedMs: number, memoryMb: number, outcome: string, cold: boolean }>>(t, ['usage', '--export', 'json', '--via', a.nodeId])
      expect(new Set(exported.map(r => r.invocationId)).size).toBe(exported.length)
      expect(exported).toHaveLength(made.ok + made.fails)
      const recount = new Map<string, Row>()
      for (const r of exported) {
        const key = `${Math.floor(r.startMs / 60_000) * 60_000}|${r.function}|${r.nodeId}`
        const row = recount.get(key) ?? { invocations: 0, errors: 0, coldStarts: 0, billedMs: 0, gbSeconds: 0 }
        row.invocations++
        if (r.outcome !== 'ok') row.errors++
        if (r.cold) row.coldStarts++
        row.billedMs += r.billedMs
        row.gbSeconds += r.memoryMb * r.billedMs
        recount.set(key, row)
      }
      const usage = await cliJson<{ buckets: Array<{ startMs: number, function: string, nodeId: string } & Row> }>(t, ['usage', '--bucket', 'minute', '--json', '--via', a.nodeId])
      const rollups = new Map(usage.buckets.map(b => [`${b.startMs}|${b.function}|${b.nodeId}`, { invocations: b.invocations, errors: b.errors, coldStarts: b.coldStarts, billedMs: b.billedMs, gbSeconds: Math.round(b.gbSeconds * 1024 * 1000) }]))
      expect(rollups, `rollups of ${a.name}`).toEqual(recount)
      const csv = await runCli(['usage', '--export', 'csv', '--via', a.nodeId, '--nats', t.url], { timeoutMs: 20_000 })
      const lines = csv.stdout.trimEnd().split('\n')
      expect(lines[0]).toBe('invocation_id,function,version,node_id,start,start_ms,duration_ms,billed_ms,memory_mb,gb_seconds,outcome,error_code,cold,attempt,trigger,event_id,idempotency_key')
      expect(lines).toHaveLength(exported.length + 1)
    }
  })

  it('refuses forged, tampered and garbage meter data from a peer, logs why, and keeps serving with unchanged totals', async () => {
    const [a1, a2] = t.cluster.agents
    const before = comparable(await t.mesh.usage({ via: a1.nodeId }))
    const forger = await testNode()
    const host = await testHost(forger.key)
    try {
      // 1. Records naming agent-2, signed by the forger and relabelled as agent-2's batch.
      const f = bundleOf(forger, [rec({ nodeId: a2.nodeId }, { function: 'ok', billedMs: 1_000_000 })])
      const batchId = f.proofs[0].batchId.replace(forger.nodeId, a2.nodeId)
      const relabelled = { proofs: [{ ...f.proofs[0], batchId, nodeId: a2.nodeId }], records: f.records.map(r => ({ ...r, batchId })) }
      // 2. Records naming agent-2, signed honestly by the forger.
      const impostor = bundleOf(forger, [rec({ nodeId: a2.nodeId }, { function: 'ok' })])
      // 3. A record of the forger's own, changed after signing.
      const own = bundleOf(forger, [rec(forger, { function: 'ok', billedMs: 5 })])
      const changed = decode('MeterRecord', own.records[0].record)
      changed.billedMs = 5_000_000
      const tampered = { proofs: own.proofs, records: [{ ...own.records[0], record: encode('MeterRecord', changed) }] }
      const frames = [relabelled, impostor, tampered].map((bundle, i) => encode('MeterPush', { seq: i + 1, bundle }))
      frames.push(Buffer.from('this is not a protobuf frame at all \xff\xff\xff'))
      const acks = (await exchange(host, a1.addrs, PUSH_PROTOCOL, frames)).map(b => decode('MeterAck', b))
      expect(acks.map(a => [a.stored, a.rejected])).toEqual([[0, 1], [0, 1], [0, 1], [0, 1]])
      expect(acks[0].reason).toMatch(/signature does not verify with the key of node .* \(forged\)/)
      expect(acks[1].reason).toMatch(new RegExp(`names node "${a2.nodeId}" but is signed by ${forger.nodeId}`))
      expect(acks[2].reason).toMatch(/tampered or forged/)
      expect(acks[3].reason).toMatch(/^not a valid message/)
      // Garbage on the anti-entropy protocol is answered with an error, not a crash.
      const reply = decode('SyncReply', (await exchange(host, a1.addrs, SYNC_PROTOCOL, [Buffer.from([0x08, 0xff, 0xff, 0xff])]))[0])
      expect(reply.error.code).toBe('FNMESH_ERR_DECODE')
    } finally {
      await host.stop()
    }
    await waitFor(async () => (await logLines(t, a1)).filter(l => l.msg === 'rejected meter data from a peer').length >= 4, { timeoutMs: 5000, message: 'agent-1 logging the refusals' })
    const lines = (await logLines(t, a1)).filter(l => l.msg === 'rejected meter data from a peer')
    expect(lines.every(l => l.peer === forger.nodeId && l.level === 40)).toBe(true)
    expect(lines.flatMap(l => l.reasons as string[]).join('\n')).toMatch(/forged[\s\S]*but is signed by[\s\S]*tampered[\s\S]*not a valid message/)
    expect((await t.mesh.meterStatus({ nodeId: a1.nodeId }))[0].rejected).toBeGreaterThanOrEqual(5)
    for (const a of t.cluster.agents) {
      expect(a.running).toBe(true)
      expect(comparable(await t.mesh.usage({ via: a.nodeId }))).toEqual(before)
    }
    expect(await t.mesh.invoke('ok', { after: 'forgery' })).toMatchObject({ ok: true })
    made.ok++
  })

  it('prints totals per bucket and turns them into cost with a price table', async () => {
    const price = { gbs: 0.0000166667, req: 0.0000002 }
    const u = await cliJson<UsageReport>(t, ['usage', '--bucket', 'hour', '--price', `gbs=${price.gbs},req=${price.req}`, '--json'])
    await waitFor(async () => (await t.mesh.usage()).totals.invocations === made.ok + made.fails, { timeoutMs: 10_000, message: 'the last invocation counted' })
    const ok = u.functions.find(f => f.name === 'ok')
    expect(ok?.cost).toBeCloseTo((ok?.gbSeconds ?? 0) * price.gbs + (ok?.invocations ?? 0) * price.req, 12)
    expect(u.totals.cost).toBeCloseTo(u.functions.reduce((s, f) => s + (f.cost ?? 0), 0), 12)
    expect(u.buckets?.reduce((s, b) => s + b.invocations, 0)).toBe(u.totals.invocations)
    expect(u.buckets?.every(b => b.startMs % 3_600_000 === 0 && b.start === new Date(b.startMs).toISOString())).toBe(true)
    const text = await runCli(['usage', '--bucket', 'day', '--price', 'gbs=1,req=0.5', '--nats', t.url])
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(/^FUNCTION\s+INVOCATIONS\s+ERRORS\s+COLD\s+BILLED MS\s+GB-SECONDS\s+COST$/m)
    expect(text.stdout).toMatch(/^BUCKET\s+FUNCTION\s+NODE\s+/m)
    expect(text.stdout).toMatch(/^TOTAL\s+INVOCATIONS/m)
    const bad = await runCli(['usage', '--price', 'gbs=cheap', '--nats', t.url])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/^error FNMESH_ERR_BAD_USAGE: Option --price: Price "gbs=cheap" is invalid/)
  })
})
