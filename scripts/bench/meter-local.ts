/**
 * A node's meter without a mesh, for the benchmarks: a MeterStore in `dir`, a fresh Ed25519 key
 * as the node, and its Meter (signing, group commit, synced writes; no replication).
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { encode, Outcome, type MeterProof } from '../../proto/codec.js'
import { silentLogger } from '../../node/src/logger.js'
import { Meter } from '../../node/src/metering/meter.js'
import { BatchSigner, type VerifiedRecord } from '../../node/src/metering/records/signing.js'
import { MeterStore } from '../../node/src/metering/ledger/store.js'

export interface LocalMeter { store: MeterStore, meter: Meter, signer: BatchSigner, nodeId: string, key: PrivateKey, close: () => Promise<void> }

export async function newNodeKey (): Promise<{ key: PrivateKey, nodeId: string }> {
  // @libp2p/crypto 5.1 is typed against @libp2p/interface 3; the keys are the same at run time.
  const key = await generateKeyPair('Ed25519') as unknown as PrivateKey
  return { key, nodeId: peerIdFromPrivateKey(key as never).toString() }
}

export async function openLocalMeter (dir: string, node?: { key: PrivateKey, nodeId: string }): Promise<LocalMeter> {
  const { key, nodeId } = node ?? await newNodeKey()
  const store = await MeterStore.open({ dir, logger: silentLogger() })
  const signer = new BatchSigner(key, nodeId)
  const meter = new Meter({ store, signer, logger: silentLogger() })
  return { store, meter, signer, nodeId, key, close: async () => { await meter.stop(); await store.close() } }
}

export interface SyntheticBatch {
  bundle: { proofs: unknown[], records: Array<{ record: Uint8Array, batchId: string, leaf: number }> }
  records: number
  /** the same records as the store takes them (already checked: signed here) */
  items: VerifiedRecord[]
  proof: MeterProof
}

/**
 * `count` signed records of `node` in batches of `batchSize`, starts spread evenly over
 * [fromMs, fromMs + spanMs): what a node of the mesh would have pushed.
 */
export function * syntheticBatches (node: { signer: BatchSigner, nodeId: string }, count: number, batchSize: number, fromMs: number, spanMs: number, prefix = 'syn'): Generator<SyntheticBatch> {
  for (let i = 0; i < count; i += batchSize) {
    const n = Math.min(batchSize, count - i)
    const encoded = Array.from({ length: n }, (_, j) => encode('MeterRecord', {
      invocationId: `${prefix}-${node.nodeId.slice(-6)}-${i + j}`, function: `fn-${(i + j) % 4}`, version: 1, nodeId: node.nodeId,
      startMs: fromMs + Math.floor((i + j) * spanMs / count), durationMs: 3.25, billedMs: 4, memoryMb: 128,
      outcome: (i + j) % 50 === 0 ? Outcome.OUTCOME_ERROR : Outcome.OUTCOME_OK, errorCode: '', cold: (i + j) % 97 === 0, attempt: 1, trigger: 'sync'
    }))
    const { proof, verified } = node.signer.sign(encoded, fromMs + Math.floor((i + n) * spanMs / count))
    yield { bundle: { proofs: [proof], records: verified.map(v => ({ record: v.bytes, batchId: v.batchId, leaf: v.leafIndex })) }, records: n, items: verified, proof }
  }
}
