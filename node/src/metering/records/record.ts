/**
 * Rules about one meter record, pure: its leaf hash and whether a record is acceptable at all
 * (the same rules for a peer's record and, before it runs anything, for the executor's own).
 *
 * A record's identity is its key (start minute, node, invocation id, leaf hash of its signed
 * bytes): copies of one record merge wherever they arrive, and every distinct record is billed.
 * A run writes one record, so runs are never merged: an event's retries, a redelivery after an
 * agent died, a router's retry on another peer each bill their own run, even when they share an
 * invocation id. The set of records is a grow-only set (a CRDT): every node holding the same
 * records holds the same totals.
 */
import { createHash } from 'node:crypto'
import { Outcome, type MeterRecord } from '../../../../proto/codec.js'
import { FUNCTION_NAME_PATTERN, MAX_ID_BYTES } from '../../../../proto/subjects.js'

export const leafHash = (bytes: Uint8Array): Buffer => createHash('sha256').update(bytes).digest()

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
  if (Buffer.byteLength(record.eventId) > MAX_ID_BYTES) return `its event id is over ${MAX_ID_BYTES} bytes`
  if (Buffer.byteLength(record.idempotencyKey) > MAX_ID_BYTES) return `its idempotency key is over ${MAX_ID_BYTES} bytes`
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
