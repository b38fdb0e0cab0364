/**
 * Membership "swim" (node/src/gossip/swim.ts) in pieces, deterministic and without a network:
 * SWIM's rules as Swim.apply() enforces them on a real PeerTable (alive, suspect, dead and
 * tombstones, draining, refutation), the checks on members' signed entries (forged, mismatched,
 * out of range, oversized), the suspicion timeout (vitest's fake timers), piggybacking's
 * retransmit limit, one period's messages, and paged push-pull sync. Each node has a real
 * Ed25519 node key; other members' entries are signed here as swim.ts signs them. The NATS
 * connection is a stub that records what is sent and answers as each test says; the last part
 * runs three nodes on an in-memory bus (request-reply, queue groups, "no responders", nodes cut
 * off or paused) to follow a member declared dead back into the membership: after a pause (what
 * was sent to it kept or lost), a partition, or either past the tombstones' hour.
 * The same on real agents and a real nats-server: test/integration/swim-membership.test.ts.
 */
import { createPrivateKey, sign as edSign, type KeyObject } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { decode, encode, MemberState, SwimKind, type CapacityAdvert, type Encodable, type MemberUpdate, type SignedAdvert, type SwimMessage } from '../../proto/codec.js'
import { DISCOVERY_SUBJECT, SWIM_JOIN_SUBJECT, SWIM_QUEUE, swimSubject } from '../../proto/subjects.js'
import { PeerTable } from '../../node/src/gossip/peer-table.js'
import { silentLogger } from '../../node/src/logger.js'
import { SWIM_GOSSIP_COALESCE_MS, SWIM_GOSSIP_FANOUT, SWIM_MAX_PIGGYBACK, SWIM_SUSPICION_CONFIRMATIONS, SWIM_SUSPICION_MAX_MULT, SWIM_PERIOD_MS, SWIM_RETRANSMIT_MULT, SWIM_SUSPICION_MIN_MS, SWIM_SUSPICION_MULT, SWIM_SYNC_MS, SWIM_TOMBSTONE_MS, SYNC_PAGE_BYTES, Swim } from '../../node/src/gossip/swim.js'
// the simulator's seeded PRNG (mulberry32): the random draws are the same on every run
import { prng } from '../../scripts/sim/rng.js'

/** The fake clock's start: every incarnation here is relative to it */
const T0 = Date.UTC(2026, 0, 1)
const DOMAIN = Buffer.from('fnmesh/member/1\n')
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex')

// ------------------------------------------------------------------ identities and entries

/** A node: its libp2p key (for a Swim), its id, and the same key as node:crypto signs with */
interface Identity { id: string, key: PrivateKey, signKey: KeyObject }

async function identity (): Promise<Identity> {
  const key = await generateKeyPair('Ed25519') as unknown as PrivateKey
  const id = peerIdFromPrivateKey(key as never).toString()
  const signKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, Buffer.from(key.raw.subarray(0, 32))]), format: 'der', type: 'pkcs8' })
  return { id, key, signKey }
}

interface Incarnation { startedAtMs: number, seq: number }

/** A member's advert as an agent makes it (gossip.ts buildAdvert), at incarnation `inc` */
function advertOf (who: Identity | string, inc: Incarnation, fields: Partial<CapacityAdvert> = {}): CapacityAdvert {
  return {
    nodeId: typeof who === 'string' ? who : who.id,
    name: 'peer',
    slots: 2,
    inFlight: 0,
    freeMemMb: 1024,
    warm: [],
    seq: inc.seq,
    draining: false,
    startedAtMs: inc.startedAtMs,
    sentAtMs: inc.startedAtMs,
    invocations: 0,
    coldStarts: 0,
    warmStarts: 0,
    refusing: '',
    labels: {},
    provisioned: [],
    layers: 0,
    keepaliveMs: 0,
    addrs: [],
    ...fields
  }
}

/** `advert` signed as swim.ts signs a member's entry (by `signer`'s key) */
function signEntry (advert: CapacityAdvert, signer: Identity): SignedAdvert {
  const bytes = encode('CapacityAdvert', advert)
  return { advert: bytes, signature: edSign(null, Buffer.concat([DOMAIN, bytes]), signer.signKey) }
}

/** An update as a node receives it: encoded on a SwimMessage and decoded again */
function wire (u: Encodable<MemberUpdate>): MemberUpdate {
  return decode('SwimMessage', encode('SwimMessage', { kind: SwimKind.GOSSIP, from: 'test', updates: [u] })).updates[0]
}

/** `who`'s own ALIVE entry at `inc`, signed by `signer` (itself unless forged) */
function alive (who: Identity, inc: Incarnation, fields: Partial<CapacityAdvert> = {}, signer: Identity = who): MemberUpdate {
  return wire({ state: MemberState.ALIVE, nodeId: who.id, startedAtMs: inc.startedAtMs, seq: inc.seq, member: signEntry(advertOf(who, inc, fields), signer), from: 'test' })
}

/** A SUSPECT or DEAD update about `who` at `inc` (nobody signs these: any member may say them) */
function about (state: MemberState, who: Identity | string, inc: Incarnation, from = 'test'): MemberUpdate {
  return wire({ state, nodeId: typeof who === 'string' ? who : who.id, startedAtMs: inc.startedAtMs, seq: inc.seq, from })
}

const inc = (seq: number, startedAtMs = T0 - 60_000): Incarnation => ({ startedAtMs, seq })

// ------------------------------------------------------------------ a stub NATS connection

function noResponders (): Error {
  const err = new Error('no responders')
  err.name = 'NoRespondersError'
  return err
}

function timeoutError (): Error {
  const err = new Error('timeout')
  err.name = 'TimeoutError'
  return err
}

type Handler = { callback: (err: Error | null, msg: { data: Uint8Array, reply?: string, respond: (b: Uint8Array) => boolean }) => void, queue?: string }

/**
 * Records what a Swim sends. Requests are answered by `answer` (default: nobody listens, as
 * NATS says for a subject without subscribers); publishes are only recorded
 */
class StubNats {
  readonly published: Array<{ subject: string, msg: SwimMessage }> = []
  readonly requests: Array<{ subject: string, msg: SwimMessage, timeout: number }> = []
  readonly subscriptions: Array<{ subject: string, queue?: string }> = []
  answer: (subject: string, data: Uint8Array) => Promise<Uint8Array> = async () => { throw noResponders() }
  closed = false

  publish (subject: string, data: Uint8Array): void {
    this.published.push({ subject, msg: decode('SwimMessage', data) })
  }

