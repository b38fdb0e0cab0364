/**
 * Signing and checking meter records. The executing node signs each batch of its records (one
 * group commit) once with its libp2p Ed25519 key: the signature covers the batch id and the
 * SHA-256 leaf of every record, and each record proves membership by its leaf. Ed25519 verifies
 * at ~9k/s per core here, so one signature per batch instead of per record keeps verification
 * off the critical path under load. Anyone can check a record: the node id is an Ed25519 peer
 * id, from which the public key is recovered.
 */
import { createPrivateKey, createPublicKey, randomBytes, sign as edSign, verify as edVerify, type KeyObject } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { decode, type MeterBundle, type MeterProof, type MeterRecord, type RangeDigest, type Rollup, type RollupRegister } from '../../../../proto/codec.js'
import { FUNCTION_NAME_PATTERN } from '../../../../proto/subjects.js'
import { MINUTE_MS, makeBatchId, parseBatchId, recordKey } from './keys.js'
import { leafHash, refusal } from './record.js'
import { rowsHash } from './rollup.js'

const DOMAIN = Buffer.from('fnmesh/meter-batch/1\n')
const SEAL_DOMAIN = 'fnmesh/meter-seal/1\n'
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex')
const MAX_LEAVES = 10_000

/** Ed25519 verification on the libuv thread pool: several at once, off the event loop */
async function verifyAsync (message: Uint8Array, key: KeyObject, signature: Uint8Array): Promise<boolean> {
  return await new Promise((resolve) => {
    edVerify(null, message, key, signature, (err, ok) => { resolve(err == null && ok) })
  })
}

/** The bytes a batch signature covers */
export function signedBytes (batchId: string, leaves: readonly Uint8Array[]): Buffer {
  return Buffer.concat([DOMAIN, Buffer.from(batchId), Buffer.from('\n'), ...leaves])
}

/** The bytes a seal signature covers */
export function sealBytes (reg: RollupRegister): Buffer {
  const d = reg.digest
  return Buffer.from(`${SEAL_DOMAIN}${d.nodeId}\n${d.fromMs}\n${d.count}\n${Buffer.from(d.hash).toString('hex')}\n${rowsHash(reg.rows).toString('hex')}\n${reg.sealedAtMs}`)
}

/** A record that passed every check, ready to store */
export interface VerifiedRecord {
  record: MeterRecord
  /** the exact encoded bytes that were signed */
  bytes: Uint8Array
  leaf: Buffer
  batchId: string
  leafIndex: number
  key: string
}

/** A node's libp2p Ed25519 private key as a node:crypto key (meter batches, membership entries) */
export function ed25519SigningKey (privateKey: PrivateKey): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, Buffer.from(privateKey.raw.subarray(0, 32))]), format: 'der', type: 'pkcs8' })
}

/** The Ed25519 public key inside a node id (a libp2p peer id), or why there is none */
export function ed25519KeyOf (nodeId: string): KeyObject | string {
  try {
    const peer = peerIdFromString(nodeId)
    if (peer.type !== 'Ed25519' || peer.publicKey == null) return `node id ${nodeId} is not an Ed25519 peer id`
    return createPublicKey({ key: Buffer.concat([SPKI_ED25519, Buffer.from(peer.publicKey.raw)]), format: 'der', type: 'spki' })
  } catch {
    return `node id ${JSON.stringify(nodeId.slice(0, 80))} is not a libp2p peer id`
  }
}

/** Signs batches of this node's records */
export class BatchSigner {
  private readonly key: KeyObject

  constructor (privateKey: PrivateKey, readonly nodeId: string) {
    if (privateKey.type !== 'Ed25519') throw new Error(`Cannot sign meter records with a ${privateKey.type} key: an Ed25519 key is needed`)
    this.key = ed25519SigningKey(privateKey)
  }

  /** Signs encoded records (each already checked by the caller) as one batch */
  sign (encoded: readonly Uint8Array[], signedAtMs = Date.now()): { proof: MeterProof, verified: VerifiedRecord[] } {
    const leaves = encoded.map(leafHash)
    const batchId = makeBatchId(signedAtMs, this.nodeId, randomBytes(8).toString('hex'))
    const signature = edSign(null, signedBytes(batchId, leaves), this.key)
    const proof = { batchId, nodeId: this.nodeId, signedAtMs, leaves, signature } as unknown as MeterProof
    const verified = encoded.map((bytes, i) => {
      const record = decode('MeterRecord', bytes)
      return { record, bytes, leaf: leaves[i], batchId, leafIndex: i, key: recordKey(record.startMs, record.nodeId, record.invocationId, leaves[i]) }
    })
    return { proof, verified }
  }

  /** Seals this node's minute: its digest and rollups, signed */
  seal (digest: RangeDigest, rows: Rollup[], sealedAtMs = Date.now()): RollupRegister {
    const reg = { digest, rows, sealedAtMs, signature: new Uint8Array(0) } as unknown as RollupRegister
    reg.signature = edSign(null, sealBytes(reg), this.key)
    return reg
  }
}

