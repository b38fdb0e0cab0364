/**
 * An agent's life: it drains on SIGTERM, comes back under the same id with its records, finds
 * peers over NATS or through --bootstrap alone, and refuses to start without NATS.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initNats, spawnAgent, type AgentProcess } from '../../node/src/dev/cluster.js'
import { startNatsServer } from '../../node/src/dev/nats-server.js'
import { connect } from '../../sdk/src/client.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { viewsByAgent } from '../helpers/views.js'
import { waitFor, within } from '../helpers/wait.js'

/** A loopback TCP port with nothing listening on it */
async function deadPort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port
      srv.close(() => { resolve(port) })
    })
  })
}

const SLOW_TIMEOUT_MS = 10_000

describe('the life of an agent in a mesh of 3', () => {
  let t: TestMesh
  /** the agent drained in the first test, and how many "slow" results came from it */
  let drained: AgentProcess | undefined
  let resultsFromDrained = 0

  beforeAll(async () => {
    t = await startMesh({ nodes: 3, slots: 2 })
    await t.mesh.deploy({ name: 'slow', path: fixture('slow.js'), timeoutMs: SLOW_TIMEOUT_MS })
  })

  afterAll(async () => {
    await t?.stop()
  })

  it('drains on SIGTERM: the invocation in flight returns its result, peers drop the agent at once, and it exits 0', async () => {
    const calls = [1, 2, 3, 4].map(async () => await within(t.mesh.invokeDetailed<{ slept: number }>('slow', { ms: 2500 }, { timeoutMs: 20_000 }), 25_000, 'a slow invocation'))
    calls.forEach(c => { c.catch(() => {}) })
    const busy = await waitFor(async () => (await t.mesh.nodes({ timeoutMs: 2000 })).find(n => n.inFlight > 0), { timeoutMs: 10_000, message: 'an agent with an invocation in flight' })
    const victim = t.cluster.agents.find(a => a.nodeId === busy.id) as AgentProcess
    const others = t.cluster.agents.filter(a => a !== victim)
    const termAt = Date.now()
    victim.kill('SIGTERM')

    // The others drop it from their tables well before the 3 s a silent peer takes.
    await waitFor(async () => {
      const views = await viewsByAgent(t.mesh, others.map(a => a.nodeId), 3000)
      return [...views.values()].every(nodes => !nodes.some(n => n.id === victim.nodeId))
    }, { timeoutMs: 5000, intervalMs: 20, message: `every other agent dropping the draining ${victim.name}` })
    const droppedAfter = Date.now() - termAt

    const results = await Promise.all(calls)
    const exit = await within(victim.exited, SLOW_TIMEOUT_MS + 5000, `${victim.name} exiting after SIGTERM`)
    const exitedAfter = Date.now() - termAt
    console.log(`SIGTERM to ${victim.name} with ${busy.inFlight} in flight: dropped by the others after ${droppedAfter} ms, exited ${JSON.stringify(exit)} after ${exitedAfter} ms`)
    expect(results.map(r => r.result)).toEqual(results.map(() => ({ slept: 2500 })))
    resultsFromDrained = results.filter(r => r.nodeId === victim.nodeId).length
    expect(resultsFromDrained, `results that ran on ${victim.name}`).toBeGreaterThan(0)
    expect(exit).toEqual({ code: 0, signal: null })
    expect(exitedAfter).toBeLessThan(SLOW_TIMEOUT_MS)
    expect(droppedAfter).toBeLessThan(1500)
    expect(victim.logTail).toContain('"msg":"agent stopped"')
    drained = victim
  })

  it('keeps counting its meter records while it is gone, and keeps its node id and records when restarted with the same data dir', async () => {
    expect(drained, 'the agent drained in the previous test').toBeDefined()
    const old = drained as AgentProcess
    const live = t.cluster.agents.filter(a => a !== old)
    await t.waitForNodes(live.length)
    // Its records were replicated before it answered: the others still count them.
    const without = await t.mesh.usage({ fn: 'slow' })
    expect(without.answered).not.toContain(old.nodeId)
    expect(without.functions[0]?.byNode[old.nodeId]).toBe(resultsFromDrained)

    const back = await spawnAgent({ ...old.options })
    t.cluster.agents[t.cluster.agents.indexOf(old)] = back
    expect(back.nodeId).toBe(old.nodeId)
    await t.waitForNodes(3)
    // Asked directly, the restarted agent answers from its own ledger.
    const res = await runCli(['usage', '--fn', 'slow', '--json', '--via', back.nodeId, '--nats', t.url])
    expect(res.code).toBe(0)
    const usage = JSON.parse(res.stdout) as { functions: Array<{ byNode: Record<string, number>, invocations: number }>, answered: string[], missing: string[] }
    expect(usage.answered).toEqual([back.nodeId])
    expect(usage.functions[0].byNode[back.nodeId]).toBe(resultsFromDrained)
    expect(usage.functions[0].invocations).toBe(4)
  })

  it('finds a new agent started without --bootstrap over NATS discovery', async () => {
    const added = await t.cluster.addAgent(1)
    expect(added.options.bootstrap ?? []).toEqual([])
    expect(added.child.spawnargs).not.toContain('--bootstrap')
    const ids = t.cluster.agents.map(a => a.nodeId)
    await waitFor(async () => {
      const views = await viewsByAgent(t.mesh, ids, 3000)
      return [...views.values()].every(nodes => ids.every(id => nodes.some(n => n.id === id)))
    }, { timeoutMs: 10_000, message: 'every agent, the new one included, seeing all 4' })
  })

  it('joins through --bootstrap alone: an agent on another NATS server appears in the table of the agent it bootstrapped from', async () => {
    const a = t.cluster.agents[0]
    const bootstrap = a.addrs.find(ma => ma.startsWith('/ip4/127.0.0.1/tcp/'))
    expect(bootstrap, `a loopback multiaddr of ${a.name} in ${JSON.stringify(a.addrs)}`).toBeDefined()
    expect(bootstrap).toMatch(new RegExp(`/p2p/${a.nodeId}$`))
    // A separate NATS server: the only way the two can meet is the bootstrap address.
    const nats2 = await startNatsServer()
    await initNats(nats2.url)
    const dir = await mkdtemp(join(tmpdir(), 'fnmesh-bootstrap-'))
    let b: AgentProcess | undefined
    const mesh2 = await connect({ servers: nats2.url })
    try {
      b = await spawnAgent({ nats: nats2.url, name: 'bootstrapped', dataDir: join(dir, 'b'), slots: 1, bootstrap: [bootstrap as string], logFile: join(dir, 'b.log') })
      const bId = b.nodeId
      await waitFor(async () => (await viewsByAgent(t.mesh, [a.nodeId], 3000)).get(a.nodeId)?.some(n => n.id === bId),
        { timeoutMs: 10_000, message: `${a.name} seeing the agent that bootstrapped from it` })
      await waitFor(async () => (await mesh2.nodes({ timeoutMs: 2000 })).some(n => n.id === a.nodeId),
        { timeoutMs: 10_000, message: `the bootstrapped agent seeing ${a.name}` })
    } finally {
      await mesh2.close().catch(() => {})
      await b?.stop()
      await nats2.stop()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('exits 1 with one stderr line `error FNMESH_ERR_NATS_UNAVAILABLE` when nothing listens at the NATS URL', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fnmesh-nonats-'))
    try {
      const url = `nats://127.0.0.1:${await deadPort()}`
      const res = await runCli(['agent', '--nats', url, '--data', join(dir, 'data'), '--name', 'nonats', '--listen', '/ip4/127.0.0.1/tcp/0'], { timeoutMs: 15_000 })
      console.log('agent without NATS:', JSON.stringify(res.stderr))
      expect(res.code).toBe(1)
      expect(res.stdout).toBe('')
      expect(res.stderr.trimEnd().split('\n')).toHaveLength(1)
      expect(res.stderr).toMatch(/^error FNMESH_ERR_NATS_UNAVAILABLE: .*127\.0\.0\.1.*\n$/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