  async request (subject: string, data: Uint8Array, opts: { timeout: number }): Promise<{ data: Uint8Array }> {
    this.requests.push({ subject, msg: decode('SwimMessage', data), timeout: opts.timeout })
    return { data: await this.answer(subject, data) }
  }

  subscribe (subject: string, opts: Handler): { unsubscribe: () => void } {
    this.subscriptions.push({ subject, queue: opts.queue })
    return { unsubscribe: () => {} }
  }

  async flush (): Promise<void> {}
  isClosed (): boolean { return this.closed }
}

/** A Swim's private parts the tests reach into */
interface SwimInternals {
  onMessage: (data: Uint8Array, respond?: (b: Uint8Array) => boolean) => void
  piggyback: () => Array<Encodable<MemberUpdate>>
  join: (log?: boolean) => Promise<boolean>
  broadcasts: Map<string, unknown>
}
const inside = (s: Swim): SwimInternals => s as unknown as SwimInternals

interface Node {
  me: Identity
  swim: Swim
  table: PeerTable
  nc: StubNats
  /** what this node's advert() returns: change it to change its entry */
  mine: Partial<CapacityAdvert>
  /** this node's own incarnation as its table holds it */
  self: () => Incarnation
  /** ids its table routes to, itself left out */
  routable: () => string[]
  /** the node's answer to `msg` as a request (undefined: it did not answer) */
  ask: (msg: Encodable<SwimMessage>) => SwimMessage | undefined
}

const MY_START = T0 - 30_000

/** A started Swim on a stub connection (its join finds nobody), fake timers on */
async function node (me: Identity, opts: { periodMs?: number, seed?: number, nc?: StubNats, onJoined?: (id: string) => void } = {}): Promise<Node> {
  const table = new PeerTable()
  const nc = opts.nc ?? new StubNats()
  const mine: Partial<CapacityAdvert> = { name: 'me', labels: { zone: 'a' } }
  const swim = new Swim({
    nc: nc as never,
    nodeId: me.id,
    privateKey: me.key,
    table,
    advert: () => advertOf(me, inc(0, MY_START), mine),
    logger: silentLogger(),
    periodMs: opts.periodMs,
    onJoined: opts.onJoined,
    now: () => Date.now(),
    rng: prng(opts.seed ?? 1)
  })
  await swim.start()
  return {
    me,
    swim,
    table,
    nc,
    mine,
    self: () => { const a = table.get(me.id)?.advert; return { startedAtMs: a?.startedAtMs ?? 0, seq: a?.seq ?? 0 } },
    routable: () => table.routable().filter(e => !e.self).map(e => e.advert.nodeId),
    ask: (msg) => {
      let out: SwimMessage | undefined
      inside(swim).onMessage(encode('SwimMessage', { from: 'asker', ...msg }), (b) => { out = decode('SwimMessage', b); return true })
      return out
    }
  }
}

/** What a table holds, to compare before and after a rejected update */
const snapshot = (n: Node): string => JSON.stringify(n.table.all().map(e => [e.advert.nodeId, e.advert.seq, e.suspect]).sort())

