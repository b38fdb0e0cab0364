/**
 * Routing "probe" (node/src/router/probe.ts) in pieces, deterministic: whom a router probes
 * (probeTargets), what it takes from the answers (choose.ts bestFree/bestQueue), what an executor
 * answers a LoadProbe with (a fake NATS connection hands the probe to its subscription callback),
 * and the router's pick with its peers' answers scripted on a fake NATS connection. The same
 * with real agents and a real nats-server: test/integration/probe-routing.test.ts.
 */
import { EventEmitter } from 'node:events'
import { describe, expect, it } from 'vitest'
import { decode, encode, type Encodable, type ExecRequest, type InvokeResult, type LoadAnswer } from '../../proto/codec.js'
import { Executor } from '../../node/src/executor/executor.js'
import type { PeerEntry } from '../../node/src/gossip/peer-table.js'
import { silentLogger } from '../../node/src/logger.js'
import { bestFree, bestQueue, type Candidate } from '../../node/src/router/choose.js'
import { PROBE_ROUNDS, PROBES_PER_PICK, probeTargets } from '../../node/src/router/probe.js'
import { Router, type LocalNode } from '../../node/src/router/router.js'
// the simulator's seeded PRNG (mulberry32): the random draws are the same on every run
import { prng } from '../../scripts/sim/rng.js'

interface P { id: string, w: number }
const p = (id: string, w: number): P => ({ id, w })
const byWeight = (x: P): number => x.w

/** How often each peer is among the targets over `draws` calls */
function drawn (peers: P[], d: number, draws: number, seed: number, memory?: P): Record<string, number> {
  const rng = prng(seed)
  const counts: Record<string, number> = Object.fromEntries(peers.map(x => [x.id, 0]))
  for (let i = 0; i < draws; i++) for (const t of probeTargets(peers, byWeight, d, memory, rng)) counts[t.id]++
  return counts
}

