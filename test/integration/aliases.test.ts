/**
 * Issue 15, items 3 and 4, on one mesh of 3 real agents: versions and weighted aliases (SDK and
 * CLI), usage per version, hostile alias values; --reserved across the mesh; --provisioned
 * sandboxes placed on distinct nodes and re-placed when one is killed (last: it kills an agent).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Kvm, type KV } from '@nats-io/kv'
import { connectNats } from '../../core/nats.js'
import { encode } from '../../proto/codec.js'
import type { NatsConnection } from '@nats-io/transport-node'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'

interface Ran { version: string, tag: string | null, initType: string | null, started: number, ended: number }

async function code (p: Promise<unknown>): Promise<string> {
  try { await p; return 'ok' } catch (err: any) { return String(err?.code ?? err) }
}

describe('versions, aliases and mesh-wide concurrency on 3 agents', () => {
  let t: TestMesh
  let nc: NatsConnection
  let kv: KV

  beforeAll(async () => {
    t = await startMesh({ nodes: 3, slots: 4 })
    nc = await connectNats({ servers: t.url })
    kv = await new Kvm(nc).open('fnmesh_functions')
  }, 60_000)

  afterAll(async () => {
    await nc?.close()
    await t?.stop()
  })

  it('runs the latest, a pinned version, or an alias, and moving the alias is a rollback', async () => {
    for (const tag of ['one', 'two', 'three']) await t.mesh.deploy({ name: 'vfn', path: fixture('versioned.js'), env: { TAG: tag } })
    await waitFor(async () => (await t.mesh.invoke<Ran>('vfn')).tag === 'three', { timeoutMs: 10_000, message: 'version 3 serves the unqualified name' })
    const pinned = await t.mesh.invokeDetailed<Ran>('vfn:1')
    expect(pinned.version).toBe(1)
    expect(pinned.result).toMatchObject({ version: '1', tag: 'one' })
    expect((await t.mesh.invoke<Ran>('vfn:$LATEST')).tag).toBe('three')
    expect(await code(t.mesh.invoke('vfn:9'))).toBe('FNMESH_ERR_VERSION_NOT_FOUND')
    expect(await code(t.mesh.invoke('vfn:live'))).toBe('FNMESH_ERR_ALIAS_NOT_FOUND')
    expect(await code(t.mesh.invoke('vfn:no!pe'))).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    expect(await code(t.mesh.invoke('vfn:'))).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    expect(await code(t.mesh.invoke('nofn:1'))).toBe('FNMESH_ERR_NOT_FOUND')

    const set = await runCli(['alias', 'set', 'vfn', 'live', '2', '--json', '--nats', t.url])
    expect(set.code, set.stderr).toBe(0)
    expect(JSON.parse(set.stdout)).toMatchObject({ function: 'vfn', alias: 'live', version: 2, weights: { 2: 1 }, serial: 1, status: 'ok' })
    const viaCli = await runCli(['invoke', 'vfn:live', '--nats', t.url])
    expect(viaCli.code, viaCli.stderr).toBe(0)
    expect(JSON.parse(viaCli.stdout)).toMatchObject({ version: '2', tag: 'two' })
    // Rollback: move the alias back to version 1; every agent follows within a moment.
    await t.mesh.aliasSet('vfn', 'live', 1)
    await waitFor(async () => {
      const seen = await Promise.all(Array.from({ length: 12 }, async () => (await t.mesh.invoke<Ran>('vfn:live')).version))
      return seen.every(v => v === '1')
    }, { timeoutMs: 10_000, message: 'every agent runs version 1 for vfn:live' })
    expect(await code(t.mesh.aliasSet('vfn', 'live', 7))).toBe('FNMESH_ERR_VERSION_NOT_FOUND')
    expect(await code(t.mesh.aliasSet('vfn', '12', 1))).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    const bad = await runCli(['alias', 'set', 'vfn', 'live', '1', '--weight', '2=1.5', '--nats', t.url])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/^error FNMESH_ERR_INVALID_ARGUMENT: /)
  })

  it('splits a weighted alias\'s invocations between its two versions by the weight', async () => {
    const set = await runCli(['alias', 'set', 'vfn', 'canary', '1', '--weight', '3=0.3', '--nats', t.url])
    expect(set.code, set.stderr).toBe(0)
    expect(set.stdout).toMatch(/alias vfn:canary -> 1=0.7 3=0.3/)
    await waitFor(async () => await code(t.mesh.invoke('vfn:canary')) === 'ok', { timeoutMs: 10_000, message: 'the alias is served' })
    const counts: Record<string, number> = {}
    for (let batch = 0; batch < 15; batch++) {
      const runs = await Promise.all(Array.from({ length: 20 }, async () => await t.mesh.invokeDetailed<Ran>('vfn:canary')))
      for (const r of runs) {
        expect(String(r.version)).toBe(r.result.version)
        counts[r.result.version] = (counts[r.result.version] ?? 0) + 1
      }
    }
    expect(Object.keys(counts).sort()).toEqual(['1', '3'])
    // 300 draws at p = 0.3: mean 90, sd 7.9; the window is ~3.8 sd each way.
    expect(counts['3']).toBeGreaterThanOrEqual(60)
    expect(counts['3']).toBeLessThanOrEqual(120)

    const list = await runCli(['alias', 'list', 'vfn', '--json', '--nats', t.url])
    expect(list.code, list.stderr).toBe(0)
    const aliases = JSON.parse(list.stdout) as Array<{ alias: string, weights: Record<string, number>, status: string }>
    expect(aliases.map(a => a.alias)).toEqual(['canary', 'live'])
    expect(aliases[0].weights).toEqual({ 1: 0.7, 3: 0.3 })

    // Usage per version counts every run of each version (from the raw records).
    await waitFor(async () => {
      const rows = await t.mesh.usageByVersion({ fn: 'vfn' })
      const n = (v: number): number => rows.find(r => r.version === v)?.invocations ?? 0
      return n(1) >= counts['1'] && n(3) >= counts['3'] && n(2) >= 1
    }, { timeoutMs: 15_000, message: 'usage per version holds every run' })
    const usage = await runCli(['usage', '--fn', 'vfn', '--by', 'version', '--json', '--nats', t.url])
    expect(usage.code, usage.stderr).toBe(0)
    const versions = (JSON.parse(usage.stdout) as { versions: Array<{ function: string, version: number, invocations: number }> }).versions
    expect(versions.map(v => v.version)).toEqual([1, 2, 3])

    const del = await runCli(['alias', 'delete', 'vfn', 'canary', '--nats', t.url])
    expect(del.code, del.stderr).toBe(0)
    await waitFor(async () => await code(t.mesh.invoke('vfn:canary')) === 'FNMESH_ERR_ALIAS_NOT_FOUND', { timeoutMs: 10_000, message: 'the deleted alias is gone everywhere' })
    const again = await runCli(['alias', 'delete', 'vfn', 'canary', '--nats', t.url])
    expect(again.stderr).toMatch(/^error FNMESH_ERR_ALIAS_NOT_FOUND: /)
  })

  it('refuses hostile alias values with a code while the agents keep serving', async () => {
    await kv.put('alias.vfn.junk', Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x01]))
    await kv.put('alias.vfn.other', encode('FunctionAlias', { function: 'elsewhere', name: 'other', version: 1, serial: 1 }))
    await kv.put('alias.vfn.zero', encode('FunctionAlias', { function: 'vfn', name: 'zero', version: 0, serial: 1 }))
    await kv.put('alias.vfn.heavy', encode('FunctionAlias', { function: 'vfn', name: 'heavy', version: 1, weightedVersion: 2, weightPpm: 2_000_000, serial: 1 }))
    for (const a of ['junk', 'other', 'zero', 'heavy']) {
      expect(await code(t.mesh.invoke(`vfn:${a}`)), a).toBe('FNMESH_ERR_INVALID_ALIAS')
    }
    const list = await t.mesh.aliasList('vfn')
    expect(list.filter(a => a.status === 'invalid').map(a => a.alias).sort()).toEqual(['heavy', 'junk', 'other', 'zero'])
    // The function list does not mistake aliases for functions.
    expect((await t.mesh.functions()).map(f => f.name)).not.toContain('alias.vfn.junk')
    expect((await t.mesh.invoke<Ran>('vfn:live')).version).toBe('1')
    for (const a of t.cluster.agents) expect(a.running, `${a.name} still running`).toBe(true)
  })

  it('runs a function deployed with --reserved 2 at most 2 at once across the mesh and throttles the rest', async () => {
    const dep = await runCli(['deploy', fixture('versioned.js'), '--name', 'capped', '--reserved', '2', '--timeout', '10', '--nats', t.url])
    expect(dep.code, dep.stderr).toBe(0)
    // Warm every node a little so the burst below is about leases, not cold starts.
    await waitFor(async () => await code(t.mesh.invoke('capped')) === 'ok', { timeoutMs: 10_000, message: 'capped is served' })
    const runs: Ran[] = []
    const codes: Record<string, number> = {}
    for (let round = 0; round < 2; round++) {
      const out = await Promise.allSettled(Array.from({ length: 20 }, async () => await t.mesh.invoke<Ran>('capped', { ms: 400 })))
      for (const o of out) {
        if (o.status === 'fulfilled') runs.push(o.value)
        else codes[String((o.reason as any)?.code)] = (codes[String((o.reason as any)?.code)] ?? 0) + 1
      }
    }
    // The highest number of runs in progress at one instant, from the times the function recorded.
    const edges = runs.flatMap(r => [{ at: r.started, d: 1 }, { at: r.ended, d: -1 }]).sort((a, b) => a.at - b.at || a.d - b.d)
    let now = 0
    let max = 0
    for (const e of edges) { now += e.d; max = Math.max(max, now) }
    expect(max, `${runs.length} runs`).toBeLessThanOrEqual(2)
    expect(runs.length).toBeGreaterThanOrEqual(2)
    expect(Object.keys(codes)).toEqual(['FNMESH_ERR_THROTTLED'])
    expect(runs.length + codes.FNMESH_ERR_THROTTLED).toBe(40)
    // Permits come back: a call after the burst runs.
    await waitFor(async () => await code(t.mesh.invoke('capped')) === 'ok', { timeoutMs: 5000, message: 'a call after the burst runs' })
  })

  it('keeps --provisioned 2 sandboxes warm on distinct nodes, never cold for 2 concurrent calls, re-placed when a node dies', async () => {
    const dep = await runCli(['deploy', fixture('versioned.js'), '--name', 'prov', '--provisioned', '2', '--nats', t.url])
    expect(dep.code, dep.stderr).toBe(0)
    const holders = async (): Promise<string[]> => {
      const nodes = await t.mesh.nodes({ timeoutMs: 2000 })
      return nodes.filter(n => n.provisioned.includes('prov@1')).map(n => n.id)
    }
    const ready = await waitFor(async () => { const h = await holders(); return h.length === 2 ? h : null }, { timeoutMs: 20_000, message: 'two nodes hold a provisioned sandbox' })
    // Rounds of 2 overlapping calls, each taken by whichever routers NATS picks: never cold, one
    // on each holder (a router that finds a holder's sandbox taken is sent on to the other).
    for (let round = 0; round < 4; round++) {
      const calls = await Promise.all([t.mesh.invokeDetailed<Ran>('prov', { ms: 300 }), t.mesh.invokeDetailed<Ran>('prov', { ms: 300 })])
      for (const c of calls) {
        expect(c.cold, `round ${round}: call on ${c.nodeId}`).toBe(false)
        expect(c.result.initType).toBe('provisioned-concurrency')
        expect(ready).toContain(c.nodeId)
      }
      expect(new Set(calls.map(c => c.nodeId)).size).toBe(2)
    }

    // Kill a holder: the two others end up holding one each.
    const victim = t.cluster.agents.find(a => a.nodeId === ready[0])
    expect(victim).toBeDefined()
    victim?.kill('SIGKILL')
    const survivors = t.cluster.agents.filter(a => a !== victim).map(a => a.nodeId).sort()
    await waitFor(async () => {
      const h = await holders()
      return h.length === 2 && [...h].sort().join() === survivors.join()
    }, { timeoutMs: 20_000, message: 'the surviving nodes hold the two provisioned sandboxes' })
  })
})
