/**
 * `npm run bench`: fnmesh's figures, each measured next to its baseline in the same run, printed
 * as a table with the ratio, and written to bench/results/<date>-<host>.json.
 *
 *   node dist/scripts/bench.js [--quick] [--json] [--only id,id] [--out file]
 *
 * --quick   short run (under 3 minutes), results in bench/results/<date>-<host>-quick.json
 * --json    print the results as JSON on stdout instead of the table
 * --only    run only these figures (ids: see --help)
 * --out     write the results here instead
 *
 * Everything it starts (nats-server, agents, sandboxes, the raw responder, temp folders) is
 * stopped and removed at the end, also after a failure, a signal or the run's time limit.
 * Progress goes to stderr. Loopback only.
 */
import '../node/src/polyfill.js'
import { loadavg } from 'node:os'
import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { PACKAGE_ROOT } from '../node/src/paths.js'
import { Cleanup } from './bench/cleanup.js'
import { FIGURES } from './bench/figures/index.js'
import { machine } from './bench/machine.js'
import { startMeshEnv, type MeshEnv } from './bench/mesh.js'
import { note } from './bench/progress.js'
import { breakdown, formatBreakdown, formatBusyWarning, formatNotes, formatTable, resultsJson, writeResults, type FailedFigure, type Results } from './bench/report.js'
import type { BenchContext, FigureResult } from './bench/types.js'

interface Args { quick: boolean, json: boolean, only: string[] | undefined, out: string | undefined }

function usage (): string {
  return [
    'usage: node dist/scripts/bench.js [--quick] [--json] [--only id,id] [--out file]',
    '',
    'figures:',
    ...FIGURES.map(f => `  ${f.id.padEnd(20)} ${f.title}`)
  ].join('\n')
}

function parseArgs (argv: string[]): Args {
  const args: Args = { quick: false, json: false, only: undefined, out: undefined }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--quick') args.quick = true
    else if (a === '--json') args.json = true
    else if (a === '--only') args.only = (argv[++i] ?? '').split(',').map(s => s.trim()).filter(Boolean)
    else if (a === '--out') args.out = argv[++i]
    else if (a === '--help' || a === '-h') { process.stdout.write(usage() + '\n'); process.exit(0) } else {
      process.stderr.write(`error FNMESH_ERR_BAD_USAGE: unknown option "${a}"\n${usage()}\n`)
      process.exit(2)
    }
  }
  const unknown = (args.only ?? []).filter(id => !FIGURES.some(f => f.id === id))
  if (unknown.length > 0) {
    process.stderr.write(`error FNMESH_ERR_BAD_USAGE: unknown figure "${unknown.join('", "')}"\n${usage()}\n`)
    process.exit(2)
  }
  return args
}