describe('probeTargets: whom a router probes', () => {
  it('puts the memory first when it is among the peers, and ignores it when it is not', () => {
    const peers = [p('a', 1), p('b', 1), p('c', 1), p('d', 1)]
    const rng = prng(1)
    for (let i = 0; i < 200; i++) {
      const memory = peers[i % 4]
      const out = probeTargets(peers, byWeight, 2, memory, rng)
      expect(out[0], `draw ${i}`).toBe(memory)
      expect(out).toHaveLength(2)
    }
    // A memory that left the mesh (not in peers) is not probed: 2 drawn from the live ones.
    const gone = p('gone', 100)
    for (let i = 0; i < 50; i++) {
      const out = probeTargets(peers, byWeight, 2, gone, rng)
      expect(out).not.toContain(gone)
      expect(out).toHaveLength(2)
    }
    // d = 1 with a memory: the memory alone, nothing drawn (the rng is not even asked)
    expect(probeTargets(peers, byWeight, 1, peers[2], () => { throw new Error('rng asked') })).toEqual([peers[2]])
  })

  it('returns distinct peers, never more than d, and every peer when there are fewer than d', () => {
    const peers = Array.from({ length: 7 }, (_, i) => p(`n${i}`, 1 + (i % 3)))
    const rng = prng(2)
    for (const d of [0, 1, 2, 3, 7, 9]) {
      for (let i = 0; i < 300; i++) {
        const memory = i % 2 === 0 ? peers[i % 7] : undefined
        const out = probeTargets(peers, byWeight, d, memory, rng)
        expect(out.length, `d=${d}`).toBe(Math.min(d, peers.length))
        expect(new Set(out).size, `duplicates with d=${d}: ${out.map(x => x.id).join(',')}`).toBe(out.length)
        for (const x of out) expect(peers).toContain(x)
      }
    }
    expect(probeTargets([], byWeight, 2, undefined, prng(3))).toEqual([])
    const one = [p('only', 4)]
    expect(probeTargets(one, byWeight, 2, undefined, prng(3))).toEqual(one)
    expect(probeTargets(one, byWeight, 2, one[0], prng(3))).toEqual(one)
    const two = [p('x', 1), p('y', 9)]
    expect(new Set(probeTargets(two, byWeight, 5, undefined, prng(4)))).toEqual(new Set(two))
  })

  it('draws in proportion to weight (slots) over many draws with a seeded rng', () => {
    // One draw per call: the share of each peer is its weight over the total, 1 : 2 : 4 : 8.
    const peers = [p('s1', 1), p('s2', 2), p('s4', 4), p('s8', 8)]
    const draws = 60_000
    const one = drawn(peers, 1, draws, 7)
    for (const x of peers) {
      expect(Math.abs(one[x.id] / draws - x.w / 15), `${x.id}: ${one[x.id]} of ${draws}`).toBeLessThan(0.01)
    }
    // Behind a memory, the others are drawn by weight among the rest only: 2 : 4 : 8.
    const behind = drawn(peers, 2, draws, 8, peers[3])
    expect(behind.s8).toBe(draws)
    for (const x of peers.slice(0, 3)) {
      expect(Math.abs(behind[x.id] / draws - x.w / 7), `${x.id} behind the memory: ${behind[x.id]}`).toBeLessThan(0.01)
    }
    // Two drawn without replacement: the heaviest is in nearly every pair, the lightest seldom.
    const two = drawn(peers, 2, draws, 9)
    expect(two.s1 + two.s2 + two.s4 + two.s8).toBe(2 * draws)
    expect(two.s8).toBeGreaterThan(two.s4)
    expect(two.s4).toBeGreaterThan(two.s2)
    expect(two.s2).toBeGreaterThan(two.s1)
  })

  it('never draws a zero-weight peer while one with weight is left, and falls back to uniform when all weigh zero', () => {
    const mixed = [p('z1', 0), p('heavy', 3), p('z2', 0), p('neg', -5), p('light', 1)]
    const rng = prng(10)
    for (let i = 0; i < 2000; i++) {
      const out = probeTargets(mixed, byWeight, 2, undefined, rng)
      expect(new Set(out.map(x => x.id)), `draw ${i}`).toEqual(new Set(['heavy', 'light']))
    }
    // d past the weighted ones: the rest come uniformly from the weightless (negative counts as 0)
    const five = probeTargets(mixed, byWeight, 5, undefined, prng(11))
    expect(new Set(five)).toEqual(new Set(mixed))
    const zeros = [p('a', 0), p('b', 0), p('c', 0), p('d', 0)]
    const draws = 40_000
    const uniform = drawn(zeros, 1, draws, 12)
    for (const x of zeros) expect(Math.abs(uniform[x.id] / draws - 0.25), `${x.id}: ${uniform[x.id]}`).toBeLessThan(0.01)
  })
})

const cand = (id: string, load: number, slots: number, more: Partial<Candidate> = {}): Candidate => ({ id, load, slots, warm: false, ...more })

