/**
 * Issue 13: the second copy of a meter record travels with the result. On a mesh of 2 agents
 * whose coalesced meter pushes are held back for a minute (FNMESH_METER_PUSH_DELAY_MS) and whose
 * anti-entropy runs hourly, so replication cannot deliver anything during the test, the router's
 * node holds the record of every invocation it routed to the other agent as soon as the caller
 * has the answer, and still counts them all once the executing agent is SIGKILLed right after.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AgentProcess } from '../../node/src/dev/cluster.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'

describe('the meter record carried with the result', () => {
  let t: TestMesh

  /** invocation ids of the records `agent` exports */
  const ids = async (agent: AgentProcess): Promise<Set<string>> => {
    const out = new Set<string>()
    for await (const r of t.mesh.exportRecords({ via: agent.nodeId, local: true, timeoutMs: 10_000 })) out.add(r.invocationId)
    return out
  }

  beforeAll(async () => {
    t = await startMesh({
      nodes: 2,
      slots: 4,
      env: { FNMESH_METER_PUSH_DELAY_MS: '60000' },
      args: ['--sync-interval', '1h'],
      // Agent 0 only runs what agent 1's router sends it; agent 1 alternates between the two.
      argsOf: i => i === 0 ? ['--no-router'] : ['--routing', 'round-robin']
    })
    await t.mesh.deploy({ name: 'ok', path: fixture('ok.js') })
  })

  afterAll(async () => {
    await t?.stop()
  })

  it('is in the router node\'s ledger when the caller has the answer, and survives SIGKILL of the node that ran it', async () => {
    const [executor, router] = t.cluster.agents
    const remote: string[] = []
    const local: string[] = []
    for (let i = 0; i < 60 && remote.length < 8; i++) {
      const r = await t.mesh.invokeDetailed('ok', { i })
      if (r.nodeId !== executor.nodeId) { local.push(r.invocationId); continue }
      remote.push(r.invocationId)
      // Right after the answer, before any push could reach it: the router's node has it.
      expect((await ids(router)).has(r.invocationId)).toBe(true)
    }
    expect(remote.length).toBe(8)
    // The node that ran them has them too (the first copy).
    const onExecutor = await ids(executor)
    for (const id of remote) expect(onExecutor.has(id)).toBe(true)
    // Both ledgers fsync in the background within the window (default 50 ms).
    await new Promise(resolve => setTimeout(resolve, 300))
    for (const agent of [executor, router]) {
      const [status] = await t.mesh.meterStatus({ nodeId: agent.nodeId, timeoutMs: 5000 })
      expect(status.fsyncWindowMs).toBe(50)
      expect(status.fsyncs).toBeGreaterThan(0)
    }
    executor.kill('SIGKILL')
    const survivor = await ids(router)
    for (const id of [...remote, ...local]) expect(survivor.has(id)).toBe(true)
    const usage = await t.mesh.usage({ via: router.nodeId, timeoutMs: 5000 })
    expect(usage.functions.find(f => f.name === 'ok')?.invocations).toBe(remote.length + local.length)
  }, 60_000)
})
