/**
 * `npm run simulate`: fnmesh's routing at 10 to 10,000 nodes, by discrete-event simulation that
 * drives the agent's own routing code (node/src/router/choose.ts choosePeer and better,
 * node/src/router/load.ts LoadTracker, node/src/router/dispatch.ts the dispatch rules,
 * node/src/executor/admit.ts the executor's admission) with simulated nodes, gossip and NATS
 * (scripts/sim/).
 * Compares fnmesh with a plain NATS queue group (random), round-robin and an oracle at 50, 80
 * and 95% load; prints a table, writes bench/results/<date>-<host>-simulate.json and SVG charts
 * in bench/results/charts/.
 *
 *   node dist/scripts/simulate.js [--quick] [--seed n] [--json] [--threads n] [--nodes 10,100]
 *     [--loads 0.5,0.8] [--policies fnmesh,oracle] [--service pareto|lognormal]
 *     [--gossip-delay 2-10] [--hop-ms 0.25] [--advert-gap ms] [--out file]
 *
 * --quick         shorter simulated windows (under a minute on 2 cores); -quick in file names
 * --seed          base seed (default 1): the same seed gives the same numbers
 * --json          print the results as JSON on stdout instead of the tables
 * --threads       worker threads (default: the machine's cores)
 * --nodes         only these mesh sizes (then no validation runs)
 * --loads         these loads at every size (default 0.5, 0.8, 0.95; 10,000 nodes: 0.5, 0.8)
 * --policies      only these of fnmesh, random, round-robin, oracle
 * --service       service times: bounded Pareto 5-50 ms shape 1.2 (default) or lognormal
 * --gossip-delay  one advert's delay to one node, uniform in min-max ms (default 2-10)
 * --hop-ms        one-way router -> peer latency over NATS (default 0.25)
 * --advert-gap    what if: a fixed advertMinGapMs, the least time between adverts (default: the
 *                 agents' rule, 1 ms per node within 20-500 ms)
 * --out           write the results here instead (runs with any option but --quick, --json and
 *                 --threads are written as ...-simulate-custom.json and simulate-*-custom.svg)
 */
import '../node/src/polyfill.js'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { PACKAGE_ROOT } from '../node/src/paths.js'
import { machine } from './bench/machine.js'
import { note } from './bench/progress.js'
import { POLICIES, SLOT_MIX, type Policy, type RunResult } from './sim/model.js'
import { FULL, LOADS, QUICK, parseService, plan } from './sim/plan.js'
import { runJobs } from './sim/pool.js'
import { REAL_SPREAD, formatGossip, formatRuns, formatValidation, formatWaits, gossipChart, gossipRows, scalingChart, validation } from './sim/report.js'
import { describeService, serviceMean, type ServiceDist } from './sim/rng.js'
import { GOSSIPSUB, measureWire, type WireCosts } from './sim/wire.js'
import { loadCalibration, loadProbeCost, loadSwimCost, scaleRows, type ScaleRow } from './sim/cost.js'
import { DESIGNS, type GossipDesign } from './sim/shards.js'

interface Args {
  quick: boolean
  json: boolean
  seed: number
  threads: number
  nodes: number[] | undefined
  loads: number[] | undefined
  policies: Policy[] | undefined
  service: ServiceDist
  gossipDelayMs: [number, number]
  hopMs: number
  advertGapMs: number | undefined
  designs: GossipDesign[] | undefined
  calibration: string | undefined
  recost: string | undefined
  out: string | undefined
}

const USAGE = 'usage: node dist/scripts/simulate.js [--quick] [--seed n] [--json] [--threads n] [--nodes 10,100] [--loads 0.5,0.8] [--policies fnmesh,oracle] [--service pareto|lognormal] [--gossip-delay 2-10] [--hop-ms 0.25] [--advert-gap ms] [--designs all,shards] [--calibration mesh-scale.json] [--recost simulate.json] [--out file]'