describe('bestFree and bestQueue: the choice from fresh answers', () => {
  it('bestFree: undefined without a candidate with a free slot; the least utilised otherwise, whatever the order', () => {
    expect(bestFree([])).toBeUndefined()
    expect(bestFree([cand('full', 2, 2), cand('over', 9, 4), cand('none', 0, 0)])).toBeUndefined()
    const list = [cand('a', 3, 4), cand('b', 1, 4), cand('c', 5, 8), cand('full', 2, 2)]
    for (let r = 0; r < list.length; r++) {
      const rotated = [...list.slice(r), ...list.slice(0, r)]
      expect(bestFree(rotated)?.id, `order ${rotated.map(c => c.id).join(',')}`).toBe('b')
    }
  })

  it('bestFree: on equal utilisation a warm one, then the router\'s own node, then more free slots; a penalty counts as load', () => {
    expect(bestFree([cand('cold', 1, 2), cand('warm', 2, 4, { warm: true })])?.id).toBe('warm')
    expect(bestFree([cand('peer', 1, 2), cand('self', 1, 2, { self: true })])?.id).toBe('self')
    expect(bestFree([cand('peer', 1, 2, { warm: true }), cand('self', 1, 2, { self: true })])?.id).toBe('peer')
    expect(bestFree([cand('small', 1, 2), cand('big', 4, 8)])?.id).toBe('big')
    // 1/4 + 0.5 penalty (a recent failure) is worse than 2/4
    expect(bestFree([cand('penalised', 1, 4, { penalty: 0.5 }), cand('busier', 2, 4)])?.id).toBe('busier')
  })

  it('bestQueue: undefined when no candidate\'s expected wait fits, or it has no slots; the shortest wait per slot otherwise', () => {
    expect(bestQueue([], 1000, 10)).toBeUndefined()
    expect(bestQueue([cand('none', 3, 0)], 60_000, 10)).toBeUndefined()
    // slots 2, load 4, 100 ms runs: (4 - 2 + 1) x 100 / 2 = 150 ms
    expect(bestQueue([cand('a', 4, 2)], 149, 100)).toBeUndefined()
    expect(bestQueue([cand('a', 4, 2)], 150, 100)?.id).toBe('a')
    // (2 + 1) / 2 = 1.5 against (8 + 1) / 8 = 1.125: the 8-slot queue, in either order
    expect(bestQueue([cand('small', 2, 2), cand('big', 8, 8)], 10_000, 10)?.id).toBe('big')
    expect(bestQueue([cand('big', 8, 8), cand('small', 2, 2)], 10_000, 10)?.id).toBe('big')
    // the shortest per slot does not fit; the other does
    expect(bestQueue([cand('long', 4 + 100, 4), cand('short', 5, 2)], 200, 10)?.id).toBe('short')
  })

  it('bestQueue: leaves out a queue that refused as long a budget since, and weighs warmth and its own node on a tie', () => {
    expect(bestQueue([cand('refused', 2, 2, { waitAboveMs: 500 }), cand('deep', 20, 2)], 500, 5)?.id).toBe('deep')
    expect(bestQueue([cand('refused', 2, 2, { waitAboveMs: 500 }), cand('deep', 20, 2)], 501, 5)?.id).toBe('refused')
    expect(bestQueue([cand('cold', 2, 2), cand('warm', 2, 2, { warm: true })], 1000, 10)?.id).toBe('warm')
    expect(bestQueue([cand('peer', 2, 2), cand('self', 2, 2, { self: true })], 1000, 10)?.id).toBe('self')
  })
})

// ---------------------------------------------------------------------------------------------
// The executor's answer

const NODE = '12D3KooWProbeNode'

/** An executor on a fake NATS connection that keeps each subscription's callback, and a pool whose runs finish when told */
function executorSetup (slots: number, opts: { refusing?: () => string, idle?: (key: string) => boolean } = {}) {
  const callbacks = new Map<string, (err: Error | null, msg: unknown) => void>()
  const unsubscribed: string[] = []
  const asked: string[] = []
  const finish: Array<() => void> = []
  const nc = {
    subscribe: (subject: string, o: { callback: (err: Error | null, msg: unknown) => void }) => {
      callbacks.set(subject, o.callback)
      return { unsubscribe: () => { unsubscribed.push(subject) } }
    }
  }
  const pool = {
    hasIdle: (key: string) => { asked.push(key); return opts.idle?.(key) ?? false },
    acquire: async () => ({
      cold: false,
      worker: { invoke: async () => { await new Promise<void>(resolve => { finish.push(resolve) }); return { ok: true, durationMs: 1, payload: '"done"' } } }
    }),
    release: () => {}
  }
  const executor = new Executor({
    nc: nc as any,
    nodeId: NODE,
    functions: { spec: async () => ({ name: 'f', version: 1, memoryMb: 128, timeoutMs: 3000 }), taskRoot: async () => '/nonexistent' } as any,
    pool: pool as any,
    meter: { record: async () => {}, refusing: opts.refusing ?? (() => '') },
    logger: silentLogger(),
    onLoadChange: () => {}
  }, { slots })
  executor.start()
  /** Delivers `data` to the probe subscription (with reply subject `o.reply`); returns the answers it sent */
  const probe = (data: Uint8Array, o: { reply?: string, respond?: (b: Uint8Array) => boolean } = { reply: '_INBOX.test.1' }): Uint8Array[] => {
    const out: Uint8Array[] = []
    const cb = callbacks.get(`fnmesh.probe.${NODE}`)
    if (cb == null) throw new Error(`no subscription on fnmesh.probe.${NODE}; subscribed: ${[...callbacks.keys()].join(', ')}`)
    cb(null, { subject: `fnmesh.probe.${NODE}`, reply: o.reply, data, respond: o.respond ?? ((b: Uint8Array) => { out.push(b); return true }) })
    return out
  }
  const ask = (fn: string, version = 1): LoadAnswer => {
    const answers = probe(encode('LoadProbe', { function: fn, version }))
    expect(answers, `answers to a probe for "${fn.slice(0, 40)}"`).toHaveLength(1)
    return decode('LoadAnswer', answers[0])
  }
  const req = (id: string, queueMs = 0): Encodable<ExecRequest> => ({ invocationId: id, function: 'f', version: 1, payload: Buffer.from('{}'), attempt: 1, trigger: 'sync', queueMs })
  const until = async (fn: () => boolean, what: string): Promise<void> => {
    const end = Date.now() + 2000
    while (!fn()) {
      if (Date.now() > end) throw new Error(`Timed out waiting for ${what}`)
      await new Promise(resolve => setTimeout(resolve, 2))
    }
  }
  return { executor, probe, ask, asked, unsubscribed, finish, req, until }
}

