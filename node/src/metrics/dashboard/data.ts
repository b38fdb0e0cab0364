/**
 * What the dashboard shows, as one JSON snapshot built from what the agent already holds: the
 * gossip table (nodes), the registry (functions), its replica of every meter record (totals, the
 * last minute's rate and latency, a mesh-wide tail of runs, usage per minute), JetStream
 * (backlog, dead letters) and the function log lines on NATS (`fnmesh.logs.>`, subscribed only
 * while a dashboard is open). A snapshot is built at most once a second per range, however many
 * browsers poll.
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { decode, type MeterRecord } from '../../../../proto/codec.js'
import { LOGS_WILDCARD } from '../../../../proto/subjects.js'
import type { StoredSpec } from '../../../../core/registry.js'
import type { PeerEntry } from '../../gossip/peer-table.js'
import type { Logger } from '../../logger.js'
import type { UsageOptions, UsageResult } from '../../metering/queries/usage.js'
import { gbSeconds } from '../../metering/records/rollup.js'
import { Outcome } from '../../../../proto/codec.js'
import { maskToLayers } from '../../../../core/layers.js'

export interface DashboardComponents {
  nc: NatsConnection
  nodeId: string
  name: string
  /** the gossip table, this node included */
  peers: () => PeerEntry[]
  /** the functions this agent accepted from the registry */
  specs: () => StoredSpec[]
  /** metering totals from this agent's replica (the same as `fnmesh usage --via` this node) */
  usage: (q: UsageOptions) => Promise<UsageResult>
  /** raw meter records that started in [from, to), any order */
  records: (fromMs: number, toMs: number) => AsyncIterable<MeterRecord>
  /** events waiting in a function's consumers */
  backlog: (spec: StoredSpec) => Promise<number>
  /** dead letters per function */
  dlq: () => Promise<Record<string, number>>
  logger: Logger
}

export interface DashboardInit {
  /** the window of the rate, p50/p99 and the tail of runs @default 60000 */
  recentMs?: number
  /** raw records read for that window at most @default 20000 */
  maxRecent?: number
  /** log lines kept @default 200 */
  maxLogLines?: number
  /** the log subscription ends after this long with no dashboard request @default 60000 */
  idleMs?: number
}

/** Usage chart ranges the API accepts, in ms */
export const RANGES: Record<string, number> = { '15m': 15 * 60_000, '1h': 3600_000, '6h': 6 * 3600_000, '24h': 24 * 3600_000 }
const TAIL = 50
const MAX_MESSAGE = 2000
/** A JetStream read for the snapshot gives up after this long (the last value stays) */
const JS_TIMEOUT_MS = 1000

export interface NodeRow {
  id: string
  name: string
  self: boolean
  status: string
  slots: number
  inFlight: number
  load: number
  warm: string[]
  layers: string[]
  invocations: number
  coldStarts: number
  warmStarts: number
  lastSeenMs: number
  startedAtMs: number
}

export interface FunctionRow {
  name: string
  version: number
  deployed: boolean
  triggers: string[]
  memoryMb: number
  /** all time, from the ledger */
  invocations: number
  errors: number
  coldStarts: number
  gbSeconds: number
  /** over the recent window */
  recent: { invocations: number, errors: number, coldStarts: number, ratePerSec: number, p50Ms: number | null, p99Ms: number | null }
  backlog: number | null
  dlq: number | null
}

export interface RunRow { id: string, function: string, version: number, nodeId: string, node: string, startMs: number, durationMs: number, outcome: string, code: string, cold: boolean, trigger: string }
export interface LogRow { timeMs: number, function: string, version: number, nodeId: string, node: string, level: string, invocationId: string, message: string }

export interface Snapshot {
  at: number
  self: { id: string, name: string }
  recentMs: number
  /** true when the recent window had more records than were read */
  recentSampled: boolean
  nodes: NodeRow[]
  functions: FunctionRow[]
  runs: RunRow[]
  logs: LogRow[]
  /** lines are only gathered while a dashboard is open: since when */
  logsSinceMs: number
  usage: { range: string, bucketMs: number, fromMs: number, buckets: number[], functions: Array<{ name: string, invocations: number[] }>, errors: number[], gbSeconds: number[], invocations: number[] }
}

const OUTCOMES: Record<number, string> = { [Outcome.OUTCOME_OK]: 'success', [Outcome.OUTCOME_ERROR]: 'error', [Outcome.OUTCOME_TIMEOUT]: 'timeout', [Outcome.OUTCOME_CRASH]: 'crash', [Outcome.OUTCOME_OUT_OF_MEMORY]: 'out_of_memory' }

export class DashboardData {
  private readonly opts: Required<DashboardInit>
  private readonly cache = new Map<string, { at: number, value: Promise<Snapshot> }>()
  private logs: LogRow[] = []
  private logSub: Subscription | undefined
  private logsSinceMs = 0
  private lastRequestMs = 0
  private idleTimer: NodeJS.Timeout | undefined
  private lastBacklog = new Map<string, number>()
  private lastDlq: Record<string, number> | undefined

