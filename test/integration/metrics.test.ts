/**
 * Issue 14's metrics on a real mesh: 3 agents with --admin on 127.0.0.1, scraped every second by
 * a real Prometheus server (Debian's package), checked through its query API. Skipped, saying
 * why, only when the prometheus binary is missing (.ci/run installs it).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { http } from '../helpers/http.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { prometheusBinary, startPrometheus, type PrometheusServer } from '../helpers/prometheus.js'
import { waitFor, within } from '../helpers/wait.js'

const bin = prometheusBinary()
if (bin == null) console.warn('skipping the Prometheus metrics tests: the prometheus binary is missing (apt-get install prometheus)')

describe.skipIf(bin == null)('a 3-agent mesh scraped by Prometheus', () => {
  let t: TestMesh
  let prom: PrometheusServer
  const OK_CALLS = 24
  const FAILED_CALLS = 4
  const adminPorts = (): number[] => t.cluster.agents.map(a => a.ready.adminPort as number)

  beforeAll(async () => {
    t = await startMesh({ nodes: 3, slots: [2, 2, 3], argsOf: () => ['--admin', '127.0.0.1:0'] })
    prom = await startPrometheus(bin as string, adminPorts().map(p => `127.0.0.1:${p}`))
    await t.mesh.deploy({ name: 'ok', path: fixture('ok.js') })
    await t.mesh.deploy({ name: 'boom', path: fixture('throw.js') })
    await t.mesh.deploy({ name: 'slow', path: fixture('slow.js'), timeoutMs: 10_000 })
  })

  afterAll(async () => {
    await prom?.stop()
    await t?.stop()
  })

  it('reports each agent\'s admin port and serves /healthz and /readyz', async () => {
    for (const port of adminPorts()) {
      expect(port).toBeGreaterThan(0)
      expect((await http(port, 'GET', '/healthz')).status).toBe(200)
      expect((await http(port, 'GET', '/readyz')).status).toBe(200)
    }
  })

  it('counts every invocation made, by outcome, as Prometheus sees it', async () => {
    const calls: Array<Promise<unknown>> = []
    for (let i = 0; i < OK_CALLS; i++) calls.push(t.mesh.invoke('ok', { i }))
    for (let i = 0; i < FAILED_CALLS; i++) calls.push(t.mesh.invoke('boom', { i }).then(() => { throw new Error('boom answered') }, (err) => err))
    await within(Promise.all(calls), 30_000, 'the calls')
    await waitFor(async () => await prom.scalar('sum(fnmesh_invocations_total{function="ok"})') === OK_CALLS, { timeoutMs: 15_000, message: `Prometheus seeing ${OK_CALLS} invocations of "ok"` })
    expect(await prom.scalar('count(up{job="fnmesh"} == 1)')).toBe(3)
    expect(await prom.scalar('sum(fnmesh_invocations_total{function="ok",outcome="success",trigger="sync",version="1"})')).toBe(OK_CALLS)
    await waitFor(async () => await prom.scalar('sum(fnmesh_invocations_total{function="boom",outcome="error"})') === FAILED_CALLS, { timeoutMs: 5000, message: 'failed invocations counted' })
    expect(await prom.scalar('sum(fnmesh_invocation_errors_total{function="boom"})')).toBe(FAILED_CALLS)
    expect(await prom.scalar('sum(fnmesh_invocation_duration_seconds_count{function="ok"})')).toBe(OK_CALLS)
    const cold = await prom.scalar('sum(fnmesh_cold_starts_total{function="ok"})') ?? 0
    expect(cold).toBeGreaterThanOrEqual(1)
    expect(cold).toBeLessThanOrEqual(OK_CALLS)
    expect(await prom.scalar('sum(fnmesh_init_duration_seconds_count{function="ok"})')).toBe(cold)
    expect(await prom.scalar('sum(fnmesh_concurrent_executions)')).toBe(0)
  })

  it('reports each node\'s slots, peers, NATS state, disk and replication', async () => {
    expect(await prom.scalar('sum(fnmesh_slots)')).toBe(7)
    const slots = await prom.query('fnmesh_slots')
    expect(slots.map(s => s.value).sort()).toEqual([2, 2, 3])
    expect(await prom.scalar('min(fnmesh_nats_connected)')).toBe(1)
    expect(await prom.scalar('min(fnmesh_gossip_peers)')).toBe(2)
    expect(await prom.scalar('min(fnmesh_disk_free_bytes)')).toBeGreaterThan(0)
    expect(await prom.scalar('count(fnmesh_isolation_layers_active)')).toBe(3)
    expect(await prom.scalar('count(fnmesh_meter_replication_lag_seconds)')).toBe(3)
    await waitFor(async () => await prom.scalar('sum(fnmesh_meter_under_replicated)') === 0, { timeoutMs: 10_000, message: 'no under-replicated meter records' })
    expect(await prom.scalar('sum(fnmesh_in_flight)')).toBe(0)
    expect(await prom.scalar('min(fnmesh_gossip_adverts_total{direction="received"})')).toBeGreaterThan(0)
    expect(await prom.scalar('min(fnmesh_sandboxes - fnmesh_sandboxes_warm)')).toBeGreaterThanOrEqual(0)
    expect(await prom.scalar('sum(fnmesh_queue_wait_seconds_count)')).toBe(OK_CALLS + FAILED_CALLS)
  })

  it('counts events pulled, acked, retried and dead-lettered, and their age', async () => {
    await t.mesh.deploy({ name: 'ev', path: fixture('ok.js'), triggers: ['mtest.ok'] })
    await t.mesh.deploy({ name: 'evfail', path: fixture('throw.js'), triggers: ['mtest.fail'], retries: 1, retryBackoffMs: 100 })
    for (let i = 0; i < 5; i++) await t.mesh.publish('mtest.ok', { i })
    await t.mesh.publish('mtest.fail', { i: 0 })
    // Each agent is scraped on its own schedule: wait until every count has been scraped.
    await waitFor(async () => await prom.scalar('sum(fnmesh_events_total{function="ev",result="acked"})') === 5 &&
      await prom.scalar('sum(fnmesh_events_total{function="evfail",result="dead_lettered"})') === 1 &&
      await prom.scalar('sum(fnmesh_events_total{function="evfail",result="retried"})') === 1 &&
      await prom.scalar('sum(fnmesh_invocations_total{function="evfail",outcome="error"})') === 2,
    { timeoutMs: 20_000, message: 'Prometheus seeing 5 events acked, 1 retried and 1 dead-lettered' })
    expect(await prom.scalar('sum(fnmesh_event_age_seconds_count{function="ev"})')).toBe(5)
    expect(await prom.scalar('sum(fnmesh_invocations_total{function="ev",trigger!="sync",outcome="success"})')).toBe(5)
    expect(await prom.scalar('max(fnmesh_event_backlog{function="ev"})')).toBeGreaterThanOrEqual(0)
    await waitFor(async () => await prom.scalar('min(fnmesh_dlq_messages{function="evfail"})') === 1, { timeoutMs: 5000, message: 'every node reporting 1 dead letter of "evfail"' })
  })

  it('turns /readyz to 503 while an agent drains', async () => {
    // 8 runs of 1.5 s over 7 slots: every agent is busy when the last one is told to stop.
    const calls = Array.from({ length: 8 }, async () => await t.mesh.invoke('slow', { ms: 1500 }, { timeoutMs: 20_000 }))
    const agent = t.cluster.agents[2]
    const port = agent.ready.adminPort as number
    await waitFor(async () => (await http(port, 'GET', '/metrics')).text.match(/^fnmesh_in_flight (\d+)$/m)?.[1] === '3', { timeoutMs: 10_000, intervalMs: 20, message: 'the third agent running 3 invocations' })
    agent.child.kill('SIGTERM')
    const r = await waitFor(async () => { const r = await http(port, 'GET', '/readyz'); return r.status === 503 ? r : undefined }, { timeoutMs: 5000, intervalMs: 20, message: '/readyz answering 503 while draining' })
    expect(r.text).toContain('draining')
    expect((await http(port, 'GET', '/healthz')).status).toBe(200)
    await within(Promise.all(calls), 30_000, 'the slow calls')
    expect((await within(agent.exited, 20_000, 'the drained agent exiting')).code).toBe(0)
  })

  it('refuses to start an agent whose admin listener binds beyond loopback without a token', async () => {
    const res = await runCli(['agent', '--nats', t.url, '--name', 'exposed', '--admin', '0.0.0.0:0'], { timeoutMs: 20_000 })
    expect(res.code).toBe(2)
    expect(res.stderr).toContain('--admin-token')
  })
})
