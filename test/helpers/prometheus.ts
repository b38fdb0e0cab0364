import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { freePort } from '../../node/src/dev/nats-cluster.js'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { waitFor } from './wait.js'

/** The prometheus binary (Debian's package), or undefined when it is not installed */
export function prometheusBinary (): string | undefined {
  for (const p of ['/usr/bin/prometheus', '/usr/sbin/prometheus']) if (existsSync(p)) return p
  const which = spawnSync('sh', ['-c', 'command -v prometheus'], { encoding: 'utf8' })
  return which.status === 0 && which.stdout.trim() !== '' ? which.stdout.trim() : undefined
}

export interface PrometheusServer {
  port: number
  /** an instant query's vector as (labels, value) pairs */
  query: (promql: string) => Promise<Array<{ metric: Record<string, string>, value: number }>>
  /** the single value of a query that aggregates to one sample, or undefined when it has none */
  scalar: (promql: string) => Promise<number | undefined>
  stop: () => Promise<void>
}

/** A real Prometheus server scraping `targets` (host:port) every second */
export async function startPrometheus (bin: string, targets: string[]): Promise<PrometheusServer> {
  const dir = await mkdtemp(join(tmpdir(), 'fnmesh-prom-'))
  const port = await freePort()
  const config = [
    'global:',
    '  scrape_interval: 1s',
    '  evaluation_interval: 1s',
    'scrape_configs:',
    '  - job_name: fnmesh',
    '    static_configs:',
    `      - targets: [${targets.map(t => JSON.stringify(t)).join(', ')}]`
  ].join('\n') + '\n'
  await writeFile(join(dir, 'prometheus.yml'), config)
  const child: ChildProcess = spawn(bin, [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`
  ], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  child.stderr?.setEncoding('utf8').on('data', (t: string) => { log = (log + t).slice(-4000) })
  const exited = new Promise<void>(resolve => { child.once('exit', () => { resolve() }) })
  const stop = async (): Promise<void> => {
    if (child.exitCode == null && child.signalCode == null) {
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
    await rm(dir, { recursive: true, force: true })
  }
  const query = async (promql: string): Promise<Array<{ metric: Record<string, string>, value: number }>> => {
    const r = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(promql)}`, { signal: AbortSignal.timeout(5000) })
    const body = await r.json() as { status: string, error?: string, data: { resultType: string, result: Array<{ metric: Record<string, string>, value: [number, string] }> } }
    if (body.status !== 'success') throw new Error(`Prometheus query ${promql} failed: ${String(body.error)}`)
    return body.data.result.map(s => ({ metric: s.metric, value: Number(s.value[1]) }))
  }
  try {
    await waitFor(async () => {
      if (child.exitCode != null) throw new Error(`prometheus exited: ${log}`)
      try { return (await fetch(`http://127.0.0.1:${port}/-/ready`, { signal: AbortSignal.timeout(1000) })).ok } catch { return false }
    }, { timeoutMs: 20_000, message: 'Prometheus ready' })
  } catch (err) {
    await stop()
    throw err
  }
  return {
    port,
    query,
    scalar: async (promql) => (await query(promql))[0]?.value,
    stop
  }
}
