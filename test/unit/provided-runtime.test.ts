/**
 * Lambda custom runtimes (`runtime: provided`) in real sandboxes: a shell bootstrap in the shape
 * of AWS's tutorial (curl) and a Python 3 one (standard library only) get the Runtime API at
 * AWS_LAMBDA_RUNTIME_API inside the sandbox, with Lambda's headers, status codes and environment;
 * errors, init errors, exits and timeouts end as on Lambda.
 */
import { execFileSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { FnmeshError, FunctionError } from '../../proto/errors.js'
import type { StoredSpec } from '../../core/registry.js'
import { silentLogger } from '../../node/src/logger.js'
import type { IsolationPlan } from '../../node/src/sandbox/layers/detect.js'
import { confinesNativeCode, SandboxPool, type SandboxPoolInit } from '../../node/src/sandbox/pool.js'
import { resultJson, runtimeError } from '../../node/src/sandbox/runtime/provided/api.js'
import type { InvokeOutcome, SandboxWorker } from '../../node/src/sandbox/worker.js'
import { closePlans, gone, layerReport, needLayers, spec, task as makeTask, testPlan } from '../helpers/sandbox.js'
import { waitFor, within } from '../helpers/wait.js'

const hasCurl = (() => { try { execFileSync('curl', ['--version'], { stdio: 'ignore' }); return true } catch { return false } })()
const hasPython = (() => { try { execFileSync('/usr/bin/env', ['python3', '--version'], { stdio: 'ignore', env: { PATH: '/usr/local/bin:/usr/bin:/bin' } }); return true } catch { return false } })()

describe('custom runtimes (provided) served the Lambda Runtime API', () => {
  let root: string
  let pools: SandboxPool[]
  let pids: number[]
  let plan: IsolationPlan

  const newPool = async (init: Partial<SandboxPoolInit> = {}): Promise<SandboxPool> => {
    const pool = new SandboxPool({ workDir: join(root, 'work'), protectDir: root, plan, prewarm: 0, capWaitMs: 0, logger: silentLogger(), ...init })
    pools.push(pool)
    await pool.start()
    return pool
  }

  const provided = (fields: Partial<StoredSpec> & { name: string }): StoredSpec => spec({ handler: 'function.handler', runtime: 'provided', ...fields })
  const python = async (): Promise<string> => await makeTask(root, 'python', { fixtures: ['provided/python/bootstrap'] })

  const acquire = async (pool: SandboxPool, s: StoredSpec, dir: string): Promise<{ worker: SandboxWorker, cold: boolean }> => {
    const got = await within(pool.acquire(s, dir, { invocationId: 'init-1' }), 20_000, `acquiring ${s.name}`)
    pids.push(got.worker.pid as number)
    return got
  }

  const invoke = async (worker: SandboxWorker, id: string, event: unknown, ms = 5000): Promise<InvokeOutcome> =>
    await within(worker.invoke(id, JSON.stringify(event), Date.now() + ms), ms + 10_000, `invocation ${id}`)

  beforeAll(() => {
    plan = testPlan({ mode: 'auto' })
    // Without a mount namespace or a uid of their own, custom runtimes run only under --sandbox none.
    if (!confinesNativeCode(plan)) plan = testPlan({ mode: 'none' })
    console.log(layerReport(plan))
  })
  afterAll(() => { closePlans() })
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'fnmesh-provided-'))
    pools = []
    pids = []
  })
  afterEach(async () => {
    for (const pool of pools) pool.stop()
    await waitFor(() => pids.every(gone), { timeoutMs: 10_000, message: `sandbox processes ${pids.join(', ')} exiting` })
    for (const pool of pools) await pool.settled(5000)
    await rm(root, { recursive: true, force: true })
  })

  it.runIf(hasCurl)('runs the tutorial\'s shell bootstrap (a curl loop) with the handler from _HANDLER, in the task root, warm across invocations', async () => {
    const lines: string[] = []
    const pool = await newPool({ logs: (l) => { lines.push(`${l.invocationId} ${l.message}`) } })
    const dir = await makeTask(root, 'shell', { fixtures: ['provided/shell/bootstrap', 'provided/shell/function.sh'] })
    const s = provided({ name: 'sh' })
    const { worker, cold } = await acquire(pool, s, dir)
    expect(cold).toBe(true)
    const out = await invoke(worker, 'r-1', { n: 1 })
    expect(out.error).toBeUndefined()
    const body = JSON.parse(out.payload as string)
    expect(body).toMatchObject({ echo: { n: 1 }, requestId: 'r-1', handler: 'function.handler', region: 'fnmesh-local', initType: 'on-demand' })
    expect(body.cwd).toBe(body.taskRoot)
    pool.release(worker)
    // Warm: the same sandbox, the bootstrap's loop asks for the next one.
    const again = await acquire(pool, s, dir)
    expect(again.cold).toBe(false)
    expect(again.worker).toBe(worker)
    const second = await invoke(again.worker, 'r-2', 'two')
    expect(JSON.parse(second.payload as string)).toMatchObject({ echo: 'two', requestId: 'r-2' })
    // An error posted to /error, with the type from the runtime
    const failed = await invoke(again.worker, 'r-3', { fail: true })
    expect(failed.error).toEqual({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'Shell.Failed', errorMessage: 'the shell handler was told to fail', trace: ['function.sh'] })
    pool.release(again.worker)
    // stderr lines are the invocation's log lines
    await waitFor(() => lines.some(l => l === 'r-2 shell handling r-2'), { timeoutMs: 5000, message: `the shell's stderr in the log (got ${JSON.stringify(lines)})` })
  })

  it.runIf(hasPython)('runs a Python 3 bootstrap: Lambda\'s headers and environment, one process across invocations', async () => {
    const pool = await newPool()
    const s = provided({ name: 'py', version: 7, memoryMb: 256, env: { GREETING: 'hi', AWS_REGION: 'eu-west-3' } })
    const dir = await python()
    const { worker } = await acquire(pool, s, dir)
    const before = Date.now()
    const out = await invoke(worker, 'req-a', { hello: 'world' }, 3000)
    const body = JSON.parse(out.payload as string)
    expect(body.event).toEqual({ hello: 'world' })
    expect(body.count).toBe(1)
    const h = Object.fromEntries(Object.entries(body.headers as Record<string, string>).map(([k, v]) => [k.toLowerCase(), v]))
    expect(h['lambda-runtime-aws-request-id']).toBe('req-a')
    expect(Number(h['lambda-runtime-deadline-ms'])).toBeGreaterThanOrEqual(before + 2900)
    expect(Number(h['lambda-runtime-deadline-ms'])).toBeLessThanOrEqual(Date.now() + 3000)
    expect(h['lambda-runtime-invoked-function-arn']).toBe('fnmesh:function:py:7')
    expect(h['lambda-runtime-trace-id']).toMatch(/^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0$/)
    expect(body.env).toMatchObject({
      _HANDLER: 'function.handler',
      AWS_LAMBDA_FUNCTION_NAME: 'py',
      AWS_LAMBDA_FUNCTION_VERSION: '7',
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256',
      AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand',
      AWS_REGION: 'eu-west-3',
      AWS_LAMBDA_LOG_GROUP_NAME: '/fnmesh/py',
      AWS_EXECUTION_ENV: null,
      GREETING: 'hi'
    })
    expect(body.env.AWS_LAMBDA_LOG_STREAM_NAME).toMatch(/^\d{4}\/\d{2}\/\d{2}\/\[7\][0-9a-f]{32}$/)
    expect(body.cwd).toBe(body.env.LAMBDA_TASK_ROOT)
    const second = await invoke(worker, 'req-b', { action: 'text' })
    // A body that is not JSON is the result as a string
    expect(second).toMatchObject({ ok: true, payload: '"plain words"' })
    const third = await invoke(worker, 'req-c', null)
    expect(JSON.parse(third.payload as string)).toMatchObject({ count: 3, pid: body.pid, event: null })
  })

  it.runIf(hasPython)('serves sandboxes that share the host network (egress) side by side, each its own API', async () => {
    const pool = await newPool()
    const dir = await python()
    const a = await acquire(pool, provided({ name: 'ea', egress: true }), dir)
    const b = await acquire(pool, provided({ name: 'eb', egress: true }), dir)
    const [x, y] = await Promise.all([invoke(a.worker, 'x-1', 'a'), invoke(b.worker, 'y-1', 'b')])
    expect(JSON.parse(x.payload as string)).toMatchObject({ event: 'a', headers: { 'Lambda-Runtime-Aws-Request-Id': 'x-1' } })
    expect(JSON.parse(y.payload as string)).toMatchObject({ event: 'b', headers: { 'Lambda-Runtime-Aws-Request-Id': 'y-1' } })
  })

  it.runIf(hasPython)('answers Lambda\'s status codes: 400 for another request id, 403 out of order, 404 elsewhere, 413 over the limit (which fails the invocation)', async () => {
    const lines: string[] = []
    const pool = await newPool({ resultLimit: 6 * 1024 * 1024, logs: (l) => { lines.push(l.message) } })
    const { worker } = await acquire(pool, provided({ name: 'probe' }), await python())
    const out = await invoke(worker, 'p-1', { action: 'probe' }, 10_000)
    expect(out.error).toMatchObject({ code: 'FNMESH_ERR_RESULT_INVALID', errorType: 'Runtime.ResponseSizeTooLarge' })
    const report = await waitFor(() => lines.find(l => l.startsWith('{"wrongId"')), { timeoutMs: 5000, message: 'the probe\'s statuses in the log' })
    expect(JSON.parse(report)).toEqual({ wrongId: 400, nextTooSoon: 403, initErrorLate: 403, unknownPath: 404, tooBig: 413, afterAnswer: 403 })
    // The runtime carries on: the next invocation works
    expect((await invoke(worker, 'p-2', { n: 2 })).ok).toBe(true)
  })

  it.runIf(hasPython)('fails the init with the error the bootstrap posts to /init/error, and never reuses the sandbox', async () => {
    const pool = await newPool()
    const err = await within(pool.acquire(provided({ name: 'broken', env: { FAIL_INIT: '1' } }), await python()).then(() => null, (e: unknown) => e), 20_000, 'a failing init') as FunctionError
    expect(err).toBeInstanceOf(FunctionError)
    expect(err).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_INIT', errorType: 'Init.Broken', message: 'told to fail its init', trace: ['bootstrap:1'] })
    expect(pool.warmKeys()).toEqual([])
  })

  it('refuses to run a custom runtime where nothing keeps native code from the agent\'s files (no mount namespace, no uid of its own), unless --sandbox none', async () => {
    const bare = testPlan({ mode: 'auto', disable: ['mount', 'uid'] })
    expect(confinesNativeCode(bare)).toBe(false)
    const pool = await newPool({ plan: bare })
    const err = await pool.acquire(provided({ name: 'bare' }), await python()).then(() => null, (e: unknown) => e) as FnmeshError
    expect(err).toMatchObject({ code: 'FNMESH_ERR_SANDBOX_UNAVAILABLE' })
    expect(err.message).toMatch(/^Cannot run "bare" \(runtime provided\) on this node: a custom runtime is native code/)
    expect(pool.size).toBe(0)
    expect(confinesNativeCode(testPlan({ mode: 'none' }))).toBe(true)
  })

  it('fails the init with Runtime.InvalidEntrypoint when the bundle has no executable bootstrap', async () => {
    const pool = await newPool()
    const missing = await within(pool.acquire(provided({ name: 'none' }), await makeTask(root, 'none', { text: { 'function.sh': 'x' } })).then(() => null, (e: unknown) => e), 20_000, 'init without bootstrap') as FunctionError
    expect(missing).toMatchObject({ code: 'FNMESH_ERR_HANDLER_NOT_FOUND', errorType: 'Runtime.InvalidEntrypoint' })
    expect(missing.message).toMatch(/^Couldn't find valid bootstrap\(s\): \[.*\/bootstrap\]$/)
  })

  it.runIf(hasPython)('a bootstrap killed for memory fails the invocation with Runtime.OutOfMemory', async (ctx) => {
    needLayers(ctx, plan, ['cgroup-memory'])
    const pool = await newPool()
    const { worker } = await acquire(pool, provided({ name: 'hog', memoryMb: 128 }), await python())
    const out = await invoke(worker, 'm-1', { action: 'oom' }, 20_000)
    expect(out.error).toMatchObject({ code: 'FNMESH_ERR_OUT_OF_MEMORY', errorType: 'Runtime.OutOfMemory' })
    expect(out.error?.errorMessage).toMatch(/^Runtime exited with error: signal: killed$/)
  })

  it.runIf(hasPython)('a bootstrap that exits mid-invocation fails it with Runtime.ExitError and its status; one past its deadline is killed (Sandbox.Timedout)', async () => {
    const pool = await newPool()
    const dir = await python()
    const { worker } = await acquire(pool, provided({ name: 'ex' }), dir)
    const exited = await invoke(worker, 'e-1', { action: 'exit' })
    expect(exited.error).toEqual({ code: 'FNMESH_ERR_FUNCTION_EXITED', errorType: 'Runtime.ExitError', errorMessage: 'Runtime exited with error: exit status 3', trace: [] })
    await waitFor(() => worker.state === 'dead', { timeoutMs: 5000, message: 'the sandbox ending after its runtime exited' })
    const slow = await acquire(pool, provided({ name: 'slow' }), dir)
    const timedOut = await invoke(slow.worker, 't-1', { action: 'sleep', seconds: 30 }, 800)
    expect(timedOut.error).toMatchObject({ code: 'FNMESH_ERR_TIMEOUT', errorType: 'Sandbox.Timedout' })
    expect(slow.worker.state).toBe('dead')
  })
})

