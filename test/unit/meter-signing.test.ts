/**
 * Signed batches: a peer takes a record only if the node it names signed it, the record is the
 * one that was signed, and its fields make sense; seals likewise. Forged, tampered and garbage
 * input is refused with a reason, and the rest of the same message is still taken.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { decode, encode, type MeterBundle } from '../../proto/codec.js'
import { MINUTE_MS } from '../../node/src/metering/records/keys.js'
import { BundleVerifier } from '../../node/src/metering/records/signing.js'
import { queryUsage } from '../../node/src/metering/queries/usage.js'
import { bundleOf, intakeOf, rec, recordingLogger, T0, tempStores, testNode } from '../helpers/meter.js'

const viaWire = (b: unknown): MeterBundle => decode('MeterBundle', encode('MeterBundle', b as never))

describe('signed meter batches', () => {
  const stores = tempStores()
  afterEach(async () => { await stores.cleanup() })

  it('accepts a batch signed by the node its records name, after a trip over the wire', async () => {
    const a = await testNode()
    const records = [rec(a), rec(a, { function: 'echo' }), rec(a, { cold: true })]
    const v = await new BundleVerifier().verify(viaWire(bundleOf(a, records)))
    expect(v.rejected).toBe(0)
    expect(v.reasons).toEqual([])
    expect(v.records.map(r => r.record.invocationId)).toEqual(records.map(r => r.invocationId))
    expect(v.records.every(r => r.record.nodeId === a.nodeId)).toBe(true)
  })

  it('refuses a batch that claims another node\'s id but is signed with a different key', async () => {
    const [victim, forger] = [await testNode(), await testNode()]
    // The forger signs records naming the victim, then relabels the proof as the victim's.
    const b = bundleOf(forger, [rec(victim)])
    const proof = b.proofs[0]
    const batchId = proof.batchId.replace(forger.nodeId, victim.nodeId)
    const forged = viaWire({ proofs: [{ ...proof, batchId, nodeId: victim.nodeId, leaves: proof.leaves, signature: proof.signature }], records: b.records.map(r => ({ ...r, batchId })) })
    const v = await new BundleVerifier().verify(forged)
    expect(v.records).toEqual([])
    expect(v.rejected).toBe(1)
    expect(v.reasons.join('\n')).toMatch(/signature does not verify with the key of node .* \(forged\)/)
  })

  it('refuses records that name a node other than their signer', async () => {
    const [a, b] = [await testNode(), await testNode()]
    const v = await new BundleVerifier().verify(viaWire(bundleOf(a, [rec(b), rec(a)])))
    expect(v.records.map(r => r.record.nodeId)).toEqual([a.nodeId])
    expect(v.rejected).toBe(1)
    expect(v.reasons[0]).toContain(`names node "${b.nodeId}" but is signed by ${a.nodeId}`)
  })

  it('refuses a record changed after signing, and a signature replayed over other records', async () => {
    const a = await testNode()
    const b = bundleOf(a, [rec(a, { billedMs: 100 }), rec(a, { billedMs: 5 })])
    // Tampered: billed time raised after signing.
    const tampered = decode('MeterRecord', b.records[0].record)
    tampered.billedMs = 100_000
    const v1 = await new BundleVerifier().verify(viaWire({ proofs: b.proofs, records: [{ ...b.records[0], record: encode('MeterRecord', tampered) }, b.records[1]] }))
    expect(v1.records.map(r => r.record.billedMs)).toEqual([5])
    expect(v1.reasons[0]).toMatch(/does not hash to leaf 0 of its signed batch \(tampered or forged\)/)
    // Replayed: the same signature with a leaf list of other records.
    const other = bundleOf(a, [rec(a)])
    const v2 = await new BundleVerifier().verify(viaWire({ proofs: [{ ...b.proofs[0], leaves: other.proofs[0].leaves }], records: [{ ...other.records[0], batchId: b.proofs[0].batchId }] }))
    expect(v2.records).toEqual([])
    expect(v2.reasons.join('\n')).toMatch(/forged/)
  })

  it('refuses malformed proofs, ids that are not Ed25519 peer ids, records without a proof, and records with impossible fields', async () => {
    const a = await testNode()
    const good = bundleOf(a, [rec(a)])
    const p = good.proofs[0]
    const cases: Array<[string, unknown, RegExp]> = [
      ['bad batch id', { proofs: [{ ...p, batchId: 'nope' }], records: good.records.map(r => ({ ...r, batchId: 'nope' })) }, /batch id is malformed/],
      ['short signature', { proofs: [{ ...p, signature: new Uint8Array(10) }], records: good.records }, /not 64 bytes/],
      ['rsa-like id', { proofs: [{ ...p, nodeId: 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N', batchId: p.batchId.replace(a.nodeId, 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N') }], records: [] }, /not an Ed25519 peer id|does not name/],
      ['no proof', { proofs: [], records: good.records }, /has no valid proof/],
      ['leaf index out of range', { proofs: good.proofs, records: [{ ...good.records[0], leaf: 9 }] }, /does not hash to leaf 9/]
    ]
    for (const [what, bundle, why] of cases) {
      const v = await new BundleVerifier().verify(viaWire(bundle))
      expect(v.records, what).toEqual([])
      expect(v.reasons.join('\n'), what).toMatch(why)
    }
    const bad = await new BundleVerifier().verify(viaWire(bundleOf(a, [
      rec(a, { function: 'no spaces allowed' }), rec(a, { startMs: Date.now() + 10 * 86_400_000 }), rec(a, { invocationId: '' }), rec(a, { outcome: 0 }), rec(a, { memoryMb: 0 })
    ])))
    expect(bad.records).toEqual([])
    expect(bad.rejected).toBe(5)
  })

  it('stores what verifies, counts and logs what does not, and takes a replayed batch only once', async () => {
    const [a, b] = [await testNode(), await testNode()]
    const store = await stores.open()
    const log = recordingLogger()
    const intake = intakeOf(store, log)
    const good = bundleOf(a, [rec(a), rec(a)])
    const mixed = viaWire({ proofs: good.proofs, records: [...good.records, { ...good.records[0], leaf: 1, record: encode('MeterRecord', rec(b)) }] })
    const ack = await intake.take('12D3KooWPeer', mixed)
    expect(ack).toMatchObject({ stored: 2, known: 0, rejected: 1 })
    expect(ack.reason).toMatch(/tampered or forged/)
    expect(log.lines.filter(l => l.msg === 'rejected meter data from a peer')).toHaveLength(1)
    expect(log.lines[0]).toMatchObject({ peer: '12D3KooWPeer', via: 'push', refused: 1 })
    // Replay: nothing new.
    expect(await intake.take('12D3KooWPeer', viaWire(good))).toMatchObject({ stored: 0, known: 2, rejected: 0 })
    expect((await queryUsage(store)).functions[0].invocations).toBe(2)
    expect(intake.stats).toEqual({ received: 5, stored: 2, rejected: 1 })
  })

  it('accepts a seal signed by its node and refuses a forged or altered one', async () => {
    const [a, b] = [await testNode(), await testNode()]
    const digest = { nodeId: a.nodeId, fromMs: T0, toMs: T0 + MINUTE_MS, count: 2, hash: Buffer.alloc(32, 1) }
    const rows = [{ bucketMs: T0, function: 'f', nodeId: a.nodeId, invocations: 2, errors: 0, coldStarts: 0, billedMs: 20, mbMs: 2560 }] as never
    const seal = decode('RollupRegister', encode('RollupRegister', a.signer.seal(digest as never, rows)))
    const v = new BundleVerifier()
    expect(v.checkSeal(seal)).toBeUndefined()
    const byOther = decode('RollupRegister', encode('RollupRegister', { ...b.signer.seal(digest as never, rows) }))
    expect(v.checkSeal(byOther)).toMatch(/forged/)
    const altered = decode('RollupRegister', encode('RollupRegister', seal))
    altered.rows[0].billedMs = 2000
    expect(v.checkSeal(altered)).toMatch(/forged/)
    const impossible = decode('RollupRegister', encode('RollupRegister', a.signer.seal(digest as never, [{ ...(rows as any)[0], invocations: 5 }] as never)))
    expect(v.checkSeal(impossible)).toMatch(/impossible totals/)
  })
})