  constructor (private readonly c: DashboardComponents, init: DashboardInit = {}) {
    this.opts = { recentMs: init.recentMs ?? 60_000, maxRecent: init.maxRecent ?? 20_000, maxLogLines: init.maxLogLines ?? 200, idleMs: init.idleMs ?? 60_000 }
  }

  /** The snapshot for a usage range ('15m', '1h', '6h', '24h'), at most a second old */
  async snapshot (range = '1h'): Promise<Snapshot> {
    this.touch()
    const now = Date.now()
    const hit = this.cache.get(range)
    if (hit != null && now - hit.at < 1000) return await hit.value
    const value = this.build(range, now)
    this.cache.set(range, { at: now, value })
    value.catch(() => { this.cache.delete(range) })
    return await value
  }

  stop (): void {
    this.logSub?.unsubscribe()
    this.logSub = undefined
    if (this.idleTimer != null) clearInterval(this.idleTimer)
    this.idleTimer = undefined
    this.cache.clear()
  }

  /** A dashboard is open: gather log lines until none has asked for idleMs */
  private touch (): void {
    this.lastRequestMs = Date.now()
    if (this.logSub != null) return
    this.logsSinceMs = Date.now()
    this.logSub = this.c.nc.subscribe(LOGS_WILDCARD, { callback: (err, msg) => { if (err == null) this.addLogs(msg.data) } })
    this.idleTimer ??= setInterval(() => {
      if (Date.now() - this.lastRequestMs < this.opts.idleMs) return
      this.logSub?.unsubscribe()
      this.logSub = undefined
      clearInterval(this.idleTimer)
      this.idleTimer = undefined
    }, Math.min(10_000, this.opts.idleMs)).unref()
  }

  private addLogs (data: Uint8Array): void {
    let lines
    // Anyone allowed to publish on fnmesh.logs.> can send anything: malformed batches are dropped.
    try { lines = decode('LogBatch', data).lines } catch { return }
    const names = this.nodeNames()
    for (const l of lines.slice(-this.opts.maxLogLines)) {
      this.logs.push({ timeMs: Number(l.timeMs), function: l.function.slice(0, 128), version: l.version, nodeId: l.nodeId.slice(0, 128), node: names.get(l.nodeId) ?? '', level: l.level.slice(0, 16), invocationId: l.invocationId.slice(0, 128), message: l.message.length > MAX_MESSAGE ? `${l.message.slice(0, MAX_MESSAGE)}…` : l.message })
    }
    if (this.logs.length > this.opts.maxLogLines) this.logs = this.logs.slice(-this.opts.maxLogLines)
  }

  private nodeNames (): Map<string, string> {
    return new Map(this.c.peers().map(e => [e.advert.nodeId, e.advert.name]))
  }

