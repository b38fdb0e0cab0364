/**
 * Figure: what each isolation layer costs, alone and all together (what `--sandbox strict`
 * runs), against `--sandbox none` (own process only), measured in the same run with
 * SandboxPool in this process (no NATS, no meter write):
 * - boot: spawn of a generic sandbox to its first IPC message (off the invocation path: the pool
 *   boots generic workers ahead of need);
 * - cold: acquire of a booted generic worker for a function it has never run (code placed in the
 *   sandbox, module loaded) plus the first invocation;
 * - warm: acquire + invoke + release of a warm sandbox (1 KB echo).
 * Layers this machine lacks are left out and named in the notes.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { silentLogger } from '../../../node/src/logger.js'
import { detectIsolation, OPTIONAL_LAYERS, type IsolationPlan, type LayerId } from '../../../node/src/sandbox/layers/detect.js'
import { Workspace } from '../../../node/src/sandbox/layers/workspace.js'
import { RUNTIME_DIR, SandboxPool } from '../../../node/src/sandbox/pool.js'
import { Spawner } from '../../../node/src/sandbox/spawner.js'
import type { StoredSpec } from '../../../core/registry.js'
import { paddedEvent, PAYLOAD_BYTES } from '../mesh.js'
import { interleaved } from '../loops.js'
import { step, ticker } from '../progress.js'
import { compact, summarize, type LatencySummary } from '../stats.js'
import { row, type Figure, type Row } from '../types.js'

const ALL: LayerId[] = [...OPTIONAL_LAYERS]

interface Variant { label: string, layers: LayerId[] }

const VARIANTS: Variant[] = [
  { label: 'none', layers: [] },
  { label: 'permission model', layers: ['permission'] },
  { label: 'bubblewrap (mount+pid+net ns)', layers: ['mount', 'net', 'pid'] },
  { label: 'unshare (net+pid ns)', layers: ['net', 'pid'] },
  { label: 'separate uid', layers: ['uid'] },
  { label: 'cgroups (memory+pids+cpu)', layers: ['cgroup-memory', 'cgroup-pids', 'cgroup-cpu'] },
  { label: 'all (strict)', layers: ALL }
]

function spec (name: string): StoredSpec {
  return { name, version: 1, handler: 'index.handler', memoryMb: 128, timeoutMs: 10_000, concurrency: 0, env: {}, triggers: [], egress: false, bundleObject: '', bundleSha256: '', bundleSize: 0, createdAtMs: 0, maxRetries: 2, retryBackoffMs: 1000, maxEventAgeMs: 21_600_000 }
}

interface Measured { boot: LatencySummary, cold: LatencySummary, warm: LatencySummary, active: string[], errors: number }

export const sandboxLayers: Figure = {
  id: 'sandbox-layers',
  title: 'Cost of each isolation layer on sandbox boot, cold and warm latency',
  run: async (ctx) => {
    const quick = ctx.options.quick
    const nBoot = quick ? 6 : 30
    const nCold = quick ? 15 : 40
    const nWarm = quick ? 1000 : 5000
    const dir = await ctx.cleanup.tempDir('layers')
    const taskRoot = join(dir, 'fn')
    await mkdir(taskRoot)
    await writeFile(join(taskRoot, 'index.mjs'), 'export const handler = async (event) => event\n')
    const payload = JSON.stringify(paddedEvent(PAYLOAD_BYTES))
    const probe = detectIsolation({ mode: 'auto' })
    probe.cgroup?.close()
    const available = new Set(probe.layers.filter(l => l.active).map(l => l.id))
    const results = new Map<string, Measured>()
    const skipped: string[] = []

    interface Setup { label: string, spawner: Spawner, pool: SandboxPool, boots: number[], cold: number[], errors: number }
    const setups: Setup[] = []
    await step('starting a sandbox pool per variant', async () => {
      for (const v of VARIANTS) {
        const missing = v.layers.filter(l => !available.has(l) && l !== 'rlimit')
        if (v.layers.length > 0 && v.layers.length === missing.length) { skipped.push(`${v.label} (${missing.join(', ')} missing here)`); continue }
        const plan = v.layers.length === 0 ? detectIsolation({ mode: 'none' }) : detectIsolation({ mode: 'auto', disable: ALL.filter(l => !v.layers.includes(l)) })
        const work = join(dir, v.label.replace(/\W+/g, '-'))
        const workspace = new Workspace(join(work, 'boot'))
        workspace.open()
        const spawner = new Spawner({ plan, workspace, runtimeDir: RUNTIME_DIR, pidsMax: 64, cpus: 1, logger: silentLogger() })
        const pool = new SandboxPool({ workDir: join(work, 'pool'), protectDir: dir, plan, prewarm: 1, maxWorkers: nCold + 4, logger: silentLogger() })
        ctx.cleanup.defer(`stop the ${v.label} pool`, async () => {
          pool.stop()
          await pool.settled(5000)
          await spawner.cleaning.whenIdle({ timeoutMs: 5000 })
          workspace.close()
          plan.cgroup?.close()
        })
        await pool.start()
        setups.push({ label: v.label, spawner, pool, boots: [], cold: [], errors: 0 })
      }
    })
    // Round robin over the variants, so that load from elsewhere on the machine hits them alike.
    await step(`${nBoot} boots per variant, round robin`, async () => {
      const tick = ticker('boots', nBoot * setups.length)
      let done = 0
      for (let i = 0; i < nBoot; i++) {
        for (const s of setups) {
          ctx.signal.throwIfAborted()
          const t0 = performance.now()
          const { worker } = s.spawner.spawn(128, false)
          await worker.ready(10_000)
          s.boots.push(performance.now() - t0)
          const exited = new Promise(resolve => worker.once('exit', resolve))
          worker.kill('bench')
          await exited
          tick(++done)
        }
      }
    })
    await step(`${nCold} cold starts per variant, round robin`, async () => {
      const tick = ticker('cold starts', nCold * setups.length)
      let done = 0
      for (let i = 0; i < nCold; i++) {
        for (const s of setups) {
          ctx.signal.throwIfAborted()
          // Each cold start takes a generic worker booted ahead, as in an agent between bursts.
          for (let w = 0; w < 500 && s.pool.genericReady() === 0; w++) await sleep(5)
          const t0 = performance.now()
          try {
            const { worker } = await s.pool.acquire(spec(`cold-${i}`), taskRoot)
            const out = await worker.invoke(`cold-${i}`, payload, Date.now() + 10_000)
            s.pool.release(worker)
            if (!out.ok) throw new Error(out.error?.code)
            s.cold.push(performance.now() - t0)
          } catch { s.errors++ }
          tick(++done)
        }
      }
    })
    const warmSpec = spec('warm')
    const warm = await step(`${nWarm} warm calls per variant, interleaved in blocks of 200`, async () => await interleaved(Object.fromEntries(setups.map(s => [s.label, async (i: number) => {
      const { worker } = await s.pool.acquire(warmSpec, taskRoot)
      const out = await worker.invoke(`warm-${i}`, payload, Date.now() + 10_000)
      s.pool.release(worker)
      if (!out.ok) throw Object.assign(new Error('warm call failed'), { code: out.error?.code })
    }])), nWarm + 200, 200, { label: 'warm calls', signal: ctx.signal }))
    for (const s of setups) {
      results.set(s.label, {
        boot: summarize(s.boots),
        cold: summarize(s.cold),
        // the first block of each variant is warm-up
        warm: summarize(warm[s.label].samples.slice(200)),
        active: s.pool.plan?.layers.filter(l => l.active).map(l => l.id) ?? [],
        errors: s.errors + Object.values(warm[s.label].errors).reduce((a, b) => a + b, 0)
      })
    }

    const base = results.get('none')
    if (base == null) throw new Error('the baseline (no layers) did not run')
    const rows: Row[] = []
    for (const [label, m] of results) {
      if (label === 'none') continue
      rows.push(
        row(`boot p50, ${label}`, 'ms', m.boot.p50, 'boot p50, none', base.boot.p50, 'lower'),
        row(`cold p50, ${label}`, 'ms', m.cold.p50, 'cold p50, none', base.cold.p50, 'lower'),
        row(`cold p99, ${label}`, 'ms', m.cold.p99, 'cold p99, none', base.cold.p99, 'lower'),
        row(`warm p50, ${label}`, 'ms', m.warm.p50, 'warm p50, none', base.warm.p50, 'lower'),
        row(`warm p99, ${label}`, 'ms', m.warm.p99, 'warm p99, none', base.warm.p99, 'lower')
      )
    }
    return {
      rows,
      details: Object.fromEntries([...results].map(([label, m]) => [label, { activeLayers: m.active, errors: m.errors, boot: compact(m.boot), cold: compact(m.cold), warm: compact(m.warm) }])),
      notes: [
        `Per variant: ${nBoot} boots (spawn to the runtime's first IPC message, including cgroup set-up and the tool chain: sh, bwrap/unshare, setpriv), ${nCold} cold starts of distinct functions each taking a generic worker booted ahead (code hard-linked into the sandbox, module imported, first call), ${nWarm} warm calls after 200 of warm-up. ${PAYLOAD_BYTES} B echo.`,
        'Boot is off the invocation path: the pool keeps generic workers booted ahead, so what an invocation pays is the cold and warm rows.',
        `All variants' pools run side by side; boots and cold starts go round robin over the variants, warm calls in interleaved blocks of 200 (the first block of each is warm-up), so load from elsewhere hits them alike. ${skipped.length > 0 ? `Left out (layer missing on this machine): ${skipped.join('; ')}.` : 'Every layer was available.'}`
      ]
    }
  }
}
