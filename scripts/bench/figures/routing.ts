/**
 * Figure: routing quality. 3 agents with unequal slots (1, 2, 3) run a function of heavy-tailed
 * duration (bounded Pareto, 20-200 ms: long enough that the slots, not the 2 cores, are what runs out) under open-loop Poisson load at 50%, 80% and 95% of the
 * mesh's capacity, with four policies in the same run:
 *   least-loaded  fnmesh's routing (power of two choices on gossiped adverts + own counts)
 *   local         a plain NATS queue group: each agent runs what it receives (no routing)
 *   round-robin   each router cycles through the peers
 *   oracle        one router that sees true load (its own exact counts: it is the only router)
 * Failed calls (FNMESH_ERR_NO_CAPACITY after the bounded queue wait) count in the latency
 * percentiles with the time they took, and are reported as an error rate.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startDevCluster, type DevCluster } from '../../../node/src/dev/cluster.js'
import { ROUTING_POLICIES, type RoutingPolicy } from '../../../node/src/router/policies.js'
import { connect, type Mesh } from '../../../sdk/src/client.js'
import { errorCode } from '../loops.js'
import { step } from '../progress.js'
import { compact, summarize, type LatencySummary } from '../stats.js'
import { barChart, cdfSeries, lineChart } from '../svg.js'
import { row, type Figure, type Row } from '../types.js'

const SLOTS = [1, 2, 3]
const POLICIES = ROUTING_POLICIES
type Policy = RoutingPolicy
const LEVELS = [0.5, 0.8, 0.95]
const MIN_MS = 20
const MAX_MS = 200
const ALPHA = 1.2
const FN = 'bench-route'

/** Seeded PRNG (mulberry32): every policy gets the same arrivals and durations */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Bounded Pareto on [MIN_MS, MAX_MS] by inverse transform */
function pareto (u: number): number {
  const l = MIN_MS ** ALPHA
  const h = MAX_MS ** ALPHA
  return (-(u * h - u * l - h) / (h * l)) ** (-1 / ALPHA)
}

interface Call { at: number, ms: number }

function schedule (rate: number, seconds: number, seed: number): Call[] {
  const r = prng(seed)
  const out: Call[] = []
  for (let t = 0; ; ) {
    t += -Math.log(1 - r()) / rate * 1000
    if (t > seconds * 1000) return out
    out.push({ at: t, ms: Math.round(pareto(r()) * 10) / 10 })
  }
}

interface LevelResult { latency: LatencySummary, errors: Record<string, number>, calls: number, utilisation: number[], byNode: number[] }

async function drive (mesh: Mesh, cluster: DevCluster, calls: Call[], windowMs: number, signal: AbortSignal): Promise<LevelResult> {
  const samples: number[] = []
  const errors: Record<string, number> = {}
  const busyMs = new Map<string, number>()
  const count = new Map<string, number>()
  const pending: Array<Promise<void>> = []
  const start = performance.now()
  for (const c of calls) {
    if (signal.aborted) break
    const wait = start + c.at - performance.now()
    if (wait > 2) await new Promise(resolve => setTimeout(resolve, wait))
    const sent = performance.now()
    pending.push(mesh.invokeDetailed(FN, { ms: c.ms }, { timeoutMs: 20_000 }).then((r) => {
      samples.push(performance.now() - sent)
      busyMs.set(r.nodeId, (busyMs.get(r.nodeId) ?? 0) + r.durationMs)
      count.set(r.nodeId, (count.get(r.nodeId) ?? 0) + 1)
    }, (err) => {
      samples.push(performance.now() - sent)
      const code = errorCode(err)
      errors[code] = (errors[code] ?? 0) + 1
    }))
  }
  await Promise.all(pending)
  return {
    latency: summarize(samples),
    errors,
    calls: calls.length,
    utilisation: cluster.agents.map((a, i) => (busyMs.get(a.nodeId) ?? 0) / (SLOTS[i] * windowMs)),
    byNode: cluster.agents.map(a => count.get(a.nodeId) ?? 0)
  }
}