describe('membership "swim": SWIM rules in Swim.apply', () => {
  const ids: Identity[] = []
  let me: Identity, b: Identity, c: Identity
  beforeAll(async () => {
    for (let i = 0; i < 8; i++) ids.push(await identity())
    ;[me, b, c] = ids
  })
  beforeEach(() => { vi.useFakeTimers({ now: T0 }) })
  afterEach(() => { vi.useRealTimers() })

  it('adds a member on its signed ALIVE entry, with what the entry says', async () => {
    const n = await node(me)
    expect(n.routable()).toEqual([])
    n.swim.apply(alive(b, inc(1), { name: 'bee', slots: 3, labels: { zone: 'b' }, addrs: [`/ip4/10.0.0.2/tcp/4001/p2p/${b.id}`] }))
    expect(n.routable()).toEqual([b.id])
    expect(n.swim.stateOf(b.id)).toBe('alive')
    expect(n.swim.size).toBe(1)
    expect(n.table.get(b.id)?.advert).toMatchObject({ name: 'bee', slots: 3, labels: { zone: 'b' }, addrs: [`/ip4/10.0.0.2/tcp/4001/p2p/${b.id}`], seq: 1, startedAtMs: inc(1).startedAtMs })
  })

  it('ignores an entry of an older or equal incarnation and takes a newer one', async () => {
    const n = await node(me)
    n.swim.apply(alive(b, inc(3), { slots: 2 }))
    n.swim.apply(alive(b, inc(3), { slots: 8 }))
    expect(n.table.get(b.id)?.advert.slots, 'equal incarnation: ignored').toBe(2)
    n.swim.apply(alive(b, inc(2), { slots: 8 }))
    expect(n.table.get(b.id)?.advert.slots, 'older seq: ignored').toBe(2)
    n.swim.apply(alive(b, inc(99, inc(0).startedAtMs - 1), { slots: 8 }))
    expect(n.table.get(b.id)?.advert.slots, 'an earlier run, whatever its seq: ignored').toBe(2)
    n.swim.apply(alive(b, inc(4), { slots: 6 }))
    expect(n.table.get(b.id)?.advert).toMatchObject({ slots: 6, seq: 4 })
    n.swim.apply(alive(b, inc(1, T0 - 1000), { slots: 5 }))
    expect(n.table.get(b.id)?.advert, 'a later run, even at seq 1: taken').toMatchObject({ slots: 5, seq: 1, startedAtMs: T0 - 1000 })
    expect(n.routable()).toEqual([b.id])
  })

  it('makes a member suspect (out of routing, still in the table) on a SUSPECT about its current incarnation; a newer entry clears it', async () => {
    const n = await node(me)
    n.swim.apply(alive(b, inc(2)))
    n.swim.apply(alive(c, inc(1)))
    n.swim.apply(about(MemberState.SUSPECT, b, inc(2), c.id))
    expect(n.swim.stateOf(b.id)).toBe('suspect')
    expect(n.routable()).toEqual([c.id])
    expect(n.table.has(b.id)).toBe(true)
    expect(n.swim.stats.suspected).toBe(1)
    // the same incarnation again (a relayed copy of its entry) does not clear it
    n.swim.apply(alive(b, inc(2)))
    expect(n.swim.stateOf(b.id)).toBe('suspect')
    // its refutation: a newer incarnation
    n.swim.apply(alive(b, inc(3)))
    expect(n.swim.stateOf(b.id)).toBe('alive')
    expect(n.routable().sort()).toEqual([b.id, c.id].sort())
  })

  it('ignores a SUSPECT about an older incarnation, and one about a member it does not know without its entry', async () => {
    const n = await node(me)
    n.swim.apply(alive(b, inc(5)))
    n.swim.apply(about(MemberState.SUSPECT, b, inc(4)))
    expect(n.swim.stateOf(b.id)).toBe('alive')
    expect(n.routable()).toEqual([b.id])
    n.swim.apply(about(MemberState.SUSPECT, c, inc(1)))
    expect(n.swim.stateOf(c.id)).toBeUndefined()
    expect(n.table.has(c.id)).toBe(false)
    expect(n.swim.stats.suspected).toBe(0)
  })

  it('takes a SUSPECT that carries the member\'s signed entry (a sync page) as a suspect member', async () => {
    const n = await node(me)
    const s = alive(c, inc(4))
    n.swim.apply(wire({ ...s, state: MemberState.SUSPECT, from: b.id }))
    expect(n.swim.stateOf(c.id)).toBe('suspect')
    expect(n.table.has(c.id)).toBe(true)
    expect(n.routable()).toEqual([])
  })

  it('removes a member declared dead, then ignores its entries of that run up to that incarnation (tombstone) but takes a refutation or a restart', async () => {
    const n = await node(me)
    n.swim.apply(alive(b, inc(3)))
    n.swim.apply(about(MemberState.DEAD, b, inc(2)))
    expect(n.swim.stateOf(b.id), 'DEAD about an older incarnation: ignored').toBe('alive')
    n.swim.apply(about(MemberState.DEAD, b, inc(3)))
    expect(n.swim.stateOf(b.id)).toBe('dead')
    expect(n.table.has(b.id)).toBe(false)
    expect(n.swim.size).toBe(0)
    expect(n.swim.stats.dead).toBe(1)
    n.swim.apply(alive(b, inc(3)))
    n.swim.apply(alive(b, inc(2)))
    expect(n.table.has(b.id), 'its entries up to the dead incarnation stay ignored').toBe(false)
    expect(n.swim.stateOf(b.id)).toBe('dead')
    n.swim.apply(alive(b, inc(4)))
    expect(n.swim.stateOf(b.id), 'a refutation (newer seq of the same run) brings it back').toBe('alive')
    n.swim.apply(about(MemberState.DEAD, b, inc(4)))
    expect(n.table.has(b.id)).toBe(false)
    n.swim.apply(alive(b, inc(1, T0 - 5000)))
    expect(n.swim.stateOf(b.id), 'a restarted node (later start) is back').toBe('alive')
    expect(n.routable()).toEqual([b.id])
  })

  it('removes a member at once on its draining entry, and keeps its older entries out', async () => {
    const n = await node(me)
    n.swim.apply(alive(b, inc(3)))
    n.swim.apply(alive(b, inc(4), { draining: true }))
    expect(n.table.has(b.id)).toBe(false)
    expect(n.routable()).toEqual([])
    expect(n.swim.stateOf(b.id)).toBe('dead')
    n.swim.apply(alive(b, inc(3)))
    expect(n.table.has(b.id)).toBe(false)
    // one never seen before that leaves: not added
    n.swim.apply(alive(c, inc(2), { draining: true }))
    expect(n.table.has(c.id)).toBe(false)
  })

  it('refutes a suspicion or a death of itself with a newer signed entry that other members take', async () => {
    const n = await node(me)
    const other = await node(ids[3])
    const first = n.self()
    expect(first.startedAtMs).toBe(MY_START)
    // an ALIVE about itself from someone else (a relayed copy): nothing to do
    n.swim.apply(about(MemberState.ALIVE, me, first))
    expect(n.swim.stats.refuted).toBe(0)
    // an older incarnation suspected: nothing to refute (no new incarnation)
    n.swim.apply(about(MemberState.SUSPECT, me, { ...first, seq: first.seq - 1 }))
    expect(n.swim.stats.refuted).toBe(0)
    expect(n.self()).toEqual(first)

    n.swim.apply(about(MemberState.SUSPECT, me, first, b.id))
    expect(n.swim.stats.refuted).toBe(1)
    const second = n.self()
    expect(second.startedAtMs).toBe(first.startedAtMs)
    expect(second.seq).toBeGreaterThan(first.seq)
    // The refutation goes out on the next messages: this node's own entry, signed, which another node takes
    const out = inside(n.swim).piggyback().filter(u => u.nodeId === me.id)
    expect(out).toHaveLength(1)
    expect(out[0]).toMatchObject({ state: MemberState.ALIVE, seq: second.seq, startedAtMs: second.startedAtMs })
    other.swim.apply(wire(out[0]))
    expect(other.swim.stateOf(me.id)).toBe('alive')
    expect(other.table.get(me.id)?.advert).toMatchObject({ seq: second.seq, name: 'me', labels: { zone: 'a' } })

    n.swim.apply(about(MemberState.DEAD, me, second, c.id))
    expect(n.swim.stats.refuted).toBe(2)
    expect(n.self().seq).toBeGreaterThan(second.seq)
    // suspected at a seq above its own (it never signed that: made up): a newer one than its own
    const third = n.self()
    n.swim.apply(about(MemberState.SUSPECT, me, { ...first, seq: third.seq + 10 }))
    expect(n.self().seq).toBe(third.seq + 1)
    expect(n.swim.stats.refuted).toBe(3)
    // An accusation of an older incarnation again, once its current entry has stopped being
    // carried: the accuser has not had it, so it is carried again (no new incarnation).
    while (inside(n.swim).piggyback().length > 0);
    n.swim.apply(about(MemberState.DEAD, me, second, c.id))
    expect(n.swim.stats.refuted).toBe(3)
    expect(inside(n.swim).piggyback().filter(u => u.nodeId === me.id).map(u => u.seq)).toEqual([third.seq + 1])
  })

  it('stays able to refute after a suspicion of itself at a made-up seq near 2^53', async () => {
    const n = await node(me)
    const other = await node(ids[3])
    other.swim.apply(wire(inside(n.swim).piggyback().find(u => u.nodeId === me.id) as Encodable<MemberUpdate>))
    expect(other.swim.stateOf(me.id)).toBe('alive')
    /** n's newest own entry, as it goes out, handed to `other` */
    const spread = (): void => {
      const mine = inside(n.swim).piggyback().filter(u => u.nodeId === me.id)
      expect(mine).toHaveLength(1)
      other.swim.apply(wire(mine[0]))
    }
    // Anyone on NATS may send it: an accusation is not signed.
    n.swim.apply(about(MemberState.SUSPECT, me, { startedAtMs: MY_START, seq: 2 ** 53 }, 'mallory'))
    spread()
    const after = n.self().seq
    // A real suspicion later, of the incarnation other holds: n must answer with a newer one.
    const held = other.table.get(me.id)?.advert as CapacityAdvert
    other.swim.apply(about(MemberState.SUSPECT, me, held, c.id))
    expect(other.swim.stateOf(me.id)).toBe('suspect')
    n.swim.apply(about(MemberState.SUSPECT, me, held, other.me.id))
    spread()
    expect(n.self().seq, `its seq after the forged suspicion (${after}) and after the next refutation`).not.toBe(after)
    expect(other.swim.stateOf(me.id), 'its refutation is taken').toBe('alive')
  })

  describe('forged and malformed entries throw and change nothing', () => {
    /** every case: the update, and what the error says */
    const cases = (): Array<[string, () => MemberUpdate, RegExp]> => [
      ['signed by another node\'s key', () => alive(b, inc(1), {}, c), /bad signature/],
      ['signed by the claimed node over other bytes', () => {
        const u = alive(b, inc(1))
        const honest = alive(b, inc(1), { slots: 64 })
        return wire({ ...u, member: { advert: honest.member.advert, signature: u.member.signature } })
      }, /bad signature/],
      ['another member\'s entry under this node id', () => wire({ ...alive(c, inc(1)), nodeId: b.id }), /does not match/],
      ['an update whose seq is not the entry\'s', () => wire({ ...alive(b, inc(1)), seq: 2 }), /does not match/],
      ['an update whose start is not the entry\'s', () => wire({ ...alive(b, inc(1)), startedAtMs: inc(1).startedAtMs + 1 }), /does not match/],
      ['no entry', () => wire({ state: MemberState.ALIVE, nodeId: b.id, startedAtMs: inc(1).startedAtMs, seq: 1 }), /no signed entry/],
      ['a 63-byte signature', () => { const u = alive(b, inc(1)); return wire({ ...u, member: { advert: u.member.advert, signature: u.member.signature.subarray(0, 63) } }) }, /no signed entry/],
      ['a 65-byte signature', () => { const u = alive(b, inc(1)); return wire({ ...u, member: { advert: u.member.advert, signature: Buffer.concat([u.member.signature, Buffer.alloc(1)]) } }) }, /no signed entry/],
      ['an entry over 64 KiB', () => alive(b, inc(1), { labels: { big: 'x'.repeat(70 * 1024) } }), /no signed entry/],
      ['bytes that are not an advert', () => { const u = alive(b, inc(1)); const junk = Buffer.alloc(40, 0xff); return wire({ ...u, member: { advert: junk, signature: edSign(null, Buffer.concat([DOMAIN, junk]), b.signKey) } }) }, /decode/i],
      ['0 slots', () => alive(b, inc(1), { slots: 0 }), /out of range/],
      ['a name with a space', () => alive(b, inc(1), { name: 'bad name' }), /out of range/],
      ['a start 10 minutes ahead', () => alive(b, inc(1, T0 + 10 * 60_000)), /out of range/],
      ['seq 0', () => alive(b, inc(0)), /out of range/],
      ['33 addresses', () => alive(b, inc(1), { addrs: Array.from({ length: 33 }, (_, i) => `/ip4/10.0.0.${i}/tcp/1/p2p/${b.id}`) }), /out of range/],
      ['an address of 300 characters', () => alive(b, inc(1), { addrs: [`/dns4/${'a'.repeat(300)}/tcp/1`] }), /out of range/],
      ['a refusing reason of 2000 characters', () => alive(b, inc(1), { refusing: 'r'.repeat(2000) }), /out of range/],
      ['a node id that is no peer id', () => { const u = alive(b, inc(1)); return wire({ ...u, nodeId: 'not-a-peer-id', member: signEntry(advertOf('not-a-peer-id', inc(1)), b) }) }, /bad signature/],
      ['an empty node id', () => wire({ ...alive(b, inc(1)), nodeId: '' }), /no node id/],
      ['a node id of 129 characters', () => wire({ ...alive(b, inc(1)), nodeId: 'x'.repeat(129) }), /no node id/],
      ['an unknown state', () => wire({ ...alive(b, inc(1)), state: 7 as MemberState }), /unknown state/],
      ['a SUSPECT carrying a forged entry', () => wire({ ...alive(b, inc(1), {}, c), state: MemberState.SUSPECT }), /bad signature/]
    ]

    it.each(cases().map(([what], i) => [what, i]))('%s', async (_what, i) => {
      const n = await node(me)
      n.swim.apply(alive(c, inc(1)))
      const before = snapshot(n)
      const [, make, error] = cases()[i as number]
      expect(() => n.swim.apply(make())).toThrow(error)
      expect(snapshot(n)).toBe(before)
      expect(n.swim.stateOf(b.id)).toBeUndefined()
      expect(n.swim.size).toBe(1)
    })

    it('counts what a message carries that does not check out as rejected, and applies the rest', async () => {
      const n = await node(me)
      const reply = n.ask({ kind: SwimKind.PING, from: c.id, updates: [alive(b, inc(1), {}, c), alive(b, inc(1), { slots: 0 }), alive(c, inc(1))] })
      expect(reply?.kind).toBe(SwimKind.ACK)
      expect(n.swim.stats.rejected).toBe(2)
      expect(n.routable()).toEqual([c.id])
      // not a SwimMessage at all, or one without a sender: rejected, unanswered
      for (const junk of [Buffer.alloc(32, 0xff), Uint8Array.from([0x0a, 0x7f, 0x61]), encode('SwimMessage', { kind: SwimKind.PING })]) {
        let answered = false
        inside(n.swim).onMessage(junk, () => { answered = true; return true })
        expect(answered).toBe(false)
      }
      expect(n.swim.stats.rejected).toBe(5)
      expect(n.routable()).toEqual([c.id])
    })
  })

  it('declares a suspect dead after the suspicion timeout: 6 x the minimum (at least 3 s) with one accuser, the minimum with 3 (Lifeguard)', async () => {
    const n = await node(me)
    n.swim.apply(alive(b, inc(1)))
    n.swim.apply(alive(c, inc(1)))
    // 2 members: 4 x log10(4) periods is 2.4 s, under the 3 s floor
    expect(n.swim.suspicionTimeoutMs(0)).toBe(SWIM_SUSPICION_MAX_MULT * SWIM_SUSPICION_MIN_MS)
    expect(n.swim.suspicionTimeoutMs(SWIM_SUSPICION_CONFIRMATIONS)).toBe(SWIM_SUSPICION_MIN_MS)
    expect(n.swim.suspicionTimeoutMs(1)).toBeGreaterThan(SWIM_SUSPICION_MIN_MS)
    expect(n.swim.suspicionTimeoutMs(1)).toBeLessThan(SWIM_SUSPICION_MAX_MULT * SWIM_SUSPICION_MIN_MS)
    // its own pings are answered (a suspect that answers is not refuted by that: only a newer entry does)
    n.nc.answer = async (subject) => encode('SwimMessage', { kind: SwimKind.ACK, from: subject.slice('fnmesh.swim.'.length) })
    // one accuser: the longest
    n.swim.apply(about(MemberState.SUSPECT, c, inc(1), 'x'))
    // three independent accusers (the same one twice counts once): the shortest, from the first accusation
    n.swim.apply(about(MemberState.SUSPECT, b, inc(1), 'x'))
    n.swim.apply(about(MemberState.SUSPECT, b, inc(1), 'x'))
    await vi.advanceTimersByTimeAsync(1000)
    n.swim.apply(about(MemberState.SUSPECT, b, inc(1), 'y'))
    n.swim.apply(about(MemberState.SUSPECT, b, inc(1), 'z'))
    await vi.advanceTimersByTimeAsync(SWIM_SUSPICION_MIN_MS - 1000 - 1)
    expect(n.swim.stateOf(b.id)).toBe('suspect')
    expect(n.table.has(b.id)).toBe(true)
    await vi.advanceTimersByTimeAsync(1)
    expect(n.swim.stateOf(b.id)).toBe('dead')
    await vi.advanceTimersByTimeAsync(SWIM_SUSPICION_MAX_MULT * SWIM_SUSPICION_MIN_MS - SWIM_SUSPICION_MIN_MS - 1)
    expect(n.swim.stateOf(c.id)).toBe('suspect')
    await vi.advanceTimersByTimeAsync(1)
    expect(n.swim.stateOf(c.id)).toBe('dead')
    expect(n.table.has(b.id)).toBe(false)
    expect(n.swim.stats.dead).toBe(2)
    // it goes out as a DEAD about that incarnation
    expect(inside(n.swim).piggyback().find(u => u.nodeId === c.id)).toMatchObject({ state: MemberState.DEAD, seq: 1, startedAtMs: inc(1).startedAtMs })
  })

  it('scales the suspicion timeout by log10 of the mesh size, and a refutation in time keeps the member', async () => {
    const many = [...ids.slice(1)]
    for (let i = many.length; i < 40; i++) many.push(await identity())
    const n = await node(me)
    for (const x of many) n.swim.apply(alive(x, inc(1)))
    expect(n.swim.size).toBe(40)
    // 41 nodes: 4 x log10(42) periods
    const timeout = SWIM_SUSPICION_MULT * Math.log10(42) * SWIM_PERIOD_MS
    expect(timeout).toBeGreaterThan(SWIM_SUSPICION_MIN_MS)
    const [x, y] = [many[0], many[1]]
    // confirmed by 3 accusers: the minimum timeout, which scales with log10 of the mesh size
    for (const by of ['p', 'q', 'r']) n.swim.apply(about(MemberState.SUSPECT, x, inc(1), by))
    n.swim.apply(about(MemberState.SUSPECT, y, inc(1)))
    await vi.advanceTimersByTimeAsync(2000)
    n.swim.apply(alive(y, inc(2)))
    await vi.advanceTimersByTimeAsync(Math.floor(timeout) - 2000 - 50)
    expect(n.swim.stateOf(x.id)).toBe('suspect')
    await vi.advanceTimersByTimeAsync(100)
    expect(n.swim.stateOf(x.id)).toBe('dead')
    await vi.advanceTimersByTimeAsync(10_000)
    expect(n.swim.stateOf(y.id), 'refuted in time: alive, and no timer left to kill it').toBe('alive')
    expect(n.routable()).toContain(y.id)
  })

  it('carries each update on ceil(4 x log10(members + 2)) messages, least sent first, at most 24 a message', async () => {
    const n = await node(me)
    const members = ids.slice(1, 4)
    for (const x of members) n.swim.apply(alive(x, inc(1)))
    const limit = Math.ceil(SWIM_RETRANSMIT_MULT * Math.log10(members.length + 2))
    expect(limit).toBe(3)
    const carried: Record<string, number> = {}
    for (let i = 0; i < 20; i++) {
      const updates = inside(n.swim).piggyback()
      if (updates.length === 0) break
      for (const u of updates) carried[u.nodeId as string] = (carried[u.nodeId as string] ?? 0) + 1
    }
    // the three members' entries and this node's own (queued when it started)
    expect(carried).toEqual(Object.fromEntries([me, ...members].map(x => [x.id, limit])))
    expect(inside(n.swim).piggyback()).toEqual([])
    // an ACK now carries nothing
    expect(n.ask({ kind: SwimKind.PING })?.updates).toEqual([])
    // a new change is carried again, that many times
    n.swim.apply(about(MemberState.SUSPECT, members[0], inc(1)))
    const again = Array.from({ length: 6 }, () => inside(n.swim).piggyback().length)
    expect(again).toEqual([1, 1, 1, 0, 0, 0])

    // 30 members: 24 on a message, the 6 left out first on the next
    const big = await node(ids[4])
    const thirty = [...ids]
    for (let i = thirty.length; i < 31; i++) thirty.push(await identity())
    for (const x of thirty.filter(x => x.id !== ids[4].id)) big.swim.apply(alive(x, inc(1)))
    const first = inside(big.swim).piggyback()
    const second = inside(big.swim).piggyback()
    expect(first).toHaveLength(SWIM_MAX_PIGGYBACK)
    const left = thirty.map(x => x.id).filter(id => !first.some(u => u.nodeId === id))
    expect(left).toHaveLength(31 - SWIM_MAX_PIGGYBACK)
    expect(second.slice(0, left.length).map(u => u.nodeId).sort()).toEqual(left.sort())
  })

  it('in a period: pings one member (request on its subject); passes a change on at once to 3 others; asks the queue group again in its first periods', async () => {
    const n = await node(me)
    // its own subject, the join queue group, and discovery (only to warn of "gossip" agents)
    expect(n.nc.subscriptions).toEqual([{ subject: swimSubject(me.id), queue: undefined }, { subject: SWIM_JOIN_SUBJECT, queue: SWIM_QUEUE }, { subject: DISCOVERY_SUBJECT, queue: undefined }])
    const members = ids.slice(1, 5)
    // every member answers a ping, and a join with an empty page
    n.nc.answer = async (subject, data) => {
      const from = subject === SWIM_JOIN_SUBJECT ? members[0].id : subject.slice('fnmesh.swim.'.length)
      return decode('SwimMessage', data).kind === SwimKind.SYNC
        ? encode('SwimMessage', { kind: SwimKind.SYNC_REPLY, from, updates: [], offset: 0 })
        : encode('SwimMessage', { kind: SwimKind.ACK, from })
    }
    n.nc.requests.length = 0
    n.nc.published.length = 0
    for (const x of members) n.swim.apply(alive(x, inc(1)))
    // Each node passes a change on when it first hears it: 3 random members, within the coalescing delay
    await vi.advanceTimersByTimeAsync(SWIM_GOSSIP_COALESCE_MS)
    const prompt = n.nc.published.filter(p => p.msg.kind === SwimKind.GOSSIP)
    expect(SWIM_GOSSIP_FANOUT).toBe(3)
    expect(prompt).toHaveLength(SWIM_GOSSIP_FANOUT)
    expect(new Set(prompt.map(g => g.subject)).size, 'to 3 different members').toBe(3)
    for (const m of prompt) expect(members.map(x => swimSubject(x.id))).toContain(m.subject)
    // Pending changes retired: a period is one ping (and, in the first periods, a join)
    for (let i = 0; i < 4; i++) inside(n.swim).piggyback()
    expect(inside(n.swim).broadcasts.size).toBe(0)
    n.nc.requests.length = 0
    n.nc.published.length = 0
    await vi.advanceTimersByTimeAsync(10 * SWIM_PERIOD_MS)
    const pings = n.nc.requests.filter(r => r.msg.kind === SwimKind.PING)
    expect(pings).toHaveLength(10)
    for (const p of pings) expect(p.timeout).toBe(400)
    const joins = n.nc.requests.filter(r => r.subject === SWIM_JOIN_SUBJECT)
    expect(joins.every(r => r.msg.kind === SwimKind.SYNC), 'asks again with its entry and digest').toBe(true)
    // 1, 2, 4 and 8 periods after its start (the 16th is later)
    expect(joins.length).toBeGreaterThanOrEqual(3)
    expect(joins.length).toBeLessThanOrEqual(4)
    expect(n.nc.requests.length, 'nothing else').toBe(pings.length + joins.length)
    expect(n.nc.published).toEqual([])
    // a shuffled round-robin: each member pinged once in every round of 4 periods
    const pinged = pings.map(r => r.subject)
    expect(new Set(pinged.slice(0, 4)).size).toBe(4)
    expect(new Set(pinged.slice(4, 8)).size).toBe(4)
  })

  it('suspects a member whose subject has no responders at once, and one that times out after the others failed to reach it', async () => {
    const n = await node(me)
    n.swim.apply(alive(b, inc(1)))
    n.swim.apply(alive(c, inc(1)))
    for (let i = 0; i < 4; i++) inside(n.swim).piggyback()
    // b is gone (no responders); c answers nothing but a ping through it gets NACK
    n.nc.answer = async (subject, data) => {
      const msg = decode('SwimMessage', data)
      if (subject === swimSubject(b.id)) throw noResponders()
      if (msg.kind === SwimKind.PING_REQ) return encode('SwimMessage', { kind: SwimKind.NACK, from: c.id })
      return encode('SwimMessage', { kind: SwimKind.ACK, from: c.id })
    }
    await vi.advanceTimersByTimeAsync(2 * SWIM_PERIOD_MS)
    expect(n.swim.stateOf(b.id)).toBe('suspect')
    expect(n.swim.stateOf(c.id)).toBe('alive')
    expect(n.nc.requests.filter(r => r.msg.kind === SwimKind.PING_REQ), 'no indirect round for a member that is gone').toEqual([])
    expect(n.swim.stats.pingFailures).toBe(1)
  })
})