async function main (): Promise<number> {
  const args = parseArgs(process.argv.slice(2))
  const started = performance.now()
  const cleanup = new Cleanup()
  // The run stops by itself: past this limit it cleans up and exits 1.
  const limitMs = args.quick ? 180_000 : 900_000
  const controller = new AbortController()
  let abortCode = 1
  // Stops the loops at their next call and undoes everything started (also if the run is stuck
  // in a call), then exits with `code`; nothing is written.
  const abort = (why: string, code: number): void => {
    if (controller.signal.aborted) return
    note(`${why}: stopping everything`)
    abortCode = code
    controller.abort(new Error(why))
    void cleanup.run().finally(() => process.exit(code))
  }
  const watchdog = setTimeout(() => { abort(`time limit of ${limitMs / 1000} s reached`, 1) }, limitMs)
  watchdog.unref()
  process.once('SIGINT', () => { abort('SIGINT', 130) })
  process.once('SIGTERM', () => { abort('SIGTERM', 143) })

  let meshPromise: Promise<MeshEnv> | undefined
  const ctx: BenchContext = {
    options: { quick: args.quick },
    cleanup,
    mesh: async () => await (meshPromise ??= startMeshEnv(cleanup)),
    results: new Map(),
    signal: controller.signal
  }
  const info = machine()
  const loadAtStart = loadavg()[0]
  note(`fnmesh bench (${args.quick ? 'quick' : 'full'}) on ${info.host}: ${info.cores} cores, node ${info.node}, nats-server ${info.natsServer}, commit ${info.commit}${info.dirty ? ' (uncommitted changes)' : ''}`)

  const figures: FigureResult[] = []
  const failed: FailedFigure[] = []
  try {
    for (const figure of FIGURES) {
      if (args.only != null && !args.only.includes(figure.id)) continue
      if (controller.signal.aborted) break
      note(`== ${figure.title}`)
      const t0 = performance.now()
      try {
        const out = await figure.run(ctx)
        const result: FigureResult = { id: figure.id, title: figure.title, ...out, durationMs: Math.round(performance.now() - t0) }
        figures.push(result)
        ctx.results.set(figure.id, result)
      } catch (err: any) {
        if (controller.signal.aborted) break
        const error = String(err?.message ?? err)
        note(`${figure.id} failed: ${error}`)
        failed.push({ id: figure.id, title: figure.title, error })
        // Without the mesh, the figures after this one cannot run either.
        if (meshPromise != null && await meshPromise.then(() => false, () => true)) break
      }
    }
  } finally {
    note('stopping the mesh and removing temp folders...')
    await cleanup.run()
    clearTimeout(watchdog)
  }
  if (controller.signal.aborted) return abortCode

  const day = new Date().toISOString().slice(0, 10)
  const out = args.out ?? join(PACKAGE_ROOT, 'bench', 'results', `${day}-${info.host}${args.quick ? '-quick' : ''}.json`)
  const results: Results = {
    schema: 1,
    date: new Date().toISOString(),
    mode: args.quick ? 'quick' : 'full',
    command: ['node', 'dist/scripts/bench.js', ...process.argv.slice(2)].join(' '),
    machine: info,
    loadAverage: { start: loadAtStart, end: loadavg()[0] },
    totalMs: Math.round(performance.now() - started),
    figures,
    failed,
    breakdown: breakdown(figures)
  }
  // Charts beside the JSON; the JSON itself keeps only their file names.
  const chartsDir = join(dirname(out), 'charts')
  for (const f of figures) {
    const files: string[] = []
    for (const c of f.charts ?? []) {
      const file = join(chartsDir, `${f.id}-${c.name}${args.quick ? '-quick' : ''}.svg`)
      await mkdir(chartsDir, { recursive: true })
      await writeFile(file, c.svg)
      files.push(file.slice(PACKAGE_ROOT.length + 1))
    }
    if (f.charts != null) (f as FigureResult & { chartFiles?: string[] }).chartFiles = files
    delete f.charts
  }
  await writeResults(out, results)
  if (args.json) {
    process.stdout.write(resultsJson(results))
  } else {
    const parts = [
      `fnmesh bench, ${results.mode} run, ${results.date} on ${info.host} (${info.cores} cores, ${info.cpu}), node ${info.node}, nats-server ${info.natsServer}, commit ${info.commit}${info.dirty ? '+changes' : ''}, load average ${results.loadAverage.start.toFixed(1)} before, ${results.loadAverage.end.toFixed(1)} after`,
      '',
      formatTable(figures, failed)
    ]
    const warning = formatBusyWarning(figures, info.cores)
    if (warning !== '') parts.push('', warning)
    if (results.breakdown != null) parts.push('', formatBreakdown(results.breakdown))
    parts.push('', formatNotes(figures), '', `Results: ${out} (${(results.totalMs / 1000).toFixed(0)} s)`)
    process.stdout.write(parts.join('\n') + '\n')
  }
  return failed.length > 0 ? 1 : 0
}

main().then((code) => process.exit(code), (err) => {
  process.stderr.write(`error FNMESH_ERR_INTERNAL: bench failed: ${String(err?.stack ?? err?.message ?? err)}\n`)
  process.exit(1)
})
