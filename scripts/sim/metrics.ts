/**
 * What a simulation run measures: arrivals, completions and refusals inside the measurement
 * window, latency and queueing delay, slot-time per node (utilisation), message counts, and the
 * RunResult built from them.
 */
import type { Percentiles, ResolvedConfig, RunResult } from './model.js'
import type { PickStats, WaitDiagnosis } from './views.js'
import type { Invocation } from './world.js'

/** Completions per window for `windows` */
export const WINDOW = 300

export class Metrics {
  readonly measureFrom: number
  readonly measureTo: number
  /** every invocation ever created, finished and refused (conservation check) */
  readonly totals = { arrivals: 0, completed: 0, rejected: 0 }
  readonly m = { arrivals: 0, rejected: 0, busy: 0, waited: 0, remote: 0, execMsgs: 0, probes: 0, probeMsgs: 0 }
  events = 0
  /** sampled moments a router starts waiting */
  readonly diagnosis: WaitDiagnosis = { samples: 0, freeSlots: 0, nodesWithRoom: 0, fullByAdvert: 0, markedBusy: 0, fullByOwnSends: 0, free: 0 }
  private readonly area: Float64Array
  private readonly lastChange: Float64Array
  private readonly perNode: Float64Array
  /** executing node of each measured completion, in order (small meshes only) */
  private order: Int8Array | undefined
  private latency: Float64Array = new Float64Array(1 << 16)
  private queueDelay: Float64Array = new Float64Array(1 << 16)
  private done = 0

  constructor (private readonly c: ResolvedConfig, private readonly n: number) {
    this.area = new Float64Array(n)
    this.lastChange = new Float64Array(n)
    this.perNode = new Float64Array(n)
    if (n <= 12) this.order = new Int8Array(1 << 16)
    this.measureFrom = c.warmupMs
    this.measureTo = c.warmupMs + c.durationMs
  }

  inWindow (t: number): boolean {
    return t >= this.measureFrom && t < this.measureTo
  }

  /** Slot-time of node p inside the window, up to now; call before its in-flight count changes */
  account (p: number, now: number, inFlight: number): void {
    const a = Math.max(this.lastChange[p], this.measureFrom)
    const b = Math.min(now, this.measureTo)
    if (b > a) this.area[p] += inFlight * (b - a)
    this.lastChange[p] = now
  }

  complete (inv: Invocation, now: number): void {
    this.totals.completed++
    if (!inv.measured) return
    if (this.done === this.latency.length) {
      const grow = (a: Float64Array): Float64Array => { const b = new Float64Array(a.length * 2); b.set(a); return b }
      this.latency = grow(this.latency)
      this.queueDelay = grow(this.queueDelay)
    }
    this.latency[this.done] = now - inv.arrive
    this.queueDelay[this.done] = inv.start - inv.arrive
    if (this.order !== undefined) {
      if (this.done === this.order.length) {
        const b = new Int8Array(this.order.length * 2)
        b.set(this.order)
        this.order = b
      }
      this.order[this.done] = inv.node
    }
    this.done++
    this.perNode[inv.node]++
    if (inv.remote) this.m.remote++
  }

  reject (inv: Invocation): void {
    inv.waiting = false
    this.totals.rejected++
    if (inv.measured) this.m.rejected++
  }

