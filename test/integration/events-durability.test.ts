/**
 * Nothing lost: async events survive agents killed with SIGKILL and a NATS server restart;
 * schedules fire once per tick while agents die and come back; events spread by capacity.
 * Events are counted in metering (records exported from the mesh, by event id), and runs as the
 * function reports them (so repeated runs of one event show).
 */
import { afterEach, describe, expect, it } from 'vitest'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager, jetstream, AckPolicy, DeliverPolicy } from '@nats-io/jetstream'
import { spawnAgent, type AgentProcess } from '../../node/src/dev/cluster.js'
import { EVENTS_STREAM, functionSubject } from '../../core/events.js'
import type { Mesh } from '../../sdk/src/client.js'
import { fixture } from '../helpers/fixtures.js'
import { meteredEvents } from '../helpers/ledgers.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { SeenLog } from '../helpers/seen.js'
import { sleep, waitFor, within } from '../helpers/wait.js'

/** Starts a stopped or killed agent again on its data dir, in place in the cluster's list */
async function restart (t: TestMesh, agent: AgentProcess): Promise<AgentProcess> {
  await agent.exited
  const again = await spawnAgent(agent.options)
  t.cluster.agents[t.cluster.agents.indexOf(agent)] = again
  return again
}

/** Publishes events "<prefix>-0".."<prefix>-(n-1)", retrying each (same id) until JetStream accepts it */
async function publishAll (mesh: Mesh, subject: string, prefix: string, n: number, concurrency = 32): Promise<{ retries: number }> {
  let next = 0
  let retries = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) {
      const i = next++
      for (;;) {
        try {
          await mesh.publish(subject, { i }, { id: `${prefix}-${i}`, timeoutMs: 2000 })
          break
        } catch {
          retries++
          await sleep(200)
        }
      }
    }
  }))
  return { retries }
}

async function waitDrained (mesh: Mesh, fn: string, timeoutMs: number): Promise<void> {
  let zeroes = 0
  await waitFor(async () => {
    const f = (await mesh.functions({ timeoutMs: 3000 })).find(x => x.name === fn)
    zeroes = f?.backlog === 0 ? zeroes + 1 : 0
    return zeroes >= 3
  }, { timeoutMs, intervalMs: 500, message: `every event of "${fn}" acknowledged` })
}