describe('the executor\'s answer to a load probe', () => {
  it('answers its node id, slots, running and queued counts at that moment, and accepting', async () => {
    const { executor, ask, finish, req, until } = executorSetup(2)
    expect(ask('f')).toMatchObject({ nodeId: NODE, slots: 2, inFlight: 0, queued: 0, warm: false, accepting: true })
    const runs = [executor.execute(req('a')), executor.execute(req('b')), executor.execute(req('q', 5000))]
    await until(() => executor.load === 3, 'two running and one queued')
    expect(ask('f')).toMatchObject({ slots: 2, inFlight: 2, queued: 1, accepting: true })
    await until(() => finish.length === 2, 'both runs to start')
    finish.shift()?.()
    await until(() => finish.length === 2, 'the queued one to take the freed slot')
    expect(ask('f')).toMatchObject({ inFlight: 2, queued: 0 })
    for (const f of finish.splice(0)) f()
    expect((await Promise.all(runs)).every(r => r.ok === true)).toBe(true)
    expect(ask('f')).toMatchObject({ inFlight: 0, queued: 0 })
  })

  it('says warm only for a valid function name whose sandbox is idle, and never asks the pool about an invalid name', () => {
    const { ask, asked } = executorSetup(2, { idle: key => key === 'f@3' })
    expect(ask('f', 3).warm).toBe(true)
    expect(ask('f', 2).warm).toBe(false)
    expect(ask('g', 3).warm).toBe(false)
    expect(asked).toEqual(['f@3', 'f@2', 'g@3'])
    for (const bad of ['', '../etc', 'a b', '-lead', 'x'.repeat(65), 'f@3', 'é']) {
      const a = ask(bad, 3)
      expect(a, `probe for ${JSON.stringify(bad.slice(0, 20))}`).toMatchObject({ nodeId: NODE, slots: 2, warm: false, accepting: true })
    }
    expect(asked).toEqual(['f@3', 'f@2', 'g@3'])
  })

  it('says not accepting while it drains or its meter refuses work', async () => {
    let refusing = ''
    const { executor, ask } = executorSetup(2, { refusing: () => refusing })
    refusing = 'disk 99% full'
    expect(ask('f').accepting).toBe(false)
    refusing = ''
    expect(ask('f').accepting).toBe(true)
    await executor.drain()
    expect(ask('f').accepting).toBe(false)
  })

  it('sends nothing for malformed or oversized bytes or a probe without a reply subject, and survives a failing respond', () => {
    const { probe, ask } = executorSetup(2)
    // 0xff... is a varint that never ends; wire type 7 does not exist; a field 1 string longer than the bytes
    for (const bytes of [new Uint8Array(16).fill(0xff), Uint8Array.from([0x0f]), Uint8Array.from([0x0a, 0x7f, 0x61]), new Uint8Array(2048)]) {
      expect(probe(bytes), `answer to ${Buffer.from(bytes.subarray(0, 8)).toString('hex')}... (${bytes.length} bytes)`).toEqual([])
    }
    expect(probe(encode('LoadProbe', { function: 'f', version: 1 }), {})).toEqual([])
    expect(probe(encode('LoadProbe', { function: 'f', version: 1 }), { reply: '' })).toEqual([])
    // an empty message is a valid LoadProbe (every field at its default): answered, warm false
    expect(probe(new Uint8Array(0))).toHaveLength(1)
    expect(() => probe(encode('LoadProbe', { function: 'f', version: 1 }), { reply: 'r', respond: () => { throw new Error('connection closed') } })).not.toThrow()
    expect(ask('f').nodeId).toBe(NODE)
  })

  it('subscribes to its probe subject on start() and unsubscribes on stop()', () => {
    const { executor, unsubscribed } = executorSetup(1)
    executor.stop()
    expect(unsubscribed.sort()).toEqual([`fnmesh.exec.${NODE}`, `fnmesh.probe.${NODE}`])
  })
})

