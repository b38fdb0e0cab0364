/**
 * Nothing a registry writer can send takes the mesh down: specs written straight into the KV
 * bucket with a plain NATS client (no CLI checks, no signature, someone else's key) are refused
 * by every agent with a coded reason, while the agents stay up, keep serving every other
 * function, restart fine, and `fnmesh functions` shows what is wrong.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Kvm, type KV } from '@nats-io/kv'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decode, encode, type FunctionSpec } from '../../proto/codec.js'
import { FnmeshError } from '../../proto/errors.js'
import { FUNCTIONS_BUCKET } from '../../proto/subjects.js'
import { spawnAgent, type AgentProcess } from '../../node/src/dev/cluster.js'
import type { FunctionInfo } from '../../sdk/src/client.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { sleep, waitFor, within } from '../helpers/wait.js'

/** The code an invocation ends with ('ok' on success), and how long it took */
async function outcome (p: Promise<unknown>): Promise<{ code: string, ms: number }> {
  const started = Date.now()
  const err = await within(p.then(() => 'ok', (e: unknown) => e), 30_000, 'invocation')
  const ms = Date.now() - started
  if (err === 'ok') return { code: 'ok', ms }
  expect(err).toBeInstanceOf(FnmeshError)
  return { code: (err as FnmeshError).code, ms }
}

/** A decoded spec as a plain object to change and encode again */
function plain (s: FunctionSpec): Record<string, unknown> {
  return {
    name: s.name,
    version: s.version,
    handler: s.handler,
    memoryMb: s.memoryMb,
    timeoutMs: s.timeoutMs,
    concurrency: s.concurrency,
    env: { ...s.env },
    triggers: [...s.triggers],
    egress: s.egress,
    bundleObject: s.bundleObject,
    bundleSha256: s.bundleSha256,
    bundleSize: s.bundleSize,
    createdAtMs: s.createdAtMs,
    maxRetries: s.maxRetries,
    retryBackoffMs: s.retryBackoffMs,
    maxEventAgeMs: s.maxEventAgeMs
  }
}

async function functionsJson (url: string): Promise<Map<string, FunctionInfo>> {
  const r = await runCli(['functions', '--json', '--nats', url])
  expect(r.code, r.stderr).toBe(0)
  return new Map((JSON.parse(r.stdout) as FunctionInfo[]).map(f => [f.name, f]))
}

/** Invokes `fn` every 100 ms until stopped; counts what did not succeed */
function keepInvoking (t: TestMesh, fn: string): { stop: () => Promise<{ ok: number, failed: string[] }> } {
  let running = true
  const failed: string[] = []
  let ok = 0
  const loop = (async () => {
    while (running) {
      const r = await outcome(t.mesh.invoke(fn, { n: ok }))
      if (r.code === 'ok') ok++
      else failed.push(r.code)
      await sleep(100)
    }
  })()
  return { stop: async () => { running = false; await loop; return { ok, failed } } }
}

/** Restarts every agent of the mesh on its own data folder */
async function restartAll (t: TestMesh): Promise<void> {
  const agents = t.cluster.agents
  await Promise.all(agents.map(async a => await a.stop()))
  const again: AgentProcess[] = await Promise.all(agents.map(async a => await spawnAgent(a.options)))
  // The cluster stops what is in its list: the new processes replace the old ones there.
  agents.splice(0, agents.length, ...again)
  await t.waitForNodes(agents.length, 20_000)
}

