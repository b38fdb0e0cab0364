import { describe, expect, it } from 'vitest'
import type { KV } from '@nats-io/kv'
import { decode } from '../../proto/codec.js'
import { concurrencyKey, ReservedConcurrency } from '../../node/src/executor/reserved.js'

const logger = { warn () {}, info () {}, debug () {}, error () {}, trace () {}, child () { return logger } } as never
const tick = async (): Promise<void> => { await new Promise(resolve => setTimeout(resolve, Math.floor(Math.random() * 3))) }

/** A KV bucket in memory with NATS's compare-and-set rules, answering after random delays */
function memoryKv (): KV & { value: (key: string) => Uint8Array | undefined } {
  const store = new Map<string, { revision: number, value: Uint8Array }>()
  let seq = 0
  return {
    value: (key: string) => store.get(key)?.value,
    async get (key: string) {
      await tick()
      const e = store.get(key)
      return e == null ? null : { key, revision: e.revision, operation: 'PUT', value: e.value }
    },
    async create (key: string, value: Uint8Array) {
      await tick()
      if (store.has(key)) throw new Error('wrong last sequence: key exists')
      store.set(key, { revision: ++seq, value })
      return seq
    },
    async update (key: string, value: Uint8Array, revision: number) {
      await tick()
      if (store.get(key)?.revision !== revision) throw new Error('wrong last sequence: 12')
      store.set(key, { revision: ++seq, value })
      return seq
    }
  } as never
}

describe('mesh-wide reserved concurrency leases', () => {
  it('never lets more than N runs hold a permit at once across agents racing on one entry', async () => {
    const kv = memoryKv()
    const agents = ['12D3KooWA', '12D3KooWB', '12D3KooWC'].map(nodeId => new ReservedConcurrency({ kv, nodeId, logger }))
    let running = 0
    let max = 0
    let ran = 0
    let refused = 0
    await Promise.all(Array.from({ length: 300 }, async (_, i) => {
      await new Promise(resolve => setTimeout(resolve, Math.floor(Math.random() * 200)))
      const a = agents[i % 3]
      if (!await a.acquire('fn', 2)) { refused++; return }
      running++
      max = Math.max(max, running)
      await new Promise(resolve => setTimeout(resolve, 1 + Math.floor(Math.random() * 10)))
      running--
      ran++
      a.release('fn')
    }))
    expect(max).toBeLessThanOrEqual(2)
    expect(ran).toBeGreaterThan(10)
    expect(ran + refused).toBe(300)
    // Every permit is given back: the stored leases end empty.
    await new Promise(resolve => setTimeout(resolve, 100))
    const value = kv.value(concurrencyKey('fn'))
    expect(value == null ? [] : decode('ConcurrencyLeases', value).leases).toEqual([])
  })

  it('frees the permits of an agent that stopped renewing once its lease expires, not before', async () => {
    const kv = memoryKv()
    let now = 1_000_000
    const dead = new ReservedConcurrency({ kv, nodeId: '12D3KooWDead', logger }, { ttlMs: 10_000, now: () => now })
    const live = new ReservedConcurrency({ kv, nodeId: '12D3KooWLive', logger }, { ttlMs: 10_000, now: () => now })
    expect(await dead.acquire('fn', 1)).toBe(true)
    expect(await live.acquire('fn', 1)).toBe(false)
    now += 9_000
    expect(await live.acquire('fn', 1)).toBe(false)
    now += 1_001
    expect(await live.acquire('fn', 1)).toBe(true)
  })

  it('reads a junk or hostile entry as no leases and replaces it', async () => {
    const kv = memoryKv()
    await kv.create(concurrencyKey('fn'), Buffer.from([0xff, 0xff, 0xff, 0x0f]))
    const a = new ReservedConcurrency({ kv, nodeId: '12D3KooWA', logger })
    expect(await a.acquire('fn', 1)).toBe(true)
    const leases = decode('ConcurrencyLeases', kv.value(concurrencyKey('fn')) as Uint8Array).leases
    expect(leases.map(l => [l.nodeId, l.permits])).toEqual([['12D3KooWA', 1]])
  })
})
