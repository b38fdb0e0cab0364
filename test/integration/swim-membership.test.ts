/**
 * Membership "swim" (--membership swim, node/src/gossip/swim.ts) with real components: a real
 * nats-server and four agent processes (--sandbox none, 2 slots each; agent-2 in zone b, the
 * others in zone a), routing "probe" (swim's default). What each agent knows and does comes from
 * its /metrics (--admin on 127.0.0.1): fnmesh_gossip_peers (members it routes to),
 * fnmesh_membership_{messages,bytes,events}_total, and fnmesh_gossip_adverts_total and
 * fnmesh_libp2p_bytes_total, which must show no gossip at all in this mode. The test's own NATS
 * client reads an agent's whole membership as a joining node would (a SYNC request on its
 * subject) and sends what a hostile client could: garbage, forged entries, and accusations.
 *
 * One mesh for every test, in order: the fifth agent added joins for good, the agent SIGKILLed
 * stays dead, the agent SIGSTOPped must come back after SIGCONT, and the last test sends
 * accusations (suspect, dead: nobody signs those) about a live agent it must refute.
 * The protocol's rules in pieces, deterministic: test/unit/swim.test.ts.
 */
import { createPrivateKey, randomBytes, sign as edSign, type KeyObject } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AgentProcess } from '../../node/src/dev/cluster.js'
import { decode, encode, MemberState, SwimKind, type CapacityAdvert, type Encodable, type MemberUpdate, type SwimMessage } from '../../proto/codec.js'
import { SWIM_JOIN_SUBJECT, swimSubject } from '../../proto/subjects.js'
import { SWIM_SYNC_MS } from '../../node/src/gossip/swim.js'
import { fixture } from '../helpers/fixtures.js'
import { http } from '../helpers/http.js'
import { countBy, startLoad, type CallRecord } from '../helpers/load.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { sleep, waitFor, within } from '../helpers/wait.js'

const SWIM_ARGS = ['--membership', 'swim', '--sandbox', 'none', '--admin', '127.0.0.1:0']
const LABELS = ['zone=a', 'zone=b', 'zone=a', 'zone=a']

/** Sum of the samples of metric `name` whose labels include `labels` (a RegExp value: matching), in Prometheus text */
function metric (text: string, name: string, labels: Record<string, string | RegExp> = {}): number {
  let sum = 0
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line)
    if (m == null || m[1] !== name) continue
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map(x => [x[1], x[2]]))
    if (Object.entries(labels).every(([k, v]) => typeof v === 'string' ? have[k] === v : v.test(have[k] ?? ''))) sum += Number(m[3])
  }
  return sum
}

const failure = (r: CallRecord): string => `#${r.i} ${r.code}: ${r.message.slice(0, 200)}`

/** What the test reads of one agent's /metrics */
interface Scrape { peers: number, sent: number, received: number, rejected: number, bytesOut: number, bytesIn: number, suspected: number, dead: number, refuted: number, probeFailed: number, advertsSent: number, meshsubBytes: number }

function parse (text: string): Scrape {
  return {
    peers: metric(text, 'fnmesh_gossip_peers'),
    sent: metric(text, 'fnmesh_membership_messages_total', { direction: 'sent' }),
    received: metric(text, 'fnmesh_membership_messages_total', { direction: 'received' }),
    rejected: metric(text, 'fnmesh_membership_messages_total', { direction: 'rejected' }),
    bytesOut: metric(text, 'fnmesh_membership_bytes_total', { direction: 'out' }),
    bytesIn: metric(text, 'fnmesh_membership_bytes_total', { direction: 'in' }),
    suspected: metric(text, 'fnmesh_membership_events_total', { event: 'suspected' }),
    dead: metric(text, 'fnmesh_membership_events_total', { event: 'dead' }),
    refuted: metric(text, 'fnmesh_membership_events_total', { event: 'refuted' }),
    probeFailed: metric(text, 'fnmesh_membership_events_total', { event: 'probe_failed' }),
    advertsSent: metric(text, 'fnmesh_gossip_adverts_total', { direction: 'sent' }),
    meshsubBytes: metric(text, 'fnmesh_libp2p_bytes_total', { protocol: /meshsub/ })
  }
}

