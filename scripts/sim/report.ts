/**
 * The simulator's output: the table (one line per mesh size, load and policy), the gossip
 * table (per mesh size, from the real advert encoding and the measured advert rate), the
 * validation against the real 3-agent run, and the SVG charts.
 */
import { POLICIES, type RunResult } from './model.js'
import { LOADS } from './plan.js'
import { POLICY_COLORS, lineChart, type Panel } from './svg.js'
import { GOSSIPSUB, gossipLoad, type GossipLoad, type WireCosts } from './wire.js'

/** The real run this simulator is checked against: 300 calls at 75% load on agents with 2/2/4 slots */
export const REAL_SPREAD = { slots: [2, 2, 4], load: 0.75, calls: 300, perNode: [80, 80, 140] }

export interface GossipRow extends GossipLoad {
  nodes: number
  /** adverts each node publishes per second (see referenceRate) */
  advertRate: number
}

/**
 * Adverts a node publishes per second at `load`: from the fnmesh run with the longest measured
 * window. A node's cadence depends on how often its own load changes, not on N (under load it
 * is one prompt advert per 100 ms plus the 500 ms ones); the shortest windows (tens of ms at
 * 10,000 nodes) cannot count it.
 */
/** Adverts per node per second measured at this size and load (the prompt-advert gap depends on N) */
export function referenceRate (runs: RunResult[], load: number, nodes: number): number {
  const at = runs.filter(r => r.load === load && r.nodes === nodes).sort((a, b) => (b.policy === 'fnmesh' ? 1 : 0) - (a.policy === 'fnmesh' ? 1 : 0) || b.simulatedMs - a.simulatedMs)
  return at[0]?.advertsPerNodePerSec ?? NaN
}

export function gossipRows (runs: RunResult[], wire: WireCosts, load = 0.8): GossipRow[] {
  const sizes = [...new Set(runs.map(r => r.nodes))].sort((a, b) => a - b)
  return sizes.map(nodes => {
    const advertRate = referenceRate(runs, load, nodes)
    return { nodes, advertRate, ...gossipLoad(nodes, advertRate, wire) }
  })
}

