/**
 * Function code and specs that did not come through the SDK (written straight into the
 * registry) and results the caller cannot be given: each a clear error with a code, nothing
 * written outside the agent's bundle cache, and the agent keeps serving.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decode, encode } from '../../proto/codec.js'
import { FnmeshError } from '../../proto/errors.js'
import { Registry } from '../../core/registry.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor, within } from '../helpers/wait.js'

const CODE = Buffer.from('exports.handler = async () => "should never run"\n')

describe('bad code and bad results on an agent', () => {
  let t: TestMesh
  let registry: Registry
  let dataDir: string

  const invokeError = async (fn: string, event: unknown = {}): Promise<FnmeshError> => {
    const err = await within(t.mesh.invoke(fn, event, { timeoutMs: 20_000 }).then((r) => { throw new Error(`${fn} succeeded with ${JSON.stringify(r)}`) }, (e: unknown) => e), 25_000, `invoke ${fn}`)
    expect(err).toBeInstanceOf(FnmeshError)
    return err as FnmeshError
  }

  const stillServing = async (): Promise<void> => {
    expect(t.cluster.agents[0].running).toBe(true)
    expect(await t.mesh.invoke('ok', { i: 1 }, { timeoutMs: 10_000 })).toMatchObject({ ok: true })
  }

  /** Stores `files` as a bundle and a spec for it, bypassing the SDK's checks */
  const craft = async (name: string, files: Array<{ path: string, data?: Uint8Array }>, handler = 'index.handler'): Promise<void> => {
    const bytes = encode('Bundle', { files: files.map(f => ({ path: f.path, mode: 0o644, data: f.data ?? CODE })) })
    await registry.deploy({ name, handler, memoryMb: 128, timeoutMs: 3000, concurrency: 0, env: {}, triggers: [], egress: false, maxRetries: 2, retryBackoffMs: 1000, maxEventAgeMs: 3_600_000 }, bytes)
  }

  beforeAll(async () => {
    t = await startMesh({ nodes: 1, slots: 2 })
    registry = await Registry.open(t.mesh.nc)
    dataDir = join(t.cluster.dir, 'agent-1')
    await t.mesh.deploy({ name: 'ok', path: fixture('ok.js') })
    await t.mesh.deploy({ name: 'results', path: fixture('lambda/results.js'), timeoutMs: 10_000 })
  })

  afterAll(async () => {
    await t?.stop()
  })

  it.each([
    ['a path climbing out of the bundle', 'climb', [{ path: 'index.js' }, { path: '../evil.js' }]],
    ['an absolute path', 'absolute', [{ path: 'index.js' }, { path: `${'/tmp'}/fnmesh-evil-absolute.js` }]],
    ['a path climbing out from a folder', 'subclimb', [{ path: 'index.js' }, { path: 'lib/../../evil.js' }]],
    ['two files at one path', 'twice', [{ path: 'index.js' }, { path: 'index.js', data: Buffer.from('exports.handler = async () => "second"') }]],
    ['a file where a folder must be', 'clash', [{ path: 'index.js' }, { path: 'lib' }, { path: 'lib/x.js' }]]
  ])('refuses a bundle with %s with FNMESH_ERR_BUNDLE_INVALID, writing nothing outside the cache', async (_what, name, files) => {
    await craft(name, files)
    const err = await invokeError(name)
    expect(err.code).toBe('FNMESH_ERR_BUNDLE_INVALID')
    expect(err.message).toMatch(/Bundle path ".*" (escapes the bundle|is not a plain relative path inside the bundle)|cannot be unpacked/)
    for (const p of [join(dataDir, 'evil.js'), join(dataDir, 'bundles', 'evil.js'), join(t.cluster.dir, 'evil.js'), '/tmp/fnmesh-evil-absolute.js']) expect(existsSync(p), p).toBe(false)
    await stillServing()
  })

  it('refuses a spec claiming code over the bundle limit with FNMESH_ERR_INVALID_SPEC before fetching it', async () => {
    await craft('huge', [{ path: 'index.js' }])
    // The spec claims 60 MB: whoever wrote it, the agent does not fetch what it will not run.
    const spec = decode('FunctionSpec', (await registry.kv.get('huge'))?.value)
    await registry.kv.put('huge', encode('FunctionSpec', {
      name: 'huge', version: spec.version + 1, handler: 'index.handler', memoryMb: 128, timeoutMs: 3000,
      bundleObject: spec.bundleObject, bundleSha256: spec.bundleSha256, bundleSize: 60 * 1024 * 1024, createdAtMs: Date.now(),
      maxRetries: spec.maxRetries, retryBackoffMs: spec.retryBackoffMs, maxEventAgeMs: spec.maxEventAgeMs
    }))
    // Checked with the deploy's rules by every agent (core/spec-rules.ts) before anything is fetched.
    // Version 1 (a sane claim) may still run until the agent's registry follower brings version 2.
    const err = await waitFor(async () => await t.mesh.invokeDetailed('huge', {}, { timeoutMs: 20_000 }).then(() => null, (e: FnmeshError) => e.code === 'FNMESH_ERR_INVALID_SPEC' ? e : null), { timeoutMs: 10_000, message: 'the 60 MB claim refused with FNMESH_ERR_INVALID_SPEC' })
    expect(err.code).toBe('FNMESH_ERR_INVALID_SPEC')
    expect(err.message).toBe(`Function "huge" version ${spec.version + 1} is invalid: its bundle size ${60 * 1024 * 1024} is outside 1 to ${50 * 1024 * 1024} bytes`)
    await stillServing()
  })

  it.each(['../index.handler', 'lib/../../index.handler', '/etc/passwd.handler'])('refuses the handler %j before any sandbox is used', async (handler) => {
    const name = `handler-${handler.length}`
    // The registry's deploy refuses it too: stored here by hand, as any registry writer could.
    await expect(craft(name, [{ path: 'index.js' }], handler)).rejects.toMatchObject({ code: 'FNMESH_ERR_INVALID_SPEC' })
    await craft(name, [{ path: 'index.js' }])
    const spec = decode('FunctionSpec', (await registry.kv.get(name))?.value)
    await registry.kv.put(name, encode('FunctionSpec', { ...spec.toJSON(), version: spec.version + 1, handler } as never))
    // Version 1 (a good handler) may still run until the agent's KV watch brings version 2.
    const err = await waitFor(async () => await t.mesh.invokeDetailed(name, {}, { timeoutMs: 20_000 }).then(() => null, (e: FnmeshError) => e), { timeoutMs: 10_000, message: 'the malformed handler refused' })
    expect(err.code).toBe('FNMESH_ERR_INVALID_SPEC')
    expect(err.message).toMatch(/Handler ".*" is malformed/)
    await stillServing()
  })

  it('counts cold and warm starts in the meter records and in `fnmesh nodes`', async () => {
    await t.mesh.deploy({ name: 'counted', path: fixture('ok.js') })
    // `nodes` reads the node's own advert (every 500 ms): start from one that shows every earlier call.
    const counts = async (): Promise<string> => { const n = (await t.mesh.nodes())[0]; return `${n.coldStarts},${n.warmStarts},${n.invocations}` }
    let previous = ''
    await waitFor(async () => { const now = await counts(); const same = now === previous; previous = now; return same }, { timeoutMs: 10_000, intervalMs: 700, message: 'the advert settling' })
    const before = (await t.mesh.nodes())[0]
    let last: number[] = []
    const runs = []
    for (let i = 0; i < 3; i++) runs.push(await t.mesh.invokeDetailed('counted', { i }, { timeoutMs: 10_000 }))
    expect(runs.map(r => r.cold)).toEqual([true, false, false])
    await waitFor(async () => {
      const now = (await t.mesh.nodes())[0]
      last = [now.coldStarts - before.coldStarts, now.warmStarts - before.warmStarts, now.invocations - before.invocations]
      return last.join() === '1,2,3'
    }, { timeoutMs: 5000, message: 'nodes showing 1 cold start, 2 warm starts and 3 invocations more' }).catch((err) => { throw new Error(`${String(err.message)}; last seen ${last.join(', ')}`) })
    const usage = (await t.mesh.usage({ fn: 'counted' })).functions[0]
    expect(usage).toMatchObject({ name: 'counted', invocations: 3, coldStarts: 1, errors: 0 })
  })

  it('answers a result that is not JSON, or over 6 MiB, with FNMESH_ERR_RESULT_INVALID', async () => {
    const circular = await invokeError('results', { kind: 'circular' })
    expect(circular).toMatchObject({ code: 'FNMESH_ERR_RESULT_INVALID', errorType: 'Runtime.JSONStringifyError' })
    const big = await invokeError('results', { kind: 'big', size: 6 * 1024 * 1024 + 10 })
    expect(big).toMatchObject({ code: 'FNMESH_ERR_RESULT_INVALID', errorType: 'Runtime.ResponseSizeTooLarge' })
    expect(await t.mesh.invoke('results', { kind: 'date' })).toBe('1970-01-01T00:00:00.000Z')
    await stillServing()
  })
})
