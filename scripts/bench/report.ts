/**
 * Output: the table (figure, value, baseline, ratio, target), a breakdown of where a warm
 * invocation's time goes, and the JSON results file.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Machine } from './machine.js'
import type { FigureResult, Row } from './types.js'

export interface FailedFigure { id: string, title: string, error: string }

export interface Results {
  schema: 1
  date: string
  mode: 'quick' | 'full'
  command: string
  machine: Machine
  /** 1-minute load average before and after the run: other work on a shared machine shows here */
  loadAverage: { start: number, end: number }
  totalMs: number
  figures: FigureResult[]
  failed: FailedFigure[]
  breakdown: BreakdownLine[] | null
}

export interface BreakdownLine { part: string, ms: number }

export function formatValue (v: number, unit: Row['unit']): string {
  if (!Number.isFinite(v)) return 'not measured'
  if (unit === 'ms') return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(3)} ms`
  return `${Math.round(v).toLocaleString('en-US')} ${unit}`
}

function formatRatio (r: number): string {
  if (!Number.isFinite(r)) return 'n/a'
  return `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}x`
}

function formatTarget (row: Row): string {
  const t = row.target
  if (t == null) return ''
  const op = row.better === 'lower' ? '<=' : '>='
  const bounds = [...(t.ratio != null ? [`${op} ${t.ratio}x`] : []), ...(t.value != null ? [`${op} ${formatValue(t.value, row.unit)}`] : [])]
  return `${bounds.join(', ')} (${t.source}): ${t.met ? 'met' : 'MISSED'}`
}

export function formatTable (figures: FigureResult[], failed: FailedFigure[]): string {
  const header = ['metric', 'fnmesh', 'baseline', 'baseline value', 'ratio', 'target']
  const lines: string[][] = []
  const titles = new Map<number, string>()
  for (const f of figures) {
    titles.set(lines.length, f.title)
    for (const r of f.rows) lines.push([r.metric, formatValue(r.value, r.unit), r.baselineLabel, formatValue(r.baseline, r.unit), formatRatio(r.ratio), formatTarget(r)])
  }
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map(l => l[i].length)))
  const align = (cells: string[]): string => cells.map((c, i) => i === 1 || i === 3 || i === 4 ? c.padStart(widths[i]) : c.padEnd(widths[i])).join('  ').trimEnd()
  const out = [align(header), widths.map(w => '-'.repeat(w)).join('  ')]
  lines.forEach((l, i) => {
    const title = titles.get(i)
    if (title != null) out.push(`[${title}]`)
    out.push(align(l))
  })
  for (const f of failed) out.push(`[${f.title}]`, `  FAILED: ${f.error}`)
  return out.join('\n')
}

/** p50 parts of a warm invocation, from figures of this run; null if one of them is missing */
export function breakdown (figures: FigureResult[]): BreakdownLine[] | null {
  const by = new Map(figures.map(f => [f.id, f.details as Record<string, any>]))
  const warm = by.get('warm-invoke')
  const sandbox = by.get('sandbox-round-trip')
  const meter = by.get('meter-writes')
  if (warm == null || sandbox == null || meter == null) return null
  const raw = warm.routeSplit.rawNats.p50 as number
  const local = warm.routeSplit.local.p50 as number
  const forwarded = warm.routeSplit.forwarded.p50 as number
  const ipc = sandbox.sandbox.p50 as number
  const fsync = meter.ledger1.latency.p50 as number
  if (![raw, local, forwarded, ipc, fsync].every(Number.isFinite)) return null
  return [
    { part: 'raw NATS request-reply (client <-> nats-server <-> a responder)', ms: raw },
    { part: 'sandbox round trip to the warm child (IPC, JSON, handler)', ms: ipc },
    { part: 'synced meter write (Ledger.append, 1 at a time)', ms: fsync },
    { part: 'the rest: SDK, router, executor, protobuf, event loops', ms: local - raw - ipc - fsync },
    { part: '= invocation run on the router\'s own node', ms: local },
    { part: '+ hop router -> peer over NATS (forwarded - local)', ms: forwarded - local },
    { part: '= invocation forwarded to a peer', ms: forwarded },
    { part: 'main figure (another pass: drift between passes shows here)', ms: warm.fnmesh.p50 as number }
  ]
}

export function formatBreakdown (lines: BreakdownLine[]): string {
  const w = Math.max(...lines.map(l => l.part.length))
  return [
    'Where a warm invocation\'s time goes (p50s from this run: NATS, local and forwarded from the route split pass, the sandbox and the meter write from their own figures, so the sum only approximates the whole):',
    ...lines.map(l => `  ${l.part.padEnd(w)}  ${l.ms.toFixed(3).padStart(7)} ms`)
  ].join('\n')
}

/** Cores of other work above which a figure is flagged as measured on a busy machine */
export const BUSY_MACHINE_CORES = 0.25

/** A warning naming the figures measured while other work kept the machine busy, or '' */
export function formatBusyWarning (figures: FigureResult[], cores: number): string {
  const busy = figures.filter(f => (f.otherProcessesCores ?? 0) > BUSY_MACHINE_CORES)
  if (busy.length === 0) return ''
  return `WARNING: processes outside this run kept ${busy.map(f => `${(f.otherProcessesCores ?? 0).toFixed(2)} of ${cores} cores busy during "${f.title}"`).join(', ')} (worst measured window). A call through fnmesh crosses more processes and needs far more CPU than the baselines, so such contention slows it more: rerun on a quiet machine for clean ratios.`
}

export function formatNotes (figures: FigureResult[]): string {
  return figures.map(f => [`${f.title}:`, ...f.notes.map(n => `  - ${n}`)].join('\n')).join('\n')
}

/** Indented JSON with arrays of numbers (the CDFs) on one line each: small, and diffs read well */
export function resultsJson (results: Results): string {
  return JSON.stringify(results, null, 1).replace(/\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]/g, (_, list: string) => `[${list.split(/,\s*/).join(',')}]`) + '\n'
}

export async function writeResults (path: string, results: Results): Promise<void> {
  await mkdir(dirname(path), { recursive: true })
  await writeFile(path, resultsJson(results))
}