// ---------------------------------------------------------------------------------------------
// The router's pick, its peers' answers scripted

const SELF = 'node-self'

interface Peer {
  id: string
  slots: number
  /** what its advert says is running */
  inFlight?: number
  labels?: Record<string, string>
  /** its answer to a probe (slots default to its advert's), or 'silent' (no answer within the timeout) */
  answer?: Partial<LoadAnswer> | 'silent'
}

/**
 * A local executor whose load the test sets. As the real one, it counts a run the moment it is
 * asked (synchronously) and answers BUSY at once when full and the request may not queue; with
 * `hold`, runs last until release().
 */
class FakeLocal implements LocalNode {
  run = 10
  inFlight = 0
  queued = 0
  hold = false
  busy = 0
  readonly calls: Array<Encodable<ExecRequest>> = []
  private readonly held: Array<() => void> = []
  constructor (readonly slots: number) {}
  get load (): number { return this.inFlight + this.queued }
  isWarm (): boolean { return false }
  runMs (): number { return this.run }
  release (): void { for (const r of this.held.splice(0)) r() }
  async execute (req: Encodable<ExecRequest>): Promise<Encodable<InvokeResult>> {
    this.calls.push(req)
    if (this.load >= this.slots && (req.queueMs ?? 0) === 0) {
      this.busy++
      return { invocationId: req.invocationId, ok: false, nodeId: SELF, error: { code: 'FNMESH_ERR_BUSY', errorType: 'CapacityError', errorMessage: 'no free slot' } }
    }
    this.inFlight++
    try {
      if (this.hold) await new Promise<void>(resolve => { this.held.push(resolve) })
      return { invocationId: req.invocationId, ok: true, nodeId: SELF, payload: Buffer.from('"local"') }
    } finally { this.inFlight-- }
  }
}