export interface VerifyResult {
  records: VerifiedRecord[]
  /** proofs that verified, by batch id */
  proofs: Map<string, MeterProof>
  rejected: number
  /** one line per refused proof or record (capped) */
  reasons: string[]
}

/** Checks bundles from peers; caches public keys and proofs already verified */
export class BundleVerifier {
  private readonly keys = new Map<string, KeyObject | string>()
  private readonly verified = new Set<string>()

  constructor (private readonly now: () => number = Date.now) {}

  /** Checks every proof (signatures in parallel on the thread pool) and every record of `bundle` */
  async verify (bundle: MeterBundle): Promise<VerifyResult> {
    const out: VerifyResult = { records: [], proofs: new Map(), rejected: 0, reasons: [] }
    const refuse = (why: string, n = 1): void => {
      out.rejected += n
      if (out.reasons.length < 5) out.reasons.push(why)
    }
    const checked = await Promise.all(bundle.proofs.map(async proof => await this.checkProof(proof)))
    bundle.proofs.forEach((proof, i) => {
      const why = checked[i]
      if (why != null) refuse(`batch ${JSON.stringify(proof.batchId.slice(0, 120))}: ${why}`, 0)
      else out.proofs.set(proof.batchId, proof)
    })
    const now = this.now()
    for (const sr of bundle.records) {
      const proof = out.proofs.get(sr.batchId)
      if (proof == null) { refuse(`a record of batch ${JSON.stringify(sr.batchId.slice(0, 120))} has no valid proof of that batch`); continue }
      const leaf = proof.leaves[sr.leaf]
      const hash = leafHash(sr.record)
      if (leaf == null || !hash.equals(Buffer.from(leaf))) { refuse(`a record of batch ${sr.batchId} does not hash to leaf ${sr.leaf} of its signed batch (tampered or forged)`); continue }
      let record: MeterRecord
      try {
        record = decode('MeterRecord', sr.record)
      } catch (err: any) {
        refuse(`a record of batch ${sr.batchId} is not a MeterRecord: ${String(err?.message ?? err)}`)
        continue
      }
      const bad = refusal(record, proof.nodeId, now)
      if (bad != null) { refuse(`record ${JSON.stringify(record.invocationId.slice(0, 80))} of batch ${sr.batchId}: ${bad}`); continue }
      out.records.push({ record, bytes: sr.record, leaf: hash, batchId: sr.batchId, leafIndex: sr.leaf, key: recordKey(record.startMs, record.nodeId, record.invocationId, hash) })
    }
    return out
  }

  /** Why `reg` is not a valid seal of its node's minute, or undefined */
  checkSeal (reg: RollupRegister): string | undefined {
    const d = reg.digest
    if (d == null || d.fromMs % MINUTE_MS !== 0 || d.toMs !== d.fromMs + MINUTE_MS) return 'its range is not one minute'
    if (d.count < 1 || d.hash.length !== 32) return 'its digest is malformed'
    for (const r of reg.rows) {
      if (r.nodeId !== d.nodeId || r.bucketMs !== d.fromMs || !FUNCTION_NAME_PATTERN.test(r.function)) return 'a rollup row is not of its node and minute'
      if (r.invocations > d.count || r.errors > r.invocations || r.coldStarts > r.invocations) return 'a rollup row has impossible totals'
    }
    if (reg.signature.length !== 64) return 'its signature is not 64 bytes'
    const key = this.publicKey(d.nodeId)
    if (typeof key === 'string') return key
    if (!edVerify(null, sealBytes(reg), key, reg.signature)) return `the signature does not verify with the key of node ${d.nodeId} (forged)`
    return undefined
  }

  /** Why `proof` is not a valid signature of its node over its batch, or undefined */
  private async checkProof (proof: MeterProof): Promise<string | undefined> {
    const id = parseBatchId(proof.batchId)
    if (id == null) return 'its batch id is malformed'
    if (id.nodeId !== proof.nodeId || id.signedAtMs !== proof.signedAtMs) return `its batch id does not name its signer ${proof.nodeId} and signing time`
    if (proof.leaves.length === 0 || proof.leaves.length > MAX_LEAVES || proof.leaves.some(l => l.length !== 32)) return 'its leaves are malformed'
    if (proof.signature.length !== 64) return 'its signature is not 64 bytes'
    const message = signedBytes(proof.batchId, proof.leaves)
    const cacheKey = `${proof.batchId}|${Buffer.from(proof.signature).toString('base64')}|${leafHash(message).toString('base64')}`
    if (this.verified.has(cacheKey)) return undefined
    const key = this.publicKey(proof.nodeId)
    if (typeof key === 'string') return key
    if (!await verifyAsync(message, key, proof.signature)) return `the signature does not verify with the key of node ${proof.nodeId} (forged)`
    if (this.verified.size >= 50_000) this.verified.clear()
    this.verified.add(cacheKey)
    return undefined
  }

  /** The node's public key, or why there is none */
  private publicKey (nodeId: string): KeyObject | string {
    let key = this.keys.get(nodeId)
    if (key == null) {
      key = ed25519KeyOf(nodeId)
      if (this.keys.size >= 10_000) this.keys.clear()
      this.keys.set(nodeId, key)
    }
    return key
  }
}
