/**
 * Routing "probe" (--routing probe, node/src/router/probe.ts) with real components: a real
 * nats-server and three agent processes (--sandbox none) with 2, 2 and 4 slots and placement
 * labels. Where each call ran comes from its result; the probes come from the wire: this test
 * subscribes to fnmesh.probe.* on the same nats-server and decodes every LoadProbe it sees (a
 * plain subscriber gets a copy of each request and never answers it; with it on the subject a
 * probe to a dead node is never refused at once as "no responders": it waits out its 50 ms, as
 * one to a silent host does). The agents' own counters (queue waits, adverts sent) come from
 * their /metrics (--admin on 127.0.0.1).
 *
 * One mesh for every test, in order: the agent SIGKILLed stays dead, and the last test adds a
 * fourth agent (--no-router) to stop with SIGSTOP.
 * The pure parts (whom a router probes, what it takes from the answers): test/unit/probe-routing.test.ts.
 */
import { randomBytes } from 'node:crypto'
import { connect as natsConnect, type NatsConnection, type Subscription } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decode, encode, type LoadAnswer } from '../../proto/codec.js'
import { probeSubject } from '../../proto/subjects.js'
import { fixture } from '../helpers/fixtures.js'
import { http } from '../helpers/http.js'
import { countBy, startLoad, type CallRecord } from '../helpers/load.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { sleep, waitFor, within } from '../helpers/wait.js'

/** agent-1 and agent-2 have 2 slots, agent-3 has 4; agents 1 and 3 are in zone a, agent 2 in zone b */
const SLOTS = [2, 2, 4]
const LABELS = ['zone=a', 'zone=b', 'zone=a']

/** One LoadProbe seen on the wire */
interface SeenProbe { to: string, fn: string, at: number }

/** Sum of the samples of metric `name` whose labels include `labels`, in Prometheus text */
function metric (text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line)
    if (m == null || m[1] !== name) continue
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map(x => [x[1], x[2]]))
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3])
  }
  return sum
}

/** A call's failure, for assertion messages */
const failure = (r: CallRecord): string => `#${r.i} ${r.code}: ${r.message.slice(0, 200)}`

