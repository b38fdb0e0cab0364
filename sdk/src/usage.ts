/**
 * Usage as the SDK returns it: the wire replies turned into plain objects, GB-seconds and an
 * optional price table turned into cost, and exported meter records in a flat shape for billing
 * systems (JSON or CSV).
 */
import { Outcome, UsageBucket, type MeterRecord, type UsageReply } from '../../proto/codec.js'
import { UsageError } from '../../proto/errors.js'

export type Bucket = 'minute' | 'hour' | 'day'

export const BUCKET_WIRE: Record<Bucket, UsageBucket> = {
  minute: UsageBucket.BUCKET_MINUTE,
  hour: UsageBucket.BUCKET_HOUR,
  day: UsageBucket.BUCKET_DAY
}

/** Prices per GB-second and per request, e.g. { gbs: 0.0000166667, req: 0.0000002 } */
export interface PriceTable { gbs?: number, req?: number }

export interface UsageTotals {
  invocations: number
  errors: number
  coldStarts: number
  billedMs: number
  gbSeconds: number
  /** with a price table: gbSeconds x gbs + invocations x req */
  cost?: number
}

export interface FunctionUsageTotals extends UsageTotals {
  name: string
  /** node id -> invocations */
  byNode: Record<string, number>
  /** calls the function made through its bindings (issue 17) */
  bindingCalls: number
  /** bytes of values and objects it wrote and read through them */
  bindingBytes: number
}

export interface NodeUsageTotals extends UsageTotals { id: string, name: string }

export interface BucketUsage extends UsageTotals {
  /** bucket start, ISO 8601 UTC */
  start: string
  startMs: number
  function: string
  nodeId: string
}

export interface UsageReport {
  functions: FunctionUsageTotals[]
  nodes: NodeUsageTotals[]
  /** with a bucket: totals per (bucket, function, node), oldest first */
  buckets?: BucketUsage[]
  totals: UsageTotals
  /** the node whose replica answered */
  answered: string[]
  /** live nodes it has not finished an anti-entropy round with yet: their newest records may be missing */
  missing: string[]
  price?: PriceTable
}

/** "gbs=0.0000166667,req=0.0000002" -> { gbs, req } */
export function parsePrice (text: string): PriceTable {
  const out: PriceTable = {}
  for (const part of text.split(',').map(p => p.trim()).filter(Boolean)) {
    const m = /^(gbs|req)=(\d+(?:\.\d+)?(?:e-?\d+)?)$/i.exec(part)
    if (m == null) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Price "${part}" is invalid: use gbs=PRICE,req=PRICE (per GB-second, per request)`)
    out[m[1].toLowerCase() as 'gbs' | 'req'] = Number(m[2])
  }
  if (out.gbs == null && out.req == null) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Price "${text}" is empty: use gbs=PRICE,req=PRICE`)
  return out
}

const gbs = (mbMs: number): number => mbMs / 1024 / 1000

function priced<T extends UsageTotals> (t: T, price: PriceTable | undefined): T {
  if (price != null) t.cost = t.gbSeconds * (price.gbs ?? 0) + t.invocations * (price.req ?? 0)
  return t
}

export function usageReport (reply: UsageReply, price?: PriceTable, withBuckets = false): UsageReport {
  const totals: UsageTotals = { invocations: 0, errors: 0, coldStarts: 0, billedMs: 0, gbSeconds: 0 }
  let mbMs = 0
  const functions = reply.functions.map(f => {
    totals.invocations += f.invocations
    totals.errors += f.errors
    totals.coldStarts += f.coldStarts
    totals.billedMs += f.billedMs
    mbMs += f.mbMs
    return priced({ name: f.name, invocations: f.invocations, errors: f.errors, billedMs: f.billedMs, gbSeconds: f.gbSeconds, coldStarts: f.coldStarts, byNode: { ...f.byNode }, bindingCalls: f.bindingCalls ?? 0, bindingBytes: f.bindingBytes ?? 0 }, price)
  })
  totals.gbSeconds = gbs(mbMs)
  const report: UsageReport = {
    functions,
    nodes: reply.nodes.map(n => priced({ id: n.nodeId, name: n.name, invocations: n.invocations, errors: n.errors, coldStarts: n.coldStarts, billedMs: n.billedMs, gbSeconds: n.gbSeconds }, price)),
    totals: priced(totals, price),
    answered: [...reply.answered],
    missing: [...reply.missing]
  }
  if (withBuckets) {
    report.buckets = reply.buckets.map(b => priced({
      start: new Date(b.bucketMs).toISOString(), startMs: b.bucketMs, function: b.function, nodeId: b.nodeId,
      invocations: b.invocations, errors: b.errors, coldStarts: b.coldStarts, billedMs: b.billedMs, gbSeconds: gbs(b.mbMs)
    }, price))
  }
  if (price != null) report.price = price
  return report
}

const OUTCOMES: Record<number, string> = {
  [Outcome.OUTCOME_OK]: 'ok',
  [Outcome.OUTCOME_ERROR]: 'error',
  [Outcome.OUTCOME_TIMEOUT]: 'timeout',
  [Outcome.OUTCOME_CRASH]: 'crash',
  [Outcome.OUTCOME_OUT_OF_MEMORY]: 'out_of_memory'
}

/** One exported meter record: one run (an invocation id run twice, say an event retried, has two) */
export interface ExportedRecord {
  invocationId: string
  function: string
  version: number
  nodeId: string
  start: string
  startMs: number
  durationMs: number
  billedMs: number
  memoryMb: number
  gbSeconds: number
  outcome: string
  errorCode: string
  cold: boolean
  attempt: number
  trigger: string
  /** for async invocations: the event it ran for */
  eventId: string
  /** the caller's idempotency/correlation key, if it gave one (several runs may share it) */
  idempotencyKey: string
  /** bytes of a streamed response body (present only for streamed runs) */
  streamBytes?: number
}

export function exportedRecord (r: MeterRecord): ExportedRecord {
  return {
    invocationId: r.invocationId,
    function: r.function,
    version: r.version,
    nodeId: r.nodeId,
    start: new Date(r.startMs).toISOString(),
    startMs: r.startMs,
    durationMs: r.durationMs,
    billedMs: r.billedMs,
    memoryMb: r.memoryMb,
    gbSeconds: gbs(r.memoryMb * r.billedMs),
    outcome: OUTCOMES[r.outcome] ?? 'unknown',
    errorCode: r.errorCode,
    cold: r.cold,
    attempt: r.attempt,
    trigger: r.trigger,
    eventId: r.eventId,
    idempotencyKey: r.idempotencyKey,
    ...(r.streamBytes > 0 ? { streamBytes: r.streamBytes } : {})
  }
}

export const CSV_COLUMNS: ReadonlyArray<keyof ExportedRecord> = ['invocationId', 'function', 'version', 'nodeId', 'start', 'startMs', 'durationMs', 'billedMs', 'memoryMb', 'gbSeconds', 'outcome', 'errorCode', 'cold', 'attempt', 'trigger', 'eventId', 'idempotencyKey']

/** RFC 4180: quote fields holding a comma, quote or line break (invocation ids may) */
const csvField = (v: unknown): string => {
  const s = String(v)
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s
}

export const csvHeader = (): string => CSV_COLUMNS.map(c => c.replace(/[A-Z]/g, m => `_${m.toLowerCase()}`)).join(',')
export const csvRow = (r: ExportedRecord): string => CSV_COLUMNS.map(c => csvField(r[c])).join(',')
