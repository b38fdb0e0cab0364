import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node'
import { decode, encode } from '../../proto/codec.js'
import { execSubject } from '../../proto/subjects.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { meterRecords } from '../helpers/ledgers.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'

/**
 * Placement with real agents: agent-1 zone=a, agent-2 zone=b, agent-3 zone=b gpu=1. Where each
 * invocation ran comes from the result (nodeId) and from the meter records.
 */
describe('placement: agent labels, deploy --constraint and --prefer', () => {
  let t: TestMesh
  let nc: NatsConnection
  const LABELS = [['zone=a'], ['zone=b'], ['zone=b', 'gpu=1']]
  const ids: string[] = []

  beforeAll(async () => {
    t = await startMesh({ nodes: 3, slots: 2, argsOf: (i) => LABELS[i].flatMap(l => ['--label', l]) })
    ids.push(...t.cluster.agents.map(a => a.nodeId))
    nc = await natsConnect({ servers: t.url })
    // Adverts carry the labels: every agent knows every other's before the tests route.
    await waitFor(async () => (await t.mesh.nodes()).filter(n => n.labels.zone != null).length === 3, { timeoutMs: 15_000, message: 'labels in every advert' })
  }, 60_000)

  afterAll(async () => {
    await nc?.close()
    await t?.stop()
  })

  it('shows each node\'s labels, the automatic ones included, in fnmesh nodes and --json', async () => {
    const cli = await runCli(['nodes', '--json', '--nats', t.url])
    expect(cli.code, cli.stderr).toBe(0)
    const nodes = JSON.parse(cli.stdout) as Array<{ id: string, labels: Record<string, string> }>
    const byId = new Map(nodes.map(n => [n.id, n.labels]))
    expect(byId.get(ids[2])).toMatchObject({ zone: 'b', gpu: '1', arch: process.arch, os: process.platform })
    for (const labels of byId.values()) {
      expect(Number(labels.cpus)).toBeGreaterThan(0)
      expect(labels.memory).toMatch(/^\d+$/)
    }
    const table = await runCli(['nodes', '--nats', t.url])
    expect(table.stdout).toMatch(/LABELS/)
    expect(table.stdout).toMatch(/zone=b,gpu=1/)
  })

  it('runs a function with --constraint gpu=1 only on the node labelled gpu=1, under concurrent load', async () => {
    const cli = await runCli(['deploy', fixture('slow.js'), '--name', 'on-gpu', '--constraint', 'gpu=1', '--json', '--nats', t.url])
    expect(cli.code, cli.stderr).toBe(0)
    const where = new Set<string>()
    for (let round = 0; round < 4; round++) {
      const runs = await Promise.all(Array.from({ length: 5 }, async () => await t.mesh.invokeDetailed('on-gpu', { ms: 30 }, { timeoutMs: 30_000 })))
      for (const r of runs) where.add(r.nodeId)
    }
    expect([...where]).toEqual([ids[2]])
    const fns = JSON.parse((await runCli(['functions', '--json', '--nats', t.url])).stdout) as Array<{ name: string, constraints: string[] }>
    expect(fns.find(f => f.name === 'on-gpu')?.constraints).toEqual(['gpu=1'])
  }, 60_000)

  it('keeps a function with zone!=a off zone a', async () => {
    await t.mesh.deploy({ name: 'not-a', path: fixture('ok.js'), constraints: ['zone!=a'] })
    const runs = await Promise.all(Array.from({ length: 16 }, async () => await t.mesh.invokeDetailed('not-a', {}, { timeoutMs: 30_000 })))
    expect(runs.every(r => r.nodeId !== ids[0])).toBe(true)
  }, 60_000)

  it('fails at once with FNMESH_ERR_NO_MATCHING_NODE when no live node satisfies the constraints', async () => {
    await t.mesh.deploy({ name: 'nowhere', path: fixture('ok.js'), constraints: ['zone=c', 'memory>=1'] })
    const started = Date.now()
    const err = await t.mesh.invoke('nowhere', {}, { timeoutMs: 20_000 }).then(() => null, (e: any) => e)
    expect(err?.code).toBe('FNMESH_ERR_NO_MATCHING_NODE')
    expect(err?.message).toMatch(/zone=c/)
    expect(Date.now() - started).toBeLessThan(5000)
    const cli = await runCli(['invoke', 'nowhere', '--nats', t.url])
    expect(cli.code).not.toBe(0)
    expect(cli.stderr).toMatch(/FNMESH_ERR_NO_MATCHING_NODE/)
  }, 30_000)

  it('prefers zone=a while it has room, and uses the others when it has none (prefer is not a must)', async () => {
    await t.mesh.deploy({ name: 'likes-a', path: fixture('slow.js'), prefer: ['zone=a'], timeoutMs: 10_000 })
    const one = []
    for (let i = 0; i < 8; i++) one.push((await t.mesh.invokeDetailed('likes-a', { ms: 5 }, { timeoutMs: 30_000 })).nodeId)
    expect(new Set(one)).toEqual(new Set([ids[0]]))
    // 12 at once on 2 slots of zone a: the rest run elsewhere rather than wait
    const burst = await Promise.all(Array.from({ length: 12 }, async () => await t.mesh.invokeDetailed('likes-a', { ms: 400 }, { timeoutMs: 30_000 })))
    const counts = new Map<string, number>()
    for (const r of burst) counts.set(r.nodeId, (counts.get(r.nodeId) ?? 0) + 1)
    expect(counts.size).toBeGreaterThan(1)
  }, 60_000)

  it('pulls the events of a constrained function only on nodes that satisfy it', async () => {
    await t.mesh.deploy({ name: 'ev-gpu', path: fixture('ok.js'), triggers: ['placed.>'], constraints: ['gpu=1'] })
    for (let i = 0; i < 12; i++) await t.mesh.publish(`placed.e${i}`, { i }, { id: `placed-${i}` })
    // Each export is answered by one agent of the queue group, whose replica may lag: the read that saw all 12 is the one checked.
    let records: Awaited<ReturnType<typeof meterRecords>> = []
    await waitFor(async () => (records = await meterRecords(t.mesh, 'ev-gpu')).length >= 12, { timeoutMs: 30_000, message: '12 events of ev-gpu metered' })
    expect(records).toHaveLength(12)
    expect(new Set(records.map(r => r.nodeId))).toEqual(new Set([ids[2]]))
  }, 60_000)

  it('leaves the events of a function that prefers zone=a to zone a while it has room', async () => {
    await t.mesh.deploy({ name: 'ev-likes-a', path: fixture('ok.js'), triggers: ['liked.>'], prefer: ['zone=a'] })
    let records: Awaited<ReturnType<typeof meterRecords>> = []
    for (let i = 0; i < 6; i++) {
      await t.mesh.publish(`liked.e${i}`, { i }, { id: `liked-${i}` })
      await waitFor(async () => (records = await meterRecords(t.mesh, 'ev-likes-a')).length >= i + 1, { timeoutMs: 20_000, message: `event ${i} of ev-likes-a metered` })
    }
    expect(new Set(records.map(r => r.nodeId))).toEqual(new Set([ids[0]]))
  }, 90_000)

  it('an executor refuses work its labels do not allow, even from a forged or stale router', async () => {
    const msg = await nc.request(execSubject(ids[0]), encode('ExecRequest', { invocationId: 'forged-placement-1', function: 'on-gpu', payload: Buffer.from('{}'), routerId: 'x', deadlineMs: Date.now() + 10_000, trigger: 'sync' }), { timeout: 10_000 })
    const res = decode('InvokeResult', msg.data)
    expect(res.ok).toBe(false)
    expect(res.error?.code).toBe('FNMESH_ERR_NO_MATCHING_NODE')
    expect(res.error?.errorMessage).toMatch(/gpu=1/)
  }, 30_000)

  it('refuses malformed placement at deploy with a clear code, and takes it from fnmesh.yaml', async () => {
    const bad = await runCli(['deploy', fixture('ok.js'), '--name', 'bad-place', '--constraint', 'gpu', '--nats', t.url])
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).toMatch(/FNMESH_ERR_INVALID_ARGUMENT.*Placement constraint "gpu"/)
    const agent = await runCli(['agent', '--label', 'Bad Label', '--nats', t.url])
    expect(agent.code).not.toBe(0)
    expect(agent.stderr).toMatch(/FNMESH_ERR_(BAD_USAGE|INVALID_ARGUMENT).*Label "Bad Label" is invalid/)
    const dir = await mkdtemp(join(tmpdir(), 'fnmesh-place-'))
    try {
      await writeFile(join(dir, 'index.js'), 'exports.handler = async () => ({ ok: true })\n')
      await writeFile(join(dir, 'fnmesh.yaml'), 'constraints: { gpu: "1" }\nprefer: [ "zone!=a" ]\n')
      await t.mesh.deploy({ name: 'from-yaml', path: dir })
      const f = (await t.mesh.functions()).find(x => x.name === 'from-yaml')
      expect(f).toMatchObject({ constraints: ['gpu=1'], prefer: ['zone!=a'] })
      expect((await t.mesh.invokeDetailed('from-yaml', {}, { timeoutMs: 20_000 })).nodeId).toBe(ids[2])
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }, 30_000)
})
