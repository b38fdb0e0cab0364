/**
 * The export fan-out's merge (owner-based placement): pages through members' legs after a shared
 * cursor return every record of the union once, in key order, whatever the overlap, the leg
 * limit or the page size.
 */
import { describe, expect, it } from 'vitest'
import type { MeterRecord } from '../../proto/codec.js'
import { byteOrder, legLimit, mergeLegs, type ExportLeg } from '../../node/src/metering/queries/export.js'

/** A member's ledger as its leg answers: its keys after the cursor, `limit` at most */
function leg (held: string[], after: string, limit: number): ExportLeg {
  const keys = held.filter(k => after === '' || byteOrder(k, after) > 0).slice(0, limit)
  const full = keys.length === limit && held.some(k => byteOrder(k, keys[keys.length - 1]) > 0)
  return { keys, records: keys.map(k => ({ invocationId: k } as unknown as MeterRecord)), nextKey: full ? keys[keys.length - 1] : '' }
}

function exportAll (members: string[][], pageSize: number, per: number): string[] {
  const stores = members.map(m => [...m].sort(byteOrder))
  const out: string[] = []
  let after = ''
  for (let pages = 0; pages < 10_000; pages++) {
    const page = mergeLegs(stores.map(s => leg(s, after, per)), pageSize)
    expect(page.records.length).toBeLessThanOrEqual(pageSize)
    out.push(...page.keys)
    if (page.nextKey === '') return out
    expect(page.keys.length).toBeGreaterThan(0)
    after = page.nextKey
  }
  throw new Error('no end')
}

/** A small deterministic generator */
function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32 }
}

describe('the export merge of members\' legs', () => {
  it('returns every record of the union once, in order, for many shapes', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const rand = rng(seed)
      const n = 2 + Math.floor(rand() * 8)
      const total = Math.floor(rand() * 400)
      const members: string[][] = Array.from({ length: n }, () => [])
      const all: string[] = []
      for (let i = 0; i < total; i++) {
        const key = `r!${String(Math.floor(rand() * 50)).padStart(15, '0')}!node${Math.floor(rand() * n)}!id-${i}${i % 7 === 0 ? 'é' : ''}!${(i * 7919).toString(16).padStart(16, '0')}`
        all.push(key)
        // 1 to 3 holders, any of them
        const holders = 1 + Math.floor(rand() * 3)
        for (let h = 0; h < holders; h++) {
          const m = members[Math.floor(rand() * n)]
          if (!m.includes(key)) m.push(key)
        }
      }
      const pageSize = 1 + Math.floor(rand() * 60)
      const per = 1 + Math.floor(rand() * 30)
      const got = exportAll(members, pageSize, per)
      expect(got, `seed ${seed}`).toEqual([...all].sort(byteOrder))
    }
  })

  it('ends at once on empty legs and sizes legs by the share each member holds', () => {
    expect(mergeLegs([leg([], '', 10), leg([], '', 10)], 10)).toEqual({ records: [], keys: [], nextKey: '' })
    expect(legLimit(5000, 7, 3)).toBe(3215)
    expect(legLimit(5000, 1000, 3)).toBe(100)
    expect(legLimit(5000, 3, 3)).toBe(5000)
    expect(legLimit(50, 1000, 3)).toBe(50)
  })
})