  result (wallMs: number, x: { slots: Int32Array, inFlight: Int32Array, advertsPublished: number, stats: PickStats, tracked: boolean, viewNodes: number }): RunResult {
    const n = this.n
    const c = this.c
    for (let p = 0; p < n; p++) {
      if (this.lastChange[p] < this.measureTo) {
        const a = Math.max(this.lastChange[p], this.measureFrom)
        if (this.measureTo > a) this.area[p] += x.inFlight[p] * (this.measureTo - a)
        this.lastChange[p] = this.measureTo
      }
    }
    const util = Array.from(this.area, (a, p) => a / (x.slots[p] * c.durationMs))
    const mean = util.reduce((a, b) => a + b, 0) / n
    const sd = Math.sqrt(util.reduce((a, b) => a + (b - mean) ** 2, 0) / n)
    const max = Math.max(...util)
    const seconds = c.durationMs / 1000
    const st = x.stats
    const tracked = (c.policy === 'fnmesh' || c.policy === 'round-robin') && c.design !== 'probe'
    return {
      design: c.design,
      viewNodes: x.viewNodes,
      keepaliveMs: c.advertIntervalMs,
      advertGapMs: c.advertMinGapMs,
      nodes: n,
      totalSlots: c.slots.reduce((a, b) => a + b, 0),
      load: c.load,
      policy: c.policy,
      simulatedMs: c.warmupMs + c.durationMs,
      arrivals: this.m.arrivals,
      completed: this.done,
      rejected: this.m.rejected,
      rejectionRate: this.m.arrivals > 0 ? this.m.rejected / this.m.arrivals : 0,
      latencyMs: percentiles(this.latency.subarray(0, this.done)),
      queueDelayMs: percentiles(this.queueDelay.subarray(0, this.done)),
      utilisation: { mean, min: Math.min(...util), max, maxOverMean: max / mean, cv: sd / mean },
      busyPerInvocation: this.m.busy / Math.max(1, this.m.arrivals),
      waitedFraction: this.m.waited / Math.max(1, this.m.arrivals),
      remoteFraction: this.m.remote / Math.max(1, this.done),
      advertsPerNodePerSec: x.advertsPublished / n / seconds,
      // Each message has a sender and a receiver: per node, both ends count.
      execMsgsPerNodePerSec: 2 * this.m.execMsgs / n / seconds,
      probesPerInvocation: this.m.probes / Math.max(1, this.m.arrivals),
      probeMsgsPerNodePerSec: 2 * this.m.probeMsgs / n / seconds,
      staleness: tracked && st.picks > 0
        ? { advertAgeMs: st.advertAgeMs / st.picks, estimateError: st.estimateError / st.picks, absEstimateError: st.absEstimateError / st.picks, ownCorrection: st.ownCorrection / st.picks, fullScanFraction: st.fullScans / Math.max(1, this.m.arrivals) }
        : null,
      waits: x.tracked && this.diagnosis.samples > 0 ? perSample(this.diagnosis) : null,
      perNode: n <= 12 ? Array.from(this.perNode) : null,
      windows: this.order !== undefined ? windows(this.order.subarray(0, this.done), n, WINDOW) : null,
      events: this.events,
      wallMs
    }
  }
}

function perSample (d: WaitDiagnosis): NonNullable<RunResult['waits']> {
  const k = d.samples
  return { samples: k, freeSlots: d.freeSlots / k, nodesWithRoom: d.nodesWithRoom / k, fullByAdvert: d.fullByAdvert / k, markedBusy: d.markedBusy / k, fullByOwnSends: d.fullByOwnSends / k }
}

/**
 * How many of each run of `size` consecutive completions each node took: the 5th, 50th and 95th
 * percentile over the consecutive windows (what a short real run of `size` calls could show)
 */
function windows (order: Int8Array, n: number, size: number): RunResult['windows'] {
  const counts: number[][] = Array.from({ length: n }, () => [])
  for (let start = 0; start + size <= order.length; start += size) {
    const c = new Array<number>(n).fill(0)
    for (let i = start; i < start + size; i++) c[order[i]]++
    for (let p = 0; p < n; p++) counts[p].push(c[p])
  }
  const q = (xs: number[], f: number): number => {
    const s = [...xs].sort((a, b) => a - b)
    return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.max(0, Math.ceil(f * s.length) - 1))]
  }
  return { size, count: counts[0]?.length ?? 0, p5: counts.map(c => q(c, 0.05)), p50: counts.map(c => q(c, 0.5)), p95: counts.map(c => q(c, 0.95)) }
}

function percentiles (xs: Float64Array): Percentiles {
  const s = Float64Array.from(xs).sort()
  const n = s.length
  if (n === 0) return { p50: NaN, p99: NaN, p999: NaN, mean: NaN, max: NaN }
  const at = (q: number): number => s[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]
  let sum = 0
  for (let i = 0; i < n; i++) sum += s[i]
  return { p50: at(0.5), p99: at(0.99), p999: at(0.999), mean: sum / n, max: s[n - 1] }
}