describe('membership "swim": push-pull sync', () => {
  let me: Identity
  let other: Identity
  const members: Identity[] = []
  beforeAll(async () => {
    me = await identity()
    other = await identity()
    for (let i = 0; i < 70; i++) members.push(await identity())
  })
  beforeEach(() => { vi.useFakeTimers({ now: T0 }) })
  afterEach(() => { vi.useRealTimers() })

  /** 32 multiaddrs of 250 characters: an entry of about 8 KB */
  const bigAddrs = (x: Identity): string[] => Array.from({ length: 32 }, (_, i) => {
    const rest = `.example/tcp/4001/p2p/${x.id}`
    return `/dns4/${String(i).padStart(2, '0')}${'h'.repeat(250 - 8 - rest.length)}${rest}`
  })

  it('pages a large membership: more than one page, every member (and itself) on exactly one', async () => {
    const n = await node(me)
    for (const x of members) n.swim.apply(alive(x, inc(1), { addrs: bigAddrs(x) }))
    n.swim.apply(about(MemberState.SUSPECT, members[5], inc(1)))
    expect(n.swim.size).toBe(70)
    const pages: SwimMessage[] = []
    let offset = 0
    do {
      const reply = n.ask({ kind: SwimKind.SYNC, from: other.id, offset, digest: Buffer.alloc(32) })
      expect(reply?.kind).toBe(SwimKind.SYNC_REPLY)
      pages.push(reply as SwimMessage)
      offset = reply?.offset ?? 0
    } while (offset !== 0 && pages.length < 20)
    expect(pages.length).toBeGreaterThan(1)
    for (const p of pages) expect(encode('SwimMessage', p).length).toBeLessThanOrEqual(SYNC_PAGE_BYTES + 64 * 1024)
    const seen = pages.flatMap(p => p.updates.map(u => u.nodeId))
    expect(seen.length).toBe(71)
    expect(new Set(seen).size).toBe(71)
    expect(new Set(seen)).toEqual(new Set([me.id, ...members.map(x => x.id)]))
    expect(pages[0].updates[0].nodeId, 'itself first').toBe(me.id)
    // a suspect goes as SUSPECT with its entry
    const s = pages.flatMap(p => p.updates).find(u => u.nodeId === members[5].id)
    expect(s?.state).toBe(MemberState.SUSPECT)
    expect(s?.member?.advert.length).toBeGreaterThan(0)
  })

  it('a joining node pulls every page and ends with the same membership and digest; the answering node names it to its router once', async () => {
    const joined: string[] = []
    const n = await node(me, { onJoined: (id) => joined.push(id) })
    for (const x of members) n.swim.apply(alive(x, inc(1), { addrs: bigAddrs(x) }))
    const joinerNc = new StubNats()
    let pagesAsked = 0
    joinerNc.answer = async (subject, data) => {
      // the queue group on fnmesh.swim.join and then n's own subject both reach n
      expect([SWIM_JOIN_SUBJECT, swimSubject(me.id)]).toContain(subject)
      pagesAsked++
      let out: Uint8Array | undefined
      inside(n.swim).onMessage(data, (b) => { out = b; return true })
      if (out == null) throw timeoutError()
      return out
    }
    const joiner = await node(other, { nc: joinerNc })
    expect(pagesAsked).toBeGreaterThan(1)
    expect(joiner.swim.size).toBe(71)
    expect(Buffer.from(joiner.swim.digest()).equals(Buffer.from(n.swim.digest())), 'the same membership on both').toBe(true)
    // ...and n took the joiner's entry from its request, and told its router (its next probe goes there)
    expect(n.swim.stateOf(other.id)).toBe('alive')
    expect(joined).toEqual([other.id])
    // a sync from a member it knows is no join
    n.ask({ kind: SwimKind.SYNC, from: other.id, digest: new Uint8Array(32) })
    expect(joined).toEqual([other.id])
    // A sync with an equal digest is answered with no members
    const same = n.ask({ kind: SwimKind.SYNC, from: other.id, digest: n.swim.digest() })
    expect(same).toMatchObject({ kind: SwimKind.SYNC_REPLY, offset: 0 })
    expect(same?.updates).toEqual([])
  })

  it('answers joins with NACK until its own first join is done (agents started together would form groups apart), then with its membership', async () => {
    const nc = new StubNats()
    let release!: () => void
    nc.answer = async () => { await new Promise<void>(resolve => { release = resolve }); throw noResponders() }
    const table = new PeerTable()
    const swim = new Swim({ nc: nc as never, nodeId: me.id, privateKey: me.key, table, advert: () => advertOf(me, inc(0, MY_START)), logger: silentLogger(), now: () => Date.now(), rng: prng(3) })
    const started = swim.start()
    await vi.advanceTimersByTimeAsync(0)
    const ask = (): SwimMessage | undefined => {
      let out: SwimMessage | undefined
      inside(swim).onMessage(encode('SwimMessage', { kind: SwimKind.SYNC, from: other.id, updates: [wire(alive(other, inc(1)))] }), (b) => { out = decode('SwimMessage', b); return true })
      return out
    }
    expect(ask()?.kind, 'still joining: NACK').toBe(SwimKind.NACK)
    release()
    await started
    const reply = ask()
    expect(reply?.kind).toBe(SwimKind.SYNC_REPLY)
    expect(reply?.updates.map(u => u.nodeId)).toContain(me.id)
    await swim.stop()
  })

  it('answers its own join (handed back by the queue group) with NACK', async () => {
    const n = await node(me)
    const reply = n.ask({ kind: SwimKind.SYNC, from: me.id })
    expect(reply?.kind).toBe(SwimKind.NACK)
    expect(reply?.updates).toEqual([])
  })
})

