import { describe, expect, it } from 'vitest'
import type { CapacityAdvert } from '../../proto/codec.js'
import { PeerTable } from '../../node/src/gossip/peer-table.js'

const T0 = 1_700_000_000_000

function advert (nodeId: string, fields: Partial<CapacityAdvert> = {}): CapacityAdvert {
  return {
    nodeId, name: nodeId, slots: 4, inFlight: 0, freeMemMb: 1024, warm: [], seq: 1, draining: false,
    startedAtMs: T0, sentAtMs: T0, invocations: 0, coldStarts: 0, warmStarts: 0, ...fields
  }
}

/** A table on a clock the test moves by hand, recording every event */
function setup (peerTimeoutMs = 2000): { table: PeerTable, clock: { now: number }, events: string[] } {
  const clock = { now: T0 }
  const table = new PeerTable({ peerTimeoutMs, now: () => clock.now })
  const events: string[] = []
  table.on('added', e => events.push(`added ${e.advert.nodeId}`))
  table.on('updated', e => events.push(`updated ${e.advert.nodeId} seq ${e.advert.seq}`))
  table.on('removed', (id, reason) => events.push(`removed ${id}: ${reason}`))
  return { table, clock, events }
}

describe('peer table', () => {
  it('adds a peer on its first advert and updates it on a newer one', () => {
    const { table, clock, events } = setup()
    expect(table.upsert(advert('a', { seq: 1, inFlight: 1 }))).toBe('added')
    clock.now += 500
    expect(table.upsert(advert('a', { seq: 2, inFlight: 3 }))).toBe('updated')
    expect(table.get('a')?.advert.inFlight).toBe(3)
    expect(table.get('a')?.lastSeenMs).toBe(T0 + 500)
    expect(table.get('a')?.self).toBe(false)
    expect(table.size).toBe(1)
    expect(events).toEqual(['added a', 'updated a seq 2'])
  })

  it('ignores an advert with the same or a lower seq from the same run', () => {
    const { table, events } = setup()
    table.upsert(advert('a', { seq: 5, inFlight: 2 }))
    expect(table.upsert(advert('a', { seq: 5, inFlight: 9 }))).toBe('stale')
    expect(table.upsert(advert('a', { seq: 4, inFlight: 9 }))).toBe('stale')
    expect(table.get('a')?.advert.inFlight).toBe(2)
    expect(events).toEqual(['added a'])
  })

  it('ignores an advert from an earlier run even with a higher seq', () => {
    const { table } = setup()
    table.upsert(advert('a', { startedAtMs: T0, seq: 3 }))
    expect(table.upsert(advert('a', { startedAtMs: T0 - 1, seq: 1000 }))).toBe('stale')
    expect(table.get('a')?.advert.seq).toBe(3)
  })

  it('removes a draining peer at once and ignores late adverts from the same run', () => {
    const { table, events } = setup()
    table.upsert(advert('a', { seq: 7 }))
    expect(table.upsert(advert('a', { seq: 8, draining: true }))).toBe('draining')
    expect(table.has('a')).toBe(false)
    // Adverts sent before the draining one but delivered after it stay ignored.
    expect(table.upsert(advert('a', { seq: 6 }))).toBe('stale')
    expect(table.upsert(advert('a', { seq: 8 }))).toBe('stale')
    expect(table.has('a')).toBe(false)
    expect(events).toEqual(['added a', 'removed a: draining'])
  })

  it('accepts a restarted node whose seq starts again at 1', () => {
    const { table, events } = setup()
    table.upsert(advert('a', { seq: 90 }))
    table.upsert(advert('a', { seq: 91, draining: true }))
    expect(table.upsert(advert('a', { startedAtMs: T0 + 10_000, seq: 1, inFlight: 1 }))).toBe('added')
    expect(table.get('a')?.advert.startedAtMs).toBe(T0 + 10_000)
    expect(table.upsert(advert('a', { startedAtMs: T0 + 10_000, seq: 2 }))).toBe('updated')
    expect(events).toEqual(['added a', 'removed a: draining', 'added a', 'updated a seq 2'])
  })

  it('replaces a live entry when the node restarted without draining', () => {
    const { table } = setup()
    table.upsert(advert('a', { seq: 50 }))
    expect(table.upsert(advert('a', { startedAtMs: T0 + 1, seq: 1 }))).toBe('updated')
    expect(table.get('a')?.advert.seq).toBe(1)
  })

  it('drops a peer not heard from within peerTimeoutMs and keeps fresh ones', () => {
    const { table, clock, events } = setup(2000)
    table.upsert(advert('old'))
    clock.now += 1500
    table.upsert(advert('fresh'))
    clock.now += 500
    table.sweep()
    // exactly at the timeout: still there
    expect(table.has('old')).toBe(true)
    clock.now += 1
    table.sweep()
    expect(table.has('old')).toBe(false)
    expect(table.has('fresh')).toBe(true)
    clock.now += 1500
    table.sweep()
    expect(table.has('fresh')).toBe(false)
    expect(events).toEqual(['added old', 'added fresh', 'removed old: adverts stopped', 'removed fresh: adverts stopped'])
  })

  it('keeps a suspect out of routing when a late copy of its advert arrives while it is still unreachable', () => {
    const { table } = setup()
    table.upsert(advert('a', { seq: 1 }))
    table.suspect('a')
    expect(table.upsert(advert('a', { seq: 2 }), true)).toBe('updated')
    expect(table.routable().map(e => e.advert.nodeId)).toEqual([])
    expect(table.upsert(advert('a', { seq: 3 }))).toBe('updated')
    expect(table.routable().map(e => e.advert.nodeId)).toEqual(['a'])
  })

  it('drops a peer whose connection dropped after peerTimeoutMs of silence, whatever its keepalive', () => {
    const { table, clock } = setup(2000)
    table.upsert(advert('a', { keepaliveMs: 5000 }))
    table.upsert(advert('b', { keepaliveMs: 5000 }))
    table.suspect('a')
    clock.now += 2001
    table.sweep()
    expect(table.has('a')).toBe(false)
    expect(table.has('b')).toBe(true)
  })

  it('takes a suspect back once it kept advertising through others for longer than its timeout', () => {
    const { table, clock } = setup(2000)
    table.upsert(advert('a', { seq: 1 }))
    table.suspect('a')
    clock.now += 1500
    table.upsert(advert('a', { seq: 2 }), true)
    expect(table.get('a')?.suspect).toBe(true)
    clock.now += 1000
    table.upsert(advert('a', { seq: 3 }), true)
    expect(table.get('a')?.suspect).toBe(false)
  })

  it('waits three of a peer\'s own keepalives before dropping it, at most a minute', () => {
    const { table, clock, events } = setup(2000)
    table.upsert(advert('slow', { keepaliveMs: 5000 }))
    table.upsert(advert('liar', { keepaliveMs: 600_000 }))
    table.upsert(advert('fast', { keepaliveMs: 100 }))
    clock.now += 2001
    table.sweep()
    // a keepalive shorter than the peer timeout does not shorten it
    expect(events).toEqual(['added slow', 'added liar', 'added fast', 'removed fast: adverts stopped'])
    clock.now += 15_000 - 2001
    table.sweep()
    expect(table.has('slow')).toBe(true)
    clock.now += 1
    table.sweep()
    expect(table.has('slow')).toBe(false)
    clock.now = T0 + 60_001
    table.sweep()
    expect(table.has('liar')).toBe(false)
  })

  it('keeps a peer that keeps advertising', () => {
    const { table, clock } = setup(2000)
    for (let seq = 1; seq <= 10; seq++) {
      table.upsert(advert('a', { seq }))
      clock.now += 1000
      table.sweep()
    }
    expect(table.has('a')).toBe(true)
  })

  it('excludes a suspect peer from routable() until its next advert', () => {
    const { table } = setup()
    table.upsert(advert('a', { seq: 1 }))
    table.upsert(advert('b', { seq: 1 }))
    table.suspect('a')
    expect(table.get('a')?.suspect).toBe(true)
    expect(table.routable().map(e => e.advert.nodeId)).toEqual(['b'])
    // still listed, only not routed to
    expect(table.all().map(e => e.advert.nodeId)).toEqual(['a', 'b'])
    expect(table.upsert(advert('a', { seq: 1 }))).toBe('stale')
    expect(table.get('a')?.suspect).toBe(true)
    expect(table.upsert(advert('a', { seq: 2 }))).toBe('updated')
    expect(table.get('a')?.suspect).toBe(false)
    expect(table.routable().map(e => e.advert.nodeId)).toEqual(['a', 'b'])
  })

  it('ignores suspect() of an unknown peer', () => {
    const { table } = setup()
    table.suspect('ghost')
    expect(table.has('ghost')).toBe(false)
  })

  it('never removes or expires its own entry', () => {
    const { table, clock, events } = setup(2000)
    table.setSelf(advert('me', { seq: 1 }))
    expect(table.get('me')?.self).toBe(true)
    clock.now += 60_000
    table.sweep()
    table.remove('me', 'asked to')
    table.suspect('me')
    expect(table.upsert(advert('me', { seq: 2, draining: true }))).toBe('draining')
    expect(table.has('me')).toBe(true)
    expect(table.get('me')?.suspect).toBe(false)
    expect(table.routable().map(e => e.advert.nodeId)).toEqual(['me'])
    expect(events).toEqual([])
  })

  it('does not let a remote advert overwrite its own entry', () => {
    const { table } = setup()
    table.setSelf(advert('me', { seq: 1, inFlight: 0 }))
    expect(table.upsert(advert('me', { seq: 9, inFlight: 4 }))).toBe('stale')
    expect(table.get('me')?.advert.inFlight).toBe(0)
  })

  it('updates its own entry through setSelf', () => {
    const { table, clock } = setup()
    table.setSelf(advert('me', { seq: 1, inFlight: 0 }))
    clock.now += 100
    table.setSelf(advert('me', { seq: 2, inFlight: 3 }))
    expect(table.size).toBe(1)
    expect(table.get('me')).toMatchObject({ self: true, lastSeenMs: T0 + 100 })
    expect(table.get('me')?.advert.inFlight).toBe(3)
  })

  it('emits removed with the reason given, once', () => {
    const { table, events } = setup()
    table.upsert(advert('a'))
    table.remove('a', 'connection closed')
    table.remove('a', 'connection closed')
    table.remove('never-seen', 'whatever')
    expect(events).toEqual(['added a', 'removed a: connection closed'])
  })

  it('still ignores stale adverts of a peer after it was swept', () => {
    const { table, clock } = setup(1000)
    table.upsert(advert('a', { seq: 4 }))
    clock.now += 5000
    table.sweep()
    expect(table.upsert(advert('a', { seq: 3 }))).toBe('stale')
    expect(table.has('a')).toBe(false)
    expect(table.upsert(advert('a', { seq: 5 }))).toBe('added')
  })
})