describe('the Runtime API\'s reading of what a runtime posts', () => {
  it('takes a JSON response as the result, any other body as a string, an empty one as null', () => {
    expect(resultJson(Buffer.from('{"a":1}'))).toBe('{"a":1}')
    expect(resultJson(Buffer.from('42'))).toBe('42')
    expect(resultJson(Buffer.from('hello "x"'))).toBe('"hello \\"x\\""')
    expect(resultJson(Buffer.from(''))).toBe('null')
  })

  it('reads an error body\'s errorType, errorMessage and stackTrace, falling back to the header, then Unhandled', () => {
    const body = (v: unknown): Buffer => Buffer.from(JSON.stringify(v))
    expect(runtimeError(body({ errorType: 'E', errorMessage: 'm', stackTrace: ['a', 2] }), 'H', 'FNMESH_ERR_FUNCTION_ERROR')).toEqual({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'E', errorMessage: 'm', trace: ['a', '2'] })
    expect(runtimeError(body({ errorMessage: 'm' }), 'Custom.Type', 'FNMESH_ERR_FUNCTION_ERROR')).toMatchObject({ errorType: 'Custom.Type', errorMessage: 'm', trace: [] })
    expect(runtimeError(Buffer.from('not json'), undefined, 'FNMESH_ERR_FUNCTION_INIT')).toEqual({ code: 'FNMESH_ERR_FUNCTION_INIT', errorType: 'Unhandled', errorMessage: 'not json', trace: [] })
    expect(runtimeError(body({ errorMessage: 'x'.repeat(100_000) }), undefined, 'C').errorMessage).toHaveLength(64 * 1024)
  })
})