// ------------------------------------------------------------------ several nodes on an in-memory bus

/**
 * NATS as Swim uses it, in memory: subjects, queue groups (one member each, at random),
 * request-reply with a timeout, "no responders" when nobody subscribes. A node that is `cut`
 * (a partition) still holds its subscriptions (its connection is up) but nothing reaches it or
 * leaves it. A `paused` node (SIGSTOP) runs no timer of its own and what is sent to it waits in
 * its socket: it handles all of it at once when it resumes, answering requests long given up.
 */
class Bus {
  readonly subs: Array<{ owner: string, subject: string, queue?: string, handler: Handler }> = []
  readonly cut = new Set<string>()
  private readonly paused = new Map<string, Array<() => void>>()
  private readonly rng = prng(99)

  /** `lose`: what is sent to it meanwhile is lost (paused so long that the server closed its connection) */
  pause (swim: Swim, id: string, lose = false): void {
    (swim as unknown as { tick: () => Promise<void> }).tick = async () => {}
    this.paused.set(id, [])
    if (lose) this.cut.add(id)
  }

  resume (swim: Swim, id: string): void {
    delete (swim as unknown as { tick?: unknown }).tick
    this.cut.delete(id)
    const backlog = this.paused.get(id) ?? []
    this.paused.delete(id)
    for (const handle of backlog) handle()
  }