function routerSetup (opts: { self?: { slots: number, labels?: Record<string, string> }, peers: Peer[], spec?: Record<string, unknown>, seed?: number }) {
  const entry = (id: string, slots: number, inFlight: number, labels: Record<string, string> | undefined, self: boolean): PeerEntry =>
    ({ advert: { nodeId: id, name: id, slots, inFlight, warm: [], provisioned: [], labels: labels ?? {} } as any, lastSeenMs: Date.now(), self, suspect: false })
  const entries = [
    ...(opts.self != null ? [entry(SELF, opts.self.slots, 0, opts.self.labels, true)] : []),
    ...opts.peers.map(x => entry(x.id, x.slots, x.inFlight ?? 0, x.labels, false))
  ]
  const table = new EventEmitter() as EventEmitter & { routable: () => PeerEntry[], size: number }
  table.routable = () => entries
  Object.defineProperty(table, 'size', { get: () => entries.length })
  const local = new FakeLocal(opts.self?.slots ?? 0)
  /** every probe sent, in order, by target node id */
  const probes: string[] = []
  /** every dispatch sent to a peer */
  const sent: Array<{ peer: string, queueMs: number }> = []
  const peers = new Map(opts.peers.map(x => [x.id, x]))
  const nc = {
    isClosed: () => false,
    subscribe: () => ({ drain: async () => {}, unsubscribe: () => {} }),
    request: async (subject: string, data: Uint8Array) => {
      const id = subject.slice(subject.lastIndexOf('.') + 1)
      const peer = peers.get(id)
      if (subject.startsWith('fnmesh.probe.')) {
        probes.push(id)
        const probe = decode('LoadProbe', data)
        if (probe.function !== 'f') throw new Error(`probe for "${probe.function}"`)
        if (peer == null || peer.answer === 'silent') throw Object.assign(new Error('timeout'), { name: 'TimeoutError' })
        return { data: encode('LoadAnswer', { nodeId: id, slots: peer.slots, inFlight: 0, queued: 0, warm: false, accepting: true, ...peer.answer }) }
      }
      const req = decode('ExecRequest', data)
      sent.push({ peer: id, queueMs: req.queueMs })
      return { data: encode('InvokeResult', { invocationId: req.invocationId, ok: true, nodeId: id, payload: Buffer.from(`"${id}"`) }) }
    }
  }
  const spec = { name: 'f', version: 1, timeoutMs: 1000, memoryMb: 128, ...opts.spec }
  const router = new Router({ nc: nc as any, nodeId: SELF, table: table as any, functions: { spec: async (name: string) => name === 'f' ? spec : undefined } as any, local, logger: silentLogger() }, { rng: prng(opts.seed ?? 1), policy: 'probe' })
  const route = async (timeoutMs = 10_000): Promise<Encodable<InvokeResult>> => await router.route({ function: 'f', payload: Buffer.from('{}'), timeoutMs })
  return { router, local, probes, sent, route }
}