describe('hostile registry values, with real agents', () => {
  let t: TestMesh
  let kv: KV
  let template: Record<string, unknown>

  beforeAll(async () => {
    t = await startMesh({ nodes: 2, slots: 4 })
    await t.mesh.deploy({ name: 'good', path: fixture('ok.js') })
    kv = await new Kvm(t.mesh.nc).open(FUNCTIONS_BUCKET)
    // Real bundle fields: each raw spec below breaks exactly one rule.
    template = plain(decode('FunctionSpec', (await kv.get('good'))!.value))
  })

  afterAll(async () => {
    await t?.stop()
  })

  const raw: Array<[key: string, change: Record<string, unknown>]> = [
    ['bad-sqs', { triggers: ['sqs:orders'] }],
    ['bad-rate', { triggers: ['rate:0m'] }],
    ['bad-cron', { triggers: ['cron:nope'] }],
    ['huge-memory', { memoryMb: 2 ** 31 }],
    ['huge-timeout', { timeoutMs: 2 ** 31 }],
    ['reserved-env', { env: { NODE_OPTIONS: '--require /tmp/evil.js' } }],
    ['big-env', { env: { BIG: 'x'.repeat(5000) } }],
    ['version-zero', { version: 0 }],
    ['wrong-key', { name: 'good' }]
  ]

  it('refuses every hostile spec with its code, quickly, while the agents stay up and keep serving', async () => {
    expect((await outcome(t.mesh.invoke('good', {}))).code).toBe('ok')
    const refusedLog = t.cluster.agents.map(a => a.waitForLog(l => l.msg === 'refused a function spec from the registry: it is not run, bound or served' && l.fn === 'bad-sqs', 20_000))
    const during = keepInvoking(t, 'good')
    for (const [key, change] of raw) {
      await kv.put(key, encode('FunctionSpec', { ...template, name: key, ...change } as never))
    }
    await kv.put('garbage', Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x01, 0x02, 0x03]))
    // A key no function name can be (the SDK will not even send an invocation for it)
    await kv.put('odd.key', encode('FunctionSpec', { ...template, name: 'odd.key' } as never))
    for (const line of await Promise.all(refusedLog)) expect(line.code).toBe('FNMESH_ERR_INVALID_SPEC')

    for (const [key] of [...raw, ['garbage']]) {
      for (let i = 0; i < 3; i++) {
        const r = await outcome(t.mesh.invoke(key, {}))
        expect(r.code, key).toBe('FNMESH_ERR_INVALID_SPEC')
        expect(r.ms, `${key} answered promptly`).toBeLessThan(5000)
      }
    }
    // Long enough for an agent that would die of what its watch brought to have died.
    await sleep(1500)
    const { ok, failed } = await during.stop()
    expect(failed, 'the good function kept serving').toEqual([])
    expect(ok).toBeGreaterThan(5)
    for (const a of t.cluster.agents) expect(a.running, `${a.name} still running`).toBe(true)
  })

  it('lists the hostile specs in fnmesh functions with status and reason, undecodable ones too', async () => {
    const fns = await functionsJson(t.url)
    expect(fns.get('good')).toMatchObject({ status: 'ok', code: '', reason: '', signature: 'unsigned' })
    const reasons: Record<string, RegExp> = {
      'bad-sqs': /unknown trigger kind "sqs"/,
      'bad-rate': /rate is at least 1 second/,
      'bad-cron': /Trigger "cron:nope" is invalid/,
      'huge-memory': /memoryMb of "huge-memory" is 2147483648/,
      'huge-timeout': /timeoutMs of "huge-timeout" is 2147483648/,
      'reserved-env': /"NODE_OPTIONS" may not hold "--require \/tmp\/evil.js": it may name only files of the function's own code/,
      'big-env': /5003 bytes: the limit is 4096/,
      'version-zero': /version 0 is outside/,
      'wrong-key': /stored under key "wrong-key" but names itself "good"/,
      garbage: /does not decode/,
      'odd.key': /Function name "odd.key" is invalid/
    }
    for (const [name, re] of Object.entries(reasons)) {
      const f = fns.get(name)
      expect(f, name).toBeDefined()
      expect(f?.status, name).toBe('invalid')
      expect(f?.code, name).toBe('FNMESH_ERR_INVALID_SPEC')
      expect(f?.reason, name).toMatch(re)
    }
    const text = await runCli(['functions', '--nats', t.url])
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout).toMatch(/^invalid bad-sqs: FNMESH_ERR_INVALID_SPEC: .*unknown trigger kind "sqs"/m)
    expect(text.stdout).toMatch(/^good\s+ok\s+1\s/m)
  })

  it('restarts agents with the hostile specs stored, which go on refusing them and serving the rest', async () => {
    await restartAll(t)
    await sleep(1000)
    for (const a of t.cluster.agents) expect(a.running, `${a.name} still running after its restart`).toBe(true)
    expect((await outcome(t.mesh.invoke('good', {}))).code).toBe('ok')
    expect((await outcome(t.mesh.invoke('bad-cron', {}))).code).toBe('FNMESH_ERR_INVALID_SPEC')
    // A deploy over a hostile value repairs the function (its version counts from valid values only).
    const dep = await t.mesh.deploy({ name: 'garbage', path: fixture('ok.js') })
    expect(dep.version).toBe(1)
    await waitFor(async () => (await outcome(t.mesh.invoke('garbage', {}))).code === 'ok', { timeoutMs: 10_000, message: 'the redeployed function runs' })
    const fixed = await t.mesh.deploy({ name: 'huge-memory', path: fixture('ok.js') })
    expect(fixed.version).toBe(2)
    await waitFor(async () => (await outcome(t.mesh.invoke('huge-memory', {}))).code === 'ok', { timeoutMs: 10_000, message: 'the redeployed function runs' })
  })
})