  connect (owner: string): unknown {
    const bus = this
    return {
      publish (subject: string, data: Uint8Array): void {
        if (bus.cut.has(owner)) return
        for (const s of bus.targets(subject)) bus.deliver(owner, s, data)
      },
      async request (subject: string, data: Uint8Array, opts: { timeout: number }): Promise<{ data: Uint8Array }> {
        const targets = bus.targets(subject)
        if (targets.length === 0) throw noResponders()
        return await new Promise((resolve, reject) => {
          const timer = setTimeout(() => { reject(timeoutError()) }, opts.timeout)
          for (const s of targets) {
            bus.deliver(owner, s, data, (b) => {
              if (bus.cut.has(owner) || bus.cut.has(s.owner)) return true
              clearTimeout(timer)
              queueMicrotask(() => { resolve({ data: b }) })
              return true
            })
          }
        })
      },
      subscribe (subject: string, opts: Handler): { unsubscribe: () => void } {
        const sub = { owner, subject, queue: opts.queue, handler: opts }
        bus.subs.push(sub)
        return { unsubscribe: () => { bus.subs.splice(bus.subs.indexOf(sub), 1) } }
      },
      async flush (): Promise<void> {},
      isClosed: () => false
    }
  }

  private targets (subject: string): Bus['subs'] {
    const plain = this.subs.filter(s => s.subject === subject && s.queue == null)
    const queued = this.subs.filter(s => s.subject === subject && s.queue != null)
    return queued.length > 0 ? [...plain, queued[Math.floor(this.rng() * queued.length)]] : plain
  }

