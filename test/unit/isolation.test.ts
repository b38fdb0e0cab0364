/**
 * Each isolation layer on its own against the attack it is for (the README's table), with every
 * other layer off so that only it can stop the attack; a layer this machine lacks is skipped
 * with the reason. Then the command lines the plan produces, without running them.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { silentLogger } from '../../node/src/logger.js'
import type { IsolationPlan, LayerId } from '../../node/src/sandbox/layers/detect.js'
import { SandboxPool, type SandboxPoolInit } from '../../node/src/sandbox/pool.js'
import type { StoredSpec } from '../../core/registry.js'
import { closePlans, gone, layerReport, needLayers, spec, task, testPlan } from '../helpers/sandbox.js'
import { waitFor, within } from '../helpers/wait.js'

const LAYERS: LayerId[] = ['permission', 'mount', 'net', 'pid', 'uid', 'cgroup-memory', 'cgroup-pids', 'cgroup-cpu', 'rlimit']

/** A plan with only `layers` (and the process layer) on */
const only = (...layers: LayerId[]): IsolationPlan => testPlan({ mode: 'auto', disable: LAYERS.filter(l => !layers.includes(l)) })

describe('isolation layers, one at a time', () => {
  let root: string
  let pools: SandboxPool[]
  let outside: string

  const newPool = async (plan: IsolationPlan, init: Partial<SandboxPoolInit> = {}): Promise<SandboxPool> => {
    const pool = new SandboxPool({ workDir: join(root, 'work'), protectDir: root, plan, prewarm: 0, logger: silentLogger(), ...init })
    pools.push(pool)
    await pool.start()
    return pool
  }

  const run = async (pool: SandboxPool, s: StoredSpec, fixture: string, event: unknown = {}): Promise<any> => {
    const dir = await task(root, s.name, { fixtures: [fixture] })
    const { worker } = await within(pool.acquire(s, dir), 15_000, `loading ${s.name}`)
    const out = await within(worker.invoke('req', JSON.stringify(event), Date.now() + s.timeoutMs), s.timeoutMs + 10_000, `invoking ${s.name}`)
    pool.release(worker)
    return out.ok ? JSON.parse(out.payload as string) : { error: out.error }
  }

  beforeAll(async () => {
    console.log(layerReport(testPlan({ mode: 'auto' })))
    // A secret outside any sandbox's reach: a root-only file in a folder everyone may traverse.
    outside = await mkdtemp(join(tmpdir(), 'fnmesh-outside-'))
    await chmod(outside, 0o755)
    await writeFile(join(outside, 'secret.txt'), 'top secret', { mode: 0o600 })
  })

  afterAll(async () => {
    closePlans()
    await rm(outside, { recursive: true, force: true })
  })

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'fnmesh-iso-'))
    pools = []
  })

  afterEach(async () => {
    for (const pool of pools) pool.stop()
    for (const pool of pools) await pool.settled(5000)
    await rm(root, { recursive: true, force: true })
  })

  it('without any layer but its own process, a function reads what the agent can (the baseline the layers improve on)', async () => {
    const pool = await newPool(only())
    const out = await run(pool, spec({ name: 'base', handler: 'read-files.handler' }), 'hostile/read-files.js', { paths: [join(outside, 'secret.txt')] })
    expect(out[join(outside, 'secret.txt')]).toBe('read 10 bytes')
  })

  it('permission model: denies reads outside the code, writes outside tmp, and child processes', async (ctx) => {
    const plan = only('permission')
    needLayers(ctx, plan, ['permission'])
    const pool = await newPool(plan)
    const read = await run(pool, spec({ name: 'perm-read', handler: 'read-files.handler' }), 'hostile/read-files.js', { paths: [join(outside, 'secret.txt'), '/etc/hostname'] })
    expect(Object.values(read)).toEqual(['ERR_ACCESS_DENIED', 'ERR_ACCESS_DENIED'])
    const spawned = await run(pool, spec({ name: 'perm-spawn', handler: 'spawn.handler' }), 'hostile/spawn.js')
    for (const [how, r] of Object.entries(spawned)) expect(r, how).not.toBe('started')
    const written = await run(pool, spec({ name: 'perm-write', handler: 'write-files.handler' }), 'hostile/write-files.js', { paths: [join(outside, 'new.txt')] })
    expect(written).toEqual({ [join(outside, 'new.txt')]: 'ERR_ACCESS_DENIED', tmp: 'ok' })
  })

  it('mount namespace: the agent\'s files do not exist for the function, only /usr, its code and its tmp', async (ctx) => {
    const plan = only('mount')
    needLayers(ctx, plan, ['mount'])
    const pool = await newPool(plan)
    const out = await run(pool, spec({ name: 'mnt', handler: 'read-files.handler' }), 'hostile/read-files.js', { paths: [join(outside, 'secret.txt'), '/etc/shadow', join(root, 'work')], dirs: ['/', '/var'] })
    expect(out[join(outside, 'secret.txt')]).toBe('ENOENT')
    expect(out['/etc/shadow']).toBe('ENOENT')
    const top = (out['/'] as string).replace(/^listed /, '').split(',')
    expect(top).toEqual(expect.arrayContaining(['usr', 'var', 'tmp', 'proc', 'dev']))
    for (const entry of top) expect(['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'usr', 'var', 'tmp', 'proc', 'dev', 'etc']).toContain(entry)
    expect(out['/var']).toBe('listed runtime,task')
  })

  it('separate uid: root-only files and folders stay closed to the function', async (ctx) => {
    const plan = only('uid')
    needLayers(ctx, plan, ['uid'])
    const pool = await newPool(plan)
    const out = await run(pool, spec({ name: 'uid', handler: 'read-files.handler' }), 'hostile/read-files.js', { paths: [join(outside, 'secret.txt'), '/etc/shadow'], dirs: ['/root'] })
    expect(out).toEqual({ [join(outside, 'secret.txt')]: 'EACCES', '/etc/shadow': 'EACCES', '/root': 'EACCES' })
  })

  describe('network namespace', () => {
    let server: Server
    let port: number

    beforeEach(async () => {
      server = createServer((s) => { s.end() })
      await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
      port = (server.address() as { port: number }).port
    })

    afterEach(async () => { await new Promise(resolve => server.close(resolve)) })

    it('keeps a function without egress off the network, and lets one with egress on', async (ctx) => {
      const plan = only('net')
      needLayers(ctx, plan, ['net'])
      const pool = await newPool(plan)
      const target = `127.0.0.1:${port}`
      const denied = await run(pool, spec({ name: 'nonet', handler: 'network.handler' }), 'hostile/network.js', { targets: [target] })
      expect(denied[target]).not.toBe('connected')
      const allowed = await run(pool, spec({ name: 'net', handler: 'network.handler', egress: true }), 'hostile/network.js', { targets: [target] })
      expect(allowed[target]).toBe('connected')
    })
  })

  describe('pid namespace', () => {
    let bystander: ChildProcess

    beforeEach(() => { bystander = spawn('sleep', ['30'], { stdio: 'ignore' }) })
    afterEach(() => { bystander.kill('SIGKILL') })

    it('hides every process outside the sandbox: a function cannot signal the agent\'s other processes', async (ctx) => {
      const plan = only('pid')
      needLayers(ctx, plan, ['pid'])
      const pool = await newPool(plan)
      const pid = bystander.pid as number
      const out = await run(pool, spec({ name: 'pidns', handler: 'reach-process.handler' }), 'hostile/reach-process.js', { pids: [pid] })
      expect(out[pid]).toMatchObject({ signal: 'ESRCH', kill: 'ESRCH' })
      expect(gone(pid)).toBe(false)
    })
  })

  it('cgroup pids: a fork bomb stops at pids.max and dies with the sandbox at the timeout', async (ctx) => {
    const plan = only('cgroup-pids')
    needLayers(ctx, plan, ['cgroup-pids'])
    const pool = await newPool(plan, { pidsMax: 32 })
    const s = spec({ name: 'bomb', handler: 'fork-bomb.handler', timeoutMs: 2500 })
    const dir = await task(root, 'bomb', { fixtures: ['hostile/fork-bomb.js'] })
    const { worker } = await within(pool.acquire(s, dir), 15_000, 'loading the bomb')
    const out = worker.invoke('req', '{}', Date.now() + s.timeoutMs)
    let most = 0
    await waitFor(() => { most = Math.max(most, worker.cgroupPids().length); return most >= 16 }, { timeoutMs: 2000, intervalMs: 10, message: 'the bomb filling its cgroup' })
    for (let i = 0; i < 20; i++) {
      most = Math.max(most, worker.cgroupPids().length)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    expect(most).toBeLessThanOrEqual(32)
    expect((await within(out, 15_000, 'the bomb timing out')).error?.code).toBe('FNMESH_ERR_TIMEOUT')
    await waitFor(() => worker.cgroupPids().length === 0, { timeoutMs: 5000, message: 'every process of the bomb gone' })
  })

  it.each([
    ['cgroup-memory'],
    ['rlimit']
  ] as Array<[LayerId]>)('%s: Buffers count against the function\'s memory', async (layer, ctx) => {
    const plan = only(layer)
    needLayers(ctx, plan, [layer])
    const pool = await newPool(plan)
    const out = await run(pool, spec({ name: 'oom', handler: 'oom-buffers.handler', memoryMb: 128, timeoutMs: 20_000 }), 'lambda/oom-buffers.js')
    expect(out.error).toMatchObject({ code: 'FNMESH_ERR_OUT_OF_MEMORY', errorType: 'Runtime.OutOfMemory' })
  })

  it('falls back to the permission model alone in auto mode when a sandbox cannot boot with the OS layers, and refuses in strict mode', async (ctx) => {
    const auto = testPlan({ mode: 'auto' })
    needLayers(ctx, auto, ['mount'])
    // bubblewrap that fails: every layer probed fine, the sandbox still cannot boot with them
    const broken = (mode: 'auto' | 'strict'): IsolationPlan => ({ ...auto, mode, tools: { ...auto.tools, bwrap: '/bin/false' } })
    const pool = await newPool(broken('auto'))
    expect(pool.plan?.layers.filter(l => l.active).map(l => l.id)).toEqual(expect.arrayContaining(['process', 'permission']))
    expect(pool.plan?.mount).toBe(false)
    const out = await run(pool, spec({ name: 'fallback', handler: 'read-files.handler' }), 'hostile/read-files.js', { paths: [join(outside, 'secret.txt')] })
    expect(out[join(outside, 'secret.txt')]).toBe('ERR_ACCESS_DENIED')
    const strict = new SandboxPool({ workDir: join(root, 'strict'), plan: broken('strict'), prewarm: 0, logger: silentLogger() })
    pools.push(strict)
    const err = await strict.start().then(() => { throw new Error('started') }, (e: unknown) => e) as { code: string, message: string }
    expect(err.code).toBe('FNMESH_ERR_SANDBOX_UNAVAILABLE')
    expect(err.message).toMatch(/^Cannot start the sandbox pool: a sandbox did not boot with these layers/)
  })

  it('refuses to start in strict mode when an OS layer is missing, naming it', async () => {
    const plan = testPlan({ mode: 'strict', disable: ['net'] })
    const pool = new SandboxPool({ workDir: join(root, 'work'), plan, prewarm: 0, logger: silentLogger() })
    const err = await pool.start().then(() => { throw new Error('started') }, (e: unknown) => e) as { code: string, message: string }
    expect(err.code).toBe('FNMESH_ERR_SANDBOX_UNAVAILABLE')
    expect(err.message).toMatch(/^Cannot start with --sandbox strict: missing isolation layers: .*net \(turned off\)/)
  })
})
