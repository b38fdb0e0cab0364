/**
 * Issue 5 when agents fail, on a real mesh of 5 agents: a SIGKILLed agent that never returns
 * still has every record it acknowledged counted by all the others; an agent that was away while
 * the others worked catches up by anti-entropy; an agent whose ledger files were damaged while
 * it was down says so, repairs, and gets back every record, its own included.
 */
import { readdir, readFile, stat, truncate } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnAgent, type AgentProcess } from '../../node/src/dev/cluster.js'
import type { UsageReport } from '../../sdk/src/client.js'
import { fixture } from '../helpers/fixtures.js'
import { startLoad } from '../helpers/load.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { sleep, waitFor, within } from '../helpers/wait.js'

const totals = (u: UsageReport): string => JSON.stringify({ functions: u.functions, totals: u.totals })

/** The exported records of one agent: the nodes each invocation id ran on, and how many records (one per run) */
async function exported (t: TestMesh, agent: AgentProcess): Promise<{ byId: Map<string, Set<string>>, count: number }> {
  const byId = new Map<string, Set<string>>()
  let count = 0
  for await (const r of t.mesh.exportRecords({ via: agent.nodeId, local: true, timeoutMs: 10_000 })) {
    count++
    byId.set(r.invocationId, (byId.get(r.invocationId) ?? new Set()).add(r.nodeId))
  }
  return { byId, count }
}

/** Replaces `dead` by a new process on the same data folder (same node id) */
async function restart (t: TestMesh, dead: AgentProcess): Promise<AgentProcess> {
  const back = await spawnAgent({ ...dead.options })
  t.cluster.agents[t.cluster.agents.indexOf(dead)] = back
  expect(back.nodeId).toBe(dead.nodeId)
  return back
}

