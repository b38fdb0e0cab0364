/**
 * The merge rules: a record is identified by its key (copies merge, every distinct record is
 * billed, so two runs sharing an invocation id are two records), rollups that are a function of
 * the record set whatever order records arrive in, registers (seals) that merge
 * commutatively, associatively and idempotently, and rollups equal to a recount from raw records.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { Outcome, type Encodable, type MeterRecord, type RollupRegister } from '../../proto/codec.js'
import { MINUTE_MS, HOUR_MS } from '../../node/src/metering/records/keys.js'
import { parseRecordKey } from '../../node/src/metering/records/keys.js'
import { compareRegisters, mergeRegisters } from '../../node/src/metering/records/rollup.js'
import type { MeterStore } from '../../node/src/metering/ledger/store.js'
import { minuteRows, queryUsage, recount } from '../../node/src/metering/queries/usage.js'
import { rec, signed, T0, tempStores, testNode, type TestNode } from '../helpers/meter.js'

/** mulberry32: seeded, so a failing order can be replayed */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function shuffle<T> (items: T[], rnd: () => number): T[] {
  const a = [...items]
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]]
  }
  return a
}

/** Everything that must be identical on two nodes holding the same records */
async function state (store: MeterStore): Promise<unknown> {
  const rows: Array<[string, Uint8Array]> = []
  for await (const [k, v] of store.db.iterator({ gte: 'u!', lt: 'u!~' })) rows.push([k, Buffer.from(v)] as [string, Uint8Array])
  const records: string[] = []
  for await (const k of store.db.keys({ gte: 'r!', lt: 'r!~' })) records.push(k)
  return { rows: rows.map(([k, v]) => `${k}=${Buffer.from(v).toString('hex')}`), records, digests: store.tree.perNode(), usage: await queryUsage(store, { bucket: 'minute' }) }
}

