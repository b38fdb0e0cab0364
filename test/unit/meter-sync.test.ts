/**
 * Anti-entropy between two stores, wired directly (the libp2p transport is covered by the
 * integration tests): digests find the difference, only the difference moves, both end equal,
 * and forged records from a lying peer are refused.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { decode, encode, SyncOp, type Encodable, type SyncReply, type SyncRequest } from '../../proto/codec.js'
import { DAY_MS, HOUR_MS, MINUTE_MS } from '../../node/src/metering/records/keys.js'
import type { MeterStore } from '../../node/src/metering/ledger/store.js'
import { answer, syncWith, type Ask } from '../../node/src/metering/replication/sync.js'
import { queryUsage } from '../../node/src/metering/queries/usage.js'
import { intakeOf, rec, recordingLogger, signed, T0, tempStores, testNode, type TestNode } from '../helpers/meter.js'

/** A peer's side, through the wire encoding, counting requests by op */
function peer (store: MeterStore, name = 'peer-b'): { ask: Ask, ops: Map<number, number> } {
  const intake = intakeOf(store)
  const ops = new Map<number, number>()
  return {
    ops,
    ask: async (req: Encodable<SyncRequest>) => {
      const decoded = decode('SyncRequest', encode('SyncRequest', req))
      ops.set(decoded.op, (ops.get(decoded.op) ?? 0) + 1)
      return decode('SyncReply', encode('SyncReply', await answer(store, intake, name, decoded)))
    }
  }
}

async function fill (store: MeterStore, node: TestNode, ids: string[], startOf: (i: number) => number): Promise<void> {
  for (let i = 0; i < ids.length; i += 500) {
    const s = signed(node, ids.slice(i, i + 500).map((id, j) => rec(node, { invocationId: id, startMs: startOf(i + j), billedMs: 1 + (startOf(i + j) % 50) })))
    await store.ingest(s.items, s.proofs)
  }
}