describe('the router\'s pick with routing "probe"', () => {
  it('runs on its own node with a free slot and probes nobody', async () => {
    const { local, probes, sent, route } = routerSetup({ self: { slots: 2 }, peers: [{ id: 'a', slots: 8 }, { id: 'b', slots: 8 }] })
    local.inFlight = 1
    const out = await route()
    expect(out.ok, JSON.stringify(out.error)).toBe(true)
    expect(out.nodeId).toBe(SELF)
    expect(probes).toEqual([])
    expect(sent).toEqual([])
  })

  it('gives concurrent invocations only the free slots of its own node, and probes for the rest', async () => {
    // 6 invocations at once, 2 free slots here: the own-node check and the local run happen with
    // no await between them, so each invocation sees the slots the earlier ones took.
    const { local, probes, sent, route } = routerSetup({ self: { slots: 2 }, peers: [{ id: 'a', slots: 8 }, { id: 'b', slots: 8 }] })
    local.hold = true
    const calls = Array.from({ length: 6 }, async () => await route())
    await new Promise(resolve => setTimeout(resolve, 20))
    local.release()
    local.hold = false
    const out = await Promise.all(calls)
    expect(out.map(o => o.ok), JSON.stringify(out.map(o => o.error))).toEqual([true, true, true, true, true, true])
    expect(local.busy, `BUSY answers of its own executor; ran here ${local.calls.length}, sent ${JSON.stringify(sent)}`).toBe(0)
    expect(out.filter(o => o.nodeId === SELF)).toHaveLength(2)
    expect(out.map(o => o.attempts)).toEqual([1, 1, 1, 1, 1, 1])
    expect(sent).toHaveLength(4)
    expect(probes.length).toBeGreaterThan(0)
  })

  it('with its own node full, probes PROBES_PER_PICK peers and goes by their answers, not by their adverts', async () => {
    // Adverts (stale in this mode) say a is idle and b full; the answers say the opposite.
    const { local, probes, sent, route } = routerSetup({
      self: { slots: 2 },
      peers: [{ id: 'a', slots: 4, inFlight: 0, answer: { inFlight: 4 } }, { id: 'b', slots: 4, inFlight: 4, answer: { inFlight: 1 } }]
    })
    local.inFlight = 2
    const out = await route()
    expect(out.nodeId).toBe('b')
    expect(new Set(probes)).toEqual(new Set(['a', 'b']))
    expect(probes).toHaveLength(PROBES_PER_PICK)
    expect(sent).toEqual([{ peer: 'b', queueMs: 0 }])
  })

  it('probes the peer it chose last first on its next pick', async () => {
    const peers: Peer[] = ['a', 'b', 'c', 'd', 'e'].map(id => ({ id, slots: 2, answer: { inFlight: 1 } }))
    const { local, probes, sent, route } = routerSetup({ self: { slots: 1 }, peers, seed: 5 })
    local.inFlight = 1
    for (let i = 0; i < 20; i++) {
      const before = probes.length
      const last = sent.at(-1)?.peer
      expect((await route()).ok).toBe(true)
      const mine = probes.slice(before)
      expect(mine, `pick ${i}`).toHaveLength(2)
      if (last != null) expect(mine[0], `pick ${i} after choosing ${last}: probed ${mine.join(',')}`).toBe(last)
    }
  })

  it('probes first a member that just joined through this node (router.remember, membership swim), so it gets work at once', async () => {
    const peers: Peer[] = ['a', 'b', 'c', 'd', 'e', 'newcomer'].map(id => ({ id, slots: 2, answer: { inFlight: id === 'newcomer' ? 0 : 1 } }))
    const { router, local, probes, sent, route } = routerSetup({ self: { slots: 1 }, peers, seed: 9 })
    local.inFlight = 1
    router.remember('newcomer')
    expect((await route()).ok).toBe(true)
    expect(probes[0]).toBe('newcomer')
    expect(sent).toEqual([{ peer: 'newcomer', queueMs: 0 }])
    // its own node is never its memory
    router.remember(SELF)
    const before = probes.length
    expect((await route()).ok).toBe(true)
    expect(probes.slice(before)[0]).toBe('newcomer')
  })

  it('queues with queue_ms where the answered wait is shortest when no answer has a free slot', async () => {
    const { local, sent, route } = routerSetup({
      self: { slots: 1 },
      // a: (2 + 4 + 1) / 2 = 3.5; b: (4 + 0 + 1) / 4 = 1.25; its own node: (1 + 1) / 1 = 2
      peers: [{ id: 'a', slots: 2, answer: { inFlight: 2, queued: 4 } }, { id: 'b', slots: 4, answer: { inFlight: 4 } }]
    })
    local.inFlight = 1
    const out = await route(10_000)
    expect(out.nodeId).toBe('b')
    expect(sent).toHaveLength(1)
    expect(sent[0].peer).toBe('b')
    expect(sent[0].queueMs).toBeGreaterThan(7000)
  })

  it('leaves out silent peers, answers naming another node and peers not accepting', async () => {
    const { sent, probes, route } = routerSetup({
      peers: [
        { id: 'silent', slots: 8, answer: 'silent' },
        { id: 'liar', slots: 8, answer: { nodeId: 'someone-else' } },
        { id: 'drain', slots: 8, answer: { accepting: false } },
        { id: 'ok', slots: 2, answer: { inFlight: 1 } }
      ],
      seed: 3
    })
    for (let i = 0; i < 10; i++) expect((await route()).nodeId, `pick ${i}; probes so far ${probes.join(',')}`).toBe('ok')
    expect(sent.every(s => s.peer === 'ok' && s.queueMs === 0)).toBe(true)
  })

  it(`probes at most PROBES_PER_PICK x PROBE_ROUNDS distinct peers when none has room, then falls back to the adverts' view`, async () => {
    // Every answer: one slot with a queue far longer than the deadline allows. The adverts say
    // "idle" (in this mode they come at the keepalive only): the fallback picks from them.
    const peers: Peer[] = Array.from({ length: 10 }, (_, i) => ({ id: `p${i}`, slots: 1, answer: { inFlight: 1, queued: 100_000 } }))
    const { probes, sent, route } = routerSetup({ peers, seed: 9 })
    const out = await route(5000)
    expect(out.ok, JSON.stringify(out.error)).toBe(true)
    expect(probes).toHaveLength(PROBES_PER_PICK * PROBE_ROUNDS)
    expect(new Set(probes).size).toBe(probes.length)
    expect(sent).toHaveLength(1)
  })

  it('leaves a peer that did not answer out of the fallback to the adverts\' view while another will do', async () => {
    // Probing finds no room: "full" answers with a queue far past the deadline, "silent" never
    // answers (a stopped host) though its advert, the last it sent, shows 8 idle slots.
    for (const silence of ['silent', { accepting: false }] as const) {
      const { sent, probes, route } = routerSetup({
        peers: [{ id: 'silent', slots: 8, answer: silence }, { id: 'full', slots: 2, answer: { inFlight: 2, queued: 100_000 } }]
      })
      const out = await route(5000)
      expect(new Set(probes)).toEqual(new Set(['silent', 'full']))
      expect(sent.map(x => x.peer), `the fallback after ${JSON.stringify(silence)}`).not.toContain('silent')
      expect(out.nodeId).toBe('full')
    }
    // ... but one that did not answer is still tried when no other node would take the invocation
    // (it may only be slow to answer): not refused with NO_CAPACITY.
    const alone = routerSetup({ peers: [{ id: 'slow', slots: 2, answer: 'silent' }] })
    const out = await alone.route(5000)
    expect(out.ok, JSON.stringify(out.error)).toBe(true)
    expect(alone.sent.map(x => x.peer)).toEqual(['slow'])
  })

  it('never probes nor sends to a node whose labels do not satisfy the function\'s constraints, its own included', async () => {
    const { local, probes, sent, route } = routerSetup({
      self: { slots: 4, labels: { zone: 'b' } },
      peers: [
        { id: 'a1', slots: 2, labels: { zone: 'a' }, answer: { inFlight: 1 } },
        { id: 'b1', slots: 8, labels: { zone: 'b' } },
        { id: 'a2', slots: 2, labels: { zone: 'a' }, answer: { inFlight: 2 } },
        { id: 'b2', slots: 8, labels: { zone: 'b' } }
      ],
      spec: { constraints: ['zone=a'] },
      seed: 4
    })
    for (let i = 0; i < 20; i++) expect((await route()).ok).toBe(true)
    expect(local.calls).toEqual([])
    expect(new Set(probes)).toEqual(new Set(['a1', 'a2']))
    expect(new Set(sent.map(s => s.peer))).toEqual(new Set(['a1']))
  })

  it('with --prefer, takes a free slot on any eligible node before queueing at a preferred one, as least-loaded does', async () => {
    // Preferred a is full (a queue there would fit the deadline); b is not preferred and free.
    const { sent, route } = routerSetup({
      peers: [
        { id: 'a', slots: 2, labels: { zone: 'a' }, answer: { inFlight: 2 } },
        { id: 'b', slots: 2, labels: { zone: 'b' }, answer: { inFlight: 0 } }
      ],
      spec: { prefer: ['zone=a'] }
    })
    const out = await route(10_000)
    expect(out.nodeId, `sent: ${JSON.stringify(sent)}`).toBe('b')
    expect(sent).toEqual([{ peer: 'b', queueMs: 0 }])
  })

  it('with --prefer, goes to a preferred node with room, and queues at a preferred one before the others when none has room', async () => {
    const room = routerSetup({
      peers: [{ id: 'a', slots: 2, labels: { zone: 'a' }, answer: { inFlight: 1 } }, { id: 'b', slots: 8, labels: { zone: 'b' } }],
      spec: { prefer: ['zone=a'] }
    })
    expect((await room.route()).nodeId).toBe('a')
    const none = routerSetup({
      // b's queue is shorter per slot, but a is preferred and its wait fits the deadline
      peers: [{ id: 'a', slots: 2, labels: { zone: 'a' }, answer: { inFlight: 2, queued: 2 } }, { id: 'b', slots: 8, labels: { zone: 'b' }, answer: { inFlight: 8 } }],
      spec: { prefer: ['zone=a'] }
    })
    expect((await none.route(10_000)).nodeId).toBe('a')
    expect(none.sent).toHaveLength(1)
    expect(none.sent[0].queueMs).toBeGreaterThan(0)
  })
})
