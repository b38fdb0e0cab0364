/**
 * The ledger's key layout in LevelDB, one place for every prefix. Times are bucket starts in
 * epoch ms, zero-padded to 15 digits so that keys sort by time.
 *
 *   r!<minute>!<node>!<invocation id>!<leaf16>  SignedRecord: raw records, time-major (export, compaction)
 *   p!<batch id>                                MeterProof; a batch id starts with its signing time
 *   m!<node>!<minute>, h!<node>!<hour>          digests (count + XOR of leaves) for anti-entropy
 *   u!<level>!<bucket>!<function>!<node>        Rollup totals per minute (m), hour (h) and day (d)
 *   s!<node>!<minute>                           RollupRegister: the node's signed seal of its minute
 *   x!<name>                                    this node's own bookkeeping (seal cursor)
 *
 * Node ids are base58 libp2p peer ids and function names match FUNCTION_NAME_PATTERN: neither
 * holds "!". Invocation ids may hold anything, so record keys are parsed from both ends. A record
 * key is the record's identity: copies of one record share it, two runs never do (their signed
 * bytes differ, so their leaves do). Ledgers written before that rule also hold "i!<invocation
 * id>" index entries; a rebuild drops them and nothing reads them.
 */

export const MINUTE_MS = 60_000
export const HOUR_MS = 3_600_000
export const DAY_MS = 86_400_000

export type Level = 'm' | 'h' | 'd'
export const LEVELS: readonly Level[] = ['m', 'h', 'd']
export const LEVEL_MS: Readonly<Record<Level, number>> = { m: MINUTE_MS, h: HOUR_MS, d: DAY_MS }

export const floorTo = (ms: number, size: number): number => Math.floor(ms / size) * size
export const pad = (ms: number): string => String(Math.max(0, Math.floor(ms))).padStart(15, '0')

const LEAF_CHARS = 16

export interface RecordKey { minuteMs: number, nodeId: string, invocationId: string, leafHex: string }

export function recordKey (startMs: number, nodeId: string, invocationId: string, leaf: Uint8Array): string {
  return `r!${pad(floorTo(startMs, MINUTE_MS))}!${nodeId}!${invocationId}!${Buffer.from(leaf.subarray(0, LEAF_CHARS / 2)).toString('hex')}`
}

export function parseRecordKey (key: string): RecordKey | undefined {
  if (!key.startsWith('r!') || key.length < 2 + 15 + 3 + LEAF_CHARS) return undefined
  const minuteMs = Number(key.slice(2, 17))
  const nodeEnd = key.indexOf('!', 18)
  if (key[17] !== '!' || nodeEnd < 0 || key[key.length - LEAF_CHARS - 1] !== '!') return undefined
  return {
    minuteMs,
    nodeId: key.slice(18, nodeEnd),
    invocationId: key.slice(nodeEnd + 1, key.length - LEAF_CHARS - 1),
    leafHex: key.slice(key.length - LEAF_CHARS)
  }
}

/** First key of the records of `minuteMs` (and of one node within it) */
export const recordPrefix = (minuteMs: number, nodeId?: string): string => `r!${pad(minuteMs)}!${nodeId != null ? `${nodeId}!` : ''}`

export const proofKey = (batchId: string): string => `p!${batchId}`
export const sealKey = (nodeId: string, minuteMs: number): string => `s!${nodeId}!${pad(minuteMs)}`
export const minuteDigestKey = (nodeId: string, minuteMs: number): string => `m!${nodeId}!${pad(minuteMs)}`
export const hourDigestKey = (nodeId: string, hourMs: number): string => `h!${nodeId}!${pad(hourMs)}`

export function parseDigestKey (key: string): { nodeId: string, bucketMs: number } | undefined {
  const end = key.lastIndexOf('!')
  if (end < 2 || key.length - end - 1 !== 15) return undefined
  return { nodeId: key.slice(2, end), bucketMs: Number(key.slice(end + 1)) }
}

export const rollupKey = (level: Level, bucketMs: number, fn: string, nodeId: string): string => `u!${level}!${pad(bucketMs)}!${fn}!${nodeId}`
export const rollupPrefix = (level: Level, bucketMs: number): string => `u!${level}!${pad(bucketMs)}!`

export function parseRollupKey (key: string): { level: Level, bucketMs: number, fn: string, nodeId: string } | undefined {
  const parts = key.split('!')
  if (parts.length !== 5 || parts[0] !== 'u' || !(parts[1] in LEVEL_MS)) return undefined
  return { level: parts[1] as Level, bucketMs: Number(parts[2]), fn: parts[3], nodeId: parts[4] }
}

/** "<signed at, 15 digits>!<node id>!<16 hex>": unique per batch, sorts by signing time */
export const makeBatchId = (signedAtMs: number, nodeId: string, nonceHex: string): string => `${pad(signedAtMs)}!${nodeId}!${nonceHex}`

export function parseBatchId (batchId: string): { signedAtMs: number, nodeId: string } | undefined {
  const m = /^(\d{15})!([1-9A-HJ-NP-Za-km-z]{1,128})!([0-9a-f]{16})$/.exec(batchId)
  if (m == null) return undefined
  return { signedAtMs: Number(m[1]), nodeId: m[2] }
}
