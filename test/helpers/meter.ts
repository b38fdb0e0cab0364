/**
 * Meter test kit: nodes with real Ed25519 keys, valid records, signed batches, and stores in
 * temp folders, so unit tests exercise the real signing, LevelDB and merge code.
 */
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import { decode, encode, Outcome, type Encodable, type MeterProof, type MeterRecord } from '../../proto/codec.js'
import { silentLogger, type Logger } from '../../node/src/logger.js'
import { Intake } from '../../node/src/metering/replication/intake.js'
import { HOUR_MS, floorTo } from '../../node/src/metering/records/keys.js'
import { BatchSigner, BundleVerifier, type VerifiedRecord } from '../../node/src/metering/records/signing.js'
import { MeterStore, type StoreInit } from '../../node/src/metering/ledger/store.js'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'

/** A start time two hours ago, on the hour: well inside the retention */
export const T0 = floorTo(Date.now() - 2 * HOUR_MS, HOUR_MS)

export interface TestNode { key: PrivateKey, nodeId: string, signer: BatchSigner }

export async function testNode (): Promise<TestNode> {
  const key = await generateKeyPair('Ed25519') as unknown as PrivateKey
  const nodeId = peerIdFromPrivateKey(key as never).toString()
  return { key, nodeId, signer: new BatchSigner(key, nodeId) }
}

/** A valid record of `node` (every field filled); `fields` override */
export function rec (node: { nodeId: string }, fields: Encodable<MeterRecord> = {}): Encodable<MeterRecord> {
  return {
    invocationId: randomUUID(), function: 'resize', version: 1, nodeId: node.nodeId, startMs: T0, durationMs: 99.2, billedMs: 100,
    memoryMb: 128, outcome: Outcome.OUTCOME_OK, errorCode: '', cold: false, attempt: 1, trigger: 'sync', ...fields
  }
}

/** `records` signed by `node` as one batch, as the store takes them */
export function signed (node: TestNode, records: Array<Encodable<MeterRecord>>, signedAtMs = Date.now()): { items: VerifiedRecord[], proofs: Map<string, MeterProof>, proof: MeterProof } {
  const { proof, verified } = node.signer.sign(records.map(r => encode('MeterRecord', r)), signedAtMs)
  return { items: verified, proofs: new Map([[proof.batchId, proof]]), proof }
}

/** The same batch as a wire bundle */
export function bundleOf (node: TestNode, records: Array<Encodable<MeterRecord>>): { proofs: MeterProof[], records: Array<{ record: Uint8Array, batchId: string, leaf: number }> } {
  const s = signed(node, records)
  return { proofs: [s.proof], records: s.items.map(v => ({ record: v.bytes, batchId: v.batchId, leaf: v.leafIndex })) }
}

/** Round-trips a message through its wire encoding, as a peer would receive it */
export const wire = <T>(name: 'MeterBundle', value: unknown): T => decode(name, encode(name, value as never)) as unknown as T

export interface TempStores {
  open: (init?: Partial<StoreInit>) => Promise<MeterStore>
  dir: () => Promise<string>
  cleanup: () => Promise<void>
}

/** Stores in temp folders, closed and removed by cleanup() */
export function tempStores (logger: Logger = silentLogger()): TempStores {
  const dirs: string[] = []
  const stores: MeterStore[] = []
  const dir = async (): Promise<string> => {
    const d = await mkdtemp(join(tmpdir(), 'fnmesh-meter-'))
    dirs.push(d)
    return d
  }
  return {
    dir,
    open: async (init = {}) => {
      const s = await MeterStore.open({ dir: join(await dir(), 'ledger'), logger, ...init })
      stores.push(s)
      return s
    },
    cleanup: async () => {
      for (const s of stores.splice(0)) await s.close().catch(() => {})
      for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
    }
  }
}

export const intakeOf = (store: MeterStore, logger: Logger = silentLogger()): Intake => new Intake(store, new BundleVerifier(), logger)

/** A logger that keeps what it is told at warn and above */
export function recordingLogger (): Logger & { lines: Array<Record<string, any>> } {
  const lines: Array<Record<string, any>> = []
  const make = (bindings: Record<string, unknown>): any => {
    const at = (level: string) => (obj: unknown, msg?: string) => {
      const fields = typeof obj === 'object' && obj != null ? obj as Record<string, unknown> : { msg: obj }
      lines.push({ level, ...bindings, ...fields, ...(msg != null ? { msg } : {}) })
    }
    return { lines, trace () {}, debug () {}, info: at('info'), warn: at('warn'), error: at('error'), fatal: at('fatal'), child: (b: Record<string, unknown>) => make({ ...bindings, ...b }), level: 'info' }
  }
  return make({})
}
