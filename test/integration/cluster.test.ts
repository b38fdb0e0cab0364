/**
 * Issue 2's "done when" on a real mesh: nats-server plus agent processes with slots [2, 2, 4].
 * The tests run in order on one mesh: spread, a 4th agent joins, one agent is SIGKILLed and
 * restarted, usage is counted.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnAgent, type AgentProcess } from '../../node/src/dev/cluster.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { countBy, startLoad, type CallRecord } from '../helpers/load.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { viewsByAgent } from '../helpers/views.js'
import { waitFor, within } from '../helpers/wait.js'

interface UsageJson {
  functions: Array<{ name: string, invocations: number, errors: number, billedMs: number, gbSeconds: number, byNode: Record<string, number> }>
  answered: string[]
  missing: string[]
}

/** Log lines an agent wrote to its log file, parsed */
async function logLines (t: TestMesh, agent: AgentProcess): Promise<Array<Record<string, any>>> {
  const text = await readFile(join(t.cluster.dir, `${agent.name}.log`), 'utf8')
  return text.split('\n').filter(l => l.startsWith('{')).map(l => { try { return JSON.parse(l) } catch { return {} } })
}

async function usageCli (t: TestMesh, fn: string, via?: string): Promise<UsageJson> {
  const res = await runCli(['usage', '--fn', fn, '--json', ...(via != null ? ['--via', via] : []), '--nats', t.url], { timeoutMs: 20_000 })
  expect(res.stderr).toBe('')
  expect(res.code).toBe(0)
  return JSON.parse(res.stdout) as UsageJson
}

const sum = (o: Record<string, number>): number => Object.values(o).reduce((a, b) => a + b, 0)

