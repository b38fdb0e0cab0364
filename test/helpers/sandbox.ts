/**
 * Helpers for tests that run real sandboxes through SandboxPool: one isolation probe per test
 * file (what this machine offers), specs, task folders copied from fixtures, and process checks.
 */
import { existsSync, readFileSync } from 'node:fs'
import { cp, mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { TestContext } from 'vitest'
import { describeLayers, detectIsolation, type DetectOptions, type IsolationPlan, type LayerId } from '../../node/src/sandbox/layers/detect.js'
import type { StoredSpec } from '../../core/registry.js'
import { fixture } from './fixtures.js'

const plans = new Map<string, IsolationPlan>()

/**
 * The isolation plan for `options`, probed once per test file. FNMESH_TEST_SANDBOX_DISABLE
 * (e.g. "mount,cgroup-memory") leaves layers off, to run the suites as on a host without them.
 */
export function testPlan (options: DetectOptions = {}): IsolationPlan {
  const extra = (process.env.FNMESH_TEST_SANDBOX_DISABLE ?? '').split(',').filter(Boolean) as LayerId[]
  if (extra.length > 0) options = { ...options, disable: [...(options.disable ?? []), ...extra] }
  const key = JSON.stringify(options)
  let plan = plans.get(key)
  if (plan == null) {
    plan = detectIsolation(options)
    plans.set(key, plan)
  }
  return plan
}

/** Removes the cgroup folders of every probed plan (after the file's last pool stopped) */
export function closePlans (): void {
  for (const plan of plans.values()) plan.cgroup?.close()
  plans.clear()
}

/** "layers active: ...; missing: id (why), ..." for the test report */
export function layerReport (plan: IsolationPlan): string {
  const { active, missing } = describeLayers(plan)
  const off = Object.entries(missing).map(([id, why]) => `${id} (${why})`)
  return `sandbox layers in this run (mode ${plan.mode}): ${active.join(', ')}${off.length > 0 ? `; missing: ${off.join('; ')}` : ''}`
}

/** Skips the test, saying why, when `plan` lacks one of `layers` */
export function needLayers (ctx: TestContext, plan: IsolationPlan, layers: LayerId[]): void {
  const missing = plan.layers.filter(l => layers.includes(l.id) && !l.active)
  if (missing.length === 0) return
  const why = `skipped "${ctx.task.name}": needs ${missing.map(l => `${l.id} (${l.detail})`).join('; ')}`
  console.log(why)
  ctx.skip(why)
}

export function spec (fields: Partial<StoredSpec> & { name: string, handler: string }): StoredSpec {
  return {
    version: 1, memoryMb: 128, timeoutMs: 3000, concurrency: 0, env: {}, triggers: [], egress: false,
    bundleObject: '', bundleSha256: '', bundleSize: 0, createdAtMs: 0, ...fields
  }
}

/** A task root under `root` holding copies of fixture files or folders and/or files given as text */
export async function task (root: string, name: string, files: { fixtures?: string[], text?: Record<string, string> }): Promise<string> {
  const dir = join(root, 'tasks', name)
  await mkdir(dir, { recursive: true })
  for (const f of files.fixtures ?? []) await cp(fixture(f), join(dir, f.split('/').pop() as string), { recursive: true })
  for (const [path, content] of Object.entries(files.text ?? {})) {
    await mkdir(dirname(join(dir, path)), { recursive: true })
    await writeFile(join(dir, path), content)
  }
  return dir
}

/** A task root that is a copy of the fixture folder `folder` (its content at the root) */
export async function taskFromFolder (root: string, folder: string): Promise<string> {
  const dir = join(root, 'tasks', folder.replaceAll('/', '-'))
  await cp(fixture(folder), dir, { recursive: true })
  // A fixture keeps the packages it ships in _node_modules (the repository tracks no node_modules).
  if (existsSync(join(dir, '_node_modules'))) {
    await rm(join(dir, 'node_modules'), { recursive: true, force: true })
    await rename(join(dir, '_node_modules'), join(dir, 'node_modules'))
  }
  return dir
}

/** True if no process (or only a zombie) has this pid; a negative pid asks about a process group */
export function gone (pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true
    throw err
  }
  // A grandchild orphaned by a SIGKILL may linger as a zombie if PID 1 does not reap it.
  if (pid > 0) {
    try { return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z') ?? false } catch { return true }
  }
  return false
}