export const routingQuality: Figure = {
  id: 'routing',
  title: 'Routing quality: slots 1/2/3, 20-200 ms heavy-tailed, open-loop load',
  run: async (ctx) => {
    const seconds = ctx.options.quick ? 2 : 15
    const meanMs = (() => { const r = prng(7); let s = 0; for (let i = 0; i < 100_000; i++) s += pareto(r()); return s / 100_000 })()
    const results: Record<string, Record<string, LevelResult>> = {}
    let capacity = 0
    let overheadMs = 0
    for (const policy of POLICIES) {
      // oracle: agent-1 is the only router; the others only run what it sends them.
      const cluster = await step(`starting 3 agents (slots ${SLOTS.join('/')}) routing "${policy}"`, async () =>
        await startDevCluster({ nodes: 3, slots: SLOTS, argsOf: (i) => ['--routing', policy, ...(policy === 'oracle' && i > 0 ? ['--no-router'] : [])] }))
      ctx.cleanup.defer(`stop the ${policy} cluster`, async () => { await cluster.stop() }, 60_000)
      const mesh = await connect({ servers: cluster.nats.url })
      try {
        await step('waiting for every agent to see the others', async () => {
          const deadline = Date.now() + 20_000
          while ((await mesh.nodes({ timeoutMs: 2000 })).length < 3) {
            if (Date.now() > deadline) throw new Error('agents did not find each other within 20 s')
            await new Promise(resolve => setTimeout(resolve, 200))
          }
        })
        const dir = join(cluster.dir, 'fn')
        await mkdir(dir, { recursive: true })
        await writeFile(join(dir, 'index.mjs'), 'export const handler = async (e) => { await new Promise(r => setTimeout(r, e.ms)); return e.ms }\n')
        await mesh.deploy({ name: FN, path: dir, timeoutMs: 10_000 })
        if (capacity === 0) {
          // Capacity of this mesh: slots over the mean time a slot is held (the sleep plus what
          // the sandbox adds), measured once at light load.
          const probe = await step('measuring the service time at light load', async () => {
            const r = prng(99)
            let held = 0
            const probes = ctx.options.quick ? 30 : 60
            for (let i = 0; i < probes; i++) held += (await mesh.invokeDetailed(FN, { ms: pareto(r()) })).durationMs
            return held / probes
          })
          overheadMs = Math.max(0, probe - meanMs)
          capacity = SLOTS.reduce((a, b) => a + b, 0) / ((meanMs + overheadMs) / 1000)
        }
        // Warm every agent's sandboxes so cold starts do not count.
        const warmS = ctx.options.quick ? 1 : 1.5
        await drive(mesh, cluster, schedule(capacity * 0.5, warmS, 1), warmS * 1000, ctx.signal)
        results[policy] = {}
        for (const level of LEVELS) {
          results[policy][level] = await step(`${policy} at ${Math.round(level * 100)}% load (${Math.round(capacity * level)}/s for ${seconds} s)`, async () =>
            await drive(mesh, cluster, schedule(capacity * level, seconds, 1000 + level * 100), seconds * 1000, ctx.signal))
        }
      } finally {
        await mesh.close()
        await cluster.stop()
      }
    }
    const rows: Row[] = []
    const at = (p: Policy, l: number): LevelResult => results[p][l]
    for (const l of LEVELS) {
      const pct = `${Math.round(l * 100)}%`
      const ll = at('least-loaded', l).latency
      rows.push(row(`routing p50 at ${pct} load`, 'ms', ll.p50, 'oracle', at('oracle', l).latency.p50, 'lower'))
      rows.push(row(`routing p99 at ${pct} load`, 'ms', ll.p99, 'oracle', at('oracle', l).latency.p99, 'lower', l === 0.8 ? { ratio: 1.3, source: 'issue 6' } : undefined))
      rows.push(row(`  p99 vs plain queue group`, 'ms', ll.p99, 'local (NATS queue group)', at('local', l).latency.p99, 'lower', l === 0.8 ? { ratio: 0.5, source: 'issue 6' } : undefined))
      rows.push(row(`  p99 vs round-robin`, 'ms', ll.p99, 'round-robin', at('round-robin', l).latency.p99, 'lower'))
      // --routing probe: the same choice from loads asked per invocation instead of gossiped
      rows.push(row(`  p99 routing by probes (--routing probe)`, 'ms', at('probe', l).latency.p99, 'oracle', at('oracle', l).latency.p99, 'lower'))
    }
    const errorRate = (r: LevelResult): string => `${(100 * Object.values(r.errors).reduce((a, b) => a + b, 0) / Math.max(1, r.calls)).toFixed(1)}%`
    const table = POLICIES.map(p => `${p}: ` + LEVELS.map(l => {
      const r = at(p, l)
      return `${Math.round(l * 100)}% p50 ${r.latency.p50.toFixed(1)} ms, p99 ${r.latency.p99.toFixed(1)} ms, errors ${errorRate(r)}, utilisation ${r.utilisation.map(u => `${Math.round(u * 100)}%`).join('/')}`
    }).join('; '))
    return {
      rows,
      details: {
        slots: SLOTS,
        durations: { distribution: 'bounded Pareto', minMs: MIN_MS, maxMs: MAX_MS, alpha: ALPHA, meanMs },
        overheadMs,
        capacityPerSecond: capacity,
        secondsPerLevel: seconds,
        results: Object.fromEntries(Object.entries(results).map(([p, byLevel]) => [p, Object.fromEntries(Object.entries(byLevel).map(([l, r]) => [l, { ...r, latency: compact(r.latency) }]))]))
      },
      notes: [
        `Open-loop Poisson arrivals from the benchmark process through the SDK at 50/80/95% of capacity = ${SLOTS.reduce((a, b) => a + b, 0)} slots / (mean ${meanMs.toFixed(1)} ms sleep + ${overheadMs.toFixed(1)} ms sandbox overhead) = ${capacity.toFixed(0)} calls/s; the same arrival times and durations (seeded) for every policy, ${seconds} s per level after a warm-up.`,
        ...table,
        'Utilisation per agent (slots 1/2/3) = time its sandboxes were busy / (slots x window). Errors are FNMESH_ERR_NO_CAPACITY (every slot busy for the 500 ms queue bound); errored calls count in the percentiles with the time they took.'
      ],
      charts: [
        {
          name: 'p99',
          svg: lineChart({
            title: 'Routing: p99 latency by load, slots 1/2/3',
            xLabel: 'load, % of capacity',
            yLabel: 'p99 latency, ms (log)',
            logY: true,
            series: POLICIES.map(p => ({ name: p, points: LEVELS.map(l => [l * 100, at(p, l).latency.p99] as [number, number]) }))
          })
        },
        {
          name: 'cdf-80',
          svg: lineChart({
            title: 'Routing: latency CDF at 80% load',
            xLabel: 'latency, ms (log)',
            yLabel: 'fraction of calls',
            logX: true,
            series: POLICIES.map(p => cdfSeries(p, at(p, 0.8).latency.cdf))
          })
        },
        {
          name: 'utilisation-80',
          svg: barChart({
            title: 'Routing: utilisation per agent at 80% load',
            yLabel: 'busy share of slots',
            groups: SLOTS.map((s, i) => `agent-${i + 1} (${s} slot${s > 1 ? 's' : ''})`),
            series: POLICIES.map(p => ({ name: p, values: at(p, 0.8).utilisation }))
          })
        }
      ]
    }
  }
}