describe('routing "probe" on a real mesh of 3 agents', () => {
  let t: TestMesh
  let nc: NatsConnection
  let probeSub: Subscription
  const ids: string[] = []
  const probes: SeenProbe[] = []
  /** probes on the wire that did not decode as a LoadProbe (the test's own malformed ones) */
  let undecodable = 0
  const name = (id: string): string => `agent-${ids.indexOf(id) + 1}`
  const scrape = async (i: number): Promise<string> => (await http(t.cluster.agents[i].ready.adminPort as number, 'GET', '/metrics', { timeoutMs: 5000 })).text
  const scrapeAll = async (): Promise<string[]> => await Promise.all(t.cluster.agents.map(async (a, i) => a.running ? await scrape(i) : ''))

  beforeAll(async () => {
    t = await startMesh({
      nodes: 3,
      slots: SLOTS,
      args: ['--routing', 'probe', '--sandbox', 'none', '--admin', '127.0.0.1:0'],
      argsOf: (i) => ['--label', LABELS[i]]
    })
    ids.push(...t.cluster.agents.map(a => a.nodeId))
    nc = await natsConnect({ servers: t.url })
    probeSub = nc.subscribe('fnmesh.probe.*', {
      callback: (err, msg) => {
        if (err != null) return
        try {
          probes.push({ to: msg.subject.slice('fnmesh.probe.'.length), fn: decode('LoadProbe', msg.data).function, at: Date.now() })
        } catch {
          undecodable++
        }
      }
    })
    await nc.flush()
    // Labels ride in the adverts: every agent knows every other's before anything is routed.
    await waitFor(async () => (await t.mesh.nodes({ timeoutMs: 2000 })).filter(n => n.labels.zone != null).length === 3, { timeoutMs: 15_000, message: 'labels in every advert' })
    await t.mesh.deploy({ name: 'sleepy', path: fixture('slow.js'), timeoutMs: 10_000 })
  }, 60_000)

  afterAll(async () => {
    probeSub?.unsubscribe()
    await nc?.close().catch(() => {})
    await t?.stop()
  })

  it('spreads a closed-loop load over every agent by its slots, from probe answers, with no prompt adverts', async () => {
    const advertsBefore = (await scrapeAll()).map(m => metric(m, 'fnmesh_gossip_adverts_total', { direction: 'sent' }))
    const probesBefore = probes.length
    const started = Date.now()
    // 12 calls kept in flight on 8 slots: each router's own node fills, and the rest must go elsewhere.
    const load = startLoad(t.mesh, 'sleepy', { concurrency: 12, total: 240, event: () => ({ ms: 60 }), timeoutMs: 15_000 })
    await within(load.done, 60_000, 'the closed-loop load')
    const elapsedS = (Date.now() - started) / 1000
    const after = await scrapeAll()
    const advertsAfter = after.map(m => metric(m, 'fnmesh_gossip_adverts_total', { direction: 'sent' }))
    // The routers' own account of their picks and probes (fnmesh_router_probe_*), beside what the wire shows
    const picks = (how: string): number => after.reduce((n, m) => n + metric(m, 'fnmesh_router_probe_picks_total', { how }), 0)
    const answered = after.reduce((n, m) => n + metric(m, 'fnmesh_router_probes_total', { answer: 'answered' }), 0)

    const failed = load.records.filter(r => !r.ok)
    expect(failed.map(failure), 'every call succeeds').toEqual([])
    const ran = countBy(load.records, r => name(r.nodeId))
    const summary = `runs ${JSON.stringify(ran)} in ${elapsedS.toFixed(1)} s`
    for (const id of ids) expect(ran[name(id)] ?? 0, `every agent runs some: ${summary}`).toBeGreaterThan(10)
    // Throughput follows slots when every slot is busy: about 2x for 4 slots against 2.
    expect(ran['agent-3'], `the 4-slot agent runs clearly more than each 2-slot one: ${summary}`).toBeGreaterThan(1.3 * Math.max(ran['agent-1'], ran['agent-2']))

    const seen = probes.slice(probesBefore).filter(p => p.fn === 'sleepy')
    const attempts = load.records.reduce((n, r) => n + r.attempts, 0)
    const byTarget = countBy(seen, p => name(p.to))
    // In a mesh of 3 a pick probes at most the 2 other nodes (never its own, never one twice).
    expect(seen.length, `probes on the wire (${JSON.stringify(byTarget)}) for ${attempts} dispatches; ${summary}`).toBeGreaterThan(20)
    expect(seen.length, `at most 2 probes per dispatch: ${seen.length} probes for ${attempts} dispatches`).toBeLessThanOrEqual(2 * attempts)
    expect(seen.every(p => ids.includes(p.to)), 'probes only to nodes of the mesh').toBe(true)
    for (const id of ids) expect(byTarget[name(id)] ?? 0, `each agent is probed: ${JSON.stringify(byTarget)}`).toBeGreaterThan(0)
    const counted = { own: picks('own'), free: picks('free'), queue: picks('queue'), fallback: picks('fallback'), answered }
    expect(counted.own + counted.free + counted.queue, `picks counted by the routers: ${JSON.stringify(counted)}`).toBeGreaterThan(0)
    expect(counted.free + counted.queue, `remote picks from probe answers: ${JSON.stringify(counted)}`).toBeGreaterThan(0)
    expect(answered, `answered probes counted (${JSON.stringify(counted)}) against ${seen.length} on the wire`).toBeGreaterThan(0)
    expect(answered, `no more answers counted than probes on the wire: ${JSON.stringify(counted)}`).toBeLessThanOrEqual(probes.length)

    // Load changes send no prompt adverts in this mode: one keepalive a second (3 nodes), and a
    // few around joins. Least-loaded sends one per load change, up to one per 20 ms.
    const sent = advertsAfter.map((a, i) => a - advertsBefore[i])
    for (const [i, n] of sent.entries()) {
      expect(n, `adverts sent by agent-${i + 1} in ${elapsedS.toFixed(1)} s of load: ${JSON.stringify(sent)}`).toBeLessThanOrEqual(Math.ceil(elapsedS) + 3)
    }
  }, 90_000)

  it('queues at executors when every slot is busy: no FNMESH_ERR_NO_CAPACITY for calls whose deadline allows waiting', async () => {
    const waited = async (): Promise<number> => (await scrapeAll()).reduce((n, m) =>
      n + metric(m, 'fnmesh_queue_wait_seconds_count') - metric(m, 'fnmesh_queue_wait_seconds_bucket', { le: '0.1' }), 0)
    const before = await waited()
    const started = Date.now()
    // 24 calls of 400 ms at once on 8 slots: 16 of them cannot have a slot for about 400 ms.
    const calls = await within(Promise.allSettled(Array.from({ length: 24 }, async () => await t.mesh.invokeDetailed('sleepy', { ms: 400 }, { timeoutMs: 20_000 }))), 40_000, 'the burst')
    const elapsed = Date.now() - started
    const errors = calls.flatMap(c => c.status === 'rejected' ? [`${String(c.reason?.code)}: ${String(c.reason?.message).slice(0, 200)}`] : [])
    expect(errors, 'every call of the burst succeeds (none refused NO_CAPACITY)').toEqual([])
    const runs = calls.flatMap(c => c.status === 'fulfilled' ? [c.value] : [])
    const summary = `ran ${JSON.stringify(countBy(runs, r => name(r.nodeId)))}, attempts ${JSON.stringify(countBy(runs, r => String(r.attempts)))}, ${elapsed} ms`
    // three waves of 400 ms: the calls past the slots waited
    expect(elapsed, summary).toBeGreaterThanOrEqual(1150)
    // ... in executors' queues (the node's queue-wait histogram), not in retries at the router
    let after = before
    await waitFor(async () => (after = await waited()) - before >= 12, { timeoutMs: 5000, message: `queue waits over 100 ms counted by the agents (${summary})` })
    expect(after - before, summary).toBeLessThanOrEqual(16 + 2)
  }, 60_000)

  it('answers a malformed probe with nothing, an invalid function name with warm=false, and keeps serving', async () => {
    const target = t.cluster.agents[0]
    const subject = probeSubject(target.nodeId)
    /** A request to the agent's probe subject: the answer, or null after 400 ms without one */
    const ask = async (data: Uint8Array): Promise<LoadAnswer | null> => {
      try {
        return decode('LoadAnswer', (await nc.request(subject, data, { timeout: 400 })).data)
      } catch (err: any) {
        // the test's own subscriber is on fnmesh.probe.*: never "no responders", only silence
        if (err?.name === 'TimeoutError' || /timeout/i.test(String(err?.message))) return null
        throw err
      }
    }
    const garbage = [
      new Uint8Array(32).fill(0xff), // a varint that never ends
      Uint8Array.from([0x0f, 0x01]), // wire type 7
      Uint8Array.from([0x0a, 0x7f, 0x61]), // a string longer than the message
      randomBytes(4096) // over the 1 KiB limit of a LoadProbe
    ]
    for (const bytes of garbage) {
      expect(await ask(bytes), `answer to ${Buffer.from(bytes.subarray(0, 8)).toString('hex')}... (${bytes.length} bytes)`).toBeNull()
    }
    for (const bad of ['../../etc/passwd', 'x'.repeat(300), 'sleepy@1', '']) {
      const a = await ask(encode('LoadProbe', { function: bad, version: 1 }))
      expect(a, `answer to a probe for ${JSON.stringify(bad.slice(0, 20))}`).toMatchObject({ nodeId: target.nodeId, slots: SLOTS[0], warm: false, accepting: true })
    }
    // The real function is warm there after the load above: the answer says so.
    expect((await ask(encode('LoadProbe', { function: 'sleepy', version: 1 })))?.warm).toBe(true)
    // A flood of random bytes and of probes without a reply subject, then: still up, still serving.
    for (let i = 0; i < 300; i++) nc.publish(subject, randomBytes(1 + (i % 64)), i % 2 === 0 ? { reply: `_INBOX.garbage.${i}` } : undefined)
    for (let i = 0; i < 100; i++) nc.publish(subject, encode('LoadProbe', { function: 'sleepy', version: 1 }))
    await nc.flush()
    expect(undecodable, 'the malformed probes reached the wire').toBeGreaterThan(0)
    expect(target.running, `agent-1 still running; its log: ${target.logTail.slice(-1000)}`).toBe(true)
    expect(await ask(encode('LoadProbe', { function: 'sleepy', version: 1 }))).toMatchObject({ nodeId: target.nodeId, accepting: true })
    const runs = await within(Promise.all(Array.from({ length: 12 }, async () => await t.mesh.invokeDetailed('sleepy', { ms: 20 }, { timeoutMs: 15_000 }))), 30_000, 'calls after the malformed probes')
    expect(runs.some(r => r.nodeId === target.nodeId), `agent-1 still runs calls: ${JSON.stringify(countBy(runs, r => name(r.nodeId)))}`).toBe(true)
    expect(target.logTail).not.toMatch(/uncaught|unhandled/i)
  }, 30_000)

  it('never probes nor runs a function constrained to zone=a on the zone=b agent, and keeps --prefer a preference', async () => {
    await t.mesh.deploy({ name: 'only-a', path: fixture('slow.js'), constraints: ['zone=a'], timeoutMs: 10_000 })
    const probesBefore = probes.length
    // 10 in flight on the 6 slots of zone a: agent-2 routes a third of them and must send each away.
    const load = startLoad(t.mesh, 'only-a', { concurrency: 10, total: 100, event: () => ({ ms: 50 }), timeoutMs: 15_000 })
    await within(load.done, 40_000, 'the load of only-a')
    expect(load.records.filter(r => !r.ok).map(failure), 'every call of only-a succeeds').toEqual([])
    const ran = countBy(load.records, r => name(r.nodeId))
    expect(ran['agent-2'], `runs of only-a: ${JSON.stringify(ran)}`).toBeUndefined()
    expect(ran['agent-1'] > 0 && ran['agent-3'] > 0, `both zone=a agents run only-a: ${JSON.stringify(ran)}`).toBe(true)
    const seen = probes.slice(probesBefore).filter(p => p.fn === 'only-a')
    const byTarget = countBy(seen, p => name(p.to))
    expect(seen.length, `probes for only-a: ${JSON.stringify(byTarget)}`).toBeGreaterThan(0)
    expect(byTarget['agent-2'], `probes for only-a by target: ${JSON.stringify(byTarget)}`).toBeUndefined()

    // --prefer zone=b (agent-2 only, 2 slots): there while it has room...
    await t.mesh.deploy({ name: 'likes-b', path: fixture('slow.js'), prefer: ['zone=b'], timeoutMs: 10_000 })
    const one: string[] = []
    for (let i = 0; i < 6; i++) one.push(name((await t.mesh.invokeDetailed('likes-b', { ms: 5 }, { timeoutMs: 15_000 })).nodeId))
    expect(new Set(one), `one at a time, likes-b runs on ${one.join(', ')}`).toEqual(new Set(['agent-2']))
    // ...and elsewhere rather than queueing there when it has none: 12 at once on its 2 slots.
    const burst = await within(Promise.all(Array.from({ length: 12 }, async () => await t.mesh.invokeDetailed('likes-b', { ms: 400 }, { timeoutMs: 20_000 }))), 30_000, 'the burst of likes-b')
    const where = countBy(burst, r => name(r.nodeId))
    expect(Object.keys(where).length, `a burst of likes-b ran on ${JSON.stringify(where)}`).toBeGreaterThan(1)
    expect(where['agent-2'] ?? 0, `agent-2 takes its share of likes-b: ${JSON.stringify(where)}`).toBeGreaterThanOrEqual(2)
  }, 60_000)

  it('keeps every call succeeding within its timeout after an agent is SIGKILLed mid-run, and stops probing it', async () => {
    const victim = t.cluster.agents[0]
    const load = startLoad(t.mesh, 'sleepy', { concurrency: 8, event: () => ({ ms: 60 }), timeoutMs: 15_000, settleMs: 1000 })
    // Kill it while it runs its share and routes a third of the calls.
    await waitFor(() => load.records.filter(r => r.nodeId === victim.nodeId).length >= 5, { timeoutMs: 15_000, intervalMs: 20, message: 'agent-1 running its share of the load' })
    victim.kill('SIGKILL')
    const killedAt = Date.now()
    await within(victim.exited, 5000, 'agent-1 exiting on SIGKILL')
    // Long enough for every agent to drop it from its table (a lost connection: suspect at once,
    // removed after 2 s without adverts), and for calls it was routing to be re-sent (3.5 s).
    await sleep(5000)
    load.stop()
    await within(load.done, 30_000, 'the load after the kill')

    const after = load.records.filter(r => r.startedAt > killedAt)
    const atKill = load.records.filter(r => r.startedAt <= killedAt && r.settledAt > killedAt)
    const summary = `${after.length} calls after the kill, ran ${JSON.stringify(countBy(after, r => name(r.nodeId)))}; ${atKill.length} in flight at the kill: ${JSON.stringify(countBy(atKill, r => r.ok ? 'ok' : r.code))}`
    expect(after.length, summary).toBeGreaterThan(40)
    expect(after.filter(r => !r.ok).map(failure), `every call started after the kill succeeds: ${summary}`).toEqual([])
    expect(after.filter(r => r.nodeId === victim.nodeId), summary).toEqual([])
    for (const r of after) expect(r.settledAt - r.startedAt, `call #${r.i} within its 15 s timeout: ${summary}`).toBeLessThan(15_000)
    // Those in flight when it died fail over too (dispatches to it fail and are sent again; the
    // calls it was routing are re-sent by the SDK): none hangs.
    expect(atKill.filter(r => !r.ok).map(failure), summary).toEqual([])

    // A crashed process's connections close, so its peers stop routing to it at once (suspect,
    // then dropped after 2 s): probes to it, if any, end within moments; none later than 3 s.
    const toVictim = probes.filter(p => p.to === victim.nodeId && p.at > killedAt)
    expect(toVictim.filter(p => p.at > killedAt + 3000).map(p => p.at - killedAt), `probes to the dead agent, ms after the kill: ${toVictim.map(p => p.at - killedAt).join(', ')}`).toEqual([])
    // and the mesh shows only the live ones
    await t.waitForNodes(t.cluster.agents.filter(a => a.running).length, 10_000)
  }, 60_000)

  it('leaves out an agent that stops answering (SIGSTOP: connected but silent) until its peers drop it, and every call succeeds', async () => {
    // --no-router: it takes no calls off NATS itself (a stopped router's calls wait out the
    // SDK's re-send, router-failover.test.ts), so it only gets what the probing routers send it.
    const silent = await t.cluster.addAgent(2, ['--no-router', '--label', 'zone=a'])
    ids.push(silent.nodeId)
    try {
      await t.waitForNodes(t.cluster.agents.filter(a => a.running).length, 15_000)
      const load = startLoad(t.mesh, 'sleepy', { concurrency: 8, event: () => ({ ms: 60 }), timeoutMs: 15_000, settleMs: 1000 })
      await waitFor(() => load.records.filter(r => r.nodeId === silent.nodeId).length >= 5, { timeoutMs: 15_000, intervalMs: 20, message: 'the new agent running its share of the load' })
      silent.kill('SIGSTOP')
      const stoppedAt = Date.now()
      // Its TCP connections stay up: no disconnect, only its adverts stop; peers drop it after 3
      // keepalives (3 s). Meanwhile probes to it get no answer within 50 ms.
      await sleep(6000)
      load.stop()
      await within(load.done, 30_000, 'the load after the stop')

      const after = load.records.filter(r => r.startedAt > stoppedAt)
      const atStop = load.records.filter(r => r.startedAt <= stoppedAt && r.settledAt > stoppedAt)
      const toSilent = probes.filter(p => p.to === silent.nodeId && p.at > stoppedAt).map(p => p.at - stoppedAt)
      const slow = after.filter(r => r.settledAt - r.startedAt > 2000).map(r => `#${r.i} +${r.startedAt - stoppedAt} ms took ${r.settledAt - r.startedAt} ms (${r.attempts} attempts)`)
      const summary = `${after.length} calls after the stop, ran ${JSON.stringify(countBy(after, r => name(r.nodeId)))}; ${atStop.length} in flight at the stop: ${JSON.stringify(countBy(atStop, r => r.ok ? 'ok' : r.code))}; ${toSilent.length} probes to it after the stop`
      expect(after.length, summary).toBeGreaterThan(40)
      expect(toSilent.length, `probes went to the silent agent, unanswered (${summary})`).toBeGreaterThan(0)
      expect(after.filter(r => !r.ok).map(failure), `every call started after the stop succeeds: ${summary}`).toEqual([])
      // The calls it held when it stopped are sent elsewhere once it is dropped: late, not lost.
      expect(atStop.filter(r => !r.ok).map(failure), summary).toEqual([])
      // A call sent to it after the stop would wait there until it is dropped (2 to 3.5 s after).
      expect(slow, `calls after the stop that took over 2 s: ${summary}`).toEqual([])
      expect(toSilent.filter(ms => ms > 4500), `probes to it, ms after the stop: ${toSilent.join(', ')}`).toEqual([])
    } finally {
      silent.kill('SIGKILL')
    }
  }, 60_000)
})
