/**
 * The sandbox pool with real child processes, under every isolation layer this machine offers
 * (the layers are printed; the grandchild test runs without them, since they stop it spawning).
 */
import { readFile, rm, mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { CapacityError, FunctionError } from '../../proto/errors.js'
import type { StoredSpec } from '../../core/registry.js'
import { silentLogger } from '../../node/src/logger.js'
import type { IsolationPlan } from '../../node/src/sandbox/layers/detect.js'
import { SandboxPool, type SandboxPoolInit } from '../../node/src/sandbox/pool.js'
import type { InvokeOutcome, SandboxWorker } from '../../node/src/sandbox/worker.js'
import { closePlans, gone, layerReport, spec, task as makeTask, testPlan } from '../helpers/sandbox.js'
import { waitFor, within } from '../helpers/wait.js'

const SECRET_VAR = 'FNMESH_TEST_PARENT_SECRET'

describe('sandbox pool with real child processes', () => {
  let root: string
  let pools: SandboxPool[]
  let pids: number[]
  let plan: IsolationPlan
  /** where the function's code is, as the function sees it */
  let inside: (dir: string) => string

  /** A started pool (no prewarmed workers unless asked), stopped after the test */
  const newPool = async (init: Partial<SandboxPoolInit> = {}): Promise<SandboxPool> => {
    const pool = new SandboxPool({ workDir: join(root, 'work'), protectDir: root, plan, prewarm: 0, capWaitMs: 0, logger: silentLogger(), ...init })
    pools.push(pool)
    await pool.start()
    return pool
  }

  const task = async (name: string, files: { fixtures?: string[], text?: Record<string, string> }): Promise<string> => await makeTask(root, name, files)

  const acquire = async (pool: SandboxPool, s: StoredSpec, taskRoot: string): Promise<{ worker: SandboxWorker, cold: boolean, pid: number }> => {
    const { worker, cold } = await within(pool.acquire(s, taskRoot), 15_000, `acquiring ${s.name}@${s.version}`)
    const pid = worker.pid as number
    expect(pid).toBeGreaterThan(0)
    pids.push(pid)
    return { worker, cold, pid }
  }

  const invoke = async (worker: SandboxWorker, event: unknown, deadlineMs = 5000): Promise<InvokeOutcome> =>
    await within(worker.invoke('req-1', JSON.stringify(event), Date.now() + deadlineMs), deadlineMs + 10_000, 'invocation')

  /** One invocation the way the executor does it: acquire, invoke, release */
  const run = async (pool: SandboxPool, s: StoredSpec, taskRoot: string, event: unknown = {}, deadlineMs = 5000): Promise<{ out: InvokeOutcome, cold: boolean, pid: number }> => {
    const { worker, cold, pid } = await acquire(pool, s, taskRoot)
    const out = await invoke(worker, event, deadlineMs)
    pool.release(worker)
    return { out, cold, pid }
  }

  /** The error `p` rejects with (fails the test if it resolves) */
  const rejection = async (p: Promise<unknown>): Promise<any> =>
    await within(p, 15_000, 'a call expected to fail').then(() => { throw new Error('expected a rejection') }, (err: unknown) => err)

  beforeAll(() => {
    plan = testPlan({ mode: 'auto' })
    inside = (dir: string) => plan.mount ? '/var/task' : join(dir, '..', '..', 'work')
    console.log(layerReport(plan))
  })

  afterAll(() => { closePlans() })

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'fnmesh-sandbox-'))
    pools = []
    pids = []
  })

  afterEach(async () => {
    delete process.env[SECRET_VAR]
    for (const pool of pools) pool.stop()
    await waitFor(() => pids.every(gone), { timeoutMs: 10_000, message: `sandbox processes ${pids.join(', ')} exiting` })
    for (const pool of pools) await pool.settled(5000)
    await rm(root, { recursive: true, force: true })
  })

  it('starts cold, then reuses the same process warm after release', async () => {
    const pool = await newPool()
    const s = spec({ name: 'ok', handler: 'ok.handler' })
    const dir = await task('ok', { fixtures: ['ok.js'] })
    const first = await run(pool, s, dir, { n: 1 })
    expect(first.cold).toBe(true)
    expect(pool.hasIdle('ok@1')).toBe(true)
    expect(pool.warmKeys()).toEqual(['ok@1'])
    const second = await run(pool, s, dir, { n: 2 })
    expect(second.cold).toBe(false)
    expect(second.pid).toBe(first.pid)
    expect(JSON.parse(second.out.payload as string).event).toEqual({ n: 2 })
    expect([pool.coldStarts, pool.warmStarts]).toEqual([1, 1])
    expect(pool.size).toBe(1)
  })

  it('settles when its last sandbox has exited and been cleaned up, and says so; false when that takes longer than allowed', async () => {
    const pool = await newPool({ prewarm: 2 })
    const { pid } = await run(pool, spec({ name: 'ok', handler: 'ok.handler' }), await task('ok', { fixtures: ['ok.js'] }))
    expect(pool.size).toBeGreaterThan(1)
    pool.stop()
    expect(await pool.settled(0)).toBe(false)
    expect(await within(pool.settled(10_000), 12_000, 'the pool settling')).toBe(true)
    expect(pool.size).toBe(0)
    expect(gone(pid)).toBe(true)
    expect(await pool.settled(0)).toBe(true)
  })

  it('returns the handler result as JSON with the request id in its context', async () => {
    const pool = await newPool()
    const { out } = await run(pool, spec({ name: 'ok', handler: 'ok.handler' }), await task('ok', { fixtures: ['ok.js'] }), { n: 1, s: 'x' })
    expect(out.ok).toBe(true)
    expect(out.error).toBeUndefined()
    expect(JSON.parse(out.payload as string)).toEqual({ ok: true, event: { n: 1, s: 'x' }, requestId: 'req-1' })
    expect(out.durationMs).toBeGreaterThan(0)
  })

  it('runs an ES module handler', async () => {
    const pool = await newPool()
    const { out } = await run(pool, spec({ name: 'echo', handler: 'echo.handler' }), await task('echo', { fixtures: ['echo.mjs'] }), [1, 'two', { three: 3 }])
    expect(JSON.parse(out.payload as string)).toEqual([1, 'two', { three: 3 }])
  })

  it('answers null for a handler that returns nothing', async () => {
    const pool = await newPool()
    const dir = await task('void', { text: { 'index.js': 'exports.handler = async () => {}' } })
    const { out } = await run(pool, spec({ name: 'void', handler: 'index.handler' }), dir)
    expect(out).toMatchObject({ ok: true, payload: 'null' })
  })

  it('reports a thrown error as FNMESH_ERR_FUNCTION_ERROR with its type, message and trace, and keeps the worker', async () => {
    const pool = await newPool()
    const s = spec({ name: 'throw', handler: 'throw.handler' })
    const dir = await task('throw', { fixtures: ['throw.js'] })
    const { out, pid } = await run(pool, s, dir)
    expect(out.ok).toBe(false)
    expect(out.error).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'TypeError', errorMessage: 'boom' })
    expect(out.error?.trace[0]).toBe('TypeError: boom')
    // The function's own file, where the function sees its code (/var/task under a mount namespace).
    expect(out.error?.trace.some(line => /\/task\/throw\.js:\d+:\d+/.test(line))).toBe(true)
    // A handled error leaves the sandbox usable, as on Lambda.
    const again = await run(pool, s, dir)
    expect(again.cold).toBe(false)
    expect(again.pid).toBe(pid)
  })

  it('kills a function that runs past its deadline with FNMESH_ERR_TIMEOUT, process group and all', async () => {
    const pool = await newPool()
    const { worker, pid } = await acquire(pool, spec({ name: 'hang', handler: 'hang.handler' }), await task('hang', { fixtures: ['hang.js'] }))
    const out = await invoke(worker, {}, 300)
    expect(out.ok).toBe(false)
    expect(out.error).toMatchObject({ code: 'FNMESH_ERR_TIMEOUT', errorType: 'Sandbox.Timedout', errorMessage: 'Task timed out' })
    expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }))
    expect(() => process.kill(-pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }))
    expect(worker.state).toBe('dead')
    pool.release(worker)
    expect(pool.hasIdle('hang@1')).toBe(false)
    expect(pool.size).toBe(0)
  })

  it('kills the processes a timed-out function started (with only the process layer: the others stop it spawning)', async () => {
    const lines: string[] = []
    const pool = await newPool({ plan: testPlan({ mode: 'none' }), logs: (l) => { lines.push(l.message) } })
    const dir = await task('spawner', {
      text: {
        'index.js': `const { spawn } = require('node:child_process')
exports.handler = async () => {
  const c = spawn('sleep', ['60'], { stdio: 'ignore' })
  console.log('grandchild', c.pid)
  await new Promise(() => {})
}`
      }
    })
    const { worker } = await acquire(pool, spec({ name: 'spawner', handler: 'index.handler' }), dir)
    const out = invoke(worker, {}, 1500)
    const grandchild = Number(await waitFor(() => lines.find(l => l.startsWith('grandchild '))?.split(' ')[1], { timeoutMs: 5000, message: 'the function logging its child\'s pid' }))
    pids.push(grandchild)
    expect(gone(grandchild)).toBe(false)
    expect((await out).error?.code).toBe('FNMESH_ERR_TIMEOUT')
    await waitFor(() => gone(grandchild), { timeoutMs: 5000, message: `grandchild ${grandchild} being killed with its process group` })
  })

  it('reports process.exit as FNMESH_ERR_FUNCTION_EXITED with Runtime.ExitError and the status', async () => {
    const pool = await newPool()
    const { out, pid } = await run(pool, spec({ name: 'exit', handler: 'exit.handler' }), await task('exit', { fixtures: ['exit.js'] }))
    expect(out.error).toEqual({ code: 'FNMESH_ERR_FUNCTION_EXITED', errorType: 'Runtime.ExitError', errorMessage: 'Runtime exited with error: exit status 3', trace: [] })
    expect(gone(pid)).toBe(true)
    expect(pool.hasIdle('exit@1')).toBe(false)
    await waitFor(() => pool.warmKeys().length === 0, { timeoutMs: 5000, message: 'the dead worker leaving warmKeys' })
  })

  it('fails acquire with Runtime.HandlerNotFound when the module lacks the export', async () => {
    const pool = await newPool()
    const err = await rejection(pool.acquire(spec({ name: 'noexport', handler: 'noexport.handler' }), await task('noexport', { fixtures: ['noexport.js'] })))
    expect(err).toBeInstanceOf(FunctionError)
    expect(err.code).toBe('FNMESH_ERR_HANDLER_NOT_FOUND')
    expect(err.errorType).toBe('Runtime.HandlerNotFound')
    expect(err.message).toBe('noexport.handler is undefined or not exported')
    // The worker that failed init is killed, never reused.
    await waitFor(() => pool.size === 0, { timeoutMs: 5000, message: 'the failed worker exiting' })
    expect(pool.warmKeys()).toEqual([])
  })

  it('fails acquire with Runtime.ImportModuleError when the module file is missing', async () => {
    const pool = await newPool()
    const err = await rejection(pool.acquire(spec({ name: 'missing', handler: 'lib/nope.handler' }), await task('missing', { fixtures: ['ok.js'] })))
    expect(err).toBeInstanceOf(FunctionError)
    expect(err.code).toBe('FNMESH_ERR_HANDLER_NOT_FOUND')
    expect(err.errorType).toBe('Runtime.ImportModuleError')
    // Lambda's message: the loader's own error as text (it tried lib/nope{,.js,.mjs,.cjs}, then a package "nope")
    expect(err.message).toMatch(/^Error: Cannot find module 'nope'/)
  })

  it.each([
    ['index.js', 'exports.handler = async () => {'],
    ['index.mjs', 'export const handler = async () => {']
  ])('fails acquire with Runtime.UserCodeSyntaxError for a syntax error in %s', async (file, code) => {
    const pool = await newPool()
    const err = await rejection(pool.acquire(spec({ name: 'syntax', handler: 'index.handler' }), await task('syntax', { text: { [file]: code } })))
    expect(err).toBeInstanceOf(FunctionError)
    expect(err.code).toBe('FNMESH_ERR_FUNCTION_INIT')
    expect(err.errorType).toBe('Runtime.UserCodeSyntaxError')
    expect(err.trace.length).toBeGreaterThan(0)
  })

  it('fails acquire with the thrown error\'s own type when the module throws while loading, as Lambda does', async () => {
    const pool = await newPool()
    const err = await rejection(pool.acquire(spec({ name: 'initthrow', handler: 'index.handler' }), await task('initthrow', { text: { 'index.js': 'throw new RangeError("no config")' } })))
    expect(err.code).toBe('FNMESH_ERR_FUNCTION_INIT')
    expect(err.errorType).toBe('RangeError')
    expect(err.message).toBe('no config')
  })

  it('takes the first callback of a callback-style handler and keeps invocations apart', async () => {
    const pool = await newPool()
    const s = spec({ name: 'callback', handler: 'callback.handler' })
    const dir = await task('callback', { fixtures: ['callback.js'] })
    const first = await run(pool, s, dir, { n: 7 })
    expect(JSON.parse(first.out.payload as string)).toEqual({ via: 'callback', n: 7 })
    const second = await run(pool, s, dir, { n: 8 })
    expect(second.pid).toBe(first.pid)
    expect(JSON.parse(second.out.payload as string)).toEqual({ via: 'callback', n: 8 })
  })

  it('gives the function its own environment and Lambda\'s variables, none of the agent\'s', async () => {
    process.env[SECRET_VAR] = 'hunter2'
    const pool = await newPool()
    const dir = await task('env', { text: { 'index.js': 'exports.handler = async () => ({ env: { ...process.env }, cwd: process.cwd() })' } })
    const { out } = await run(pool, spec({ name: 'envfn', version: 3, handler: 'index.handler', env: { GREETING: 'hello', PATH: '/custom/bin' } }), dir)
    const { env, cwd } = JSON.parse(out.payload as string)
    expect(env[SECRET_VAR]).toBeUndefined()
    // Under a mount namespace the code is /var/task and tmp /tmp; without one, the sandbox's own slot.
    const taskRoot = plan.mount ? '/var/task' : expect.stringMatching(new RegExp(`^${join(root, 'work')}/\\d+/task$`))
    const tmp = plan.mount ? '/tmp' : expect.stringMatching(new RegExp(`^${join(root, 'work')}/\\d+/tmp$`))
    expect(env).toEqual({
      PATH: '/custom/bin',
      LANG: 'C.UTF-8',
      TZ: ':UTC',
      HOME: tmp,
      TMPDIR: tmp,
      GREETING: 'hello',
      AWS_LAMBDA_FUNCTION_NAME: 'envfn',
      AWS_LAMBDA_FUNCTION_VERSION: '3',
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '128',
      AWS_LAMBDA_LOG_GROUP_NAME: '/fnmesh/envfn',
      AWS_LAMBDA_LOG_STREAM_NAME: expect.stringMatching(/^\d{4}\/\d{2}\/\d{2}\/\[3\][0-9a-f]{32}$/),
      AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand',
      AWS_REGION: 'fnmesh-local',
      AWS_DEFAULT_REGION: 'fnmesh-local',
      AWS_EXECUTION_ENV: `AWS_Lambda_nodejs${process.versions.node.split('.')[0]}.x`,
      NODE_PATH: expect.stringMatching(/^\/opt\/nodejs\/node\d+\/node_modules:\/opt\/nodejs\/node_modules:.*\/node_modules:.*task$/),
      LAMBDA_TASK_ROOT: taskRoot,
      LAMBDA_RUNTIME_DIR: plan.mount ? '/var/runtime' : expect.stringMatching(/\/dist\/node\/src\/sandbox\/runtime$/),
      _HANDLER: 'index.handler'
    })
    expect(cwd).toEqual(taskRoot)
  })

  it('refuses more live sandboxes of a function than its concurrency with FNMESH_ERR_BUSY', async () => {
    const pool = await newPool()
    const s = spec({ name: 'capped', handler: 'ok.handler', concurrency: 1 })
    const dir = await task('capped', { fixtures: ['ok.js'] })
    const held = await acquire(pool, s, dir)
    const err = await rejection(pool.acquire(s, dir))
    expect(err).toBeInstanceOf(CapacityError)
    expect(err.code).toBe('FNMESH_ERR_BUSY')
    expect(err.message).toBe('Function "capped" is at its concurrency limit of 1 on this node')
    expect(pool.size).toBe(1)
    await invoke(held.worker, {})
    pool.release(held.worker)
    const next = await acquire(pool, s, dir)
    expect(next.cold).toBe(false)
    expect(next.pid).toBe(held.pid)
  })

  it('lets an invocation at the concurrency cap wait for the function\'s sandbox to be released, within capWaitMs', async () => {
    const pool = await newPool({ capWaitMs: 10_000 })
    const s = spec({ name: 'capwait', handler: 'ok.handler', concurrency: 1 })
    const dir = await task('capwait', { fixtures: ['ok.js'] })
    const held = await acquire(pool, s, dir)
    let waited = false
    const second = pool.acquire(s, dir).then((a) => { waited = true; return a })
    await invoke(held.worker, {})
    expect(waited).toBe(false)
    pool.release(held.worker)
    const next = await within(second, 5000, 'the waiting acquire')
    expect(next.cold).toBe(false)
    expect(next.worker.pid).toBe(held.pid)
    expect(pool.size).toBe(1)
  })

  it('frees a concurrency slot when a sandbox of the function dies', async () => {
    const pool = await newPool()
    const s = spec({ name: 'capexit', handler: 'exit.handler', concurrency: 1 })
    const dir = await task('capexit', { fixtures: ['exit.js'] })
    await run(pool, s, dir)
    const next = await waitFor(async () => await pool.acquire(s, dir), { timeoutMs: 5000, message: 'a slot freeing after the crash' })
    pids.push(next.worker.pid as number)
    expect(next.cold).toBe(true)
  })

  it('runs sandboxes of a function in parallel when its concurrency is 0', async () => {
    const pool = await newPool()
    const s = spec({ name: 'wide', handler: 'ok.handler', concurrency: 0 })
    const dir = await task('wide', { fixtures: ['ok.js'] })
    const [a, b, c] = await Promise.all([acquire(pool, s, dir), acquire(pool, s, dir), acquire(pool, s, dir)])
    expect(new Set([a.pid, b.pid, c.pid]).size).toBe(3)
    expect([a.cold, b.cold, c.cold]).toEqual([true, true, true])
  })

  it('never hands out a sandbox that reported a fatal error', async () => {
    const pool = await newPool()
    const s = spec({ name: 'fatal', handler: 'index.handler' })
    const dir = await task('fatal', {
      text: { 'index.js': 'exports.handler = async (e) => { if (e.crash) setTimeout(() => { throw new Error("late") }, 1); else return "fine"; return new Promise(() => {}) }' }
    })
    const first = await run(pool, s, dir, { crash: true })
    // Lambda reports an uncaught exception by the error's own type, then the runtime exits.
    expect(first.out.error).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'Error', errorMessage: 'late' })
    // Released before its exit is seen: the next acquire must still start a new sandbox.
    const second = await run(pool, s, dir, {})
    expect(second.cold).toBe(true)
    expect(second.pid).not.toBe(first.pid)
    expect(second.out).toMatchObject({ ok: true, payload: '"fine"' })
    await waitFor(() => gone(first.pid), { timeoutMs: 5000, message: 'the crashed sandbox exiting' })
  })

  it('kills a sandbox whose function talks on the IPC channel itself, forging an answer or flooding the agent while idle', async () => {
    const pool = await newPool()
    const dir = await task('ipc', { fixtures: ['hostile/ipc-flood.js'] })
    const forged = await run(pool, spec({ name: 'forge', handler: 'ipc-flood.handler' }), dir, { forge: true })
    // The forged answer never comes back; the real one may still arrive before the kill lands.
    expect(forged.out.payload).not.toBe('"forged"')
    const flood = await run(pool, spec({ name: 'flood', handler: 'ipc-flood.handler' }), dir, {})
    expect(flood.out).toMatchObject({ ok: true, payload: '"answered"' })
    await waitFor(() => gone(flood.pid) && gone(forged.pid), { timeoutMs: 5000, message: 'both sandboxes killed' })
    await waitFor(() => pool.size === 0, { timeoutMs: 5000, message: 'the pool forgetting them' })
  })

  it('refuses a result over the result limit with FNMESH_ERR_RESULT_INVALID', async () => {
    const pool = await newPool({ resultLimit: 100 })
    const { out } = await run(pool, spec({ name: 'echo', handler: 'echo.handler' }), await task('echo', { fixtures: ['echo.mjs'] }), 'x'.repeat(200))
    expect(out.error).toMatchObject({ code: 'FNMESH_ERR_RESULT_INVALID', errorType: 'Runtime.ResponseSizeTooLarge' })
  })

  it.each([
    [['index.js', 'index.mjs', 'index.cjs'], 'js'],
    [['index.mjs', 'index.cjs'], 'mjs'],
    [['index.cjs'], 'cjs']
  ])('loads the handler module by Lambda\'s precedence from %j', async (files, winner) => {
    const pool = await newPool()
    const text: Record<string, string> = {}
    for (const f of files) text[f] = f.endsWith('.mjs') ? 'export const handler = async () => "mjs"' : `exports.handler = async () => ${JSON.stringify(f.split('.')[1])}`
    const { out } = await run(pool, spec({ name: 'prec', handler: 'index.handler' }), await task('prec', { text }))
    expect(out.payload).toBe(JSON.stringify(winner))
  })

  it('uses a prewarmed generic worker for a cold start and boots a replacement', async () => {
    const pool = await newPool({ prewarm: 1 })
    expect(pool.size).toBe(1)
    const { cold, pid } = await acquire(pool, spec({ name: 'ok', handler: 'ok.handler' }), await task('ok', { fixtures: ['ok.js'] }))
    expect(cold).toBe(true)
    expect(pool.size).toBe(2)
    // the pid of the replacement generic worker is unknown here: the pool's stop() in afterEach ends it
    expect(pid).toBeGreaterThan(0)
  })

  it('keeps a worker booted ahead when idle sandboxes fill the pool, evicting the least recently used', async () => {
    // maxWorkers 3 with one booted ahead: after two functions are warm the pool is full.
    const pool = await newPool({ prewarm: 1, maxWorkers: 3 })
    const dir = await task('ok', { fixtures: ['ok.js'] })
    const runs = []
    for (const name of ['f1', 'f2', 'f3', 'f4']) {
      await waitFor(() => pool.genericReady() === 1, { timeoutMs: 10_000, message: `a worker booted ahead before ${name}` })
      runs.push(await run(pool, spec({ name, handler: 'ok.handler' }), dir))
    }
    expect(runs.every(r => r.cold)).toBe(true)
    // the oldest idle ones made room: never more than maxWorkers alive once they exited
    await waitFor(() => gone(runs[0].pid) && gone(runs[1].pid), { timeoutMs: 5000, message: 'f1 and f2 evicted' })
    expect(pool.hasIdle('f4@1')).toBe(true)
    await waitFor(() => pool.size <= 3 && pool.genericReady() === 1, { timeoutMs: 10_000, message: 'the pool back at its bound with one booted ahead' })
  })

  it('stops a warm sandbox left idle past idleTtlMs', async () => {
    const pool = await newPool({ idleTtlMs: 200 })
    const s = spec({ name: 'ok', handler: 'ok.handler' })
    const dir = await task('ok', { fixtures: ['ok.js'] })
    const { pid } = await run(pool, s, dir)
    expect(pool.hasIdle('ok@1')).toBe(true)
    await waitFor(() => gone(pid), { timeoutMs: 5000, message: 'the idle sandbox being stopped' })
    await waitFor(() => !pool.hasIdle('ok@1') && pool.warmKeys().length === 0, { timeoutMs: 5000, message: 'the pool forgetting the idle sandbox' })
    const next = await run(pool, s, dir)
    expect(next.cold).toBe(true)
    expect(next.pid).not.toBe(pid)
  })

  it('retires idle sandboxes of older versions and keeps the current one and other functions', async () => {
    const pool = await newPool()
    const dir = await task('ok', { fixtures: ['ok.js'] })
    const v1 = await run(pool, spec({ name: 'ok', version: 1, handler: 'ok.handler' }), dir)
    const v2 = await run(pool, spec({ name: 'ok', version: 2, handler: 'ok.handler' }), dir)
    const other = await run(pool, spec({ name: 'ok2', version: 1, handler: 'ok.handler' }), dir)
    pool.retire('ok', 2)
    await waitFor(() => gone(v1.pid), { timeoutMs: 5000, message: 'the v1 sandbox being retired' })
    expect(pool.hasIdle('ok@1')).toBe(false)
    expect(pool.hasIdle('ok@2')).toBe(true)
    expect(pool.hasIdle('ok2@1')).toBe(true)
    expect(gone(v2.pid) || gone(other.pid)).toBe(false)
  })

  it('kills busy, idle and generic workers on stop', async () => {
    const pool = await newPool({ prewarm: 1 })
    const okDir = await task('ok', { fixtures: ['ok.js'] })
    const idle = await run(pool, spec({ name: 'ok', handler: 'ok.handler' }), okDir)
    const busy = await acquire(pool, spec({ name: 'hang', handler: 'hang.handler' }), await task('hang', { fixtures: ['hang.js'] }))
    const pending = busy.worker.invoke('req-2', '{}', Date.now() + 60_000)
    expect(pool.size).toBe(3)
    pool.stop()
    expect(pool.isStarted()).toBe(false)
    const out = await within(pending, 10_000, 'the busy invocation ending on stop')
    expect(out.error).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_EXITED', errorMessage: 'Runtime exited with error: signal: killed' })
    await waitFor(() => gone(idle.pid) && gone(busy.pid), { timeoutMs: 5000, message: 'every sandbox exiting' })
    await waitFor(() => pool.size === 0, { timeoutMs: 5000, message: 'the pool seeing every sandbox exit' })
    // A worker given back after stop is not kept.
    pool.release(busy.worker)
    expect(pool.hasIdle('hang@1')).toBe(false)
  })

  it('kills a function that exceeds its memory with FNMESH_ERR_OUT_OF_MEMORY', async () => {
    const pool = await newPool()
    const { out, pid } = await run(pool, spec({ name: 'oom', handler: 'oom.handler', memoryMb: 128, timeoutMs: 30_000 }), await task('oom', { fixtures: ['oom.js'] }), {}, 30_000)
    expect(out.error).toMatchObject({ code: 'FNMESH_ERR_OUT_OF_MEMORY', errorType: 'Runtime.OutOfMemory', trace: [] })
    // Lambda's words: the runtime's end as Go prints it (the memory cgroup's kill, or V8's abort at its heap limit)
    expect(out.error?.errorMessage).toMatch(/^Runtime exited with error: (signal: (killed|aborted)|exit status \d+)$/)
    expect(gone(pid)).toBe(true)
  })
})
