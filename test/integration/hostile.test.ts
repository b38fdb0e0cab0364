/**
 * Hostile functions against a real agent with its sandbox in "auto" mode (every layer this
 * machine offers; the agent's layers are printed): each attack fails, and the agent keeps
 * serving another function after every one. An attack whose blocking layers are all missing
 * here is skipped with the reason.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest'
import { FnmeshError } from '../../proto/errors.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { within } from '../helpers/wait.js'

const AGENT_SECRET = 'agent-secret-7c1f'
const VICTIM_SECRET = 'victim-secret-93ab'

describe('hostile functions on an agent with its sandbox', () => {
  let t: TestMesh
  let dataDir: string
  let active: string[]
  let missing: Record<string, string>

  /** Skips unless at least one of `layers` is active here, printing why */
  const needAny = (ctx: TestContext, layers: string[]): void => {
    if (layers.some(l => active.includes(l))) return
    const why = `skipped "${ctx.task.name}": needs one of ${layers.map(l => `${l} (${missing[l] ?? 'missing'})`).join(', ')}`
    console.log(why)
    ctx.skip(why)
  }

  const invoke = async (fn: string, event: unknown = {}): Promise<any> => await within(t.mesh.invoke(fn, event, { timeoutMs: 30_000 }), 35_000, `invoke ${fn}`)
  const invokeError = async (fn: string, event: unknown = {}): Promise<FnmeshError> => {
    const err = await within(t.mesh.invoke(fn, event, { timeoutMs: 30_000 }).then((r) => { throw new Error(`${fn} succeeded with ${JSON.stringify(r)}`) }, (e: unknown) => e), 35_000, `invoke ${fn}`)
    expect(err).toBeInstanceOf(FnmeshError)
    return err as FnmeshError
  }

  /** The agent is alive and still runs an ordinary function */
  const stillServing = async (): Promise<void> => {
    const agent = t.cluster.agents[0]
    expect(agent.running, 'the agent process is running').toBe(true)
    expect(await invoke('ok', { after: 'attack' })).toMatchObject({ ok: true, event: { after: 'attack' } })
    expect((await t.mesh.nodes()).map(n => n.id)).toEqual([agent.nodeId])
  }

  /** Host pids of the agent's sandbox processes (node running the sandbox runtime) */
  const sandboxPids = (): number[] => {
    const agentPid = t.cluster.agents[0].pid as number
    const parent = new Map<number, number>()
    for (const p of readdirSync('/proc').filter(d => /^\d+$/.test(d))) {
      try { parent.set(Number(p), Number(readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ')[1])) } catch {}
    }
    const under = (pid: number): boolean => { for (let p = pid; p > 1; p = parent.get(p) ?? 0) if (p === agentPid) return true; return false }
    return [...parent.keys()].filter(pid => {
      if (!under(pid)) return false
      try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('runtime/main.js') } catch { return false }
    })
  }

  beforeAll(async () => {
    t = await startMesh({ nodes: 1, slots: 4, env: { FNMESH_TEST_AGENT_SECRET: AGENT_SECRET } })
    const ready = t.cluster.agents[0].ready
    active = ready.layers as string[]
    missing = ready.missingLayers as Record<string, string>
    console.log(`agent sandbox layers: ${active.join(', ')}; missing: ${Object.entries(missing).map(([k, v]) => `${k} (${v})`).join('; ') || 'none'}`)
    dataDir = join(t.cluster.dir, 'agent-1')
    await t.mesh.deploy({ name: 'ok', path: fixture('ok.js') })
    for (const f of ['read-files', 'write-files', 'read-env', 'spawn', 'fork-bomb', 'network', 'reach-process', 'tmp-marker']) {
      await t.mesh.deploy({ name: f, path: fixture(`hostile/${f}.js`) })
    }
    await t.mesh.deploy({ name: 'tmp-marker-2', path: fixture('hostile/tmp-marker.js') })
    await t.mesh.deploy({ name: 'spin', path: fixture('hostile/spin.js'), timeoutMs: 1000 })
    await t.mesh.deploy({ name: 'oom-buffers', path: fixture('lambda/oom-buffers.js'), memoryMb: 128, timeoutMs: 20_000 })
    await t.mesh.deploy({ name: 'victim', path: fixture('hostile/victim.js'), env: { VICTIM_SECRET } })
    await t.mesh.deploy({ name: 'network-egress', path: fixture('hostile/network.js'), egress: true })
    expect(await invoke('ok')).toMatchObject({ ok: true })
  })

  afterAll(async () => {
    await t?.stop()
  })

  it('cannot read the agent\'s files, its data folder, other functions\' code or host secrets', async (ctx) => {
    needAny(ctx, ['mount', 'uid', 'permission'])
    await invoke('victim')
    const sha = (await t.mesh.functions()).find(f => f.name === 'victim')?.sha256 as string
    const paths = [
      join(dataDir, 'node.key'),
      join(dataDir, 'ledger', 'CURRENT'),
      join(dataDir, 'bundles', sha, 'index.js'),
      ...[0, 1, 2, 3, 4, 5].map(i => join(dataDir, 'sandbox', String(i), 'task', 'index.js')),
      join(process.cwd(), 'package.json'),
      '/etc/shadow',
      '/root/.bash_history'
    ]
    const out = await invoke('read-files', { paths, dirs: [dataDir, join(dataDir, 'bundles'), join(dataDir, 'sandbox'), '/'] })
    console.log('read attempts:', JSON.stringify(out))
    for (const p of paths) expect(out[p], `reading ${p}`).not.toMatch(/^read /)
    for (const d of [dataDir, join(dataDir, 'bundles'), join(dataDir, 'sandbox')]) expect(out[d], `listing ${d}`).not.toMatch(/^listed /)
    await stillServing()
  })

  it('cannot write its own code, the agent\'s data or the host, only its own tmp', async (ctx) => {
    needAny(ctx, ['mount', 'uid', 'permission'])
    const paths = ['/var/task/index.js', join(dataDir, 'pwned'), join(dataDir, 'bundles', 'pwned'), '/usr/pwned', '/pwned']
    const out = await invoke('write-files', { paths })
    console.log('write attempts:', JSON.stringify(out))
    for (const p of paths) expect(out[p], `writing ${p}`).not.toBe('written')
    expect(out.tmp).toBe('ok')
    await stillServing()
  })

  it('never sees the agent\'s environment, in its own or in any process it can see', async () => {
    const out = await invoke('read-env')
    const text = JSON.stringify(out)
    expect(text).not.toContain(AGENT_SECRET)
    expect(out.env.FNMESH_TEST_AGENT_SECRET).toBeUndefined()
    expect(out.env.AWS_LAMBDA_FUNCTION_NAME).toBe('read-env')
    await stillServing()
  })

  it('cannot start processes or threads', async (ctx) => {
    needAny(ctx, ['permission'])
    const out = await invoke('spawn')
    console.log('spawn attempts:', JSON.stringify(out))
    for (const [how, result] of Object.entries(out)) expect(result, how).not.toBe('started')
    await stillServing()
  })

  it('cannot fork-bomb the machine', async (ctx) => {
    needAny(ctx, ['permission', 'cgroup-pids'])
    const err = await invokeError('fork-bomb')
    // Denied at the first spawn by the permission model; without it, the pids cgroup caps the bomb
    // and the timeout kills it (test/unit/isolation.test.ts).
    expect(['FNMESH_ERR_FUNCTION_ERROR', 'FNMESH_ERR_TIMEOUT']).toContain(err.code)
    await stillServing()
  })

  it('cannot use memory beyond its limit with Buffers', async (ctx) => {
    needAny(ctx, ['cgroup-memory', 'rlimit'])
    expect((await invokeError('oom-buffers')).code).toBe('FNMESH_ERR_OUT_OF_MEMORY')
    await stillServing()
  })

  it('cannot spin past its timeout', async () => {
    const err = await invokeError('spin')
    expect(err.code).toBe('FNMESH_ERR_TIMEOUT')
    expect(err.errorType).toBe('Sandbox.Timedout')
    await stillServing()
  })

  it('cannot open network connections without egress; with egress it can', async (ctx) => {
    needAny(ctx, ['net'])
    const natsPort = new URL(t.url).port
    const libp2p = t.cluster.agents[0].addrs.find(a => a.startsWith('/ip4/127.0.0.1/tcp/'))?.split('/')[4] as string
    const targets = [`127.0.0.1:${natsPort}`, `127.0.0.1:${libp2p}`, '1.1.1.1:53']
    const out = await invoke('network', { targets })
    console.log('connections without egress:', JSON.stringify(out))
    for (const target of targets) expect(out[target], target).not.toBe('connected')
    // The same code with egress reaches the NATS server: what blocked it was the sandbox.
    expect((await invoke('network-egress', { targets: [`127.0.0.1:${natsPort}`] }))[`127.0.0.1:${natsPort}`]).toBe('connected')
    await stillServing()
  })

  it('cannot reach another function\'s warm sandbox or the agent', async (ctx) => {
    needAny(ctx, ['pid', 'uid'])
    expect(await invoke('victim')).toMatchObject({ alive: true, secretSet: true })
    const pids = [...sandboxPids(), t.cluster.agents[0].pid as number]
    expect(pids.length).toBeGreaterThan(1)
    const out = await invoke('reach-process', { pids })
    console.log('reach attempts (pid: signal 0 / environ / cmdline / SIGKILL):', Object.entries(out).map(([pid, r]: [string, any]) => `${pid}: ${r.signal}/${r.environ}/${r.cmdline}/${r.kill}`).join(', '))
    expect(JSON.stringify(out)).not.toContain(VICTIM_SECRET)
    expect(JSON.stringify(out)).not.toContain(AGENT_SECRET)
    for (const [pid, r] of Object.entries(out) as Array<[string, any]>) {
      expect(r.kill, `SIGKILL to ${pid}`).not.toBe('sent')
      expect(r.signal, `signal 0 to ${pid}`).not.toBe('allowed')
    }
    // The victim's warm sandbox is still there, unharmed.
    const again = await t.mesh.invokeDetailed('victim', {}, { timeoutMs: 10_000 })
    expect(again.cold).toBe(false)
    expect(again.result).toMatchObject({ alive: true, secretSet: true })
    await stillServing()
  })

  it('gives each function a fresh tmp: another function never sees what one left there', async () => {
    expect(await invoke('tmp-marker', { who: 'a' })).toEqual({ found: [] })
    // Warm: the same sandbox keeps its tmp, as on Lambda.
    expect(await invoke('tmp-marker', { who: 'b' })).toEqual({ found: ['marker-a'] })
    expect(await invoke('tmp-marker-2', { who: 'c' })).toEqual({ found: [] })
    await stillServing()
  })

  it('refuses to start with --sandbox strict when an OS layer is turned off', async () => {
    const res = await runCli(['agent', '--sandbox', 'strict', '--nats', t.url, '--name', 'strict-test', '--data', join(t.cluster.dir, 'strict')], { env: { FNMESH_SANDBOX_DISABLE: 'mount' }, timeoutMs: 20_000 })
    expect(res.code).toBe(1)
    expect(res.stderr).toMatch(/^error FNMESH_ERR_SANDBOX_UNAVAILABLE: Cannot start with --sandbox strict: missing isolation layers: .*mount/m)
  })
})