function parseArgs (argv: string[]): Args {
  const args: Args = { quick: false, json: false, seed: 1, threads: availableParallelism(), nodes: undefined, loads: undefined, policies: undefined, service: parseService('pareto'), gossipDelayMs: [2, 10], hopMs: 0.25, advertGapMs: undefined, designs: undefined, calibration: undefined, recost: undefined, out: undefined }
  const value = (i: number, name: string): string => {
    const v = argv[i]
    if (v === undefined) throw new Error(`Option "${name}" needs a value`)
    return v
  }
  const number = (s: string, name: string): number => {
    const n = Number(s)
    if (!Number.isFinite(n) || n < 0) throw new Error(`Option "${name}" needs a non-negative number, got "${s}"`)
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--quick') args.quick = true
    else if (a === '--json') args.json = true
    else if (a === '--seed') args.seed = Math.floor(number(value(++i, a), a))
    else if (a === '--threads') args.threads = Math.max(1, Math.floor(number(value(++i, a), a)))
    else if (a === '--nodes') args.nodes = value(++i, a).split(',').map(s => Math.floor(number(s.trim(), a)))
    else if (a === '--loads') {
      args.loads = value(++i, a).split(',').map(s => number(s.trim(), a))
      if (args.loads.some(l => l <= 0 || l >= 2)) throw new Error('Option "--loads" needs fractions of capacity in (0, 2), e.g. 0.5,0.8')
    } else if (a === '--policies') {
      const names = value(++i, a).split(',').map(s => s.trim())
      const bad = names.filter(n => !(POLICIES as readonly string[]).includes(n))
      if (bad.length > 0) throw new Error(`Unknown policy "${bad.join('", "')}": use ${POLICIES.join(', ')}`)
      args.policies = names as Policy[]
    } else if (a === '--service') args.service = parseService(value(++i, a))
    else if (a === '--gossip-delay') {
      const [lo, hi] = value(++i, a).split('-').map(s => number(s, a))
      if (hi === undefined || hi < lo) throw new Error(`Option "--gossip-delay" needs min-max in ms, e.g. 2-10`)
      args.gossipDelayMs = [lo, hi]
    } else if (a === '--hop-ms') args.hopMs = number(value(++i, a), a)
    else if (a === '--advert-gap') args.advertGapMs = number(value(++i, a), a)
    else if (a === '--out') args.out = value(++i, a)
    else if (a === '--calibration') args.calibration = value(++i, a)
    else if (a === '--recost') args.recost = value(++i, a)
    else if (a === '--designs') {
      const names = value(++i, a).split(',').map(s => s.trim())
      const bad = names.filter(n => !(DESIGNS as readonly string[]).includes(n))
      if (bad.length > 0) throw new Error(`Unknown design "${bad.join('", "')}": use ${DESIGNS.join(', ')}`)
      args.designs = names as GossipDesign[]
    }
    else if (a === '--help' || a === '-h') { process.stdout.write(USAGE + '\n'); process.exit(0) } else throw new Error(`Unknown option "${a}"`)
  }
  const sizes = (args.quick ? QUICK : FULL).map(s => s.nodes)
  const unknown = (args.nodes ?? []).filter(n => !sizes.includes(n))
  if (unknown.length > 0) throw new Error(`Unknown mesh size ${unknown.join(', ')}: use ${sizes.join(', ')}`)
  return args
}

/** JSON with numbers rounded to 4 significant digits, arrays of numbers on one line */
function toJson (x: unknown): string {
  return JSON.stringify(x, (_, v) => typeof v === 'number' && Number.isFinite(v) && !Number.isInteger(v) ? +v.toPrecision(4) : v, 1)
    .replace(/\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]/g, (_, list: string) => `[${list.split(/,\s*/).join(',')}]`) + '\n'
}

