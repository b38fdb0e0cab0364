/**
 * The router with stubbed neighbours: a fake NATS connection (requests answered by a script per
 * peer), a fake peer table, function cache and local executor. Deterministic: rng injected, no
 * real network, no child processes.
 */
import { EventEmitter } from 'node:events'
import { describe, expect, it } from 'vitest'
import { decode, encode, type Encodable, type ExecRequest, type InvokeResult } from '../../proto/codec.js'
import type { PeerEntry } from '../../node/src/gossip/peer-table.js'
import { silentLogger } from '../../node/src/logger.js'
import { Router, type LocalNode, type RouterInit } from '../../node/src/router/router.js'

const SELF = 'node-self'
const spec = { name: 'f', version: 1, timeoutMs: 1000, memoryMb: 128 }

type Answer = Encodable<InvokeResult> | Uint8Array | 'hang' | Error

interface Peer { id: string, slots: number, inFlight?: number, warm?: string[] }

function entry (p: Peer, self = false): PeerEntry {
  return { advert: { nodeId: p.id, name: p.id, slots: p.slots, inFlight: p.inFlight ?? 0, warm: p.warm ?? [] } as any, lastSeenMs: Date.now(), self, suspect: false }
}

/** A local executor that answers at once (or holds answers until released) */
class FakeLocal implements LocalNode {
  /** the slot time this node observed for the function (what the router assumes of every peer) */
  run = 0
  inFlight = 0
  calls: Array<Encodable<ExecRequest>> = []
  held: Array<() => void> = []
  hold = false
  answer: (req: Encodable<ExecRequest>) => Encodable<InvokeResult> = (req) => ({ invocationId: req.invocationId, ok: true, nodeId: SELF, payload: Buffer.from('"local"') })
  constructor (readonly slots: number) {}
  get load (): number { return this.inFlight }
  isWarm (): boolean { return false }
  runMs (): number { return this.run }
  async execute (req: Encodable<ExecRequest>, options: { signal?: AbortSignal } = {}): Promise<Encodable<InvokeResult>> {
    this.calls.push(req)
    this.inFlight++
    try {
      if (this.hold) {
        await new Promise<void>((resolve) => {
          this.held.push(resolve)
          options.signal?.addEventListener('abort', () => { resolve() }, { once: true })
        })
        if (options.signal?.aborted === true) return { invocationId: req.invocationId, ok: false, error: { code: 'FNMESH_ERR_ABORTED', errorType: 'AbortError', errorMessage: 'aborted' } }
      }
      return this.answer(req)
    } finally { this.inFlight-- }
  }
}

function mesh (opts: { self?: number, peers?: Peer[], answers?: Record<string, Answer[]>, init?: RouterInit, advertAfterAnswer?: boolean }) {
  const table = new EventEmitter() as EventEmitter & { routable: () => PeerEntry[], size: number }
  const entries = [...(opts.self != null ? [entry({ id: SELF, slots: opts.self }, true)] : []), ...(opts.peers ?? []).map(p => entry(p))]
  table.routable = () => entries
  Object.defineProperty(table, 'size', { get: () => entries.length })
  const local = new FakeLocal(opts.self ?? 0)
  const sent: Array<{ peer: string, req: Encodable<ExecRequest> }> = []
  const subs: Array<{ subject: string, callback: (err: Error | null, msg: any) => void }> = []
  const nc = {
    isClosed: () => false,
    subscribe: (subject: string, o: { callback: (err: Error | null, msg: any) => void }) => {
      const sub = { subject, callback: o.callback, drain: async () => {}, unsubscribe: () => {} }
      subs.push(sub)
      return sub
    },
    request: async (subject: string, data: Uint8Array) => {
      const peer = subject.slice(subject.lastIndexOf('.') + 1)
      const req = decode('ExecRequest', data)
      sent.push({ peer, req })
      const a = opts.answers?.[peer]?.shift() ?? { invocationId: req.invocationId, ok: true, nodeId: peer, payload: Buffer.from(`"${peer}"`) }
      if (a === 'hang') return await new Promise(() => {})
      if (a instanceof Error) throw a
      // A fresh advert from the peer clears what the router marked (full, queue full)
      if (opts.advertAfterAnswer === true) setImmediate(() => { table.emit('updated', entries.find(e => e.advert.nodeId === peer)) })
      return { data: a instanceof Uint8Array ? a : encode('InvokeResult', a) }
    }
  }
  const router = new Router({ nc: nc as any, nodeId: SELF, table: table as any, functions: { spec: async (name: string) => name === 'f' ? spec : undefined } as any, local, logger: silentLogger() }, { rng: () => 0, ...opts.init })
  return { router, local, sent, subs, table }
}