describe('a mesh of agents with slots [2, 2, 4] under load', () => {
  let t: TestMesh
  /** the agent SIGKILLed in the third test, and the records it answered before dying */
  let killed: AgentProcess | undefined
  let answeredByKilled = 0
  /** every call made to "slow" in this file */
  const slowCalls: CallRecord[] = []

  beforeAll(async () => {
    t = await startMesh({ nodes: 3, slots: [2, 2, 4] })
    await t.mesh.deploy({ name: 'slow', path: fixture('slow.js'), timeoutMs: 5000 })
  })

  afterAll(async () => {
    await t?.stop()
  })

  it('spreads concurrent work over all 3 agents in proportion to their slots', async () => {
    const [a1, a2, a4] = t.cluster.agents
    expect(t.cluster.agents.map(a => a.options.slots)).toEqual([2, 2, 4])
    // 6 in flight over 8 slots, 300 calls of 40-60 ms.
    const load = startLoad(t.mesh, 'slow', { concurrency: 6, total: 300, event: i => ({ ms: 40 + (i % 21) }) })
    await within(load.done, 45_000, 'the load run')
    slowCalls.push(...load.records)
    const failed = load.records.filter(r => !r.ok)
    expect(failed.map(r => `${r.code}: ${r.message}`)).toEqual([])
    const byNode = countBy(load.records, r => r.nodeId)
    const byName = { [a1.name]: byNode[a1.nodeId] ?? 0, [a2.name]: byNode[a2.nodeId] ?? 0, [a4.name]: byNode[a4.nodeId] ?? 0 }
    console.log('invocations per agent (slots 2, 2, 4):', byName)
    expect(sum(byName)).toBe(300)
    for (const a of [a1, a2, a4]) expect(byNode[a.nodeId] ?? 0, `${a.name} got work`).toBeGreaterThan(0)
    for (const small of [a1, a2]) {
      const ratio = (byNode[a4.nodeId] ?? 0) / byNode[small.nodeId]
      expect(ratio, `the 4-slot agent against ${small.name}`).toBeGreaterThanOrEqual(1.4)
      expect(ratio, `the 4-slot agent against ${small.name}`).toBeLessThanOrEqual(2.8)
    }
  })

  it('gives a 4th agent started mid-test a share of the work within 5 s', async () => {
    const load = startLoad(t.mesh, 'slow', { concurrency: 6, event: () => ({ ms: 50 }) })
    try {
      await waitFor(() => load.records.length >= 30, { timeoutMs: 15_000, message: 'load running before the 4th agent starts' })
      const startedAt = Date.now()
      const fourth = await t.cluster.addAgent(2)
      const readyAfter = Date.now() - startedAt
      const first = await waitFor(() => load.records.find(r => r.ok && r.nodeId === fourth.nodeId), {
        timeoutMs: Math.max(0, startedAt + 5000 - Date.now()),
        intervalMs: 10,
        message: `a result from the 4th agent ${fourth.nodeId}`
      })
      console.log(`4th agent: ready after ${readyAfter} ms, first result ${first.settledAt - startedAt} ms after it was started`)
      expect(first.settledAt - startedAt).toBeLessThan(5000)
    } finally {
      load.stop()
      await within(load.done, 30_000, 'the load run')
      slowCalls.push(...load.records)
    }
    expect(load.records.filter(r => !r.ok).map(r => `${r.code}: ${r.message}`)).toEqual([])
    await t.waitForNodes(4)
  })

  it('stops routing to an agent killed with SIGKILL within 3 s, and every in-flight caller gets a result or a clear error', async () => {
    expect(t.cluster.agents.length).toBe(4)
    const victim = t.cluster.agents[1]
    const survivors = t.cluster.agents.filter(a => a !== victim)
    const load = startLoad(t.mesh, 'slow', { concurrency: 6, timeoutMs: 8000, settleMs: 5000, event: () => ({ ms: 300 }) })
    let killAt = 0
    let droppedAt = 0
    try {
      // Kill it while it runs something.
      await waitFor(async () => (await t.mesh.nodes({ timeoutMs: 2000 })).find(n => n.id === victim.nodeId && n.inFlight > 0),
        { timeoutMs: 15_000, message: `${victim.name} running an invocation` })
      killAt = Date.now()
      victim.kill('SIGKILL')
      expect((await within(victim.exited, 5000, 'the killed agent\'s exit')).signal).toBe('SIGKILL')
      // Every surviving agent drops it from its peer table.
      await waitFor(async () => {
        const views = await viewsByAgent(t.mesh, survivors.map(a => a.nodeId), 3000)
        return [...views.values()].every(nodes => !nodes.some(n => n.id === victim.nodeId))
      }, { timeoutMs: 6000, intervalMs: 20, message: `every agent dropping ${victim.name} from its table` })
      droppedAt = Date.now()
      await waitFor(() => Date.now() > killAt + 6000, { timeoutMs: 8000, message: 'load running for 6 s after the kill' })
    } finally {
      load.stop()
      await within(load.done, 30_000, 'every in-flight invocation settling')
      slowCalls.push(...load.records)
    }
    const records = load.records
    const inFlightAtKill = records.filter(r => r.startedAt <= killAt && r.settledAt >= killAt)
    const failures = records.filter(r => !r.ok)
    console.log(`SIGKILL of ${victim.name}: dropped from every table after ${droppedAt - killAt} ms; ${records.length} calls, ${inFlightAtKill.length} in flight at the kill;`,
      'outcomes of those:', countBy(inFlightAtKill, r => r.ok ? (r.attempts > 1 ? 'ok after retry' : 'ok') : r.code),
      'all failures:', countBy(failures, r => r.code))
    answeredByKilled = slowCalls.filter(r => r.ok && r.nodeId === victim.nodeId).length
    killed = victim

    expect(droppedAt - killAt, 'time until every agent dropped the killed one').toBeLessThan(3000)
    // Never a hang, and a failure is one of the clear errors a crash can cause. Not even a caller
    // whose own router was the killed agent waits out its timeout: the SDK re-sends when the
    // router's keepalives stop.
    expect(records.filter(r => r.code === 'HANG')).toEqual([])
    const allowed = new Set(['FNMESH_ERR_PEER_UNAVAILABLE', 'FNMESH_ERR_NO_CAPACITY'])
    expect(failures.filter(r => !allowed.has(r.code)).map(r => `${r.code}: ${r.message}`)).toEqual([])
    for (const f of failures) expect(f.message).not.toBe('')
    // Work started more than 3 s after the kill never went to the killed node, and all of it succeeded.
    const late = records.filter(r => r.startedAt > killAt + 3000)
    expect(late.length).toBeGreaterThan(20)
    expect(late.filter(r => !r.ok || r.nodeId === victim.nodeId || r.message.includes(victim.nodeId)).map(r => `${r.code} ${r.nodeId}: ${r.message}`)).toEqual([])
    // No router even tried it: their dispatch failures to it all happened within 3 s of the kill.
    await new Promise(resolve => setTimeout(resolve, 200))
    const lateTries: string[] = []
    for (const a of survivors) {
      const lines = await logLines(t, a)
      // The control: this reads the survivor's log, times and all (else no late try could be found)
      expect(Number.isFinite(Date.parse(lines.find(l => l.msg === 'agent ready')?.time)), `${a.name}'s log read, its "agent ready" line with a time`).toBe(true)
      for (const l of lines) {
        if (l.msg === 'dispatch failed' && l.peer === victim.nodeId && Date.parse(l.time) > killAt + 3000) lateTries.push(`${a.name} at +${Date.parse(l.time) - killAt} ms: ${String(l.err)}`)
      }
    }
    expect(lateTries).toEqual([])
    // The rest of the mesh keeps serving all of its work.
    const after = new Set(late.map(r => r.nodeId))
    for (const a of survivors) expect(after.has(a.nodeId), `${a.name} served after the kill`).toBe(true)
  })

  it('brings back a SIGKILLed agent with the same data dir under the same node id, with every invocation it answered still metered', async () => {
    expect(killed, 'the agent killed in the previous test').toBeDefined()
    const dead = killed as AgentProcess
    const back = await spawnAgent({ ...dead.options })
    t.cluster.agents[t.cluster.agents.indexOf(dead)] = back
    expect(back.nodeId).toBe(dead.nodeId)
    await t.waitForNodes(4)
    // Its own ledger, as it opened it (before any peer could send it anything): every result it
    // returned was synced to it first.
    const ready = (await logLines(t, back)).filter(l => l.msg === 'agent ready').pop()
    const atOpen = Number(ready?.ownMeterRecords)
    const usage = await usageCli(t, 'slow', back.nodeId)
    const slow = usage.functions.find(f => f.name === 'slow')
    // 4 members, more than R+1 = 3: the asked agent merges every member's ranges (its own included).
    expect(usage.answered).toContain(back.nodeId)
    // At most the slots it was running at the kill may add to that (each run is billed: to it, and to a retry elsewhere).
    const metered = slow?.byNode[back.nodeId] ?? 0
    console.log(`restarted ${back.name}: ${answeredByKilled} results of "slow" came from it before the kill; its ledger held ${atOpen} of its records when it opened, usage counts ${metered}`)
    expect(answeredByKilled).toBeGreaterThan(0)
    expect(atOpen).toBeGreaterThanOrEqual(answeredByKilled)
    expect(metered).toBeGreaterThanOrEqual(answeredByKilled)
    expect(metered).toBeLessThanOrEqual(answeredByKilled + 2)
  })

  it('reports `fnmesh usage` totals equal to the number of invocations made, per node as they ran', async () => {
    const ids = t.cluster.agents.map(a => a.nodeId)
    await t.waitForNodes(ids.length)
    await t.mesh.deploy({ name: 'metered', path: fixture('slow.js') })
    const n = 120
    const load = startLoad(t.mesh, 'metered', { concurrency: 6, total: n, event: () => ({ ms: 20 }) })
    await within(load.done, 30_000, 'the invocations')
    expect(load.records.filter(r => !r.ok).map(r => `${r.code}: ${r.message}`)).toEqual([])
    const ran = countBy(load.records, (r: CallRecord) => r.nodeId)

    // Any agent answers from its own replica once the records reached it.
    let usage = await usageCli(t, 'metered')
    await waitFor(async () => (usage = await usageCli(t, 'metered')).functions[0]?.invocations === n && usage.missing.length === 0, { timeoutMs: 10_000, message: `usage counting all ${n} invocations` })
    expect(usage.functions.map(f => f.name)).toEqual(['metered'])
    const [fn] = usage.functions
    console.log('usage of "metered":', { invocations: fn.invocations, errors: fn.errors, billedMs: fn.billedMs, byNode: fn.byNode })
    expect(fn.invocations).toBe(n)
    expect(fn.errors).toBe(0)
    expect(sum(fn.byNode)).toBe(n)
    expect(fn.byNode).toEqual(ran)
    expect(fn.billedMs).toBeGreaterThanOrEqual(n * 20)
    // 4 members, more than R+1 = 3 (--meter-replicas 2): the answering agent asked every member for its ranges.
    expect([...usage.answered].sort()).toEqual([...ids].sort())
    expect(usage.missing).toEqual([])
  })
})