describe('async events when machines die', () => {
  let t: TestMesh | undefined

  afterEach(async () => {
    await t?.stop()
    t = undefined
  })

  it('runs all of 2,000 events while an agent is killed with SIGKILL mid-run and restarted', async () => {
    t = await startMesh({ nodes: 3, slots: 4 })
    const mesh = t.mesh
    const seen = await SeenLog.start(t.url)
    await mesh.deploy({ name: 'work', path: fixture('report.js'), triggers: ['work.>'], timeoutMs: 5000, egress: true, env: { NATS_PORT: String(t.cluster.nats.port), SLEEP_MS: '10' } })
    const publishing = publishAll(mesh, 'work.item', 'w', 2000)
    const victim = t.cluster.agents[1]
    await waitFor(async () => ((await mesh.usage({ fn: 'work' })).functions[0]?.invocations ?? 0) > 300, { timeoutMs: 30_000, message: '300 events run before the kill' })
    victim.kill('SIGKILL')
    await within(victim.exited, 5000, 'the killed agent exiting')
    await sleep(1000)
    await restart(t, victim)
    const { retries } = await publishing
    await waitDrained(mesh, 'work', 60_000)
    // Records reach every replica within a second or so: ask until they have all arrived.
    let metered = new Set<string>()
    await waitFor(async () => (metered = await meteredEvents(mesh, 'work')).size >= 2000, { timeoutMs: 20_000, message: '2,000 events in metering' }).catch(() => {})
    const missing = Array.from({ length: 2000 }, (_, i) => `w-${i}`).filter(id => !metered.has(id))
    const runs = new Map<string, number>()
    for (const r of seen.of('work')) runs.set(r.cloudEvent?.id ?? '', (runs.get(r.cloudEvent?.id ?? '') ?? 0) + 1)
    const duplicates = [...runs.values()].reduce((n, c) => n + c - 1, 0)
    await seen.stop()
    console.log(`2,000 events with a SIGKILL: ${metered.size} distinct events metered, ${missing.length} lost; ${seen.of('work').length} runs reported, ${duplicates} of them repeats of an event already run (each run billed: one record per run); ${retries} publish retries`)
    expect(missing).toEqual([])
    expect(metered.size).toBe(2000)
  })

  it('loses nothing when the NATS server restarts mid-run', async () => {
    t = await startMesh({ nodes: 3, slots: 4 })
    const mesh = t.mesh
    await mesh.deploy({ name: 'durable', path: fixture('slow.js'), triggers: ['durable.>'], timeoutMs: 5000 })
    const publishing = publishAll(mesh, 'durable.item', 'd', 600, 8)
    await waitFor(async () => ((await mesh.usage({ fn: 'durable' })).functions[0]?.invocations ?? 0) > 100, { timeoutMs: 30_000, message: '100 events run before the restart' })
    await t.cluster.nats.restart()
    const { retries } = await publishing
    await waitDrained(mesh, 'durable', 60_000)
    let metered = new Set<string>()
    await waitFor(async () => (metered = await meteredEvents(mesh, 'durable')).size >= 600, { timeoutMs: 20_000, message: '600 events in metering' }).catch(() => {})
    const missing = Array.from({ length: 600 }, (_, i) => `d-${i}`).filter(id => !metered.has(id))
    console.log(`600 events across a NATS restart: ${metered.size} distinct metered, ${missing.length} lost; ${retries} publish retries during the outage`)
    expect(missing).toEqual([])
  })

  it('fires a schedule of every second once per tick across 3 agents for 20 s while agents are killed and restarted', async () => {
    t = await startMesh({ nodes: 3, slots: 4 })
    const seen = await SeenLog.start(t.url)
    const nc: NatsConnection = await connect({ servers: t.url })
    try {
      // An observer consumer of its own sees every tick JetStream stored, once each.
      const jsm = await jetstreamManager(nc)
      await t.mesh.deploy({ name: 'clock', path: fixture('report.js'), triggers: ['rate:1s'], egress: true, env: { NATS_PORT: String(t.cluster.nats.port) } })
      await jsm.consumers.add(EVENTS_STREAM, { durable_name: 'test_observer', filter_subject: functionSubject('clock', 'schedule'), ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All })
      const start = Date.now()
      const [a1, a2] = t.cluster.agents
      await sleep(4000)
      a1.kill('SIGKILL')
      await sleep(3000)
      await restart(t, a1)
      await sleep(3000)
      a2.kill('SIGKILL')
      await sleep(3000)
      await restart(t, a2)
      await sleep(Math.max(0, start + 20_000 - Date.now()))
      const end = Date.now()
      await sleep(2000)
      const stored: number[] = []
      const consumer = await jetstream(nc).consumers.get(EVENTS_STREAM, 'test_observer')
      const batch = await consumer.fetch({ max_messages: 1000, expires: 2000 })
      for await (const m of batch) { stored.push(Date.parse(m.json<{ time: string }>().time)); m.ack() }
      const ticks = stored.filter(ms => ms > start + 1000 && ms <= end)
      const expected = Array.from({ length: Math.floor(end / 1000) - Math.ceil((start + 1000) / 1000) + 1 }, (_, i) => (Math.ceil((start + 1000) / 1000) + i) * 1000).filter(ms => ms > start + 1000 && ms <= end)
      // A tick the killed agent had pulled runs elsewhere once JetStream redelivers it (ack wait, 10 s).
      const ran = new Map<string, number>()
      const notRunYet = (): number[] => {
        ran.clear()
        for (const r of seen.of('clock')) ran.set(r.event.time, (ran.get(r.event.time) ?? 0) + 1)
        return expected.filter(ms => !ran.has(new Date(ms).toISOString()))
      }
      await waitFor(() => notRunYet().length === 0, { timeoutMs: 15_000, message: 'every fired tick running' }).catch(() => {})
      const notRun = notRunYet()
      const ranTwice = [...ran.values()].filter(n => n > 1).length
      console.log(`schedule under kills: ${expected.length} ticks due, ${ticks.length} fired (stored), ${new Set(ticks).size} distinct, ${notRun.length} not run, ${ranTwice} run twice`)
      // Fired once per tick: every due tick stored exactly once.
      expect([...ticks].sort((x, y) => x - y)).toEqual(expected)
      // And every fired tick ran (at least once: a run cut short by a kill runs again).
      expect(notRun).toEqual([])
    } finally {
      await nc.close()
      await seen.stop()
    }
  })

  it('spreads events over the agents in proportion to their free slots', async () => {
    t = await startMesh({ nodes: 3, slots: [2, 2, 4] })
    await t.mesh.deploy({ name: 'spread', path: fixture('slow.js'), triggers: ['spread.>'], timeoutMs: 5000 })
    await publishAll(t.mesh, 'spread.item', 's', 300)
    await waitDrained(t.mesh, 'spread', 60_000)
    const byNode = (await t.mesh.usage({ fn: 'spread' })).functions[0].byNode
    const counts = t.cluster.agents.map(a => byNode[a.nodeId] ?? 0)
    console.log(`events by agent with slots 2/2/4: ${counts.join('/')}`)
    expect(counts.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(300)
    const small = (counts[0] + counts[1]) / 2
    expect(counts[2] / small).toBeGreaterThan(1.4)
    expect(counts[2] / small).toBeLessThan(2.8)
  })
})
