/**
 * Lambda custom runtimes on a real mesh (2 agents, a real nats-server, the gateway on): deployed
 * with `fnmesh deploy --runtime provided`, run through invoke (SDK and CLI), the HTTP gateway and
 * an async event with its retries, each run metered; plus the CLI's error payload (--json) and
 * Lambda's RequestId form of a timeout.
 */
import { execFileSync } from 'node:child_process'
import { chmod, cp, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FnmeshError } from '../../proto/errors.js'
import { which } from '../../node/src/sandbox/layers/detect.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { http, httpPorts } from '../helpers/http.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'

const hasCurl = (() => { try { execFileSync('curl', ['--version'], { stdio: 'ignore' }); return true } catch { return false } })()
const hasPython = (() => { try { execFileSync('/usr/bin/env', ['python3', '--version'], { stdio: 'ignore', env: { PATH: '/usr/local/bin:/usr/bin:/bin' } }); return true } catch { return false } })()

// Agents run custom runtimes only in sandboxes with a mount namespace or a uid of their own (pool.ts).
const confined = process.getuid?.() === 0 || which('bwrap') != null

describe.runIf(hasPython && confined)('custom runtimes (--runtime provided) on a mesh', () => {
  let t: TestMesh
  let root: string

  const usageOf = async (fn: string): Promise<{ invocations: number, errors: number } | undefined> =>
    (await t.mesh.usage({ fn, timeoutMs: 5000 })).functions.find(f => f.name === fn)

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'fnmesh-provided-mesh-'))
    t = await startMesh({ nodes: 2, slots: 4, args: ['--http', '127.0.0.1:0'] })
  })

  afterAll(async () => {
    await t?.stop()
    await rm(root, { recursive: true, force: true })
  })

  it('refuses to deploy a bundle without an executable bootstrap, with a clear code', async () => {
    const none = join(root, 'none')
    await cp(fixture('provided/shell'), none, { recursive: true })
    await rm(join(none, 'bootstrap'))
    const missing = await runCli(['deploy', none, '--name', 'nope', '--runtime', 'provided', '--nats', t.url])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/^error FNMESH_ERR_HANDLER_NOT_FOUND: Cannot deploy "nope" with runtime provided: no file named bootstrap at the top of /)
    await writeFile(join(none, 'bootstrap'), '#!/bin/sh\n')
    await chmod(join(none, 'bootstrap'), 0o644)
    const notExec = await runCli(['deploy', none, '--name', 'nope', '--runtime', 'provided', '--nats', t.url])
    expect(notExec.stderr).toMatch(/its bootstrap is not executable \(chmod \+x\)/)
    const unknown = await runCli(['deploy', none, '--name', 'nope', '--runtime', 'python3.12', '--nats', t.url])
    expect(unknown.stderr).toMatch(/^error FNMESH_ERR_INVALID_ARGUMENT: Runtime "python3.12" is not supported/)
  })

  it('runs a Python 3 bootstrap deployed with the CLI, through invoke (SDK and CLI) and the gateway, each run metered', async () => {
    const dep = await runCli(['deploy', fixture('provided/python'), '--name', 'py', '--runtime', 'provided', '--handler', 'function.handler',
      '--env', 'GREETING=hi', '--route', 'POST /py', '--nats', t.url])
    expect(dep.stderr).toBe('')
    expect(dep.stdout).toMatch(/^deployed py version 1 /)
    expect((await t.mesh.functions()).find(f => f.name === 'py')?.runtime).toBe('provided')
    const out = await t.mesh.invokeDetailed<any>('py', { n: 1 })
    expect(out.result.event).toEqual({ n: 1 })
    expect(out.result.headers['Lambda-Runtime-Aws-Request-Id']).toBe(out.invocationId)
    expect(out.result.env).toMatchObject({ GREETING: 'hi', AWS_LAMBDA_FUNCTION_NAME: 'py', _HANDLER: 'function.handler', AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand' })
    const cli = await runCli(['invoke', 'py', '--data', '{"via":"cli"}', '--nats', t.url])
    expect(cli.code).toBe(0)
    expect(JSON.parse(cli.stdout).event).toEqual({ via: 'cli' })
    // The gateway: the API Gateway 2.0 event in, the runtime's JSON object out as the body.
    const port = httpPorts(t.cluster.agents)[0]
    const r = await waitFor(async () => {
      const res = await http(port, 'POST', '/py', { headers: { 'content-type': 'application/json' }, body: '{"from":"http"}' })
      return res.json?.code === 'FNMESH_ERR_ROUTE_NOT_FOUND' ? undefined : res
    }, { timeoutMs: 10_000, intervalMs: 50, message: 'the route POST /py on the gateway' })
    expect(r.status).toBe(200)
    expect(r.json.event).toMatchObject({ version: '2.0', body: '{"from":"http"}', requestContext: { http: { method: 'POST', path: '/py' } } })
    await waitFor(async () => (await usageOf('py'))?.invocations === 3, { timeoutMs: 15_000, message: 'three metered runs of py' })
  })

  it('prints the whole error payload with invoke --json and the errorType on stderr; a timeout reads as Lambda\'s', async () => {
    const failed = await runCli(['invoke', 'py', '--json', '--data', '{"action":"fail"}', '--nats', t.url])
    expect(failed.code).toBe(1)
    const payload = JSON.parse(failed.stdout)
    expect(payload).toMatchObject({ errorType: 'Python.Failed', errorMessage: 'told to fail', trace: ['bootstrap:44'], code: 'FNMESH_ERR_FUNCTION_ERROR' })
    expect(payload.invocationId).toEqual(expect.any(String))
    expect(failed.stderr).toBe('error FNMESH_ERR_FUNCTION_ERROR: Python.Failed: told to fail\n')
    await t.mesh.deploy({ name: 'py-slow', path: fixture('provided/python'), runtime: 'provided', handler: 'function.handler', timeoutMs: 1000 })
    const err = await t.mesh.invoke('py-slow', { action: 'sleep', seconds: 30 }).then(() => null, (e: unknown) => e) as FnmeshError & { invocationId: string }
    expect(err).toBeInstanceOf(FnmeshError)
    expect(err).toMatchObject({ code: 'FNMESH_ERR_TIMEOUT', errorType: 'Sandbox.Timedout', message: `RequestId: ${err.invocationId} Error: Task timed out after 1.00 seconds` })
    await waitFor(async () => (await usageOf('py-slow'))?.errors === 1, { timeoutMs: 15_000, message: 'the timed-out run metered' })
  })

  it('retries a failing async event as for Node functions: every attempt runs and is metered', async () => {
    await t.mesh.deploy({ name: 'py-async', path: fixture('provided/python'), runtime: 'provided', handler: 'function.handler', triggers: ['provided.jobs'], retries: 1, retryBackoffMs: 10 })
    await t.mesh.publish('provided.jobs', { action: 'fail' })
    await waitFor(async () => {
      const u = await usageOf('py-async')
      return u?.invocations === 2 && u.errors === 2
    }, { timeoutMs: 30_000, message: 'two failed, metered attempts of the event' })
    // Then it is dead-lettered with the runtime's own error
    const dead = await waitFor(async () => (await t.mesh.dlqList({ fn: 'py-async' }))[0], { timeoutMs: 15_000, message: 'the event in the dead-letter stream' })
    expect(dead).toMatchObject({ attempts: 2, error: { code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'Python.Failed', errorMessage: 'told to fail' } })
  })

  it.runIf(hasCurl)('runs the tutorial\'s shell bootstrap (curl)', async () => {
    await t.mesh.deploy({ name: 'sh', path: fixture('provided/shell'), runtime: 'provided', handler: 'function.handler' })
    const out = await t.mesh.invokeDetailed<any>('sh', { n: 2 })
    expect(out.result).toMatchObject({ echo: { n: 2 }, requestId: out.invocationId, handler: 'function.handler', initType: 'on-demand' })
  })
})