const code = (code: string): Encodable<InvokeResult> => ({ ok: false, error: { code, errorType: 'X', errorMessage: code } })
const req = { function: 'f', payload: Buffer.from('{}') }

describe('router: busy answers', () => {
  it('marks a peer that answers BUSY as full and tries another, without counting it as a failure', async () => {
    const { router, sent } = mesh({ peers: [{ id: 'a', slots: 2 }, { id: 'b', slots: 2 }], answers: { a: [code('FNMESH_ERR_BUSY')], b: [code('FNMESH_ERR_BUSY')] } })
    const out = await router.route(req)
    expect(out.ok).toBe(true)
    expect(sent.map(s => s.peer).sort()).toEqual(['a', 'b', sent[2].peer].sort())
    expect(out.attempts).toBe(3)
  })

  it('gives up with FNMESH_ERR_NO_CAPACITY after 3 x mesh size BUSY answers to dispatches its view showed room for', async () => {
    const busy = Array.from({ length: 100 }, () => code('FNMESH_ERR_BUSY'))
    const { router, sent, table } = mesh({ peers: [{ id: 'a', slots: 2 }], answers: { a: busy } })
    // a fresh advert (showing room) after each answer, before the router picks again
    const tracker = router.tracker
    const markFull = tracker.markFull.bind(tracker)
    tracker.markFull = (peer: string) => { markFull(peer); table.emit('updated', table.routable()[0]) }
    const out = await router.route(req)
    expect(out.error?.code).toBe('FNMESH_ERR_NO_CAPACITY')
    expect(out.error?.errorMessage).toMatch(/every peer tried was full/)
    expect(sent.length).toBe(4)
    expect(sent.every(s => (s.req.queueMs ?? 0) === 0)).toBe(true)
  })

  it('sends a queued dispatch with queue_ms from the caller\'s deadline, less the run time and margin, when no peer has a free slot in its view', async () => {
    const { router, sent, local } = mesh({ peers: [{ id: 'a', slots: 2, inFlight: 2 }] })
    local.run = 100
    const out = await router.route({ ...req, timeoutMs: 10_000 })
    expect(out.ok).toBe(true)
    // 10 s left, less 100 ms of run and 25% margin: about 7400 ms, whatever queueWaitMs says
    expect(sent[0].req.queueMs).toBeGreaterThan(7300)
    expect(sent[0].req.queueMs).toBeLessThanOrEqual(7400)
  })

  it('queues where the expected wait fits the deadline even when the view shows deep queues', async () => {
    // 1 slot, 40 queued at 10 ms each: about 410 ms of wait, within a 60 s deadline
    const { router, sent, local } = mesh({ peers: [{ id: 'a', slots: 1, inFlight: 41 }] })
    local.run = 10
    const out = await router.route(req)
    expect(out.ok).toBe(true)
    expect(sent.length).toBe(1)
  })

  it('refuses with NO_CAPACITY at once, sending nothing, when no peer\'s expected wait fits the deadline', async () => {
    // 1 slot, 4 queued at 100 ms each: 500 ms of wait, over what a 400 ms deadline leaves
    const { router, sent, local } = mesh({ peers: [{ id: 'a', slots: 1, inFlight: 5 }] })
    local.run = 100
    const t0 = Date.now()
    const out = await router.route({ ...req, timeoutMs: 400 })
    expect(out.error?.code).toBe('FNMESH_ERR_NO_CAPACITY')
    expect(out.error?.errorMessage).toMatch(/within its deadline/)
    expect(Date.now() - t0).toBeLessThan(50)
    expect(sent).toEqual([])
  })

  it('leaves out, until its next advert, a peer that refused to queue for as long a budget, and refuses at once when none is left', async () => {
    const { router, sent } = mesh({ peers: [{ id: 'a', slots: 1, inFlight: 1 }, { id: 'b', slots: 1, inFlight: 1 }], answers: { a: [code('FNMESH_ERR_BUSY')], b: [code('FNMESH_ERR_BUSY')] } })
    const out = await router.route({ ...req, timeoutMs: 5000 })
    expect(out.error?.code).toBe('FNMESH_ERR_NO_CAPACITY')
    expect(sent.map(s => s.peer).sort()).toEqual(['a', 'b'])
    expect(sent.every(s => (s.req.queueMs ?? 0) > 0)).toBe(true)
    // the next invocation, with no longer a budget (a shorter deadline: the same 5 s asked a few
    // ms later can round to a budget 1 ms longer than the refused one), is refused without sending
    const next = await router.route({ ...req, timeoutMs: 4000 })
    expect(next.error?.code).toBe('FNMESH_ERR_NO_CAPACITY')
    expect(sent.length).toBe(2)
  })
})