  private deliver (from: string, s: Bus['subs'][number], data: Uint8Array, respond?: (b: Uint8Array) => boolean): void {
    if (this.cut.has(from) || this.cut.has(s.owner) || this.paused.has(from)) return
    const handle = (): void => { s.handler.callback(null, { data, reply: respond != null ? '_INBOX.x' : undefined, respond: respond ?? (() => false) }) }
    const backlog = this.paused.get(s.owner)
    if (backlog != null) backlog.push(handle)
    else queueMicrotask(handle)
  }
}

describe('membership "swim": a member declared dead comes back (three nodes on an in-memory bus)', () => {
  const who: Identity[] = []
  beforeAll(async () => {
    for (let i = 0; i < 3; i++) who.push(await identity())
  })
  beforeEach(() => { vi.useFakeTimers({ now: T0 }) })
  afterEach(() => { vi.useRealTimers() })

  async function mesh (): Promise<{ bus: Bus, nodes: Array<{ swim: Swim, table: PeerTable, id: string }> }> {
    const bus = new Bus()
    const nodes = []
    for (const [i, me] of who.entries()) {
      const table = new PeerTable()
      const swim = new Swim({
        nc: bus.connect(me.id) as never,
        nodeId: me.id,
        privateKey: me.key,
        table,
        advert: () => advertOf(me, inc(0, MY_START + i), { name: `n${i}` }),
        logger: silentLogger(),
        now: () => Date.now(),
        rng: prng(10 + i)
      })
      await swim.start()
      nodes.push({ swim, table, id: me.id })
    }
    // started one after the other, each joined through the others: all meet within a few periods
    await vi.advanceTimersByTimeAsync(5 * SWIM_PERIOD_MS)
    for (const n of nodes) expect(n.swim.size, 'every node knows the 2 others').toBe(2)
    return { bus, nodes }
  }

  /** Advances the fake clock a period at a time until `ok` holds; the virtual ms it took, or -1 */
  async function until (ok: () => boolean, maxMs: number): Promise<number> {
    for (let t = 0; t <= maxMs; t += SWIM_PERIOD_MS / 4) {
      if (ok()) return t
      await vi.advanceTimersByTimeAsync(SWIM_PERIOD_MS / 4)
    }
    return -1
  }

  const routes = (n: { table: PeerTable }, id: string): boolean => n.table.routable().some(e => e.advert.nodeId === id)

  it.each([
    ['10 s more, what was sent to it waiting in its socket', 10_000, false],
    ['10 s more, so long that its connection was closed and made again (what was sent to it lost)', 10_000, true],
    ['past the tombstones\' hour (a VM suspended overnight)', SWIM_TOMBSTONE_MS + 2 * 60_000, true]
  ])('a node paused past its suspicion (SIGSTOP) is declared dead, and is routable again everywhere soon after it resumes: %s', async (_what, longer, lose) => {
    const { bus, nodes } = await mesh()
    const [a, b, r] = nodes
    bus.pause(r.swim, r.id, lose as boolean)
    const deadAfter = await until(() => a.swim.stateOf(r.id) === 'dead' && b.swim.stateOf(r.id) === 'dead', 40_000)
    expect(deadAfter, 'declared dead by both others').toBeGreaterThan(0)
    // a and b both accuse it: Lifeguard's timeout with one confirmation
    expect(deadAfter).toBeLessThanOrEqual(3 * SWIM_PERIOD_MS + a.swim.suspicionTimeoutMs(1) + 2 * SWIM_PERIOD_MS)
    // It stays paused a while longer: the DEAD updates are retired meanwhile.
    await vi.advanceTimersByTimeAsync(longer as number)
    expect(inside(a.swim).broadcasts.size + inside(b.swim).broadcasts.size, 'nothing pending about it any more').toBe(0)
    bus.resume(r.swim, r.id)
    // Back: it answers what it missed (its askers gave up long ago) and pings the others as
    // before. They must let it back in: it hears it was declared dead and refutes, or its entry
    // reaches them on a sync, one sync period at worst.
    const back = await until(() => routes(a, r.id) && routes(b, r.id) && routes(r, a.id) && routes(r, b.id), SWIM_SYNC_MS + 5 * SWIM_PERIOD_MS)
    expect(back, `routable again on both others (a sees it ${String(a.swim.stateOf(r.id))}, b ${String(b.swim.stateOf(r.id))}; it refuted ${r.swim.stats.refuted} times)`).toBeGreaterThanOrEqual(0)
    expect(r.swim.stats.refuted).toBeGreaterThan(0)
  })

  it.each([
    // members held dead are pinged now and then (SWIM_RECONNECT_PROBABILITY a period each): well before a sync
    ['after 10 s', 10_000, 30 * SWIM_PERIOD_MS],
    // the tombstones are gone: the periodic sync through the queue group joins them
    ['after more than the tombstones\' hour', SWIM_TOMBSTONE_MS + 2 * 60_000, SWIM_SYNC_MS + 10 * SWIM_PERIOD_MS]
  ])('after a partition heals %s, the node cut off and the others see each other again', async (_what, longer, bound) => {
    const { bus, nodes } = await mesh()
    const [a, b, r] = nodes
    bus.cut.add(r.id)
    // both sides declare the other dead
    // r alone accuses a and b: the longest suspicion (SWIM_SUSPICION_MAX_MULT x the minimum)
    const split = await until(() => a.swim.stateOf(r.id) === 'dead' && b.swim.stateOf(r.id) === 'dead' && r.swim.size === 0, 40_000)
    expect(split).toBeGreaterThan(0)
    await vi.advanceTimersByTimeAsync(longer)
    bus.cut.delete(r.id)
    const healed = await until(() => [a, b, r].every(n => n.swim.size === 2 && n.table.routable().length === 3), bound)
    expect(healed, `healed (sizes ${[a, b, r].map(n => n.swim.size).join(', ')}; states of the cut node on a and b: ${String(a.swim.stateOf(r.id))}, ${String(b.swim.stateOf(r.id))}; of a and b on it: ${String(r.swim.stateOf(a.id))}, ${String(r.swim.stateOf(b.id))})`).toBeGreaterThanOrEqual(0)
  })

  it('a DEAD about a member it does not hold, with a made-up later incarnation, does not keep the member out', async () => {
    const { nodes } = await mesh()
    const [a, b] = nodes
    // Anyone on NATS may send a DEAD (they are not signed). One about b's next run, an hour ahead:
    const forged = about(MemberState.DEAD, b.id, { startedAtMs: T0 + 3_600_000, seq: 1 }, 'mallory')
    a.swim.apply(forged)
    a.swim.apply(forged)
    // b hears itself declared dead (a spreads it, or later syncs): it refutes; a must take b's refutation
    const back = await until(() => routes(a, b.id), 10 * SWIM_PERIOD_MS)
    expect(back, `b routable on a again (a holds it ${String(a.swim.stateOf(b.id))}; b refuted ${b.swim.stats.refuted} times)`).toBeGreaterThanOrEqual(0)
    await vi.advanceTimersByTimeAsync(5 * SWIM_PERIOD_MS)
    a.swim.apply(forged)
    expect(await until(() => routes(a, b.id), 10 * SWIM_PERIOD_MS)).toBeGreaterThanOrEqual(0)
  })
})