/** A key of the test's own: what a hostile NATS client signs with */
async function attackerKey (): Promise<{ id: string, signKey: KeyObject }> {
  const key = await generateKeyPair('Ed25519') as unknown as PrivateKey
  const signKey = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), Buffer.from(key.raw.subarray(0, 32))]), format: 'der', type: 'pkcs8' })
  return { id: peerIdFromPrivateKey(key as never).toString(), signKey }
}

describe('membership "swim" on a real mesh of 4 agents', () => {
  let t: TestMesh
  let nc: NatsConnection
  const agents = (): AgentProcess[] => t.cluster.agents
  const live = (): AgentProcess[] => t.cluster.agents.filter(a => a.running)
  const name = (id: string): string => t.cluster.agents.find(a => a.nodeId === id)?.name ?? id.slice(-6)
  const scrape = async (a: AgentProcess): Promise<Scrape> => parse((await http(a.ready.adminPort as number, 'GET', '/metrics', { timeoutMs: 3000 })).text)
  const scrapeAll = async (of: AgentProcess[]): Promise<Scrape[]> => await Promise.all(of.map(scrape))
  const peersOf = async (of: AgentProcess[]): Promise<number[]> => (await scrapeAll(of)).map(s => s.peers)
  /** Every invocation the tests made, by function: what usage must count */
  const made: Record<string, number> = {}
  const count = (records: CallRecord[], fn: string): void => { made[fn] = (made[fn] ?? 0) + records.filter(r => r.ok).length }

  /**
   * `a`'s membership as it would hand it to a joining node: a SYNC request on its subject, every
   * page. Alive and suspect members with their incarnations (this node itself first).
   */
  const view = async (a: AgentProcess): Promise<MemberUpdate[]> => {
    const out: MemberUpdate[] = []
    let offset = 0
    for (let pages = 0; pages < 10; pages++) {
      const r = decode('SwimMessage', (await nc.request(swimSubject(a.nodeId), encode('SwimMessage', { kind: SwimKind.SYNC, from: 'swim-test', offset }), { timeout: 2000 })).data)
      out.push(...r.updates)
      if (r.offset === 0) break
      offset = r.offset
    }
    return out
  }
  const incarnationOf = async (a: AgentProcess): Promise<{ startedAtMs: number, seq: number }> => {
    const self = (await view(a)).find(u => u.nodeId === a.nodeId) as MemberUpdate
    return { startedAtMs: self.startedAtMs, seq: self.seq }
  }

  beforeAll(async () => {
    t = await startMesh({ nodes: 4, slots: 2, args: SWIM_ARGS, argsOf: (i) => ['--label', LABELS[i]], readyTimeoutMs: 20_000 })
    nc = await natsConnect({ servers: t.url })
    await t.mesh.deploy({ name: 'sleepy', path: fixture('slow.js'), timeoutMs: 10_000 })
    await t.mesh.deploy({ name: 'in-b', path: fixture('slow.js'), constraints: ['zone=b'], timeoutMs: 10_000 })
  }, 60_000)

  afterAll(async () => {
    await nc?.close().catch(() => {})
    for (const a of t?.cluster.agents ?? []) a.kill('SIGCONT')
    await t?.stop()
  })

  it('forms the mesh over NATS alone: every agent routes to the 3 others, labels known, no gossipsub and no adverts', async () => {
    // startMesh saw every agent's table hold 4 nodes; routable (not suspect) is what counts.
    await waitFor(async () => (await peersOf(agents())).every(p => p === 3), { timeoutMs: 10_000, message: 'fnmesh_gossip_peers = 3 on every agent' })
    const nodes = await t.mesh.nodes({ timeoutMs: 3000 })
    expect(nodes.map(n => [n.name, n.labels.zone]).sort()).toEqual(agents().map((a, i) => [a.name, LABELS[i].slice(5)]).sort())
    for (const a of agents()) {
      const v = await view(a)
      expect(v.map(u => name(u.nodeId)).sort(), `${a.name}'s membership`).toEqual(agents().map(x => x.name).sort())
      expect(v.every(u => u.state === MemberState.ALIVE), `${a.name}: every member alive`).toBe(true)
    }
    const s = await scrapeAll(agents())
    console.log('after forming:', s.map((x, i) => `agent-${i + 1}: sent ${x.sent}, received ${x.received}, ${x.bytesOut} B out, meshsub ${x.meshsubBytes} B, adverts ${x.advertsSent}`).join('; '))
    for (const [i, x] of s.entries()) {
      expect(x.meshsubBytes, `agent-${i + 1}: gossipsub bytes`).toBe(0)
      expect(x.advertsSent, `agent-${i + 1}: adverts sent`).toBe(0)
      expect(x.sent, `agent-${i + 1}: membership messages sent`).toBeGreaterThan(0)
      expect(x.received, `agent-${i + 1}: membership messages received`).toBeGreaterThan(0)
      expect(x.rejected, `agent-${i + 1}: nothing rejected among agents`).toBe(0)
    }
  })

  it('routes invocations over every agent, and a function constrained to zone=b only to the zone=b agent', async () => {
    const load = startLoad(t.mesh, 'sleepy', { concurrency: 8, total: 120, event: () => ({ ms: 40 }), timeoutMs: 15_000 })
    await within(load.done, 40_000, 'the load of sleepy')
    count(load.records, 'sleepy')
    expect(load.records.filter(r => !r.ok).map(failure), 'every call succeeds').toEqual([])
    const ran = countBy(load.records, r => name(r.nodeId))
    for (const a of agents()) expect(ran[a.name] ?? 0, `every agent runs some: ${JSON.stringify(ran)}`).toBeGreaterThan(5)

    const inB = startLoad(t.mesh, 'in-b', { concurrency: 4, total: 24, event: () => ({ ms: 20 }), timeoutMs: 15_000 })
    await within(inB.done, 30_000, 'the load of in-b')
    count(inB.records, 'in-b')
    expect(inB.records.filter(r => !r.ok).map(failure), 'every call of in-b succeeds').toEqual([])
    expect(countBy(inB.records, r => name(r.nodeId)), 'in-b runs on agent-2 (zone=b) only').toEqual({ 'agent-2': 24 })
  }, 60_000)

  it('meters every invocation, its records replicated: usage through each agent counts them all', async () => {
    let last = ''
    await waitFor(async () => {
      const reports = await Promise.all(agents().map(async a => await t.mesh.usage({ via: a.nodeId, timeoutMs: 5000 })))
      last = JSON.stringify(reports.map(r => ({ missing: r.missing, fns: r.functions.map(f => [f.name, f.invocations]) })))
      return reports.every(r => r.missing.length === 0 && Object.entries(made).every(([fn, n]) => r.functions.find(f => f.name === fn)?.invocations === n))
    }, { timeoutMs: 20_000, message: `usage through every agent counting ${JSON.stringify(made)}` }).catch((err) => { throw new Error(`${String(err.message)}; last: ${last}`) })
    // Each agent's own records reached their replicas (libp2p dials to the multiaddrs in members' entries)
    await waitFor(async () => (await t.mesh.meterStatus({ timeoutMs: 3000 })).every(s => s.underReplicated === 0), { timeoutMs: 15_000, message: 'no under-replicated meter records' })
    const status = await t.mesh.meterStatus({ timeoutMs: 3000 })
    expect(status.map(s => s.ownRecords).reduce((a, b) => a + b, 0)).toBe(Object.values(made).reduce((a, b) => a + b, 0))
  }, 45_000)

  it('costs little and flat at idle: about 2 messages sent and 2 received per agent per second, a few hundred bytes', async () => {
    const before = await scrapeAll(agents())
    const started = Date.now()
    await sleep(6000)
    const after = await scrapeAll(agents())
    const s = (Date.now() - started) / 1000
    const rate = after.map((x, i) => ({
      sent: (x.sent - before[i].sent) / s,
      received: (x.received - before[i].received) / s,
      bytesOut: (x.bytesOut - before[i].bytesOut) / s,
      bytesIn: (x.bytesIn - before[i].bytesIn) / s,
      meshsub: x.meshsubBytes - before[i].meshsubBytes,
      adverts: x.advertsSent - before[i].advertsSent,
      suspected: x.suspected - before[i].suspected
    }))
    const summary = rate.map((r, i) => `agent-${i + 1}: ${r.sent.toFixed(2)} sent/s, ${r.received.toFixed(2)} received/s, ${r.bytesOut.toFixed(0)} B/s out, ${r.bytesIn.toFixed(0)} B/s in`).join('; ')
    // An agent's signed entry (its advert with multiaddrs) on a GOSSIP message, the smallest of the mesh's
    const entryBytes = Math.min(...(await view(agents()[0])).map(u => encode('SwimMessage', { kind: SwimKind.GOSSIP, from: u.nodeId, updates: [u] }).length))
    console.log(`idle over ${s.toFixed(1)} s: ${summary}; an entry on a message is ${entryBytes} bytes`)
    expect(3 * entryBytes, 'the bytes bound below fails if each agent sent its entry to the 3 others every second').toBeGreaterThan(900)
    for (const [i, r] of rate.entries()) {
      // One ping a period and its ack, and the acks to the pings it gets (one a period on
      // average), besides a sync every 30 s: ~2 each way; in an agent's first 16 periods also its
      // asks of the join queue (1, 2, 4, 8, 16 periods after start), which this window may hold.
      // Gossiping entries to every other member once a second would be 3 sent and 3 received,
      // each an entry of ~400 bytes: over 1,200 B/s.
      expect(r.sent, summary).toBeGreaterThan(1)
      expect(r.sent, summary).toBeLessThanOrEqual(5)
      expect(r.received, summary).toBeLessThanOrEqual(5)
      expect(r.bytesOut, summary).toBeLessThan(900)
      expect(r.bytesIn, summary).toBeLessThan(900)
      expect(r.meshsub, `agent-${i + 1}: no gossipsub bytes`).toBe(0)
      expect(r.adverts, `agent-${i + 1}: no adverts`).toBe(0)
      expect(r.suspected, `agent-${i + 1}: nobody suspected at idle`).toBe(0)
    }
  }, 30_000)

  it('rejects garbage and forged entries sent on NATS: no phantom member anywhere, every agent keeps serving', async () => {
    const before = await scrapeAll(agents())
    const mallory = await attackerKey()
    const phantom = await attackerKey()
    const victim = agents()[2]
    const real = await incarnationOf(victim)
    const sign = (advert: CapacityAdvert): Encodable<MemberUpdate> => {
      const bytes = encode('CapacityAdvert', advert)
      return { state: MemberState.ALIVE, nodeId: advert.nodeId, startedAtMs: advert.startedAtMs, seq: advert.seq, member: { advert: bytes, signature: edSign(null, Buffer.concat([Buffer.from('fnmesh/member/1\n'), bytes]), mallory.signKey) }, from: mallory.id }
    }
    const entry = (nodeId: string, startedAtMs: number, seq: number, labels: Record<string, string>): CapacityAdvert => ({
      nodeId, name: 'phantom', slots: 64, inFlight: 0, freeMemMb: 1 << 20, warm: [], seq, draining: false, startedAtMs, sentAtMs: Date.now(),
      invocations: 0, coldStarts: 0, warmStarts: 0, refusing: '', labels, provisioned: [], layers: 0, keepaliveMs: 0, addrs: []
    })
    const forged = [
      // a member that does not exist, its entry signed by another key
      sign(entry(phantom.id, Date.now() - 1000, 1, { zone: 'evil' })),
      // a real agent's next incarnation with other labels and 64 slots, signed by another key
      sign(entry(victim.nodeId, real.startedAtMs, real.seq + 1000, { zone: 'evil' })),
      // the same, as that agent's later run
      sign(entry(victim.nodeId, Date.now(), 1, { zone: 'evil' }))
    ]
    const garbage = [new Uint8Array(32).fill(0xff), Uint8Array.from([0x0f, 0x01]), Uint8Array.from([0x0a, 0x7f, 0x61]), randomBytes(2048), randomBytes(2 * 1024 * 1024)]
    const subjects = [...agents().map(a => swimSubject(a.nodeId)), SWIM_JOIN_SUBJECT]
    for (const subject of subjects) {
      for (const g of garbage) nc.publish(subject, g)
      nc.publish(subject, encode('SwimMessage', { kind: SwimKind.GOSSIP, from: mallory.id, updates: forged }))
      nc.publish(subject, encode('SwimMessage', { kind: SwimKind.GOSSIP, updates: forged })) // no sender
    }
    await nc.flush()
    // Asked directly, with forged entries riding on the request: still answered.
    for (const a of agents()) {
      const ack = decode('SwimMessage', (await nc.request(swimSubject(a.nodeId), encode('SwimMessage', { kind: SwimKind.PING, from: mallory.id, updates: forged }), { timeout: 2000 })).data)
      expect(ack, `${a.name} answers a ping`).toMatchObject({ kind: SwimKind.ACK, from: a.nodeId })
    }
    const joined = decode('SwimMessage', (await nc.request(SWIM_JOIN_SUBJECT, encode('SwimMessage', { kind: SwimKind.SYNC, from: phantom.id, updates: forged }), { timeout: 2000 })).data)
    expect(joined.kind).toBe(SwimKind.SYNC_REPLY)
    expect(joined.updates.map(u => name(u.nodeId)).sort(), 'a join answered with the real members only').toEqual(agents().map(a => a.name).sort())

    let after: Scrape[] = []
    await waitFor(async () => (after = await scrapeAll(agents())).every((x, i) => x.rejected - before[i].rejected >= 2 * forged.length), { timeoutMs: 5000, message: 'every agent counting the forged updates rejected' })
    console.log('rejected per agent:', after.map((x, i) => x.rejected - before[i].rejected).join(', '))
    // Nobody took any of it: no phantom, no zone=evil, the victim's entry unchanged
    await sleep(2000)
    for (const a of agents()) {
      const v = await view(a)
      expect(v.map(u => name(u.nodeId)).sort(), `${a.name}'s membership`).toEqual(agents().map(x => x.name).sort())
      const held = v.find(u => u.nodeId === victim.nodeId)
      expect(held?.state, `${a.name} holds ${victim.name} alive`).toBe(MemberState.ALIVE)
      expect(decode('CapacityAdvert', held?.member?.advert).labels.zone, `${a.name}'s entry of ${victim.name}`).toBe('a')
    }
    for (let i = 0; i < 4; i++) {
      const nodes = await t.mesh.nodes({ timeoutMs: 3000 })
      expect(nodes.map(n => n.id).sort()).toEqual(agents().map(a => a.nodeId).sort())
      expect(nodes.filter(n => n.labels.zone === 'evil' || n.slots !== 2)).toEqual([])
    }
    expect(await peersOf(agents())).toEqual([3, 3, 3, 3])
    const load = startLoad(t.mesh, 'sleepy', { concurrency: 8, total: 40, event: () => ({ ms: 20 }), timeoutMs: 15_000 })
    await within(load.done, 30_000, 'calls after the hostile input')
    count(load.records, 'sleepy')
    expect(load.records.filter(r => !r.ok).map(failure)).toEqual([])
    for (const a of agents()) expect(a.running, `${a.name} still running: ${a.logTail.slice(-500)}`).toBe(true)
  }, 30_000)

  it('sees a new agent on every agent within seconds, and routes work to it', async () => {
    const started = Date.now()
    const fresh = await t.cluster.addAgent(2, ['--label', 'zone=a'])
    const ready = Date.now()
    await waitFor(async () => (await peersOf(agents())).every(p => p === 4), { timeoutMs: 5000, message: 'fnmesh_gossip_peers = 4 on every agent' })
    console.log(`${fresh.name}: ready ${ready - started} ms after its start, routable everywhere ${Date.now() - ready} ms after`)
    await t.waitForNodes(5, 5000)
    const load = startLoad(t.mesh, 'sleepy', { concurrency: 10, total: 100, event: () => ({ ms: 40 }), timeoutMs: 15_000 })
    await within(load.done, 30_000, 'the load with the new agent')
    count(load.records, 'sleepy')
    expect(load.records.filter(r => !r.ok).map(failure)).toEqual([])
    const ran = countBy(load.records, r => name(r.nodeId))
    expect(ran[fresh.name] ?? 0, `the new agent runs its share: ${JSON.stringify(ran)}`).toBeGreaterThan(5)
  }, 30_000)

  it('stops routing to a SIGKILLed agent everywhere within seconds, every call succeeding, its metered runs still counted', async () => {
    const victim = agents()[3]
    const survivors = agents().filter(a => a !== victim)
    const load = startLoad(t.mesh, 'sleepy', { concurrency: 6, event: () => ({ ms: 40 }), timeoutMs: 15_000, settleMs: 1000 })
    let killedAt = 0
    let droppedAfter = 0
    try {
      await waitFor(() => load.records.filter(r => r.ok && r.nodeId === victim.nodeId).length >= 5, { timeoutMs: 15_000, intervalMs: 20, message: `${victim.name} running its share` })
      victim.kill('SIGKILL')
      killedAt = Date.now()
      await within(victim.exited, 5000, 'the SIGKILLed agent exiting')
      // Its subject has no responders any more: the first ping to it fails at once (each survivor
      // pings it once in every round of 4 periods), and the suspicion is piggybacked and gossiped
      // to the others within a period or two.
      let peers: number[] = []
      await waitFor(async () => (peers = await peersOf(survivors)).every(p => p === 3), { timeoutMs: 8000, intervalMs: 100, message: 'every survivor dropping it from routing' })
        .catch((err) => { throw new Error(`${String(err.message)}: ${JSON.stringify(peers)}`) })
      droppedAfter = Date.now() - killedAt
      await sleep(3000)
    } finally {
      load.stop()
      await within(load.done, 30_000, 'the load over the kill')
    }
    count(load.records, 'sleepy')
    console.log(`SIGKILL: out of routing on every survivor ${droppedAfter} ms after`)
    const after = load.records.filter(r => r.startedAt > killedAt)
    const summary = `${after.length} calls after the kill, ran ${JSON.stringify(countBy(after, r => name(r.nodeId)))}`
    expect(after.length, summary).toBeGreaterThan(20)
    expect(load.records.filter(r => !r.ok).map(failure), `every call succeeds: ${summary}`).toEqual([])
    // dead (not only suspect) everywhere: gone from the table
    await waitFor(async () => (await Promise.all(survivors.map(view))).every(v => !v.some(u => u.nodeId === victim.nodeId)), { timeoutMs: 6000, message: 'declared dead by every survivor' })
    await t.waitForNodes(4, 5000)
    // Its records live on in their replicas: usage still counts every invocation. Usage counts
    // runs: a call in flight at the kill may have run twice (on the dead agent, its answer lost
    // with it, and again elsewhere), so up to one more run each for those.
    const atKill = load.records.filter(r => r.startedAt <= killedAt && r.settledAt > killedAt).length
    let last = ''
    await waitFor(async () => {
      const u = await t.mesh.usage({ via: survivors[0].nodeId, timeoutMs: 5000 })
      const runs = (fn: string): number => u.functions.find(f => f.name === fn)?.invocations ?? 0
      last = JSON.stringify({ missing: u.missing.map(name), answered: u.answered.map(name), functions: u.functions.map(f => [f.name, f.invocations, Object.fromEntries(Object.entries(f.byNode).map(([id, n]) => [name(id), n]))]) })
      return u.missing.length === 0 && runs('in-b') === made['in-b'] && runs('sleepy') >= made.sleepy && runs('sleepy') <= made.sleepy + atKill
    }, { timeoutMs: 15_000, message: `usage counting ${JSON.stringify(made)} (sleepy: up to ${atKill} more) after the kill` })
      .catch((err) => { throw new Error(`${String(err.message)}; last: ${last}`) })
    console.log(`usage after the kill: ${last}`)
  }, 60_000)

  it('declares a SIGSTOPped agent suspect then dead, and routes to it again everywhere soon after SIGCONT', async () => {
    const paused = agents()[2]
    const others = live().filter(a => a !== paused)
    const before = await scrapeAll(others)
    const pausedBefore = await scrape(paused)
    paused.kill('SIGSTOP')
    const stoppedAt = Date.now()
    let state: Scrape[] = []
    // No answer to pings (its connection is up: a timeout, then 3 others try): suspect within
    // about a round of pings, dead 3 s of suspicion later.
    await waitFor(async () => (state = await scrapeAll(others)).every(s => s.peers === others.length - 1), { timeoutMs: 8000, intervalMs: 100, message: 'every other agent suspecting it' })
    const suspectAfter = Date.now() - stoppedAt
    await waitFor(async () => (await Promise.all(others.map(view))).every(v => !v.some(u => u.nodeId === paused.nodeId)), { timeoutMs: 12_000, intervalMs: 100, message: 'every other agent declaring it dead' })
    const deadAfter = Date.now() - stoppedAt
    state = await scrapeAll(others)
    expect(state.reduce((n, s, i) => n + s.suspected - before[i].suspected, 0), 'suspicions counted').toBeGreaterThan(0)
    expect(state.every((s, i) => s.dead > before[i].dead), 'each other agent counted it dead').toBe(true)
    console.log(`SIGSTOP: out of routing everywhere after ${suspectAfter} ms, dead everywhere after ${deadAfter} ms`)
    // Stopped a few seconds longer (a long pause): the others are done spreading its death.
    await sleep(4000)
    paused.kill('SIGCONT')
    const contAt = Date.now()
    let peers: number[] = []
    // Back: it handles what was sent to it meanwhile (pings given up long ago, and the suspicion
    // of itself: it refutes) and pings the others. They must take it back: it hears it was
    // declared dead and refutes, or its entry reaches them on its periodic sync, SWIM_SYNC_MS at worst.
    await waitFor(async () => (peers = await peersOf(live())).every(p => p === live().length - 1), { timeoutMs: SWIM_SYNC_MS + 5000, intervalMs: 200, message: 'the resumed agent routable again everywhere' })
      .catch(async (err) => {
        const v = await Promise.all(others.map(async a => (await view(a)).some(u => u.nodeId === paused.nodeId))).catch(() => [])
        throw new Error(`${String(err.message)}: fnmesh_gossip_peers ${JSON.stringify(peers)} on ${live().map(a => a.name).join(', ')}; others holding it: ${JSON.stringify(v)}; it refuted ${(await scrape(paused)).refuted - pausedBefore.refuted} times`)
      })
    console.log(`SIGCONT: routable again everywhere after ${Date.now() - contAt} ms`)
    expect((await scrape(paused)).refuted, 'it refuted its death').toBeGreaterThan(pausedBefore.refuted)
    const runs = await within(Promise.all(Array.from({ length: 24 }, async () => await t.mesh.invokeDetailed('sleepy', { ms: 100 }, { timeoutMs: 15_000 }))), 30_000, 'calls after SIGCONT')
    made.sleepy += runs.length
    expect(runs.some(r => r.nodeId === paused.nodeId), `the resumed agent runs calls again: ${JSON.stringify(countBy(runs, r => name(r.nodeId)))}`).toBe(true)
  }, 75_000)

  it('lets a member refute accusations it did not earn (they are not signed): back in every view within seconds', async () => {
    // agent-5, the one added; agent-1 is told
    const victim = agents()[4]
    const told = agents()[0]
    const everyone = live()
    const real = await incarnationOf(victim)
    const refutedBefore = (await scrape(victim)).refuted
    // A SUSPECT of its current incarnation, sent to one agent: it suspects it, spreads it, the victim refutes.
    nc.publish(swimSubject(told.nodeId), encode('SwimMessage', { kind: SwimKind.GOSSIP, from: 'mallory', updates: [{ state: MemberState.SUSPECT, nodeId: victim.nodeId, startedAtMs: real.startedAtMs, seq: real.seq, from: 'mallory' }] }))
    await nc.flush()
    await waitFor(async () => (await scrape(victim)).refuted > refutedBefore, { timeoutMs: 5000, message: `${victim.name} refuting the suspicion` })
    await waitFor(async () => (await peersOf(everyone)).every(p => p === everyone.length - 1), { timeoutMs: 5000, message: `${victim.name} routable again everywhere after the suspicion` })

    // A DEAD of its current incarnation and one of a made-up later run (an hour ahead): it must
    // be able to refute these too. A DEAD is no more signed than a SUSPECT.
    const now = await incarnationOf(victim)
    nc.publish(swimSubject(told.nodeId), encode('SwimMessage', {
      kind: SwimKind.GOSSIP,
      from: 'mallory',
      updates: [
        { state: MemberState.DEAD, nodeId: victim.nodeId, startedAtMs: now.startedAtMs, seq: now.seq, from: 'mallory' },
        { state: MemberState.DEAD, nodeId: victim.nodeId, startedAtMs: Date.now() + 3_600_000, seq: 1, from: 'mallory' }
      ]
    }))
    await nc.flush()
    const sentAt = Date.now()
    let peers: number[] = []
    await waitFor(async () => (peers = await peersOf(everyone)).every(p => p === everyone.length - 1), { timeoutMs: 10_000, message: `${victim.name} routable again everywhere after the forged deaths` })
      .catch(async (err) => { throw new Error(`${String(err.message)}: fnmesh_gossip_peers ${JSON.stringify(peers)} on ${everyone.map(a => a.name).join(', ')} (${told.name} was told); ${victim.name} refuted ${(await scrape(victim)).refuted - refutedBefore} times`) })
    console.log(`routable again everywhere ${Date.now() - sentAt} ms after the forged deaths`)
  }, 30_000)
})