async function main (): Promise<number> {
  let args: Args
  try {
    args = parseArgs(process.argv.slice(2))
  } catch (err: any) {
    process.stderr.write(`error FNMESH_ERR_BAD_USAGE: ${String(err.message)}\n${USAGE}\n`)
    return 2
  }
  if (args.recost != null) {
    // The per-node cost rows of a finished run again, with the newest real-mesh measurement
    const doc = JSON.parse(await readFile(args.recost, 'utf8')) as { runs: RunResult[], wire: WireCosts, model: { serviceDist: ServiceDist, gossipDelayMs: [number, number], hopMs: number }, rows?: ScaleRow[], calibration?: unknown }
    const cal = loadCalibration(join(PACKAGE_ROOT, 'bench', 'results'), args.calibration)
    if (cal == null) throw new Error('No real-mesh calibration found (bench/results/*-mesh-scale.json with a calibration)')
    doc.rows = scaleRows(doc.runs, doc.wire, cal, doc.model.serviceDist, doc.model.gossipDelayMs[1], doc.model.hopMs, loadProbeCost(join(PACKAGE_ROOT, 'bench', 'results')), loadSwimCost(join(PACKAGE_ROOT, 'bench', 'results')))
    doc.calibration = { ...cal, source: relative(PACKAGE_ROOT, cal.source) }
    const probeCost = loadProbeCost(join(PACKAGE_ROOT, 'bench', 'results'))
    ;(doc as Record<string, unknown>).probeCost = probeCost != null ? { ...probeCost, source: relative(PACKAGE_ROOT, probeCost.source) } : null
    const swimCost = loadSwimCost(join(PACKAGE_ROOT, 'bench', 'results'))
    ;(doc as Record<string, unknown>).swimCost = swimCost != null ? { ...swimCost, source: relative(PACKAGE_ROOT, swimCost.source) } : null
    await writeFile(args.recost, toJson(doc))
    process.stdout.write(formatRows(doc.rows, cal) + '\n')
    return 0
  }
  const started = performance.now()
  const info = machine()
  const mode = args.quick ? 'quick' : 'full'
  note(`fnmesh simulate (${mode}, seed ${args.seed}) on ${info.host}: ${info.cores} cores, ${args.threads} worker threads, commit ${info.commit}${info.dirty ? ' (uncommitted changes)' : ''}`)
  const wire = await measureWire(1)
  const jobs = plan({ quick: args.quick, seed: args.seed, service: args.service, gossipDelayMs: args.gossipDelayMs, hopMs: args.hopMs, advertMinGapMs: args.advertGapMs, nodes: args.nodes, loads: args.loads, policies: args.policies, designs: args.designs })
  const results = await runJobs(jobs, args.threads, (job, r, left) => {
    note(`${job.id.padEnd(26)} p99 ${r.latencyMs.p99.toFixed(1).padStart(6)} ms, ${(r.rejectionRate * 100).toFixed(2)}% rejected, ${r.events.toLocaleString('en-US')} events in ${(r.wallMs / 1000).toFixed(1)} s (${left} left)`)
  })
  const byId = (group: 'scaling' | 'validation'): Array<{ id: string, result: RunResult }> =>
    jobs.filter(j => j.group === group).map(j => ({ id: j.id, result: results.get(j.id) as RunResult }))
  const order = (r: RunResult): number => r.nodes * 1e4 + r.load * 100 * 10 + POLICIES.indexOf(r.policy)
  const runs = byId('scaling').map(x => x.result).sort((a, b) => order(a) - order(b))
  const checks = validation(byId('validation').sort((a, b) => order(a.result) - order(b.result)))
  const gossip = gossipRows(runs.filter(r => r.design === 'all'), wire)
  const calibration = loadCalibration(join(PACKAGE_ROOT, 'bench', 'results'), args.calibration)
  const probeCost = loadProbeCost(join(PACKAGE_ROOT, 'bench', 'results'))
  const swimCost = loadSwimCost(join(PACKAGE_ROOT, 'bench', 'results'))
  const rows: ScaleRow[] = calibration != null ? scaleRows(runs, wire, calibration, args.service, args.gossipDelayMs[1], args.hopMs, probeCost, swimCost) : []

  const day = new Date().toISOString().slice(0, 10)
  // Runs of a subset or of other model settings do not overwrite the standard results.
  const custom = args.nodes != null || args.loads != null || args.policies != null || args.designs != null || args.advertGapMs != null || args.hopMs !== 0.25 ||
    args.gossipDelayMs[0] !== 2 || args.gossipDelayMs[1] !== 10 || args.service.kind !== 'pareto' || args.seed !== 1
  const suffix = `${args.quick ? '-quick' : ''}${custom ? '-custom' : ''}`
  const out = args.out ?? join(PACKAGE_ROOT, 'bench', 'results', `${day}-${info.host}-simulate${suffix}.json`)
  const chartsDir = join(dirname(out), 'charts')
  const subtitle = `${describeService(args.service)}; slots ${SLOT_MIX.join('/')} repeated; gossip delay ${args.gossipDelayMs.join('-')} ms; hop ${args.hopMs} ms;${args.advertGapMs != null ? ` advert gap ${args.advertGapMs} ms (what if);` : ''} seed ${args.seed}; ${mode} run`
  const charts = {
    scaling: join(chartsDir, `simulate-scaling${suffix}.svg`),
    gossip: join(chartsDir, `simulate-gossip${suffix}.svg`)
  }
  await mkdir(chartsDir, { recursive: true })
  await writeFile(charts.scaling, scalingChart(runs.filter(r => r.design === 'all'), subtitle))
  await writeFile(charts.gossip, gossipChart(gossip, `${wire.frameBytes} B per advert as a signed gossipsub frame (${wire.advertBytes} B CapacityAdvert), ${gossip.map(g => `${g.advertRate.toFixed(1)}`).join('/')} adverts per node per second at ${gossip.map(g => g.nodes.toLocaleString('en-US')).join('/')} nodes (measured at 80% load); signature check ${wire.verifyUs.toFixed(0)} µs per new advert, fast id ${wire.fastIdUs.toFixed(1)} µs per copy on ${info.host}`))

  const doc = {
    schema: 1,
    kind: 'simulate',
    date: new Date().toISOString(),
    mode,
    command: ['node', 'dist/scripts/simulate.js', ...process.argv.slice(2)].join(' '),
    machine: info,
    seed: args.seed,
    model: {
      service: describeService(args.service),
      serviceDist: args.service,
      serviceMeanMs: serviceMean(args.service),
      slotMix: SLOT_MIX,
      loads: LOADS,
      policies: POLICIES,
      gossipDelayMs: args.gossipDelayMs,
      hopMs: args.hopMs,
      advertIntervalMs: 'keepalive: min(10 s, max(1 s, 200 ms x nodes heard)), as the agents (gossip.ts keepaliveFor)',
      advertMinGapMs: args.advertGapMs ?? 'all: min(500, max(20, N)) ms, as the agents (gossip.ts advertGapFor); shards: min(2 s, max(20 ms, 25 ms x nodes heard))',
      shards: { shardSize: 25, shardsRead: 2, gapMsPerNode: 25 },
      probe: { probes: 2, rule: 'own node if it has a free slot; else probe the node last chosen and one drawn by slots, best free by choose.ts better, else best queue; membership by SWIM (modelled in the cost rows, not simulated)' },
      advertCoalesceMs: 20,
      queueWaitMs: 500,
      maxQueued: 1000,
      gossipsub: GOSSIPSUB,
      scales: (args.quick ? QUICK : FULL).filter(s => args.nodes == null || args.nodes.includes(s.nodes))
    },
    wire,
    calibration: calibration != null ? { ...calibration, source: relative(PACKAGE_ROOT, calibration.source) } : null,
    probeCost: probeCost != null ? { ...probeCost, source: relative(PACKAGE_ROOT, probeCost.source) } : null,
    swimCost: swimCost != null ? { ...swimCost, source: relative(PACKAGE_ROOT, swimCost.source) } : null,
    rows,
    runs,
    gossip,
    validation: { real: REAL_SPREAD, simulated: checks },
    charts: Object.values(charts).map(f => relative(PACKAGE_ROOT, f)),
    totalMs: Math.round(performance.now() - started)
  }
  await mkdir(dirname(out), { recursive: true })
  await writeFile(out, toJson(doc))
  if (args.json) {
    process.stdout.write(toJson(doc))
  } else {
    process.stdout.write([
      `fnmesh simulate, ${mode} run, ${doc.date} on ${info.host} (${info.cores} cores, ${info.cpu}), node ${info.node}, commit ${info.commit}${info.dirty ? '+changes' : ''}, seed ${args.seed}`,
      `Model: ${subtitle}. Every node is a router; Poisson arrivals at a uniformly random router; a keepalive advert every 1-10 s and ${args.advertGapMs != null ? `20-${Math.max(20, args.advertGapMs)}` : '20 ms to min(500, max(20, N))'} ms after a load change; BUSY -> marked full until the next advert, penalised, re-pick; no slot anywhere -> wait up to 500 ms, then NO_CAPACITY.`,
      '',
      formatRuns(runs.filter(r => r.design === 'all'), wire),
      '',
      formatGossip(gossip, wire),
      '',
      ...(calibration != null ? [formatRows(rows, calibration), ''] : ['No real-mesh calibration found (bench/results/*-mesh-scale.json): per-node costs not computed.', '']),
      ...[formatWaits(runs.filter(r => r.design === 'all')), formatValidation(checks)].filter(s => s !== '').flatMap(s => [s, '']),
      `Results: ${relative(PACKAGE_ROOT, out)}; charts: ${doc.charts.join(', ')} (${(doc.totalMs / 1000).toFixed(0)} s)`
    ].join('\n') + '\n')
  }
  return 0
}

