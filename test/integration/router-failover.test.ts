/**
 * The caller's side of a crash: when the agent that took a sync invocation off NATS (its router)
 * dies, the caller stops hearing the router's keepalives and re-sends the invocation, with the
 * same invocation id, to the agents still up. It never waits out its own timeout.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initNats, spawnAgent, type AgentProcess } from '../../node/src/dev/cluster.js'
import { startNatsServer, type NatsServer } from '../../node/src/dev/nats-server.js'
import { connect, type Mesh } from '../../sdk/src/client.js'
import { fixture } from '../helpers/fixtures.js'
import { waitFor, within } from '../helpers/wait.js'

describe('a caller whose router dies', () => {
  let nats: NatsServer
  let dir: string
  let mesh: Mesh
  const agents: AgentProcess[] = []

  beforeAll(async () => {
    nats = await startNatsServer()
    await initNats(nats.url)
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-failover-'))
    mesh = await connect({ servers: nats.url })
  })

  afterAll(async () => {
    await mesh?.close()
    await Promise.all(agents.map(async a => await a.stop()))
    await nats?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('gets its result from another agent within seconds, with the same idempotency key and a new invocation id', async () => {
    const first = await spawnAgent({ nats: nats.url, name: 'first', dataDir: join(dir, 'first') })
    agents.push(first)
    await mesh.deploy({ name: 'slow', path: fixture('slow.js'), timeoutMs: 10_000 })
    // The only agent routes (and runs) the call; then a second agent joins and the first is killed.
    const startedAt = Date.now()
    // Long enough to outlast starting the second agent, so the kill lands mid-run.
    const call = mesh.invokeDetailed<{ slept: number }>('slow', { ms: 5000 }, { timeoutMs: 40_000, idempotencyKey: 'failover-1' })
    await waitFor(async () => (await mesh.nodes({ timeoutMs: 2000 })).some(n => n.id === first.nodeId && n.inFlight > 0),
      { timeoutMs: 10_000, message: 'the first agent running the call' })
    const second = await spawnAgent({ nats: nats.url, name: 'second', dataDir: join(dir, 'second') })
    agents.push(second)
    first.kill('SIGKILL')
    const killedAt = Date.now()
    const out = await within(call, 20_000, 'the invocation after its router died')
    const settledAt = Date.now()
    expect(out.result).toEqual({ slept: 5000 })
    expect(out.nodeId).toBe(second.nodeId)
    // The mesh mints invocation ids: the second router's run is a run of its own.
    expect(out.invocationId).toMatch(/^[0-9a-f-]{36}$/)
    // Re-sent after the keepalive timeout (3.5 s) and run again (5 s), not after the caller's 40 s timeout.
    expect(settledAt - killedAt).toBeLessThan(15_000)
    expect(settledAt - startedAt).toBeLessThan(25_000)
  })

  it('is not re-sent while a long invocation keeps its router alive', async () => {
    await mesh.deploy({ name: 'long', path: fixture('slow.js'), timeoutMs: 10_000 })
    // Longer than the keepalive timeout: only the router's interim replies keep the caller waiting.
    const startedAt = Date.now()
    const out = await mesh.invokeDetailed<{ slept: number }>('long', { ms: 5000 }, { timeoutMs: 30_000 })
    expect(out.result).toEqual({ slept: 5000 })
    // A re-send at 3.5 s would have run it again (same node, same id) and answered after 8.5 s.
    expect(Date.now() - startedAt).toBeLessThan(8000)
    // usage answers from one agent's replica: wait for the record to reach it, then check it ran once
    await waitFor(async () => ((await mesh.usage({ fn: 'long' })).functions[0]?.invocations ?? 0) >= 1, { timeoutMs: 5000, intervalMs: 100, message: 'the invocation metered' })
    await new Promise(resolve => setTimeout(resolve, 300))
    const usage = await mesh.usage({ fn: 'long' })
    expect(usage.functions.map(f => f.invocations)).toEqual([1])
  })
})
