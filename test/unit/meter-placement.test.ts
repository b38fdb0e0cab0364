/**
 * Owner-based placement of meter records (issue 16): rendezvous hashing of (node, hour) ranges
 * over the live members, anti-entropy scoped to the ranges two nodes both own, the push-only
 * handoff of ranges a node does not own, dropping a range once its owners hold it, and the merge
 * of usage parts that counts each range once.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { decode, encode, SyncScope, type Encodable, type SyncRequest } from '../../proto/codec.js'
import { HOUR_MS, MINUTE_MS } from '../../node/src/metering/records/keys.js'
import type { MeterStore } from '../../node/src/metering/ledger/store.js'
import { answer, syncWith, type Ask } from '../../node/src/metering/replication/sync.js'
import { MemberView } from '../../node/src/metering/replication/placement.js'
import { queryUsage, recount, minuteRows } from '../../node/src/metering/queries/usage.js'
import { mergeParts, queryParts } from '../../node/src/metering/queries/parts.js'
import { intakeOf, rec, signed, T0, tempStores, testNode, type TestNode } from '../helpers/meter.js'

/** `store`'s side of a session, as the node `self`, through the wire encoding */
function peer (store: MeterStore, self: string, initiator: string): Ask {
  const intake = intakeOf(store)
  return async (req: Encodable<SyncRequest>) => decode('SyncReply', encode('SyncReply', await answer(store, intake, initiator, decode('SyncRequest', encode('SyncRequest', req)), self)))
}

async function fill (store: MeterStore, node: TestNode, n: number, hourMs: number, prefix = 'inv'): Promise<void> {
  const s = signed(node, Array.from({ length: n }, (_, i) => rec(node, { invocationId: `${prefix}-${hourMs}-${i}`, startMs: hourMs + Math.floor(i * (HOUR_MS - 1) / n), billedMs: 1 + (i % 40) })))
  await store.ingest(s.items, s.proofs)
}

const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => `12D3KooWmember${String(i).padStart(4, '0')}`)

describe('placement by rendezvous hashing', () => {
  it('gives each range its node and R others, the same on every member, and moves about (R+1)/N of the ranges when one joins', () => {
    const members = ids(7)
    const view = new MemberView(members, 2)
    const again = new MemberView([...members].reverse(), 2)
    const load = new Map(members.map(m => [m, 0]))
    let ranges = 0
    for (const origin of members) {
      for (let h = 0; h < 500; h++) {
        const owners = view.owners(origin, T0 + h * HOUR_MS)
        expect(owners).toHaveLength(3)
        expect(owners[0]).toBe(origin)
        expect(new Set(owners).size).toBe(3)
        expect(again.owners(origin, T0 + h * HOUR_MS)).toEqual(owners)
        for (const o of owners) load.set(o, (load.get(o) ?? 0) + 1)
        ranges++
      }
    }
    // Each member holds about 3/7 of all ranges.
    for (const l of load.values()) expect(l / ranges).toBeGreaterThan(0.36)
    for (const l of load.values()) expect(l / ranges).toBeLessThan(0.5)
    // An eighth member joins: only ranges it now owns change owners (about 3/8 of them... minus its own).
    const grown = new MemberView([...members, '12D3KooWnewcomer'], 2)
    let moved = 0
    for (const origin of members) {
      for (let h = 0; h < 500; h++) {
        const before = view.owners(origin, T0 + h * HOUR_MS)
        const after = grown.owners(origin, T0 + h * HOUR_MS)
        if (before.join() !== after.join()) {
          moved++
          expect(after).toContain('12D3KooWnewcomer')
        }
      }
    }
    expect(moved / ranges).toBeGreaterThan(0.15)
    expect(moved / ranges).toBeLessThan(0.4)
  })

  it('gives a range of a node that is gone R+1 live owners, and every member every range when R >= N-1', () => {
    const members = ids(6)
    const view = new MemberView(members, 2)
    const owners = view.owners('12D3KooWgone', T0)
    expect(owners).toHaveLength(3)
    expect(owners).not.toContain('12D3KooWgone')
    const small = new MemberView(members.slice(0, 3), 2)
    expect(small.everyone).toBe(true)
    for (const m of members.slice(0, 3)) expect(small.isOwner(m, members[0], T0)).toBe(true)
  })
})