describe('meter merge rules', () => {
  const stores = tempStores()
  afterEach(async () => { await stores.cleanup() })

  it('bills every run of one invocation id, and a copy of a record once, whatever node it comes through', async () => {
    const [a, b] = [await testNode(), await testNode()]
    // One event run three times (attempts 1-3), once more on another node after a redelivery,
    // and a sync call a router retried on another peer: five runs, one id.
    const runs = [
      rec(a, { invocationId: 'x', attempt: 1, startMs: T0, billedMs: 5 }),
      rec(a, { invocationId: 'x', attempt: 2, startMs: T0 + 100, billedMs: 5 }),
      rec(a, { invocationId: 'x', attempt: 3, startMs: T0 + 200, billedMs: 5 }),
      rec(b, { invocationId: 'x', attempt: 3, startMs: T0 + 300, billedMs: 5 }),
      rec(b, { invocationId: 'x', attempt: 1, startMs: T0 + 200, billedMs: 5 })
    ]
    const copies = runs.map((r, i) => signed(i < 3 ? a : b, [r]))
    const keys = copies.map(c => c.items[0].key)
    expect(new Set(keys).size).toBe(5)
    for (const k of keys) expect(parseRecordKey(k)?.invocationId).toBe('x')
    const stores2 = [await stores.open(), await stores.open()]
    for (const [i, store] of stores2.entries()) {
      // Every copy twice, in two orders: a copy of a record is the record.
      const order = i === 0 ? [...copies, ...copies] : [...copies].reverse().concat(copies)
      for (const c of order) await store.ingest(c.items, c.proofs)
      const usage = await queryUsage(store)
      expect(usage.functions.map(f => [f.invocations, f.billedMs])).toEqual([[5, 25]])
      expect(await minuteRows(store, 0)).toEqual(await recount(store, 0))
    }
    expect(await state(stores2[0])).toEqual(await state(stores2[1]))
  })

  it('ends with the same rollups, records and digests whatever order and batching the records arrive in, and merging again changes nothing', async () => {
    const nodes: TestNode[] = await Promise.all([1, 2, 3].map(async () => await testNode()))
    const rnd = prng(42)
    // 150 records over 3 nodes, 3 functions and 5 minutes, with retried ids: an id run on two nodes.
    const records: Array<{ node: TestNode, r: Encodable<MeterRecord> }> = []
    for (let i = 0; i < 150; i++) {
      const node = nodes[i % 3]
      records.push({
        node,
        r: rec(node, {
          invocationId: `inv-${i}`, function: ['a', 'b', 'c'][i % 3], startMs: T0 + (i % 5) * MINUTE_MS + i, billedMs: 1 + i,
          memoryMb: [128, 256, 1024][i % 3], outcome: i % 7 === 0 ? Outcome.OUTCOME_ERROR : Outcome.OUTCOME_OK, cold: i % 11 === 0
        })
      })
    }
    for (let i = 0; i < 20; i++) {
      const node = nodes[(i + 1) % 3]
      records.push({ node, r: rec(node, { invocationId: `inv-${i * 5}`, function: 'a', startMs: T0 + i * 1000, attempt: 1 + (i % 3), billedMs: 7 }) })
    }
    // Each record signed once by its node (as in the mesh); the copies then travel separately.
    const copies = records.map(x => signed(x.node, [x.r]))
    const states = []
    for (let run = 0; run < 4; run++) {
      const store = await stores.open()
      const order = shuffle(copies, rnd)
      for (let i = 0; i < order.length;) {
        const n = 1 + Math.floor(rnd() * 20)
        const part = order.slice(i, i + n)
        i += n
        // Concurrent ingests share group commits.
        await Promise.all(part.map(async c => await store.ingest(c.items, c.proofs)))
      }
      const before = await state(store)
      // Idempotent: everything again, in yet another order, plus duplicates within one batch.
      const again = shuffle([...copies, ...copies.slice(0, 30)], rnd)
      const res = await store.ingest(again.flatMap(c => c.items), new Map(again.flatMap(c => [...c.proofs])))
      expect(res.stored).toBe(0)
      expect(await state(store)).toEqual(before)
      states.push(before)
      expect(await minuteRows(store, 0)).toEqual(await recount(store, 0))
    }
    for (const s of states.slice(1)) expect(s).toEqual(states[0])
    const usage = (states[0] as { usage: Awaited<ReturnType<typeof queryUsage>> }).usage
    // 150 distinct invocation ids plus 20 retried runs of some of them: every run is billed.
    expect(usage.functions.reduce((n, f) => n + f.invocations, 0)).toBe(170)
  })

  it('agrees with a recount from raw records when a retry of the same id lands elsewhere', async () => {
    const [a, b] = [await testNode(), await testNode()]
    const store = await stores.open()
    const first = rec(a, { invocationId: 'x', billedMs: 10, function: 'f' })
    const retry = rec(b, { invocationId: 'x', billedMs: 30, function: 'g', attempt: 2, startMs: T0 + HOUR_MS })
    await store.ingest(signed(a, [first]).items, signed(a, [first]).proofs)
    const s1 = signed(a, [first])
    await store.ingest(s1.items, s1.proofs)
    let usage = await queryUsage(store)
    expect(usage.functions.map(f => [f.name, f.invocations, f.billedMs])).toEqual([['f', 1, 10]])
    const s2 = signed(b, [retry])
    await store.ingest(s2.items, s2.proofs)
    usage = await queryUsage(store)
    // The retry (attempt 2) is a run of its own: billed beside the first, not instead of it.
    expect(usage.functions.map(f => [f.name, f.invocations, f.billedMs, f.byNode])).toEqual([['f', 1, 10, { [a.nodeId]: 1 }], ['g', 1, 30, { [b.nodeId]: 1 }]])
    expect(await minuteRows(store, 0)).toEqual(await recount(store, 0))
  })

  it('merges registers commutatively, associatively and idempotently', () => {
    const rnd = prng(3)
    const reg = (count: number, h: number, sealedAtMs: number, inv: number): RollupRegister => ({
      digest: { nodeId: 'n', fromMs: T0, toMs: T0 + MINUTE_MS, count, hash: Buffer.alloc(32, h) },
      rows: [{ bucketMs: T0, function: 'f', nodeId: 'n', invocations: inv, errors: 0, coldStarts: 0, billedMs: inv, mbMs: inv }],
      sealedAtMs,
      signature: Buffer.alloc(64)
    }) as unknown as RollupRegister
    const regs = Array.from({ length: 40 }, () => reg(Math.floor(rnd() * 4), Math.floor(rnd() * 3), Math.floor(rnd() * 3), Math.floor(rnd() * 3)))
    for (const x of regs) {
      expect(compareRegisters(mergeRegisters(x, x), x)).toBe(0)
      for (const y of regs) {
        expect(compareRegisters(mergeRegisters(x, y), mergeRegisters(y, x))).toBe(0)
        for (const z of regs.slice(0, 10)) {
          expect(compareRegisters(mergeRegisters(mergeRegisters(x, y), z), mergeRegisters(x, mergeRegisters(y, z)))).toBe(0)
        }
      }
    }
    // A register with more records wins over one with fewer, whatever else it says.
    expect(compareRegisters(reg(3, 0, 0, 0), reg(2, 2, 2, 2))).toBeGreaterThan(0)
  })
})