describe('hostile registry values, with agents that run only signed deploys', () => {
  let t: TestMesh
  let kv: KV
  let dir: string
  let keyA: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-hostile-'))
    keyA = join(dir, 'alice.pem')
    const alice = await runCli(['keys', 'deployer', 'create', '--out', keyA])
    expect(alice.code, alice.stderr).toBe(0)
    await mkdir(join(dir, 'trusted'))
    await writeFile(join(dir, 'trusted', 'alice.pub'), alice.stdout)
    t = await startMesh({ nodes: 2, slots: 4, args: ['--trust', join(dir, 'trusted')] })
    kv = await new Kvm(t.mesh.nc).open(FUNCTIONS_BUCKET)
    await t.mesh.deploy({ name: 'good', path: fixture('ok.js'), signingKey: keyA })
  })

  afterAll(async () => {
    await t?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('ignores an unsigned spec with a trigger it cannot parse, without exiting', async () => {
    const template = plain(decode('FunctionSpec', (await kv.get('good'))!.value))
    const during = keepInvoking(t, 'good')
    await kv.put('unsigned-sqs', encode('FunctionSpec', { ...template, name: 'unsigned-sqs', triggers: ['sqs:orders'] } as never))
    const r = await outcome(t.mesh.invoke('unsigned-sqs', {}))
    expect(r.code).toBe('FNMESH_ERR_UNSIGNED_DEPLOY')
    expect(r.ms).toBeLessThan(5000)
    await sleep(500)
    const { failed } = await during.stop()
    expect(failed).toEqual([])
    for (const a of t.cluster.agents) expect(a.running, `${a.name} still running`).toBe(true)
  })

  it('gives a sane next version after a tampered spec with version 2^32-1, and runs it', async () => {
    const first = await t.mesh.deploy({ name: 'pinned', path: fixture('ok.js'), signingKey: keyA })
    expect(first.version).toBe(1)
    const spec = decode('FunctionSpec', (await kv.get('pinned'))!.value)
    const body = encode('FunctionSpec', { ...plain(spec), version: 2 ** 32 - 1 } as never)
    await kv.put('pinned', Buffer.concat([body, encode('FunctionSpec', { signature: spec.signature })]))
    await waitFor(async () => (await outcome(t.mesh.invoke('pinned', {}))).code === 'FNMESH_ERR_SIGNATURE_INVALID', { timeoutMs: 10_000, message: 'the tampered version refused' })
    expect((await functionsJson(t.url)).get('pinned')).toMatchObject({ version: 2 ** 32 - 1, signature: 'invalid', status: 'invalid' })

    const next = await t.mesh.deploy({ name: 'pinned', path: fixture('ok.js'), signingKey: keyA })
    expect(next.version, 'one more than the newest version signed by this deployer').toBe(2)
    const ran = await waitFor(async () => await t.mesh.invokeDetailed('pinned', {}).catch(() => null), { timeoutMs: 10_000, message: 'the new signed version runs' })
    expect(ran.version).toBe(2)
  })

  it('refuses a signed spec stored under another function\'s key', async () => {
    await kv.put('impostor', (await kv.get('good'))!.value)
    const r = await outcome(t.mesh.invoke('impostor', {}))
    expect(r.code).toBe('FNMESH_ERR_INVALID_SPEC')
    expect((await functionsJson(t.url)).get('impostor')).toMatchObject({ status: 'invalid', signature: 'signed', reason: expect.stringMatching(/stored under key "impostor" but names itself "good"/) })
    expect((await outcome(t.mesh.invoke('good', {}))).code).toBe('ok')
  })

  it('refuses an older signed spec put back while the agents were down, after their restart', async () => {
    await t.mesh.deploy({ name: 'rolled', path: fixture('throw.js'), signingKey: keyA })
    const v1 = (await kv.get('rolled'))!.value
    await t.mesh.deploy({ name: 'rolled', path: fixture('ok.js'), signingKey: keyA })
    await waitFor(async () => (await t.mesh.invokeDetailed('rolled', {}).catch(() => null))?.version === 2, { timeoutMs: 10_000, message: 'version 2 runs' })
    // Every agent's watch brings version 2 within moments; a drained agent has saved what it saw.
    await sleep(500)

    const agents = t.cluster.agents
    await Promise.all(agents.map(async a => await a.stop()))
    await kv.put('rolled', v1)
    const again = await Promise.all(agents.map(async a => await spawnAgent(a.options)))
    agents.splice(0, agents.length, ...again)
    await t.waitForNodes(2, 20_000)

    for (let i = 0; i < 4; i++) {
      const r = await outcome(t.mesh.invoke('rolled', {}))
      expect(r.code, 'the replayed version 1 never runs').toBe('FNMESH_ERR_SPEC_ROLLBACK')
    }
    expect((await outcome(t.mesh.invoke('good', {}))).code).toBe('ok')
    // The deployer's next version passes both: one more than the newest it signed.
    const next = await t.mesh.deploy({ name: 'rolled', path: fixture('ok.js'), signingKey: keyA })
    expect(next.version).toBe(3)
    await waitFor(async () => (await t.mesh.invokeDetailed('rolled', {}).catch(() => null))?.version === 3, { timeoutMs: 10_000, message: 'version 3 runs' })
    for (const a of t.cluster.agents) expect(a.running).toBe(true)
  })
})