describe('anti-entropy and handoff under placement', () => {
  const stores = tempStores()
  afterEach(async () => { await stores.cleanup() })

  it('syncs only the ranges both own, hands off a range a node does not own, drops it, and keeps totals right', async () => {
    const nodes = await Promise.all(Array.from({ length: 5 }, async () => await testNode()))
    const members = nodes.map(n => n.nodeId)
    const view = new MemberView(members, 1)
    const hours = [T0 - 3 * HOUR_MS, T0 - 2 * HOUR_MS, T0 - HOUR_MS, T0]
    const [a, b] = nodes
    const sa = await stores.open()
    const sb = await stores.open()
    // B holds every range of every node; A holds only its own.
    for (const n of nodes) for (const h of hours) await fill(sb, n, 20, h)
    for (const h of hours) await fill(sa, a, 20, h)
    const res = await syncWith(sa, intakeOf(sa), b.nodeId, peer(sb, b.nodeId, a.nodeId), { scope: { scope: SyncScope.SCOPE_CO_OWNED, view }, self: a.nodeId })
    expect(res.complete).toBe(true)
    // A now holds exactly the ranges it owns that B owns too, plus its own.
    for (const { nodeId, hourMs } of sa.tree.entries()) {
      expect(nodeId === a.nodeId || (view.isOwner(a.nodeId, nodeId, hourMs) && view.isOwner(b.nodeId, nodeId, hourMs))).toBe(true)
    }
    const expected = nodes.flatMap(n => hours.filter(h => n === a || (view.isOwner(a.nodeId, n.nodeId, h) && view.isOwner(b.nodeId, n.nodeId, h))))
    expect(sa.tree.count).toBe(expected.length * 20)
    // Nothing more to do.
    expect(await syncWith(sa, intakeOf(sa), b.nodeId, peer(sb, b.nodeId, a.nodeId), { scope: { scope: SyncScope.SCOPE_CO_OWNED, view }, self: a.nodeId })).toMatchObject({ pulled: 0, pushed: 0, minutes: 0 })

    // A carried a copy of a range it does not own (a router's copy): a handoff pushes it to an owner and pulls nothing.
    const other = nodes.find(n => n !== a && hours.some(h => !view.isOwner(a.nodeId, n.nodeId, h))) as TestNode
    const hour = hours.find(h => !view.isOwner(a.nodeId, other.nodeId, h)) as number
    const owner = view.owners(other.nodeId, hour).find(o => o !== other.nodeId) as string
    const so = await stores.open()
    await fill(sa, other, 5, hour, 'carried')
    const before = sa.tree.count
    const hand = await syncWith(sa, intakeOf(sa), owner, peer(so, owner, a.nodeId), { scope: { scope: SyncScope.SCOPE_HANDOFF, view }, self: a.nodeId })
    expect(hand).toMatchObject({ pulled: 0, shortfall: 0, complete: true })
    expect(hand.pushed).toBeGreaterThanOrEqual(5)
    expect(so.tree.hour(other.nodeId, hour)).toEqual(sa.tree.hour(other.nodeId, hour))
    expect(sa.tree.count).toBe(before)
    // Dropped once confirmed, only while unchanged; totals and day rows follow.
    const held = sa.tree.hour(other.nodeId, hour)
    expect(await sa.dropRange(other.nodeId, hour, { count: held.count + 1, hash: held.hash })).toBe(0)
    const dropped = await sa.dropRange(other.nodeId, hour, held)
    expect(dropped).toBe(held.count)
    expect(sa.tree.hour(other.nodeId, hour).count).toBe(0)
    expect(await minuteRows(sa, 0)).toEqual(await recount(sa, 0))
    const u = await queryUsage(sa)
    const h = await queryUsage(sa, { bucket: 'hour' })
    expect(u.functions[0].invocations).toBe(sa.tree.count)
    expect(h.functions[0].invocations).toBe(sa.tree.count)
  })

  it('merges usage parts of several holders counting each range once, the fullest copy winning', async () => {
    const [x, y] = [await testNode(), await testNode()]
    const s1 = await stores.open()
    const s2 = await stores.open()
    const s3 = await stores.open()
    for (const s of [s1, s2]) await fill(s, x, 30, T0 - HOUR_MS)
    await fill(s2, y, 10, T0)
    await fill(s3, y, 10, T0)
    await fill(s3, y, 4, T0, 'late') // s3 holds 4 more records of y's hour than s2
    const q = { sinceMs: T0 - HOUR_MS + 7 * MINUTE_MS, bucket: 'hour' as const }
    const legs = await Promise.all([s1, s2, s3].map(async s => (await queryParts(s, q)).parts))
    const merged = mergeParts(legs, undefined, 'hour')
    const fn = merged.functions[0]
    // x's hour counted once, from the window's start; y's hour from the fullest copy.
    const xIn = (await queryUsage(s1, q)).functions[0].invocations
    expect(fn.byNode[x.nodeId]).toBe(xIn)
    expect(fn.byNode[y.nodeId]).toBe(14)
    expect(fn.invocations).toBe(xIn + 14)
    expect(merged.buckets.reduce((n, b) => n + Number(b.invocations), 0)).toBe(xIn + 14)
  })
})