describe('anti-entropy', () => {
  const stores = tempStores()
  afterEach(async () => { await stores.cleanup() })

  it('pulls exactly the records a node missed over hours, then finds nothing to do', async () => {
    const [x, y] = [await testNode(), await testNode()]
    const a = await stores.open()
    const b = await stores.open()
    // 3,000 records over 3 hours of two nodes; A holds the first 1,000 only.
    const ids = Array.from({ length: 3000 }, (_, i) => `inv-${i}`)
    const at = (i: number): number => T0 - 3 * HOUR_MS + Math.floor(i * (3 * HOUR_MS) / 3000)
    await fill(b, x, ids.filter((_, i) => i % 2 === 0), i => at(i * 2))
    await fill(b, y, ids.filter((_, i) => i % 2 === 1), i => at(i * 2 + 1))
    await fill(a, x, ids.filter((_, i) => i % 2 === 0).slice(0, 500), i => at(i * 2))
    await fill(a, y, ids.filter((_, i) => i % 2 === 1).slice(0, 500), i => at(i * 2 + 1))
    const p = peer(b)
    const res = await syncWith(a, intakeOf(a), 'peer-b', p.ask)
    expect(res.pulled).toBe(2000)
    expect(res.pushed).toBe(0)
    expect(res.complete).toBe(true)
    expect(a.tree.perNode()).toEqual(b.tree.perNode())
    expect(await queryUsage(a, { bucket: 'minute' })).toEqual(await queryUsage(b, { bucket: 'minute' }))
    // Minutes A held nothing of were fetched whole, without listing keys first.
    expect(p.ops.get(SyncOp.OP_KEYS) ?? 0).toBeLessThanOrEqual(2)
    const again = peer(b)
    expect(await syncWith(a, intakeOf(a), 'peer-b', again.ask)).toMatchObject({ pulled: 0, pushed: 0, minutes: 0, rounds: 1 })
  })

  it('exchanges both ways when each side holds records the other lacks in the same minutes', async () => {
    const x = await testNode()
    const a = await stores.open()
    const b = await stores.open()
    const idx = Array.from({ length: 600 }, (_, i) => i)
    const at = (i: number): number => T0 + Math.floor(i / 100) * MINUTE_MS + i
    const pick = (keep: (i: number) => boolean): number[] => idx.filter(keep)
    const aHas = pick(i => i % 3 !== 0)
    const bHas = pick(i => i % 3 !== 1)
    await fill(a, x, aHas.map(i => `r-${i}`), j => at(aHas[j]))
    await fill(b, x, bHas.map(i => `r-${i}`), j => at(bHas[j]))
    const p = peer(b)
    const res = await syncWith(a, intakeOf(a), 'peer-b', p.ask)
    expect(res.minutes).toBe(6)
    expect(res.pulled).toBe(200)
    expect(res.pushed).toBe(200)
    // The keys of all 6 minutes come in one page.
    expect(p.ops.get(SyncOp.OP_KEYS)).toBe(1)
    expect(a.tree.perNode()).toEqual(b.tree.perNode())
    expect((await queryUsage(a)).functions[0].invocations).toBe(600)
    expect(await queryUsage(b)).toEqual(await queryUsage(a))
  })

  it('leaves the minutes still settling to pushes in periodic sessions, and takes them in full ones', async () => {
    const x = await testNode()
    const a = await stores.open()
    const b = await stores.open()
    const now = Date.now()
    // One record an hour ago, three in the last few seconds; A holds none of them.
    await fill(b, x, ['old', 'new-1', 'new-2', 'new-3'], i => i === 0 ? now - HOUR_MS : now - 3000 + i)
    const periodic = await syncWith(a, intakeOf(a), 'peer-b', peer(b).ask, { settleMs: 70_000, now })
    expect(periodic).toMatchObject({ pulled: 1, minutes: 1 })
    const full = await syncWith(a, intakeOf(a), 'peer-b', peer(b).ask)
    expect(full.pulled).toBe(3)
    expect(a.tree.perNode()).toEqual(b.tree.perNode())
  })

  it('swaps seals, not records, for minutes older than the retention', async () => {
    const x = await testNode()
    const { Meter } = await import('../../node/src/metering/meter.js')
    const { silentLogger } = await import('../../node/src/logger.js')
    const now = (): number => T0 + 40 * DAY_MS
    // A ran the records a long time ago and sealed its minutes; B joined the mesh later.
    const a = await stores.open({ retentionMs: 30 * DAY_MS })
    const meter = new Meter({ store: a, signer: x.signer, logger: silentLogger() }, { sealAfterMs: 0 })
    for (let i = 0; i < 30; i++) await meter.record(rec(x, { invocationId: `o-${i}`, startMs: T0 + i * 5000 }))
    await meter.seal(T0 + HOUR_MS)
    await meter.stop()
    const b = await stores.open({ retentionMs: 30 * DAY_MS, now })
    const p = peer(a)
    const res = await syncWith(b, intakeOf(b), 'peer-a', p.ask)
    expect(res.pulled).toBe(0)
    expect(p.ops.get(SyncOp.OP_REGISTERS)).toBe(1)
    expect(p.ops.get(SyncOp.OP_FETCH) ?? 0).toBe(0)
    expect(await queryUsage(b, { bucket: 'minute' })).toEqual(await queryUsage(a, { bucket: 'minute' }))
    expect(b.tree.perNode()).toEqual(a.tree.perNode())
  })

  it('refuses forged records a lying peer sends in a session, logs it, and keeps the real ones', async () => {
    const [x, liar] = [await testNode(), await testNode()]
    const a = await stores.open()
    const b = await stores.open()
    await fill(b, x, ['real-1', 'real-2'], i => T0 + i)
    const honest = peer(b)
    // The liar answers FETCH with records naming x, signed by its own key.
    const lying: Ask = async (req) => {
      const reply = await honest.ask(req) as SyncReply
      if (req.op !== SyncOp.OP_FETCH) return reply
      const forged = signed(liar, [rec(x, { invocationId: 'forged', startMs: T0 + 2 })])
      const bundle = reply.bundle ?? { proofs: [], records: [] }
      return decode('SyncReply', encode('SyncReply', {
        bundle: { proofs: [...bundle.proofs, forged.proof], records: [...bundle.records, ...forged.items.map(v => ({ record: v.bytes, batchId: v.batchId, leaf: v.leafIndex }))] }
      }))
    }
    const log = recordingLogger()
    await syncWith(a, intakeOf(a, log), 'liar', lying)
    const exported = (await queryUsage(a)).functions[0]
    expect(exported.invocations).toBe(2)
    const line = log.lines.find(l => l.msg === 'rejected meter data from a peer')
    expect(line).toMatchObject({ peer: 'liar', via: 'sync', refused: 1 })
    expect(line?.reasons.join(' ')).toMatch(/names node .* but is signed by/)
  })
})