describe('router: retryable answers', () => {
  for (const c of ['FNMESH_ERR_INTERNAL', 'FNMESH_ERR_NATS_UNAVAILABLE', 'FNMESH_ERR_METER_UNAVAILABLE', 'FNMESH_ERR_DECODE']) {
    it(`tries another peer once after ${c}, then answers PEER_UNAVAILABLE naming both`, async () => {
      const { router, sent } = mesh({ peers: [{ id: 'a', slots: 2 }, { id: 'b', slots: 2 }, { id: 'c', slots: 2 }], answers: { a: [code(c)], b: [code(c)], c: [code(c)] } })
      const out = await router.route(req)
      expect(out.error?.code).toBe('FNMESH_ERR_PEER_UNAVAILABLE')
      expect(sent.length).toBe(2)
      expect(new Set(sent.map(s => s.peer)).size).toBe(2)
      expect(out.error?.errorMessage).toMatch(new RegExp(`${c}.*; then .*${c}`))
    })
  }

  it('runs it on the second peer after one failure', async () => {
    // rng 0: of a and b (equal in every way), a comes first
    const { router, sent } = mesh({ peers: [{ id: 'a', slots: 2 }, { id: 'b', slots: 2 }], answers: { a: [code('FNMESH_ERR_INTERNAL')] } })
    const out = await router.route(req)
    expect(out.ok).toBe(true)
    expect(out.attempts).toBe(2)
    expect(sent.map(s => s.peer)).toEqual(['a', 'b'])
  })

  it('does not retry function errors or a bad bundle: they go back as they are', async () => {
    for (const c of ['FNMESH_ERR_BUNDLE_INVALID', 'FNMESH_ERR_FUNCTION', 'FNMESH_ERR_TIMEOUT']) {
      const { router, sent } = mesh({ peers: [{ id: 'a', slots: 2 }, { id: 'b', slots: 2 }], answers: { a: [code(c)], b: [code(c)] } })
      const out = await router.route(req)
      expect(out.error?.code).toBe(c)
      expect(sent.length).toBe(1)
      expect(out.attempts).toBe(1)
    }
  })

  it('answers PEER_UNAVAILABLE at once when the only peer failed and no other is left', async () => {
    const { router, sent } = mesh({ peers: [{ id: 'a', slots: 2 }], answers: { a: [code('FNMESH_ERR_INTERNAL')] }, init: { queueWaitMs: 60_000 } })
    const t0 = Date.now()
    const out = await router.route(req)
    expect(out.error?.code).toBe('FNMESH_ERR_PEER_UNAVAILABLE')
    expect(Date.now() - t0).toBeLessThan(1000)
    expect(sent.length).toBe(1)
  })
})

describe('router: unreadable answers', () => {
  it('turns garbage bytes from a peer into a coded error naming it, and tries another peer', async () => {
    const garbage = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x99])
    const { router, sent } = mesh({ peers: [{ id: 'a', slots: 2 }], answers: { a: [garbage] } })
    const out = await router.route(req)
    expect(out.ok).toBe(false)
    expect(out.error?.code).toBe('FNMESH_ERR_PEER_UNAVAILABLE')
    expect(out.error?.errorMessage).toMatch(/peer a \(a\) sent an unreadable result/)
    expect(sent.length).toBe(1)
    const two = mesh({ peers: [{ id: 'a', slots: 2 }, { id: 'b', slots: 2 }], answers: { a: [garbage], b: [garbage] } })
    const again = await two.router.route(req)
    expect(again.error?.code).toBe('FNMESH_ERR_PEER_UNAVAILABLE')
    expect(two.sent.length).toBe(2)
  })

  it('counts a peer that is not listening as failed', async () => {
    const { router } = mesh({ peers: [{ id: 'a', slots: 2 }], answers: { a: [new Error('503')] } })
    const out = await router.route(req)
    expect(out.error?.code).toBe('FNMESH_ERR_PEER_UNAVAILABLE')
    expect(out.error?.errorMessage).toMatch(/503/)
  })
})

