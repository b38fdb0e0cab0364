/**
 * Rules about one meter record, pure: its leaf hash, which of two records of the same invocation
 * id is billed, and whether a record from a peer is acceptable at all.
 *
 * One invocation id is billed once mesh-wide. When an id has several records (a router retried
 * it on another node after the first did not answer, or a caller re-sent it), the winner is the
 * greatest by (attempt, start, node id, leaf hash): a total order, so every node picks the same
 * record whatever order the copies arrive in (a max-register per id, which is a CRDT).
 */
import { createHash } from 'node:crypto'
import { Outcome, type MeterRecord } from '../../../proto/codec.js'
import { FUNCTION_NAME_PATTERN } from '../../../proto/subjects.js'
import { parseRecordKey } from './keys.js'

export const leafHash = (bytes: Uint8Array): Buffer => createHash('sha256').update(bytes).digest()

/** What decides the billed record of an invocation id; kept in the index as "<attempt>!<record key>" */
export interface Contender { attempt: number, startMs: number, nodeId: string, leafHex: string, key: string }

export function contender (record: MeterRecord, key: string): Contender {
  const k = parseRecordKey(key)
  return { attempt: record.attempt, startMs: record.startMs, nodeId: record.nodeId, leafHex: k?.leafHex ?? '', key }
}

export const indexValue = (c: Contender): string => `${c.attempt}!${c.startMs}!${c.key}`

export function parseIndexValue (value: string): Contender | undefined {
  const a = value.indexOf('!')
  const b = value.indexOf('!', a + 1)
  if (a < 0 || b < 0) return undefined
  const key = value.slice(b + 1)
  const k = parseRecordKey(key)
  if (k == null) return undefined
  return { attempt: Number(value.slice(0, a)), startMs: Number(value.slice(a + 1, b)), nodeId: k.nodeId, leafHex: k.leafHex, key }
}

/** True if `a` is billed rather than `b` (two records of one invocation id) */
export function beats (a: Contender, b: Contender): boolean {
  if (a.attempt !== b.attempt) return a.attempt > b.attempt
  if (a.startMs !== b.startMs) return a.startMs > b.startMs
  if (a.nodeId !== b.nodeId) return a.nodeId > b.nodeId
  return a.leafHex > b.leafHex
}

const MAX_ID_BYTES = 256
const MAX_DURATION_MS = 86_400_000
const MAX_MEMORY_MB = 1_048_576
const MAX_SKEW_MS = 86_400_000
/** Epoch ms before which no record can have started (2020-01-01) */
const EARLIEST_MS = 1_577_836_800_000

/**
 * Why `record` must be refused, or undefined if it is acceptable. `signer` is the node whose
 * signature covers it: a record may only speak for the node that signed it.
 */
export function refusal (record: MeterRecord, signer: string, nowMs: number): string | undefined {
  if (record.nodeId !== signer) return `it names node ${JSON.stringify(record.nodeId.slice(0, 80))} but is signed by ${signer}`
  const idBytes = Buffer.byteLength(record.invocationId)
  if (idBytes === 0 || idBytes > MAX_ID_BYTES) return `its invocation id is ${idBytes} bytes (expected 1-${MAX_ID_BYTES})`
  if (!FUNCTION_NAME_PATTERN.test(record.function)) return `its function name ${JSON.stringify(record.function.slice(0, 80))} is invalid`
  if (!Number.isSafeInteger(record.startMs) || record.startMs < EARLIEST_MS || record.startMs > nowMs + MAX_SKEW_MS) return `its start time ${record.startMs} is out of range`
  if (!Number.isFinite(record.durationMs) || record.durationMs < 0 || record.durationMs > MAX_DURATION_MS) return `its duration ${record.durationMs} is out of range`
  if (!Number.isSafeInteger(record.billedMs) || record.billedMs < 0 || record.billedMs > MAX_DURATION_MS) return `its billed time ${record.billedMs} is out of range`
  if (record.memoryMb < 1 || record.memoryMb > MAX_MEMORY_MB) return `its memory ${record.memoryMb} MB is out of range`
  if (record.outcome < Outcome.OUTCOME_OK || record.outcome > Outcome.OUTCOME_OUT_OF_MEMORY) return `its outcome ${record.outcome} is unknown`
  if (record.attempt > 1000) return `its attempt ${record.attempt} is out of range`
  if (record.errorCode.length > 64 || record.trigger.length > 256) return 'its error code or trigger is too long'
  return undefined
}