describe('anti-entropy partners under placement', () => {
  it('runs sessions only with the live co-owners of ranges this node holds and owns: none while it holds nothing, every peer while everyone holds everything', async () => {
    const { AntiEntropy } = await import('../../node/src/metering/replication/antientropy.js')
    const { DigestTree } = await import('../../node/src/metering/records/digest.js')
    const { PeerTable } = await import('../../node/src/gossip/peer-table.js')
    const { Placement } = await import('../../node/src/metering/replication/placement.js')
    const members = ids(40)
    const self = members[0]
    const table = new PeerTable()
    const advert = (id: string): any => ({ nodeId: id, name: 'n', slots: 1, inFlight: 0, freeMemMb: 0, warm: [], seq: 1, draining: false, startedAtMs: 1, sentAtMs: 1, invocations: 0, coldStarts: 0, warmStarts: 0, refusing: '', labels: {}, provisioned: [], layers: 0, keepaliveMs: 0, addrs: [] })
    table.setSelf(advert(self))
    for (const m of members.slice(1)) table.upsert(advert(m))
    const tree = new DigestTree()
    const placement = new Placement(table, self, 2)
    const logger = { debug () {}, info () {}, warn () {}, error () {}, child () { return this } } as any
    const ae = new AntiEntropy({ libp2p: {} as any, table, store: { tree } as any, intake: {} as any, logger, placement, self })
    expect(ae.partners(), 'holding nothing: no session is worth having').toEqual([])

    // Its own hours (it owns them) and some hours of others it holds
    const one = { count: 1, hash: Buffer.alloc(32, 1) }
    for (let h = 0; h < 24; h++) tree.setHour(self, T0 + h * HOUR_MS, one)
    for (let h = 0; h < 24; h++) tree.setHour(members[5], T0 + h * HOUR_MS, one)
    const view = placement.current()
    const want = new Set<string>()
    for (const { nodeId, hourMs } of tree.entries()) {
      const owners = view.owners(nodeId, hourMs)
      if (owners.includes(self)) for (const o of owners) if (o !== self) want.add(o)
    }
    const got = ae.partners()
    expect(new Set(got)).toEqual(want)
    expect(got.length, 'a few co-owners, not the 39 peers').toBeLessThan(39)
    expect(got.length).toBeGreaterThan(0)

    // A suspect peer is left out; with every member holding everything (R >= N-1), every live peer
    const victim = got[0]
    table.suspect(victim)
    expect(ae.partners()).not.toContain(victim)
    const small = new PeerTable()
    small.setSelf(advert(self))
    for (const m of members.slice(1, 3)) small.upsert(advert(m))
    const everyone = new AntiEntropy({ libp2p: {} as any, table: small, store: { tree } as any, intake: {} as any, logger, placement: new Placement(small, self, 2), self })
    expect(everyone.partners().sort()).toEqual(members.slice(1, 3).sort())
  })
})