describe('router: baseline policies', () => {
  it('local runs everything on its own node and never sends to a peer', async () => {
    const { router, sent, local } = mesh({ self: 2, peers: [{ id: 'a', slots: 8 }], init: { policy: 'local' } })
    for (let i = 0; i < 5; i++) expect((await router.route(req)).ok).toBe(true)
    expect(local.calls.length).toBe(5)
    expect(sent).toEqual([])
  })

  it('local waits at the router for its own slot and refuses with NO_CAPACITY when none frees in time', async () => {
    const { router, local, sent } = mesh({ self: 1, peers: [{ id: 'a', slots: 8 }], init: { policy: 'local', queueWaitMs: 50 } })
    local.inFlight = 1
    const out = await router.route(req)
    expect(out.error?.code).toBe('FNMESH_ERR_NO_CAPACITY')
    expect(sent).toEqual([])
  })

  it('round-robin cycles through the peers in id order, skipping full ones', async () => {
    const { router, sent } = mesh({ peers: [{ id: 'c', slots: 2 }, { id: 'a', slots: 2 }, { id: 'b', slots: 2, inFlight: 2 }, { id: 'd', slots: 2 }], init: { policy: 'round-robin' } })
    for (let i = 0; i < 6; i++) await router.route(req)
    expect(sent.map(s => s.peer)).toEqual(['a', 'c', 'd', 'a', 'c', 'd'])
  })

  it('oracle takes the least utilised node by its own exact counts, not the adverts', async () => {
    // Adverts say a is busy and b idle; the oracle ignores them: it has sent nothing anywhere yet.
    const { router, sent, local } = mesh({ self: 2, peers: [{ id: 'a', slots: 4, inFlight: 4 }, { id: 'b', slots: 2 }], init: { policy: 'oracle' } })
    local.inFlight = 1 // 1/2 used here; a and b 0 by its own count: a (more free slots on a tie) wins
    local.hold = true
    await router.route(req)
    expect(sent.map(s => s.peer)).toEqual(['a'])
  })
})

describe('router: lifecycle and abort', () => {
  it('resolves every drain() caller once the invocations in hand are answered', async () => {
    const { router, subs, local } = mesh({ self: 2 })
    local.hold = true
    router.start()
    expect(router.isStarted()).toBe(true)
    const responded: Uint8Array[] = []
    subs[0].callback(null, { subject: 'fnmesh.invoke.f', data: encode('InvokeRequest', { function: 'f', payload: Buffer.from('{}') }), respond: (d: Uint8Array) => { responded.push(d); return true } })
    await new Promise(resolve => setTimeout(resolve, 10))
    let first = false
    let second = false
    void router.drain().then(() => { first = true })
    void router.drain().then(() => { second = true })
    await new Promise(resolve => setTimeout(resolve, 10))
    expect([first, second]).toEqual([false, false])
    for (const release of local.held) release()
    await new Promise(resolve => setTimeout(resolve, 10))
    expect([first, second]).toEqual([true, true])
    expect(router.isStarted()).toBe(false)
    expect(decode('InvokeResult', responded.at(-1) as Uint8Array).ok).toBe(true)
  })

  it('stops waiting for a slot when the caller aborts, answers ABORTED and leaves no timer behind', async () => {
    const { router, local } = mesh({ self: 1, init: { policy: 'local', queueWaitMs: 60_000 } })
    local.inFlight = 1
    const timers = (): number => process.getActiveResourcesInfo().filter(r => r === 'Timeout').length
    const before = timers()
    const ac = new AbortController()
    const pending = router.route(req, { signal: ac.signal })
    await new Promise(resolve => setTimeout(resolve, 20))
    ac.abort()
    const out = await pending
    expect(out.error?.code).toBe('FNMESH_ERR_ABORTED')
    expect(timers()).toBe(before)
  })

  it('stops waiting for a peer that does not answer when the caller aborts', async () => {
    const { router } = mesh({ peers: [{ id: 'a', slots: 2 }], answers: { a: ['hang'] } })
    const ac = new AbortController()
    const pending = router.route(req, { signal: ac.signal })
    await new Promise(resolve => setTimeout(resolve, 10))
    ac.abort()
    expect((await pending).error?.code).toBe('FNMESH_ERR_ABORTED')
    expect(router.tracker.outstanding('a')).toBe(0)
  })

  it('passes the signal to its own executor and answers ABORTED for an already aborted signal', async () => {
    const { router, local } = mesh({ self: 2 })
    local.hold = true
    const ac = new AbortController()
    const pending = router.route(req, { signal: ac.signal })
    await new Promise(resolve => setTimeout(resolve, 10))
    ac.abort()
    expect((await pending).error?.code).toBe('FNMESH_ERR_ABORTED')
    expect((await router.route(req, { signal: AbortSignal.abort() })).error?.code).toBe('FNMESH_ERR_ABORTED')
  })
})
