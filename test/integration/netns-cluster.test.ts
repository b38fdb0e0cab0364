/**
 * The mesh across hosts: 3 hosts (network namespaces, 198.18.0.0/15, one bridge), a NATS server
 * on each clustered over routes between them, every JetStream asset with 3 replicas, one agent
 * per host on its host's address. While every kind of user operation runs in loops
 * (test/helpers/probes.ts), one mesh goes through, in turn: a NATS server SIGKILLed; a rolling
 * SIGTERM restart of all three; every process of a host SIGKILLed; a host cut off for 20 s; a
 * host added. Then: no accepted event lost, every sync call answered in time, each schedule tick
 * run once (metering), usage the same from every agent. Skips (with the reason) without namespaces.
 */
import { writeFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { jetstreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { EVENTS_STREAM } from '../../core/events.js'
import { netnsUnavailable } from '../../node/src/dev/netns.js'
import { startNetnsMesh, type NetnsMesh } from '../../node/src/dev/netns-mesh.js'
import type { AgentProcess } from '../../node/src/dev/cluster.js'
import { connect, type Mesh } from '../../sdk/src/client.js'
import { fixture } from '../helpers/fixtures.js'
import { meteredEvents, meterRecords } from '../helpers/ledgers.js'
import { Probes, type KindFigure, type ProbeKind } from '../helpers/probes.js'
import { sleep, waitFor } from '../helpers/wait.js'

const unavailable = netnsUnavailable()
if (unavailable != null) console.log(`multi-host tests skipped: ${unavailable}`)

const INVOKE_TIMEOUT_MS = 4000
const GRACE_MS = 2000

describe.skipIf(unavailable != null)('a mesh of 3 hosts with a 3-server NATS cluster', () => {
  let m: NetnsMesh | undefined
  let mesh: Mesh
  let probes: Probes
  let started = 0
  const cases: Array<{ case: string, faultAt: number, healedAt: number, figures: Record<ProbeKind, KindFigure> }> = []

  beforeAll(async () => {
    m = await startNetnsMesh({ hosts: 3 })
    // The client starts on host 1's server, the first to be killed: its fail-over is measured.
    mesh = await connect({ servers: m.natsUrls, maxReconnectAttempts: -1, noRandomize: true })
    await mesh.deploy({ name: 'ok', path: fixture('ok.js') })
    await mesh.deploy({ name: 'work', path: fixture('ok.js'), triggers: ['work.>'] })
    await mesh.deploy({ name: 'tick', path: fixture('ok.js'), triggers: ['rate:1s'] })
    await waitFor(async () => (await mesh.nodes({ timeoutMs: 2000 })).length === 3, { timeoutMs: 20_000, message: 'every agent seeing 3 nodes' })
    started = Date.now()
    probes = new Probes(mesh, INVOKE_TIMEOUT_MS)
    probes.start()
    await sleep(2000)
  }, 120_000)

  afterAll(async () => {
    await probes?.stop()
    await mesh?.close().catch(() => {})
    await m?.stop()
    m = undefined
  }, 60_000)

  /** Runs `fault`, then `heal` after `downMs`, and records what every kind of operation saw */
  async function run (name: string, fault: () => Promise<void>, downMs: number, heal: () => Promise<void>, settleMs = 5000): Promise<Record<ProbeKind, KindFigure>> {
    const faultAt = Date.now()
    await fault()
    await sleep(Math.max(0, faultAt + downMs - Date.now()))
    await heal()
    const healedAt = Date.now()
    await sleep(settleMs)
    const figures = probes.figures({ from: faultAt, to: Date.now() })
    cases.push({ case: name, faultAt, healedAt, figures })
    console.log(`${name}: ${Object.entries(figures).map(([k, f]) => `${k} gap ${(f.maxGapMs / 1000).toFixed(1)} s (${f.failed}/${f.ops} failed${f.codes.length > 0 ? ` ${f.codes.join(',')}` : ''})`).join('; ')}`)
    return figures
  }

  async function restartAgent (agent: AgentProcess): Promise<void> {
    const mm = m as NetnsMesh
    await agent.exited
    mm.agents.splice(mm.agents.indexOf(agent), 1)
    const host = mm.net.hosts.find(h => agent.name.startsWith(`h${h.index}-`))
    if (host == null) throw new Error(`no host for ${agent.name}`)
    await mm.startAgent(host, agent.name)
  }

  /** The records of `fn` whose event id `wanted` picks, in each running agent's own ledger (`id@node`) */
  async function heldByEachAgent (fn: string, wanted: (eventId: string) => boolean): Promise<Record<string, string[]>> {
    const held: Record<string, string[]> = {}
    for (const a of (m as NetnsMesh).agents.filter(x => x.running)) {
      const own: string[] = []
      try { for await (const r of mesh.exportRecords({ fn, via: a.nodeId, local: true, timeoutMs: 10_000 })) if (wanted(r.eventId)) own.push(`${r.eventId}@${r.nodeId}`) } catch (err: any) { own.push(`export failed: ${String(err?.message)}`) }
      held[a.name] = own
    }
    return held
  }

  /** Every operation kind but those named recovered within `maxGapMs` */
  function expectServing (figures: Record<ProbeKind, KindFigure>, maxGapMs: number): void {
    for (const [kind, f] of Object.entries(figures)) {
      expect(f.maxGapMs, `${kind}: longest time without a success`).toBeLessThan(maxGapMs)
    }
  }

  it('keeps every operation working when one NATS server is SIGKILLed', async () => {
    const s = (m as NetnsMesh).servers[0]
    const figures = await run('SIGKILL one NATS server', async () => { await s.kill('SIGKILL') }, 12_000, async () => { await s.start() })
    expectServing(figures, 15_000)
  }, 90_000)

  it('keeps every operation working through a rolling SIGTERM restart of all three servers', async () => {
    const servers = (m as NetnsMesh).servers
    const figures = await run('rolling SIGTERM restart of 3 servers', async () => {
      for (const s of servers) {
        await s.kill('SIGTERM')
        await s.start()
        // Let the restarted server catch up before the next goes (as a careful operator would).
        await sleep(5000)
      }
    }, 0, async () => {})
    expectServing(figures, 15_000)
  }, 120_000)

  it('keeps every operation working when every process of one host is SIGKILLed', async () => {
    const mm = m as NetnsMesh
    const s = mm.servers[2]
    const agent = mm.agents.find(a => a.name.startsWith('h3-')) as AgentProcess
    const figures = await run('SIGKILL every process of one host', async () => {
      await s.kill('SIGKILL')
      agent.kill('SIGKILL')
    }, 12_000, async () => {
      await s.start()
      await restartAgent(agent)
    })
    expectServing(figures, 15_000)
  }, 90_000)

  it('keeps serving from the majority while one host is cut off for 20 s, and reconciles it after', async () => {
    const mm = m as NetnsMesh
    // The host whose server the client uses now: the worst case (the client must notice and move).
    const host = mm.net.hosts.find(h => mesh.nc.getServer().startsWith(`${h.address}:`)) ?? mm.net.hosts[1]
    console.log(`cutting off host ${host.index} (${host.address}), the client's server`)
    const figures = await run('one host cut off for 20 s (the client\'s server)', async () => { mm.net.setLink(host, false) }, 20_000, async () => { mm.net.setLink(host, true) }, 8000)
    // A deploy in flight at the cut waits it out (its steps retry for up to 45 s, registry.ts) and
    // the client moves to another server at ~12 s: ~21-28 s without a deploy succeeding is the
    // documented worst case (README, multi-host figures), not a stall. Anything longer is.
    expectServing(figures, 30_000)
  }, 90_000)

  it('takes a host added mid-run into the mesh', async () => {
    const mm = m as NetnsMesh
    const joinAt = Date.now()
    const { agent } = await mm.addHost()
    await waitFor(async () => (await mesh.nodes({ timeoutMs: 2000 })).length === 4, { timeoutMs: 20_000, message: 'every agent seeing 4 nodes' })
    // The newcomer takes its share of invocations (least-loaded routing spreads them).
    await waitFor(async () => (await mesh.usage({ fn: 'ok', timeoutMs: 3000 })).nodes.some(n => n.id === agent.nodeId && n.invocations > 0), { timeoutMs: 20_000, intervalMs: 500, message: 'the new host running invocations' })
    cases.push({ case: 'host added', faultAt: joinAt, healedAt: Date.now(), figures: probes.figures({ from: joinAt, to: Date.now() }) })
  }, 60_000)

  it('lost no accepted event, answered every sync call in time, ran every schedule tick, and agrees on usage everywhere', async () => {
    const end = Date.now()
    await probes.stop()
    const mm = m as NetnsMesh
    // Sync calls: each answered (a result or a coded error) within its timeout plus grace.
    const invokes = probes.ops.filter(o => o.kind === 'invoke')
    const late = invokes.filter(o => o.end - o.start > INVOKE_TIMEOUT_MS + GRACE_MS)
    const uncoded = invokes.filter(o => !o.ok && !String(o.code).startsWith('FNMESH_ERR_'))
    // Events: every accepted publish metered (ran), once the backlog drained.
    const accepted = [...probes.accepted]
    let metered = new Set<string>()
    await waitFor(async () => { metered = await meteredEvents(mesh, 'work'); return accepted.every(id => metered.has(id)) }, { timeoutMs: 60_000, intervalMs: 1000, message: 'every accepted event metered' }).catch(() => {})
    const lost = accepted.filter(id => !metered.has(id))
    if (lost.length > 0) {
      // Diagnostics only: a failure here must not hide the assertion below.
      try {
        // Where are they? Each agent's own ledger, and the dead letters: a run never metered and an
        // export that missed a holder look alike from here.
        const held = await heldByEachAgent('work', id => lost.includes(id))
        const missing: string[][] = []
        for await (const r of mesh.exportRecords({ fn: 'work', timeoutMs: 10_000, onMissing: (x) => { missing.push(x) } })) if (lost.includes(r.eventId)) held.again = [...(held.again ?? []), r.eventId]
        const dead = await mesh.dlqList({ fn: 'work' }).catch((err: Error) => `dlq list failed: ${err.message}`)
        // Is each still in the stream (the consumer passed it by) or gone (acknowledged or removed)?
        const jsm = await jetstreamManager(mesh.nc)
        const where: Record<string, string> = {}
        for (const id of lost.slice(0, 40)) {
          const s = probes.stored.get(id)
          if (s == null) { where[id] = 'no seq'; continue }
          where[id] = `seq ${s.seq}${s.duplicate ? ' (dup)' : ''} at ${new Date(s.at).toISOString()}: ` + await jsm.streams.getMessage(EVENTS_STREAM, { seq: s.seq }).then(m => m == null ? 'not in stream' : `in stream (${m.subject} ${m.string().slice(0, 60)})`, (err: Error) => `not in stream (${err.message})`)
        }
        const stream = await jsm.streams.info(EVENTS_STREAM).then(i => ({ state: i.state, cluster: i.cluster }), (err: Error) => `stream info failed: ${err.message}`)
        const consumers: string[] = []
        const work: unknown[] = []
        for await (const i of jsm.consumers.list(EVENTS_STREAM)) {
          consumers.push(i.name)
          if (i.name.startsWith('fnmesh_work_')) work.push({ name: i.name, filter: i.config.filter_subject, delivered: i.delivered, ackFloor: i.ack_floor, pending: i.num_pending, ackPending: i.num_ack_pending, redelivered: i.num_redelivered, waiting: i.num_waiting, cluster: i.cluster })
        }
        console.log(`events not metered: ${lost.length} (${lost.slice(0, 40).join(', ')}); where: ${JSON.stringify(where)}; work consumer: ${JSON.stringify(work)}; stream: ${JSON.stringify(stream)}; consumers: ${consumers.join(',')}; faults: ${cases.map(c => `${c.case} ${new Date(c.faultAt).toISOString()}-${new Date(c.healedAt).toISOString()}`).join('; ')}; held in own ledgers: ${JSON.stringify(held)}; export missing members: ${JSON.stringify(missing)}; dead letters of work: ${JSON.stringify(dead).slice(0, 2000)}`)
      } catch (err: any) {
        console.log(`events not metered: ${lost.length}; diagnosing them failed: ${String(err?.stack ?? err)}`)
      }
    }
    // Schedules: every due tick from start to end stored once (late ones count: missed ticks fire late, once).
    const from = Math.ceil((started + 2000) / 1000) * 1000
    const due = Array.from({ length: Math.floor((end - 2000 - from) / 1000) + 1 }, (_, i) => from + i * 1000)
    // Schedules: every due tick from start to end ran: metering holds one record per run, event
    // id sched-tick-<trigger>-<tick ms> (JetStream's dedupe stores each tick once however many
    // agents offer it). A tick can run twice, as any event: an agent whose ack was lost with its
    // NATS server gets it redelivered (at least once, same event id); those are counted.
    const runs = new Map<number, number>()
    await waitFor(async () => {
      runs.clear()
      for (const r of await meterRecords(mesh, 'tick')) { const t = Number(r.eventId.split('-').pop()); runs.set(t, (runs.get(t) ?? 0) + 1) }
      return due.every(t => runs.has(t))
    // Bounded generously: a tick handed back (nak) or redelivered after an ack wait on a starved
    // machine runs late; one that never runs still fails below, with what the DLQ says about it.
    }, { timeoutMs: 75_000, intervalMs: 1000, message: 'every due tick metered' }).catch(() => {})
    const notRun = due.filter(t => !runs.has(t))
    // Why a tick did not run, in the assertion's own message (CI shows the tail of the run): was it
    // fired (the schedules bucket holds the last tick fired), is it still in the stream or waiting
    // on the consumer, or dead-lettered?
    let tickDiag = ''
    if (notRun.length > 0) {
      const dead = await mesh.dlqList({ fn: 'tick' }).catch((err: Error) => `dlq list failed: ${err.message}`)
      const jsm = await jetstreamManager(mesh.nc)
      const consumer = await jsm.consumers.info(EVENTS_STREAM, 'fnmesh_tick_direct').then(i => ({ delivered: i.delivered, ackFloor: i.ack_floor, pending: i.num_pending, ackPending: i.num_ack_pending, redelivered: i.num_redelivered, cluster: i.cluster }), (err: Error) => `consumer info failed: ${err.message}`)
      const lastFired: Record<string, string> = {}
      try {
        const kv = await new Kvm(mesh.nc).open('fnmesh_schedules')
        for await (const k of await kv.keys()) lastFired[k] = String((await kv.get(k))?.string())
      } catch (err: any) { lastFired.error = String(err?.message) }
      // Run but not (yet) in the export? Each agent's own ledger.
      const held = await heldByEachAgent('tick', id => notRun.some(t => id.endsWith(`-${t}`)))
      tickDiag = `ticks not run: ${notRun.map(t => `${t} (${new Date(t).toISOString()})`).join(', ')}; faults: ${cases.map(c => `${c.case} ${new Date(c.faultAt).toISOString()}-${new Date(c.healedAt).toISOString()}`).join('; ')}; in each agent's own ledger: ${JSON.stringify(held)}; last fired: ${JSON.stringify(lastFired)}; tick consumer: ${JSON.stringify(consumer)}; dead letters of tick: ${JSON.stringify(dead).slice(0, 1500)}`
      console.log(tickDiag)
    }
    const twice = due.filter(t => (runs.get(t) ?? 0) > 1)
    // Usage: the same totals from every running agent's replica, the cut-off host's records included.
    const running = mm.agents.filter(a => a.running)
    let totals: number[] = []
    await waitFor(async () => {
      totals = []
      for (const a of running) {
        const u = await mesh.usage({ via: a.nodeId, timeoutMs: 5000 })
        totals.push(u.functions.reduce((n, f) => n + f.invocations, 0))
      }
      return new Set(totals).size === 1
    }, { timeoutMs: 60_000, intervalMs: 2000, message: 'usage equal on every host' }).catch(() => {})
    // Every agent follows the registry across the reconnects: a deploy now is what each one runs.
    const latest = (await mesh.deploy({ name: 'probe', path: fixture('ok.js') })).version
    const deployedAt = Date.now()
    const versions = new Map<string, number>()
    // Bounded by the followers' relist (30 s) even if a change hint was missed.
    await waitFor(async () => {
      const r = await mesh.invokeDetailed('probe', {}, { timeoutMs: INVOKE_TIMEOUT_MS })
      versions.set(r.nodeId, r.version)
      return [...versions.values()].every(v => v === latest) && versions.size === running.length
    }, { timeoutMs: 40_000, intervalMs: 20, message: 'every agent running the latest deploy' }).catch(() => {})
    const latestEverywhereMs = Date.now() - deployedAt
    if (versions.size < running.length) {
      // Which agent never ran a call in the wait, and what the mesh thinks of it.
      const seen = new Set(versions.keys())
      const nodes = await mesh.nodes({ timeoutMs: 3000 }).catch((err: Error) => `nodes failed: ${err.message}`)
      console.log(`not seen running "probe" within the wait: ${running.filter(a => !seen.has(a.nodeId)).map(a => `${a.name} ${a.nodeId}`).join(', ')}; nodes: ${JSON.stringify(nodes).slice(0, 3000)}`)
    }
    const summary = {
      latestDeploy: latest,
      latestEverywhereMs,
      versionsByNode: Object.fromEntries(versions),
      invokes: invokes.length,
      invokeFailures: invokes.filter(o => !o.ok).length,
      late: late.length,
      uncoded: uncoded.length,
      accepted: accepted.length,
      lost: lost.length,
      ticksDue: due.length,
      ticksTwice: twice.length,
      ticksNotRun: notRun.length,
      usageTotals: totals
    }
    console.log(`multi-host summary: ${JSON.stringify(summary)}`)
    const out = process.env.FNMESH_CLUSTER_RESULTS
    if (out != null && out !== '') {
      writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), setup: '3 hosts (network namespaces on one 2-core machine), nats-server 2.9.10 cluster of 3, R3 assets, 1 agent per host (--sandbox none), client and server pings 4 s x 3 / 2 s x 3', cases, summary }, null, 2) + '\n')
    }
    expect(late.map(o => o.end - o.start)).toEqual([])
    expect(uncoded.map(o => `${String(o.code)} ${String(o.message)}`)).toEqual([])
    expect(lost, lost.length > 0 ? `events not metered: ${lost.join(', ')}` : '').toEqual([])
    expect(notRun, tickDiag).toEqual([])
    // Redeliveries are rare: a handful of ticks out of ~90, not a tick fired by every agent.
    expect(twice.length).toBeLessThan(due.length / 4)
    expect(new Set(totals).size).toBe(1)
    expect([...versions.values()].filter(v => v !== latest)).toEqual([])
    expect(versions.size).toBeGreaterThanOrEqual(2)
  }, 180_000)
})
