/**
 * Summaries of latency samples and rates. Percentiles are nearest-rank on the sorted samples,
 * so p999 of 1,000 samples is the largest one: say how many samples a tail figure rests on.
 */

export interface LatencySummary {
  /** samples */
  n: number
  min: number
  mean: number
  p50: number
  p90: number
  p99: number
  p999: number
  max: number
  /** quantiles 0, 0.01, ... 1 (101 points) for CDF charts; kept small for the JSON file */
  cdf: number[]
}

/** Nearest-rank percentile of sorted values, q in [0, 1] */
export function quantile (sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN
  const rank = Math.ceil(q * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]
}

export function summarize (samples: readonly number[]): LatencySummary {
  const sorted = Float64Array.from(samples).sort()
  const arr = Array.from(sorted)
  const n = arr.length
  const sum = arr.reduce((a, b) => a + b, 0)
  return {
    n,
    min: n > 0 ? arr[0] : NaN,
    mean: n > 0 ? sum / n : NaN,
    p50: quantile(arr, 0.5),
    p90: quantile(arr, 0.9),
    p99: quantile(arr, 0.99),
    p999: quantile(arr, 0.999),
    max: n > 0 ? arr[n - 1] : NaN,
    cdf: Array.from({ length: 101 }, (_, i) => round(quantile(arr, i / 100), 4))
  }
}

/** Rounds to `digits` decimals (for JSON output) */
export function round (x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x
  const f = 10 ** digits
  return Math.round(x * f) / f
}

/** Rounds every number in a summary for JSON output */
export function compact (s: LatencySummary): LatencySummary {
  return { ...s, min: round(s.min, 4), mean: round(s.mean, 4), p50: round(s.p50, 4), p90: round(s.p90, 4), p99: round(s.p99, 4), p999: round(s.p999, 4), max: round(s.max, 4) }
}
