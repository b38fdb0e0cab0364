/**
 * The shape of a benchmark: figures, each measured next to its baseline in the same run, each
 * giving rows for the table and details for the JSON file. New figures (routing quality, join
 * and failure times, scaling) are new entries in figures/index.ts with the same contract.
 */
import type { Cleanup } from './cleanup.js'
import { round, type LatencySummary } from './stats.js'
import type { MeshEnv } from './mesh.js'

/** One line of the table: a measured value next to its baseline */
export interface Row {
  /** e.g. "warm invoke p50" */
  metric: string
  unit: 'ms' | '/s' | 'rec/s' | 'MB'
  value: number
  /** what the value is compared with, e.g. "raw NATS request-reply" */
  baselineLabel: string
  baseline: number
  /** "lower" for latencies, "higher" for rates */
  better: 'lower' | 'higher'
  /** value / baseline */
  ratio: number
  /** a goal from an issue: a bound on the ratio, or (`value`) on the value itself */
  target?: { ratio?: number, value?: number, source: string, met: boolean }
}

export interface FigureResult {
  id: string
  title: string
  rows: Row[]
  /** everything measured (summaries, counts, settings) for the JSON file */
  details: Record<string, unknown>
  /** how it was measured and what to keep in mind when reading it */
  notes: string[]
  /**
   * Cores that processes outside this run kept busy while it was measured (where accounted): on
   * a shared machine, other work slows fnmesh's many-process figures more than the baselines
   */
  otherProcessesCores?: number
  durationMs: number
  /** SVG charts, written to bench/results/charts/<figure id>-<name>.svg (not into the JSON) */
  charts?: Array<{ name: string, svg: string }>
}

export interface BenchOptions {
  quick: boolean
}

export interface BenchContext {
  options: BenchOptions
  cleanup: Cleanup
  /** nats-server + 3 agents + SDK client + raw echo responder, started on first use and shared */
  mesh: () => Promise<MeshEnv>
  /** figures already measured in this run, by id (for breakdowns that combine them) */
  results: Map<string, FigureResult>
  /** aborted on a signal or at the run's time limit: loops stop at their next call */
  signal: AbortSignal
}

export interface Figure {
  id: string
  title: string
  run: (ctx: BenchContext) => Promise<Omit<FigureResult, 'id' | 'title' | 'durationMs'>>
}

/** A goal: a bound on value/baseline (`ratio`) or on the value itself (`value`) */
export interface Target { ratio?: number, value?: number, source: string }

/** A row comparing two numbers; `target` bounds value/baseline, or the value */
export function row (metric: string, unit: Row['unit'], value: number, baselineLabel: string, baseline: number, better: Row['better'], target?: Target): Row {
  const ratio = value / baseline
  const within = (x: number, bound: number | undefined): boolean => bound == null || (better === 'lower' ? x <= bound : x >= bound)
  return {
    metric,
    unit,
    value: round(value, 4),
    baselineLabel,
    baseline: round(baseline, 4),
    better,
    ratio: round(ratio, 3),
    ...(target != null ? { target: { ...target, met: Number.isFinite(value) && within(ratio, target.ratio) && within(value, target.value) } } : {})
  }
}

/** Latency rows p50/p99(/p999) of `value` against `baseline` */
export function latencyRows (what: string, value: LatencySummary, baselineLabel: string, baseline: LatencySummary, pcts: Array<'p50' | 'p99' | 'p999'>, targets: Partial<Record<'p50' | 'p99' | 'p999', Target>> = {}): Row[] {
  return pcts.map(p => row(`${what} ${p}`, 'ms', value[p], baselineLabel, baseline[p], 'lower', targets[p]))
}