  private async build (range: string, now: number): Promise<Snapshot> {
    const rangeMs = RANGES[range] ?? RANGES['1h']
    const specs = this.c.specs()
    const [totals, series, recent, backlogs, dlq] = await Promise.all([
      this.c.usage({}),
      this.c.usage({ sinceMs: Math.floor((now - rangeMs) / 60_000) * 60_000, bucket: 'minute' }),
      this.recent(now),
      this.backlogs(specs),
      this.dlq()
    ])
    const peers = this.c.peers()
    const names = new Map(peers.map(e => [e.advert.nodeId, e.advert.name]))
    const nodes: NodeRow[] = peers.map(e => {
      const a = e.advert
      return {
        id: a.nodeId,
        name: a.name,
        self: e.self,
        status: a.refusing !== '' ? `refusing work: ${a.refusing}` : a.draining ? 'draining' : e.suspect ? 'unreachable' : 'ok',
        slots: a.slots,
        inFlight: a.inFlight,
        load: a.slots > 0 ? a.inFlight / a.slots : 1,
        warm: [...a.warm],
        layers: maskToLayers(a.layers),
        invocations: Number(a.invocations),
        coldStarts: Number(a.coldStarts),
        warmStarts: Number(a.warmStarts),
        lastSeenMs: e.self ? 0 : Math.max(0, now - e.lastSeenMs),
        startedAtMs: Number(a.startedAtMs)
      }
    }).sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id))

    const bySpec = new Map(specs.map(s => [s.name, s]))
    const byTotal = new Map(totals.functions.map(f => [f.name, f]))
    const fnNames = [...new Set([...bySpec.keys(), ...byTotal.keys()])].sort()
    const functions: FunctionRow[] = fnNames.map(name => {
      const s = bySpec.get(name)
      const t = byTotal.get(name)
      const r = recent.byFn.get(name)
      const durations = (r?.durations ?? []).sort((a, b) => a - b)
      return {
        name,
        version: s?.version ?? 0,
        deployed: s != null,
        triggers: [...(s?.triggers ?? [])],
        memoryMb: s?.memoryMb ?? 0,
        invocations: t?.invocations ?? 0,
        errors: t?.errors ?? 0,
        coldStarts: t?.coldStarts ?? 0,
        gbSeconds: t != null ? gbSeconds(t.mbMs) : 0,
        recent: {
          invocations: r?.invocations ?? 0,
          errors: r?.errors ?? 0,
          coldStarts: r?.cold ?? 0,
          ratePerSec: (r?.invocations ?? 0) / (this.opts.recentMs / 1000),
          p50Ms: quantile(durations, 0.5),
          p99Ms: quantile(durations, 0.99)
        },
        backlog: s != null ? backlogs.get(name) ?? null : null,
        dlq: dlq != null ? dlq[name] ?? 0 : null
      }
    })

    const runs = recent.runs.sort((a, b) => b.startMs - a.startMs).slice(0, TAIL).map(r => ({ ...r, node: names.get(r.nodeId) ?? '' }))
    return {
      at: now,
      self: { id: this.c.nodeId, name: this.c.name },
      recentMs: this.opts.recentMs,
      recentSampled: recent.sampled,
      nodes,
      functions,
      runs,
      logs: this.logs.slice(-100).map(l => ({ ...l, node: l.node !== '' ? l.node : names.get(l.nodeId) ?? '' })),
      logsSinceMs: this.logsSinceMs,
      usage: usageSeries(range, series, now - rangeMs, now)
    }
  }

  /** The last recentMs of raw records: counts and durations per function, and the newest runs */
  private async recent (now: number): Promise<{ byFn: Map<string, { invocations: number, errors: number, cold: number, durations: number[] }>, runs: Array<Omit<RunRow, 'node'>>, sampled: boolean }> {
    const byFn = new Map<string, { invocations: number, errors: number, cold: number, durations: number[] }>()
    const runs: Array<Omit<RunRow, 'node'>> = []
    let n = 0
    let sampled = false
    for await (const r of this.c.records(now - this.opts.recentMs, now + 1)) {
      if (++n > this.opts.maxRecent) { sampled = true; break }
      const f = byFn.get(r.function) ?? byFn.set(r.function, { invocations: 0, errors: 0, cold: 0, durations: [] }).get(r.function) as { invocations: number, errors: number, cold: number, durations: number[] }
      f.invocations++
      if (r.outcome !== Outcome.OUTCOME_OK) f.errors++
      if (r.cold) f.cold++
      f.durations.push(r.durationMs)
      runs.push({ id: r.invocationId, function: r.function, version: r.version, nodeId: r.nodeId, startMs: Number(r.startMs), durationMs: r.durationMs, outcome: OUTCOMES[r.outcome] ?? 'error', code: r.errorCode, cold: r.cold, trigger: r.trigger })
      // Only the newest runs are shown: keep the list short while reading.
      if (runs.length > TAIL * 4) { runs.sort((a, b) => b.startMs - a.startMs); runs.length = TAIL }
    }
    return { byFn, runs, sampled }
  }

  private async backlogs (specs: StoredSpec[]): Promise<Map<string, number>> {
    const withTriggers = specs.filter(s => s.triggers.length > 0).slice(0, 200)
    await Promise.all(withTriggers.map(async s => {
      try { this.lastBacklog.set(s.name, await timed(this.c.backlog(s))) } catch {}
    }))
    const out = new Map<string, number>()
    for (const s of specs) out.set(s.name, s.triggers.length > 0 ? this.lastBacklog.get(s.name) ?? 0 : 0)
    return out
  }

  private async dlq (): Promise<Record<string, number> | undefined> {
    try { this.lastDlq = await timed(this.c.dlq()) } catch {}
    return this.lastDlq
  }
}

async function timed<T> (p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => { reject(new Error('timeout')) }, JS_TIMEOUT_MS) })])
  } finally {
    clearTimeout(timer)
  }
}

/** The q-quantile of sorted values (nearest rank), null when there are none */
export function quantile (sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}

/** Minute rows (per function and node) as aligned series: one point per minute of the range */
export function usageSeries (range: string, r: UsageResult, fromMs: number, nowMs: number): Snapshot['usage'] {
  const bucketMs = 60_000
  const first = Math.floor(fromMs / bucketMs) * bucketMs
  const count = Math.floor(nowMs / bucketMs) - first / bucketMs + 1
  const buckets = Array.from({ length: count }, (_, i) => first + i * bucketMs)
  const zeros = (): number[] => new Array<number>(count).fill(0)
  const invocations = zeros()
  const errors = zeros()
  const gbs = zeros()
  const perFn = new Map<string, number[]>()
  for (const row of r.buckets) {
    const i = (row.bucketMs - first) / bucketMs
    if (i < 0 || i >= count || !Number.isInteger(i)) continue
    invocations[i] += row.invocations
    errors[i] += row.errors
    gbs[i] += gbSeconds(row.mbMs)
    const f = perFn.get(row.function) ?? perFn.set(row.function, zeros()).get(row.function) as number[]
    f[i] += row.invocations
  }
  return {
    range,
    bucketMs,
    fromMs: first,
    buckets,
    functions: [...perFn.entries()].map(([name, inv]) => ({ name, invocations: inv })).sort((a, b) => sum(b.invocations) - sum(a.invocations)),
    errors,
    gbSeconds: gbs,
    invocations
  }
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)