function formatRows (rows: ScaleRow[], cal: { agents: number, cpuUsPerAdvert: number, bytesPerAdvert: number }): string {
  const f = (v: number, d = 1): string => Number.isFinite(v) ? v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }) : 'n/a'
  const header = ['design', 'N', 'load', 'p99 ms', 'oracle p99', 'ratio', 'heard', 'adverts heard/s', 'gossip core', 'gossip B/s', 'join ms', 'crash ms', 'silent ms']
  const body = rows.map(r => [r.design, r.nodes.toLocaleString('en-US'), `${Math.round(r.load * 100)}%`, f(r.p99Ms), f(r.oracleP99Ms), f(r.p99OverOracle, 2), f(r.viewNodes, 0), f(r.advertsHeardPerNodePerSec, 0), f(r.gossipCorePerNode, 3), f(r.gossipBytesPerNodePerSec, 0), f(r.joinToFirstWorkMs, 0), f(r.failureToNoRoutingMs, 0), f(r.silentFailureToNoRoutingMs, 0)])
  const widths = header.map((h, i) => Math.max(h.length, ...body.map(b => b[i].length)))
  const line = (c: string[]): string => c.map((x, i) => i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i])).join('  ')
  return [`Per node at scale (gossip cost per heard advert from the real ${cal.agents}-agent mesh: ${f(cal.cpuUsPerAdvert, 0)} µs CPU, ${f(cal.bytesPerAdvert, 0)} B in + out):`, line(header), widths.map(w => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n')
}

main().then((code) => process.exit(code), (err) => {
  process.stderr.write(`error FNMESH_ERR_INTERNAL: simulate failed: ${String(err?.stack ?? err?.message ?? err)}\n`)
  process.exit(1)
})
