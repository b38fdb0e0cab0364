/**
 * Lambda's Node.js handler contract, one fixture per behaviour (test/fixtures/functions/lambda,
 * modelled on what aws-lambda-nodejs-runtime-interface-client tests), run in real sandboxes
 * under every isolation layer this machine offers.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FunctionError } from '../../proto/errors.js'
import { silentLogger } from '../../node/src/logger.js'
import type { IsolationPlan } from '../../node/src/sandbox/layers/detect.js'
import type { FunctionLogLine } from '../../node/src/sandbox/logs.js'
import { SandboxPool } from '../../node/src/sandbox/pool.js'
import type { WireError } from '../../node/src/sandbox/protocol.js'
import type { StoredSpec } from '../../core/registry.js'
import { closePlans, layerReport, needLayers, spec, task, taskFromFolder, testPlan } from '../helpers/sandbox.js'
import { waitFor, within } from '../helpers/wait.js'

const RESULT_LIMIT = 64 * 1024
const LOG_LIMIT = 8 * 1024

describe('Lambda handler contract in real sandboxes', () => {
  let root: string
  let plan: IsolationPlan
  let pool: SandboxPool
  const logs: FunctionLogLine[] = []
  let n = 0

  /** Runs `handler` of a fixture (file or folder under lambda/) once, cold, as a function of its own */
  const call = async (fixture: string, handler: string, event: unknown = {}, fields: Partial<StoredSpec> = {}): Promise<{ ok: true, result: any, invocationId: string } | { ok: false, error: WireError, invocationId: string }> => {
    const name = `fn${++n}`
    const dir = fixture.includes('.')
      ? await task(root, name, { fixtures: [`lambda/${fixture}`] })
      : await taskFromFolder(root, `lambda/${fixture}`)
    const s = spec({ name, handler, ...fields })
    const invocationId = `inv-${name}`
    let acquired
    try {
      acquired = await within(pool.acquire(s, dir, { invocationId }), 15_000, `loading ${fixture}`)
    } catch (err) {
      if (!(err instanceof FunctionError)) throw err
      return { ok: false, invocationId, error: { code: err.code, errorType: err.errorType, errorMessage: err.message, trace: err.trace } }
    }
    const out = await within(acquired.worker.invoke(invocationId, JSON.stringify(event), Date.now() + s.timeoutMs), s.timeoutMs + 10_000, `invoking ${fixture}`)
    pool.release(acquired.worker)
    return out.ok ? { ok: true, result: JSON.parse(out.payload as string), invocationId } : { ok: false, error: out.error as WireError, invocationId }
  }

  const fails = async (...args: Parameters<typeof call>): Promise<WireError> => {
    const out = await call(...args)
    if (out.ok) throw new Error(`expected ${args[0]} to fail, it answered ${JSON.stringify(out.result)}`)
    return out.error
  }

  const answers = async (...args: Parameters<typeof call>): Promise<any> => {
    const out = await call(...args)
    if (!out.ok) throw new Error(`expected ${args[0]} to answer, it failed with ${JSON.stringify(out.error)}`)
    return out.result
  }

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'fnmesh-lambda-'))
    plan = testPlan({ mode: 'auto' })
    console.log(layerReport(plan))
    pool = new SandboxPool({ workDir: join(root, 'work'), protectDir: root, plan, prewarm: 2, resultLimit: RESULT_LIMIT, logLimit: LOG_LIMIT, logger: silentLogger(), logs: (l) => { logs.push(l) } })
    await pool.start()
  })

  afterAll(async () => {
    pool?.stop()
    await pool?.settled(5000)
    closePlans()
    await rm(root, { recursive: true, force: true })
  })

  describe('handlers', () => {
    it('calls an async handler with (event, context, callback) and answers its resolved value', async () => {
      const r = await answers('context.js', 'context.handler', { n: 1 })
      expect(r.event).toEqual({ n: 1 })
      expect(r.argc).toBe(3)
    })

    it('answers with only the first of callback, callback, succeed, fail and done', async () => {
      expect(await answers('callback-first-wins.js', 'callback-first-wins.handler')).toBe('first')
    })

    it('lets a callback called before an async handler returns win over its promise', async () => {
      expect(await answers('callback-then-promise.js', 'callback-then-promise.handler')).toBe('from the callback')
    })

    it('waits for the event loop to empty before answering a callback when callbackWaitsForEmptyEventLoop is true (the default)', async () => {
      expect(await answers('waits-true.js', 'waits-true.handler')).toEqual({ timerRan: true, flag: true })
    })

    it('answers a callback at once, timers pending, when callbackWaitsForEmptyEventLoop is false', async () => {
      expect(await answers('waits-false.js', 'waits-false.handler')).toEqual({ timerRan: false, flag: false })
    })

    it('times out a callback that waits for an event loop that never empties', async () => {
      const e = await fails('waits-forever.js', 'waits-forever.handler', {}, { timeoutMs: 1000 })
      expect(e).toMatchObject({ code: 'FNMESH_ERR_TIMEOUT', errorType: 'Sandbox.Timedout' })
    })

    it('answers null for a handler that neither returns a promise nor calls back, once the loop is empty', async () => {
      expect(await answers('sync-no-callback.js', 'sync-no-callback.handler')).toBeNull()
    })

    it('fails an async handler whose promise can never settle with Runtime.NodeJsExit', async () => {
      const e = await fails('async-never.js', 'async-never.handler')
      expect(e).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'Runtime.NodeJsExit', errorMessage: 'Error: Runtime exited without providing a reason' })
    })

    it.each([
      ['succeed', true, { via: 'succeed' }],
      ['done', true, { via: 'done' }]
    ])('answers through context.%s', async (use, _ok, value) => {
      expect(await answers('context-methods.js', 'context-methods.handler', { use })).toEqual(value)
    })

    it.each([
      ['fail', 'TypeError', 'failed via context.fail'],
      ['doneError', 'Error', 'failed via context.done'],
      ['failEmpty', 'string', 'handled']
    ])('fails through context.%s', async (use, errorType, errorMessage) => {
      expect(await fails('context-methods.js', 'context-methods.handler', { use })).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType, errorMessage })
    })
  })

  describe('modules', () => {
    it('loads an ES module (.mjs)', async () => {
      expect(await answers('esm.mjs', 'esm.handler', 1)).toEqual({ module: 'esm', event: 1 })
    })

    it('loads a CommonJS module (.cjs)', async () => {
      expect(await answers('cjs.cjs', 'cjs.handler', 2)).toEqual({ module: 'cjs', event: 2 })
    })

    it('loads index.js as an ES module when the bundle\'s package.json says "type": "module"', async () => {
      expect(await answers('type-module', 'index.handler')).toBe('esm from .js in a type: module package')
    })

    it('fails CommonJS in a "type": "module" package with the loader\'s ReferenceError, as Lambda', async () => {
      const e = await fails('type-module-cjs', 'index.handler')
      expect(e).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_INIT', errorType: 'ReferenceError' })
      expect(e.errorMessage).toMatch(/exports is not defined in ES module scope/)
    })

    it('prefers an extensionless file, then .js, then .mjs, then .cjs', async () => {
      expect(await answers('precedence', 'index.handler')).toBe('extensionless')
    })

    it('finishes top-level await before the first invocation', async () => {
      expect(await answers('tla.mjs', 'tla.handler')).toBe('ready after top-level await')
    })

    it('fails init with the error\'s own type when top-level await rejects', async () => {
      expect(await fails('tla-reject.mjs', 'tla-reject.handler')).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_INIT', errorType: 'AsyncInitRejectionException', errorMessage: 'Oh noes! something bad happened' })
    })

    it('loads a handler nested in a sub-folder and in nested objects (src/app.nested.deep.handler)', async () => {
      expect(await answers('nested', 'src/app.nested.deep.handler', 'x')).toEqual({ nested: true, event: 'x' })
    })

    it('loads a default export', async () => {
      expect(await answers('default-export.mjs', 'default-export.default')).toBe(42)
    })

    it('resolves packages from the bundle\'s node_modules, from CommonJS and from ESM', async () => {
      expect(await answers('with-deps', 'index.handler', { name: 'mesh' })).toBe('hello mesh')
      expect(await answers('with-deps', 'esm.handler', { name: 'mesh' })).toBe('hello mesh (from ESM)')
    })

    it('loads a handler module that is a package in node_modules', async () => {
      expect(await answers('pkg-handler', 'mypkg.handler')).toBe('handler of a package in node_modules')
    })
  })

  describe('the environment', () => {
    it('is Lambda\'s: on-demand init, a region, the execution env, the log stream of the context, NODE_PATH; no runtime API for Node', async () => {
      const r = await answers('env.js', 'env.handler')
      const major = process.versions.node.split('.')[0]
      expect(r.env).toMatchObject({
        AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand',
        AWS_REGION: 'fnmesh-local',
        AWS_DEFAULT_REGION: 'fnmesh-local',
        AWS_EXECUTION_ENV: `AWS_Lambda_nodejs${major}.x`,
        AWS_LAMBDA_LOG_STREAM_NAME: r.logStreamName,
        NODE_OPTIONS: null,
        AWS_LAMBDA_RUNTIME_API: null
      })
      expect(r.env.NODE_PATH).toMatch(new RegExp(`^/opt/nodejs/node${major}/node_modules:/opt/nodejs/node_modules:.+/node_modules:${r.env.LAMBDA_TASK_ROOT}$`))
      expect(r.stackTraceLimit).toBe(10)
    })

    it('lets the function set AWS_REGION and NODE_OPTIONS, which Node applies (a sandbox started with them)', async () => {
      const r = await answers('env.js', 'env.handler', {}, { env: { AWS_REGION: 'eu-north-1', NODE_OPTIONS: '--enable-source-maps --stack-trace-limit=3' } })
      expect(r.env).toMatchObject({ AWS_REGION: 'eu-north-1', AWS_DEFAULT_REGION: 'eu-north-1', NODE_OPTIONS: '--enable-source-maps --stack-trace-limit=3' })
      expect(r.stackTraceLimit).toBe(3)
      expect(r.sourceMaps).toBe(true)
    })
  })

  describe('the context', () => {
    it('has the invocation id, the function, an fnmesh ARN, memory, log names and a countdown to the deadline', async () => {
      const out = await call('context.js', 'context.handler', {}, { version: 4, memoryMb: 256, timeoutMs: 5000 })
      if (!out.ok) throw new Error(JSON.stringify(out.error))
      const r = out.result
      const name = `fn${n}`
      expect(r).toMatchObject({
        awsRequestId: out.invocationId,
        functionName: name,
        functionVersion: '4',
        invokedFunctionArn: `fnmesh:function:${name}:4`,
        memoryLimitInMB: '256',
        logGroupName: `/fnmesh/${name}`,
        callbackWaitsForEmptyEventLoop: true
      })
      expect(r.logStreamName).toMatch(/^\d{4}\/\d{2}\/\d{2}\/\[4\][0-9a-f]{32}$/)
      expect(r.first).toBeGreaterThan(0)
      expect(r.first).toBeLessThanOrEqual(5000)
      expect(r.second).toBeLessThan(r.first)
    })
  })

  describe('errors in Lambda\'s shape', () => {
    it('reports a thrown Error by its type, message and stack', async () => {
      const e = await fails('errors.js', 'errors.handler', { kind: 'throw' })
      expect(e).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'TypeError', errorMessage: 'thrown' })
      expect(e.trace[0]).toBe('TypeError: thrown')
      expect(e.trace.some(l => /errors\.js:\d+:\d+/.test(l))).toBe(true)
    })

    it.each([
      ['throwString', 'string', 'a string'],
      ['throwNumber', 'number', '42'],
      ['rejectString', 'string', 'rejected string']
    ])('reports a thrown or rejected non-Error (%s) by its typeof and its text', async (kind, errorType, errorMessage) => {
      expect(await fails('errors.js', 'errors.handler', { kind })).toEqual({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType, errorMessage, trace: [] })
    })

    it('reports an Error without a stack by its name (as Lambda\'s runtime client: instanceof Error), with an empty trace', async () => {
      expect(await fails('errors.js', 'errors.handler', { kind: 'noStack' })).toEqual({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'TypeError', errorMessage: 'made without a stack', trace: [] })
      expect(await fails('errors.js', 'errors.handler', { kind: 'deleteStack' })).toEqual({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'RangeError', errorMessage: 'stack deleted', trace: [] })
    })

    it('keeps control characters of an error message and writes DEL as %7F, as Lambda does', async () => {
      const e = await fails('errors.js', 'errors.handler', { kind: 'control' })
      expect(e.errorMessage).toBe('del %7F tab \t bell \x07 end')
      expect(e.trace[0]).toBe('Error: del %7F tab \t bell \x07 end')
    })

    it('reports a rejected promise and an error passed to the callback', async () => {
      expect(await fails('errors.js', 'errors.handler', { kind: 'reject' })).toMatchObject({ errorType: 'RangeError', errorMessage: 'rejected' })
      expect(await fails('errors.js', 'errors.handler', { kind: 'callback' })).toMatchObject({ errorType: 'Error', errorMessage: 'via callback' })
    })

    it('reports an unhandled rejection as Runtime.UnhandledPromiseRejection and an uncaught exception by its type', async () => {
      expect(await fails('errors.js', 'errors.handler', { kind: 'unhandled' })).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'Runtime.UnhandledPromiseRejection', errorMessage: 'Error: nobody catches me' })
      expect(await fails('errors.js', 'errors.handler', { kind: 'uncaught' })).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'SyntaxError', errorMessage: 'thrown from a timer' })
    })

    it('reports process.exit as Runtime.ExitError with the status', async () => {
      expect(await fails('errors.js', 'errors.handler', { kind: 'exit' })).toEqual({ code: 'FNMESH_ERR_FUNCTION_EXITED', errorType: 'Runtime.ExitError', errorMessage: 'Runtime exited with error: exit status 7', trace: [] })
    })

    it('reports a missing handler module as Runtime.ImportModuleError (FNMESH_ERR_HANDLER_NOT_FOUND)', async () => {
      const e = await fails('esm.mjs', 'nope.handler')
      expect(e).toMatchObject({ code: 'FNMESH_ERR_HANDLER_NOT_FOUND', errorType: 'Runtime.ImportModuleError' })
      expect(e.errorMessage).toMatch(/^Error: Cannot find module 'nope'/)
    })

    it('reports a missing dependency as Runtime.ImportModuleError (FNMESH_ERR_FUNCTION_INIT)', async () => {
      const e = await fails('import-missing.js', 'import-missing.handler')
      expect(e).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_INIT', errorType: 'Runtime.ImportModuleError' })
      expect(e.errorMessage).toMatch(/^Error: Cannot find module 'does-not-exist'/)
    })

    it('reports a missing export and an export that is not a function as Runtime.HandlerNotFound', async () => {
      expect(await fails('esm.mjs', 'esm.other')).toMatchObject({ code: 'FNMESH_ERR_HANDLER_NOT_FOUND', errorType: 'Runtime.HandlerNotFound', errorMessage: 'esm.other is undefined or not exported' })
      expect(await fails('not-a-function.js', 'not-a-function.handler')).toMatchObject({ code: 'FNMESH_ERR_HANDLER_NOT_FOUND', errorType: 'Runtime.HandlerNotFound', errorMessage: 'not-a-function.handler is not a function' })
    })

    it.each([
      ['esm', 'Bad handler'],
      ['../esm.handler', "'../esm.handler' is not a valid handler name. Use absolute paths when specifying root directories in handler names."],
      ['src/../esm.handler', "'src/../esm.handler' is not a valid handler name. Use absolute paths when specifying root directories in handler names."],
      ['/etc/passwd.x', "'/etc/passwd.x' is not a valid handler name. The module must be a path inside the function's code"]
    ])('refuses the malformed handler %j with Runtime.MalformedHandlerName, before using a sandbox', async (handler, errorMessage) => {
      const before = pool.coldStarts
      expect(await fails('esm.mjs', handler)).toMatchObject({ code: 'FNMESH_ERR_HANDLER_NOT_FOUND', errorType: 'Runtime.MalformedHandlerName', errorMessage })
      expect(pool.coldStarts, 'sandboxes specialised').toBe(before)
    })

    it.each(['syntax-error.js', 'syntax-error.mjs'])('reports a syntax error in %s as Runtime.UserCodeSyntaxError', async (file) => {
      const e = await fails(file, 'syntax-error.handler')
      expect(e).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_INIT', errorType: 'Runtime.UserCodeSyntaxError' })
      expect(e.errorMessage).toMatch(/^SyntaxError: /)
    })

    it('kills a function past its timeout with Sandbox.Timedout and FNMESH_ERR_TIMEOUT', async () => {
      expect(await fails('waits-forever.js', 'waits-forever.handler', {}, { timeoutMs: 500 })).toEqual({ code: 'FNMESH_ERR_TIMEOUT', errorType: 'Sandbox.Timedout', errorMessage: 'Task timed out', trace: [] })
    })

    it('stops a function that fills memory with Buffers (outside the V8 heap) with FNMESH_ERR_OUT_OF_MEMORY', async (ctx) => {
      // The memory cgroup, or RLIMIT_DATA where cgroups are missing: either bounds Buffers.
      if (!plan.layers.some(l => l.active && (l.id === 'cgroup-memory' || l.id === 'rlimit'))) needLayers(ctx, plan, ['cgroup-memory'])
      const e = await fails('oom-buffers.js', 'oom-buffers.handler', {}, { memoryMb: 128, timeoutMs: 20_000 })
      expect(e.code).toBe('FNMESH_ERR_OUT_OF_MEMORY')
      expect(e.errorType).toBe('Runtime.OutOfMemory')
    })
  })

  describe('results', () => {
    it.each([
      ['undefined', null],
      ['function', null],
      ['date', '1970-01-01T00:00:00.000Z']
    ])('answers %s as JSON does', async (kind, value) => {
      expect(await answers('results.js', 'results.handler', { kind })).toEqual(value)
    })

    it.each(['circular', 'bigint'])('refuses a %s result with FNMESH_ERR_RESULT_INVALID and keeps the sandbox', async (kind) => {
      const e = await fails('results.js', 'results.handler', { kind })
      expect(e).toMatchObject({ code: 'FNMESH_ERR_RESULT_INVALID', errorType: 'Runtime.JSONStringifyError' })
      expect(e.errorMessage).toMatch(/^Unable to stringify response body: /)
    })

    it('refuses a result over the limit with Runtime.ResponseSizeTooLarge and answers one just under it', async () => {
      const e = await fails('results.js', 'results.handler', { kind: 'big', size: RESULT_LIMIT })
      expect(e).toMatchObject({ code: 'FNMESH_ERR_RESULT_INVALID', errorType: 'Runtime.ResponseSizeTooLarge' })
      expect(e.errorMessage).toBe(`Response payload size (${RESULT_LIMIT + 2} bytes) exceeded maximum allowed payload size (${RESULT_LIMIT} bytes)`)
      expect((await answers('results.js', 'results.handler', { kind: 'big', size: RESULT_LIMIT - 2 })).length).toBe(RESULT_LIMIT - 2)
    })
  })

  describe('logs', () => {
    const linesOf = (invocationId: string): FunctionLogLine[] => logs.filter(l => l.invocationId === invocationId)

    it('captures every console method at its level and raw stdout/stderr, each line with the invocation id', async () => {
      const out = await call('logs.js', 'logs.handler')
      expect(out.ok).toBe(true)
      const want = [
        ['INFO', "log with formatting { a: 1 }"],
        ['INFO', 'info line'],
        ['WARN', 'warn line'],
        ['ERROR', 'error line'],
        ['DEBUG', 'debug line'],
        ['STDOUT', 'raw stdout line'],
        ['STDERR', 'raw stderr line'],
        ['INFO', 'multi\nline']
      ]
      await waitFor(() => linesOf(out.invocationId).length >= want.length + 1, { timeoutMs: 5000, message: 'the log lines arriving' })
      const lines = linesOf(out.invocationId)
      const pairs = lines.map(l => [l.level, l.message])
      for (const w of want) expect(pairs).toContainEqual(w)
      const trace = lines.find(l => l.level === 'TRACE')
      expect(trace?.message).toMatch(/^Trace: trace line\n\s+at /)
      for (const l of lines) expect(l).toMatchObject({ function: expect.stringMatching(/^fn\d+$/), version: 1 })
    })

    it('cuts an invocation\'s log at the limit and says so once', async () => {
      const out = await call('logs.js', 'logs.handler', { flood: 100 })
      expect(out.ok).toBe(true)
      await waitFor(() => linesOf(out.invocationId).some(l => l.message.startsWith('[fnmesh] log output cut')), { timeoutMs: 5000, message: 'the cut notice' })
      const lines = linesOf(out.invocationId)
      const kept = lines.filter(l => l.level === 'INFO')
      expect(kept.length).toBeGreaterThan(0)
      expect(kept.length).toBeLessThan(100)
      expect(kept.reduce((sum, l) => sum + Buffer.byteLength(l.message), 0)).toBeLessThanOrEqual(LOG_LIMIT)
      expect(lines.filter(l => l.message.startsWith('[fnmesh] log output cut'))).toHaveLength(1)
    })
  })

  describe('trace context', () => {
    it('gives each invocation its own trace in context.traceparent and _X_AMZN_TRACE_ID, and none to one without', async () => {
      const dir = await task(root, 'tracefn', { text: { 'index.js': 'exports.handler = async (e, context) => ({ tp: context.traceparent ?? null, ts: context.tracestate ?? null, xray: process.env._X_AMZN_TRACE_ID ?? null })\n' } })
      const s = spec({ name: 'tracefn', handler: 'index.handler' })
      const { worker } = await within(pool.acquire(s, dir, { invocationId: 'tr-1' }), 15_000, 'loading tracefn')
      try {
        const run = async (id: string, extra?: Parameters<typeof worker.invoke>[3]): Promise<any> => {
          const out = await within(worker.invoke(id, '{}', Date.now() + 5000, extra), 15_000, `invoking ${id}`)
          if (!out.ok) throw new Error(JSON.stringify(out.error))
          return JSON.parse(out.payload as string)
        }
        const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
        const xray = 'Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1'
        expect(await run('tr-1', { traceparent: tp, tracestate: 'k=v', xrayTraceId: xray })).toEqual({ tp, ts: 'k=v', xray })
        // the next invocation in the same warm sandbox does not inherit the previous trace
        expect(await run('tr-2')).toEqual({ tp: null, ts: null, xray: null })
      } finally {
        pool.release(worker)
      }
    })
  })
})