function num (v: number, digits = 1): string {
  if (!Number.isFinite(v)) return 'n/a'
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

function bytes (v: number): string {
  if (!Number.isFinite(v)) return 'n/a'
  if (v >= 1e9) return `${num(v / 1e9, 2)} GB`
  if (v >= 1e6) return `${num(v / 1e6, 2)} MB`
  if (v >= 1e3) return `${num(v / 1e3, 1)} kB`
  return `${num(v, 0)} B`
}

function table (header: string[], rows: string[][], leftCols = 1): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(r => r[i].length)))
  const line = (cells: string[]): string => cells.map((c, i) => i < leftCols ? c.padEnd(widths[i]) : c.padStart(widths[i])).join('  ').trimEnd()
  return [line(header), widths.map(w => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

/** One line per (N, load, policy) */
export function formatRuns (runs: RunResult[], wire: WireCosts): string {
  const header = ['N', 'load', 'policy', 'max/mean util', 'util cv', 'p50 ms', 'p99 ms', 'p99 queue ms', 'rejected', 'BUSY/inv', 'waited', 'adverts/node/s', 'gossip B/node/s (flood)', 'msgs/node/s', 'simulated']
  const rows: string[][] = []
  for (const r of runs) {
    const g = gossipLoad(r.nodes, referenceRate(runs, r.load, r.nodes), wire)
    rows.push([
      r.nodes.toLocaleString('en-US'),
      `${Math.round(r.load * 100)}%`,
      r.policy,
      num(r.utilisation.maxOverMean, 2),
      num(r.utilisation.cv, 2),
      num(r.latencyMs.p50),
      num(r.latencyMs.p99),
      num(r.queueDelayMs.p99),
      `${num(r.rejectionRate * 100, 2)}%`,
      num(r.busyPerInvocation, 2),
      `${num(r.waitedFraction * 100, 1)}%`,
      num(r.advertsPerNodePerSec, 1),
      bytes(g.fullMeshBytesPerSec),
      num(g.advertsPerSec + r.execMsgsPerNodePerSec, 0),
      `${num(r.simulatedMs / 1000, 2)} s`
    ])
  }
  return table(header, rows, 3)
}

export function formatGossip (rows: GossipRow[], wire: WireCosts): string {
  const header = ['N', 'adverts/node/s', 'received adverts/s', 'full-mesh flood B/s', 'gossipsub copies', 'gossipsub D=6 B/s', 'of which IHAVE', 'CPU cores (flood)', 'cores (gossipsub)']
  return [
    `Gossip per node at 80% load (advert ${wire.advertBytes} B as encoded, ${wire.frameBytes} B as a signed gossipsub frame; adverts per node per second as measured at each size; fast id ${num(wire.fastIdUs, 1)} µs per copy, verify ${num(wire.verifyUs, 0)} µs and decode ${num(wire.decodeUs, 1)} µs per new advert on this machine):`,
    table(header, rows.map(g => [
      g.nodes.toLocaleString('en-US'),
      num(g.advertRate, 1),
      num(g.advertsPerSec, 0),
      bytes(g.fullMeshBytesPerSec),
      num(g.gossipsubCopies, 2),
      bytes(g.gossipsubBytesPerSec),
      bytes(g.ihaveBytesPerSec),
      num(g.fullMeshCores, 3),
      num(g.gossipsubCores, 3)
    ]))
  ].join('\n')
}

/** Why fnmesh's routers waited: what was really free, and what their views showed */
export function formatWaits (runs: RunResult[]): string {
  const rows = runs.filter(r => r.policy === 'fnmesh' && r.waits != null && r.waitedFraction >= 0.001)
  if (rows.length === 0) return ''
  const header = ['N', 'load', 'waited', 'samples', 'free slots in mesh', 'nodes with room', 'view: full by advert', 'view: marked BUSY', 'view: full by own sends']
  return [
    'Why fnmesh routers wait (at sampled moments a router found no free slot in its view and started waiting; means):',
    table(header, rows.map(r => {
      const w = r.waits as NonNullable<RunResult['waits']>
      return [r.nodes.toLocaleString('en-US'), `${Math.round(r.load * 100)}%`, `${num(r.waitedFraction * 100, 1)}%`, String(w.samples), num(w.freeSlots, 1), `${num(w.nodesWithRoom, 1)} of ${r.nodes}`, num(w.fullByAdvert, 1), num(w.markedBusy, 1), num(w.fullByOwnSends, 1)]
    }), 2)
  ].join('\n')
}

export interface Validation {
  load: number
  policy: string
  /** the run's completions, scaled to `calls` */
  perNode: number[]
  /** 5th and 95th percentile per node over consecutive windows of `calls` completions */
  p5: number[]
  p95: number[]
}

export function validation (runs: Array<{ id: string, result: RunResult }>): Validation[] {
  return runs.map(({ result: r }) => {
    const total = (r.perNode ?? []).reduce((a, b) => a + b, 0)
    return {
      load: r.load,
      policy: r.policy,
      perNode: (r.perNode ?? []).map(x => Math.round(x / total * REAL_SPREAD.calls)),
      p5: r.windows?.p5 ?? [],
      p95: r.windows?.p95 ?? []
    }
  })
}

export function formatValidation (v: Validation[]): string {
  if (v.length === 0) return ''
  const real = REAL_SPREAD
  return [
    `Validation: agents with slots ${real.slots.join('/')}; the real run put ${real.perNode.join('/')} of ${real.calls} calls on them at ${real.load * 100}% load. Simulated (per ${real.calls} calls; 90% of ${real.calls}-call windows within):`,
    ...v.map(x => `  ${`${Math.round(x.load * 100)}%`.padStart(4)} ${x.policy.padEnd(12)} ${x.perNode.join('/').padEnd(12)} ${x.p5.map((lo, i) => `${lo}-${x.p95[i]}`).join(' / ')}`)
  ].join('\n')
}

/** p99 latency and max/mean utilisation against N, one panel per load, a line per policy */
export function scalingChart (runs: RunResult[], subtitle: string): string {
  const panels: Panel[] = []
  const metric = (title: string, yLabel: string, pick: (r: RunResult) => number, yLog: boolean, yMin?: number): void => {
    for (const load of LOADS) {
      panels.push({
        title: `${title}, ${Math.round(load * 100)}% load`,
        xLabel: 'nodes (N)',
        yLabel,
        xLog: true,
        yLog,
        yMin,
        series: POLICIES.map(policy => ({
          name: policy,
          color: POLICY_COLORS[policy],
          points: runs.filter(r => r.policy === policy && r.load === load).sort((a, b) => a.nodes - b.nodes).map(r => [r.nodes, pick(r)] as [number, number])
        }))
      })
    }
  }
  metric('p99 latency', 'ms', r => r.latencyMs.p99, true)
  metric('max/mean utilisation', 'max / mean', r => r.utilisation.maxOverMean, false, 1)
  metric('BUSY answers per invocation', 'BUSY / invocation', r => r.busyPerInvocation, false)
  return lineChart({ title: 'fnmesh routing vs N (simulated)', subtitle, panels, columns: 3 })
}

/** Gossip bytes per node per second against N */
export function gossipChart (rows: GossipRow[], subtitle: string): string {
  const pts = (f: (g: GossipRow) => number): Array<[number, number]> => rows.map(g => [g.nodes, f(g)])
  const nic = rows.map(g => [g.nodes, 125e6] as [number, number])
  return lineChart({
    title: 'Gossip received per node vs N',
    subtitle,
    panels: [
      {
        title: 'bytes per node per second',
        xLabel: 'nodes (N)',
        yLabel: 'B/s',
        xLog: true,
        yLog: true,
        series: [
          { name: 'full-mesh flood (each advert once)', color: '#1f6feb', points: pts(g => g.fullMeshBytesPerSec) },
          { name: `gossipsub D=${GOSSIPSUB.D}, flood publish: adverts`, color: '#9a6700', points: pts(g => g.gossipsubBytesPerSec - g.ihaveBytesPerSec) },
          { name: 'gossipsub with IHAVE', color: '#d1242f', points: pts(g => g.gossipsubBytesPerSec) },
          { name: '1 Gbit/s', color: '#888', points: nic, dashed: true }
        ]
      },
      {
        title: 'CPU to verify and decode adverts',
        xLabel: 'nodes (N)',
        yLabel: 'cores per node',
        xLog: true,
        yLog: true,
        series: [
          { name: 'full-mesh flood (each advert once)', color: '#1f6feb', points: pts(g => g.fullMeshCores) },
          { name: 'gossipsub with IHAVE', color: '#d1242f', points: pts(g => g.gossipsubCores) }
        ]
      }
    ]
  })
}