describe('metering on a mesh of 5 agents when agents fail', () => {
  let t: TestMesh
  const live = (): AgentProcess[] => t.cluster.agents.filter(a => a.running)

  /** Waits until every live agent reports the same totals with no peer left to sync */
  const settled = async (what: string, timeoutMs = 20_000): Promise<UsageReport> => {
    let reports: UsageReport[] = []
    await waitFor(async () => {
      reports = await Promise.all(live().map(async a => await t.mesh.usage({ via: a.nodeId, timeoutMs: 5000 })))
      return reports.every(r => r.missing.length === 0 && totals(r) === totals(reports[0]))
    }, { timeoutMs, message: `every agent reporting the same totals ${what}` })
    return reports[0]
  }

  beforeAll(async () => {
    // Every agent holds every record here (R = N-1, the whole-mesh ledger): these tests read each
    // survivor's own export. Placement on R+1 owners of 7 agents is metering-placement.test.ts.
    t = await startMesh({ nodes: 5, slots: 2, args: ['--sync-interval', '1s', '--meter-replicas', '4'] })
    await t.mesh.deploy({ name: 'work', path: fixture('slow.js'), timeoutMs: 5000 })
  })

  afterAll(async () => {
    await t?.stop()
  })

  it('counts on every surviving agent each record a SIGKILLed agent acknowledged, though it never comes back', async () => {
    const victim = t.cluster.agents[4]
    const load = startLoad(t.mesh, 'work', { concurrency: 6, timeoutMs: 10_000, event: () => ({ ms: 15 }) })
    const started = Date.now()
    try {
      await waitFor(() => load.records.filter(r => r.ok && r.nodeId === victim.nodeId).length >= 8, { timeoutMs: 20_000, message: `${victim.name} answering 8 invocations` })
      console.log(`load: ${load.records.length} invocations in ${Date.now() - started} ms before the kill`)
      victim.kill('SIGKILL')
      expect((await within(victim.exited, 5000, 'the killed agent\'s exit')).signal).toBe('SIGKILL')
      await sleep(1500)
    } finally {
      load.stop()
      await within(load.done, 30_000, 'the load')
    }
    const acked = load.records.filter(r => r.ok && r.nodeId === victim.nodeId)
    const ok = load.records.filter(r => r.ok)
    console.log(`${victim.name} acknowledged ${acked.length} of ${ok.length} successful invocations before its SIGKILL`)
    const survivors = t.cluster.agents.filter(a => a !== victim)
    await t.waitForNodes(4)
    const usage = await settled('after the SIGKILL')
    for (const a of survivors) {
      const records = await exported(t, a)
      const lost = acked.filter(r => records.byId.get(r.invocationId)?.has(victim.nodeId) !== true).map(r => r.invocationId)
      expect(lost, `records of ${victim.name} missing on ${a.name}`).toEqual([])
      // Nothing answered is missing from the totals, and nothing counted twice.
      for (const r of ok) expect(records.byId.has(r.invocationId), `${r.invocationId} on ${a.name}`).toBe(true)
      expect(records.count).toBe(usage.totals.invocations)
    }
    // At most the invocations it was running at the kill add to the successful ones (they ran, and each run is billed).
    expect(usage.totals.invocations).toBeGreaterThanOrEqual(ok.length)
    expect(usage.totals.invocations).toBeLessThanOrEqual(ok.length + 2)
    expect(usage.functions[0].byNode[victim.nodeId]).toBeGreaterThanOrEqual(acked.length)
  })

  it('brings an agent that was away while the others worked back to the same totals, through anti-entropy', async () => {
    const away = t.cluster.agents[3]
    expect((await away.stop()).code).toBe(0)
    await t.waitForNodes(3)
    const before = (await t.mesh.usage()).totals.invocations
    const load = startLoad(t.mesh, 'work', { concurrency: 4, total: 150, event: () => ({ ms: 5 }) })
    await within(load.done, 30_000, 'the load while one agent is away')
    expect(load.records.filter(r => !r.ok).map(r => r.message)).toEqual([])
    const startedAt = Date.now()
    const back = await restart(t, away)
    await t.waitForNodes(4)
    const usage = await settled('after the restart')
    console.log(`${back.name} caught up on 150 records within ${Date.now() - startedAt} ms of its restart`)
    expect(usage.totals.invocations).toBe(before + 150)
    const [status] = await t.mesh.meterStatus({ nodeId: back.nodeId })
    const others = await t.mesh.meterStatus()
    // The records came by anti-entropy: pulled by it, or pushed to it by a peer's session.
    expect(status.syncPulled + others.filter(s => s.nodeId !== back.nodeId).reduce((n, s) => n + s.syncPushed, 0)).toBeGreaterThanOrEqual(150)
    expect(status.records).toBe(others[0].records)
  })

  it('repairs a ledger damaged while its agent was down, logs why, and ends with every record again, its own included', async () => {
    const victim = t.cluster.agents[2]
    // Some records of its own first.
    const load = startLoad(t.mesh, 'work', { concurrency: 4, total: 80, event: () => ({ ms: 5 }) })
    await within(load.done, 30_000, 'the load')
    await settled('before the damage')
    const own = [...(await exported(t, victim)).byId.entries()].filter(([, nodes]) => nodes.has(victim.nodeId)).map(([id]) => id)
    expect(own.length).toBeGreaterThan(0)
    expect((await victim.stop()).code).toBe(0)
    // Damage: the manifest cut to 10 bytes, every log file cut in half.
    const dir = join(victim.options.dataDir, 'ledger')
    for (const f of await readdir(dir)) {
      if (f.startsWith('MANIFEST')) await truncate(join(dir, f), 10)
      if (f.endsWith('.log')) await truncate(join(dir, f), Math.floor((await stat(join(dir, f))).size / 2))
    }
    const back = await restart(t, victim)
    await t.waitForNodes(4)
    const usage = await settled('after the repair')
    const [status] = await t.mesh.meterStatus({ nodeId: back.nodeId })
    expect(status.recovered).toMatch(/^ledger damaged .* kept at .*ledger\.corrupt-/)
    const log = (await readFile(join(t.cluster.dir, `${back.name}.log`), 'utf8')).split('\n').filter(l => l.includes('"agent:metering"') && l.includes('"level":50'))
    expect(log.some(l => l.includes('the meter ledger is damaged: moving it aside and repairing a copy'))).toBe(true)
    expect((await readdir(victim.options.dataDir)).some(f => f.startsWith('ledger.corrupt-'))).toBe(true)
    const after = await exported(t, back)
    expect(own.filter(id => after.byId.get(id)?.has(back.nodeId) !== true), 'its own records missing after the repair').toEqual([])
    expect(after.count).toBe(usage.totals.invocations)
    expect(await t.mesh.invoke('work', { ms: 1 })).toMatchObject({ slept: 1 })
  })
})
