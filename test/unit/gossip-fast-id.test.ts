import { describe, expect, it } from 'vitest'
import { advertFastId, advertGapFor } from '../../node/src/gossip/gossip.js'

const bytes = (...xs: number[]): Uint8Array => new Uint8Array(xs)

describe('advertFastId (gossipsub fast message id)', () => {
  const msg = { from: bytes(1, 2, 3), seqno: bytes(0, 0, 0, 7), data: bytes(9, 9), topic: 'fnmesh/adverts/1', signature: bytes(5, 5, 5), key: bytes(4) }

  it('gives byte-identical copies the same id, so only the first has its signature checked', () => {
    expect(advertFastId({ ...msg })).toBe(advertFastId({ ...msg, data: bytes(9, 9) }))
  })

  it('gives a copy differing in any field another id, so an altered or forged copy is checked in full', () => {
    const base = advertFastId(msg)
    for (const field of ['from', 'seqno', 'data', 'signature', 'key'] as const) {
      const changed = new Uint8Array(msg[field]); changed[0] ^= 1
      expect(advertFastId({ ...msg, [field]: changed }), field).not.toBe(base)
      expect(advertFastId({ ...msg, [field]: undefined }), `${field} missing`).not.toBe(base)
    }
    expect(advertFastId({ ...msg, topic: 'other' })).not.toBe(base)
    // moving a byte from one field to the next must not give the same id (length prefixed)
    expect(advertFastId({ ...msg, from: bytes(1, 2), seqno: bytes(3, 0, 0, 0, 7) })).not.toBe(base)
  })
})

describe('advertGapFor (least time between prompt adverts)', () => {
  it('is 1 ms per node within 20-500 ms, so a node hears at most ~1,000 prompt adverts a second up to 500 nodes', () => {
    expect(advertGapFor(1)).toBe(20)
    expect(advertGapFor(3)).toBe(20)
    expect(advertGapFor(100)).toBe(100)
    expect(advertGapFor(499)).toBe(499)
    expect(advertGapFor(10_000)).toBe(500)
    for (const n of [20, 50, 100, 300, 500]) expect(n * 1000 / advertGapFor(n)).toBeLessThanOrEqual(1000)
  })
})
