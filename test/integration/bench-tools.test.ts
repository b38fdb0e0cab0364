/**
 * `npm run bench` and `npm run simulate` run end to end from the compiled tree, as a newcomer
 * runs them: real nats-server, agents, sandboxes and LevelDB for the bench figures chosen here,
 * the agent's own routing code for the simulator. What is checked is behaviour (every figure
 * beside its same-run baseline, ratios, targets, JSON and charts written, bad usage refused),
 * never a timing: the numbers belong to the bench's report, not to the test suite.
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { distPath } from '../../node/src/paths.js'

interface Run { code: number | null, stdout: string, stderr: string }

async function run (script: string, args: string[], timeoutMs: number): Promise<Run> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [distPath(script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (t: string) => { stdout += t })
    child.stderr.setEncoding('utf8').on('data', (t: string) => { stderr += t })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${script} did not exit within ${timeoutMs} ms; stderr: ${stderr.slice(-2000)}`)) }, timeoutMs)
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

describe('npm run bench and npm run simulate', () => {
  let dir: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-bench-tools-'))
  })

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('measures each chosen figure beside its same-run baseline and writes the results and charts', async () => {
    const out = join(dir, 'bench', 'results.json')
    const r = await run('scripts/bench.js', ['--quick', '--only', 'sandbox-round-trip,cold-start', '--out', out], 170_000)
    expect(r.code, r.stderr.slice(-2000)).toBe(0)
    expect(r.stdout).toMatch(/metric\s+fnmesh\s+baseline\s+baseline value\s+ratio\s+target/)
    const doc = JSON.parse(await readFile(out, 'utf8'))
    expect(doc.mode).toBe('quick')
    expect(doc.figures.map((f: { id: string }) => f.id)).toEqual(['sandbox-round-trip', 'cold-start'])
    for (const f of doc.figures) {
      expect(f.rows.length, f.id).toBeGreaterThan(0)
      for (const row of f.rows) {
        expect(Number.isFinite(row.value) && Number.isFinite(row.baseline) && row.baseline > 0, `${f.id}: ${row.metric}`).toBe(true)
        expect(row.baselineLabel, row.metric).not.toBe('')
        // the ratio is fnmesh over its baseline, as printed
        expect(row.ratio).toBeCloseTo(row.value / row.baseline, 2)
      }
    }
    const cold = doc.figures.find((f: { id: string }) => f.id === 'cold-start')
    const target = cold.rows.find((row: { target?: unknown }) => row.target != null)
    expect(target.baselineLabel).toMatch(/node -e ''/)
    expect(typeof target.target.met).toBe('boolean')
    expect(cold.details.coldClientMs.n).toBeGreaterThan(0)
    const chart = join(dir, 'bench', 'charts', 'cold-start-cdf-quick.svg')
    expect(existsSync(chart)).toBe(true)
    expect(await readFile(chart, 'utf8')).toMatch(/^<svg[\s\S]*fnmesh cold start[\s\S]*<\/svg>\s*$/)
  }, 180_000)

  it('simulates the routing policies on a 10-node mesh: every arrival accounted for, least-loaded far ahead of a plain queue group', async () => {
    const out = join(dir, 'sim', 'results.json')
    const r = await run('scripts/simulate.js', ['--quick', '--nodes', '10', '--loads', '0.8', '--threads', '1', '--out', out], 120_000)
    expect(r.code, r.stderr.slice(-2000)).toBe(0)
    const doc = JSON.parse(await readFile(out, 'utf8'))
    const byPolicy = Object.fromEntries(doc.runs.map((x: { policy: string }) => [x.policy, x]))
    expect(Object.keys(byPolicy).sort()).toEqual(['fnmesh', 'oracle', 'random', 'round-robin'])
    for (const x of doc.runs) {
      expect(x.nodes).toBe(10)
      expect(x.completed + x.rejected).toBe(x.arrivals)
    }
    // deterministic for the seed: the queue group waits and refuses, fnmesh does neither much
    expect(byPolicy.fnmesh.latencyMs.p99).toBeLessThan(byPolicy.random.latencyMs.p99 / 3)
    expect(byPolicy.fnmesh.rejectionRate).toBeLessThan(byPolicy.random.rejectionRate)
    expect(doc.gossip[0].nodes).toBe(10)
    expect(doc.gossip[0].gossipsubBytesPerSec).toBeGreaterThan(doc.gossip[0].fullMeshBytesPerSec)
    for (const chart of ['simulate-scaling-quick-custom.svg', 'simulate-gossip-quick-custom.svg']) {
      expect(existsSync(join(dir, 'sim', 'charts', chart)), chart).toBe(true)
    }
  }, 130_000)

  it('refuses bad usage with one coded line and exit 2', async () => {
    const bench = await run('scripts/bench.js', ['--only', 'no-such-figure'], 30_000)
    expect(bench.code).toBe(2)
    expect(bench.stderr.split('\n')[0]).toBe('error FNMESH_ERR_BAD_USAGE: unknown figure "no-such-figure"')
    const sim = await run('scripts/simulate.js', ['--loads', '3'], 30_000)
    expect(sim.code).toBe(2)
    expect(sim.stderr.split('\n')[0]).toMatch(/^error FNMESH_ERR_BAD_USAGE: Option "--loads"/)
  })
})
