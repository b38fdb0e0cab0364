import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Kvm } from '@nats-io/kv'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'

const code = async (p: Promise<unknown>): Promise<string> => await p.then(() => 'no error', (err: any) => String(err?.code))

describe('bindings: functions keep state in NATS KV and object stores through their agent', () => {
  let t: TestMesh
  const path = fixture('bindings')

  beforeAll(async () => {
    t = await startMesh({ nodes: 2, slots: 6 })
  }, 60_000)

  afterAll(async () => {
    await t?.stop()
  })

  it('ends at exactly 100 after 100 compare-and-set increments, 10 at a time', async () => {
    await t.mesh.deploy({ name: 'incr', path, handler: 'index.incr', timeoutMs: 30_000, bindings: ['counts=kv:bind_counts'] })
    const values: number[] = []
    for (let round = 0; round < 10; round++) {
      const outs = await Promise.all(Array.from({ length: 10 }, async () => await t.mesh.invoke<{ value: number }>('incr', {}, { timeoutMs: 60_000 })))
      values.push(...outs.map(o => o.value))
    }
    expect(values.sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1))
    // The bucket was made by the deploy and holds the truth.
    const kv = await new Kvm(t.mesh.nc).open('bind_counts')
    const entry = await kv.get('n')
    expect(new TextDecoder().decode(entry?.value)).toBe('100')
  }, 120_000)

  it('meters binding calls and bytes per function, in usage and in fnmesh usage --json', async () => {
    await waitFor(async () => (await t.mesh.usage({ fn: 'incr' })).functions[0]?.invocations === 100, { timeoutMs: 15_000, message: 'the 100 runs of incr in usage' })
    const f = (await t.mesh.usage({ fn: 'incr' })).functions[0]
    // at least a get and a put per run; bytes of the values read and written
    expect(f.bindingCalls).toBeGreaterThanOrEqual(200)
    expect(f.bindingBytes).toBeGreaterThanOrEqual(100)
    const cli = await runCli(['usage', '--fn', 'incr', '--json', '--nats', t.url])
    expect(cli.code, cli.stderr).toBe(0)
    expect(JSON.parse(cli.stdout).functions[0]).toMatchObject({ name: 'incr', invocations: 100, bindingCalls: f.bindingCalls, bindingBytes: f.bindingBytes })
  }, 30_000)

  it('writes an object of 3 MB and reads it back, byte for byte, through an object binding', async () => {
    await t.mesh.deploy({ name: 'objects', path, handler: 'index.objects', memoryMb: 256, timeoutMs: 30_000, bindings: { files: 'object:bind_files' } })
    const out = await t.mesh.invoke<any>('objects', { mb: 3, name: 'blob.bin' }, { timeoutMs: 60_000 })
    expect(out).toEqual({ put: { name: 'blob.bin', size: 3 * 1024 * 1024 }, size: 3 * 1024 * 1024, same: true, listed: [{ name: 'blob.bin', size: 3 * 1024 * 1024 }], missing: null })
  }, 60_000)

  it('writes an object of 50 MB from one function and reads it back from another, streamed and buffered', async () => {
    const mb = 50
    await t.mesh.deploy({ name: 'bigput', path, handler: 'index.bigPut', memoryMb: 512, timeoutMs: 60_000, bindings: ['files=object:bind_big'] })
    await t.mesh.deploy({ name: 'bigget', path, handler: 'index.bigGet', memoryMb: 512, timeoutMs: 60_000, bindings: ['files=object:bind_big:ro'] })
    const started = Date.now()
    const put = await t.mesh.invoke<any>('bigput', { mb, name: 'big.bin', stream: true }, { timeoutMs: 90_000 })
    expect(put.put).toEqual({ name: 'big.bin', size: mb * 1024 * 1024 })
    const streamed = await t.mesh.invoke<any>('bigget', { name: 'big.bin', stream: true }, { timeoutMs: 90_000 })
    const buffered = await t.mesh.invoke<any>('bigget', { name: 'big.bin' }, { timeoutMs: 90_000 })
    expect(streamed).toMatchObject({ size: mb * 1024 * 1024, sha256: put.sha256 })
    expect(buffered).toMatchObject({ size: mb * 1024 * 1024, sha256: put.sha256 })
    // A buffered put replaces it (the old chunks purged).
    const again = await t.mesh.invoke<any>('bigput', { mb: 8, name: 'big.bin' }, { timeoutMs: 90_000 })
    expect(again).toMatchObject({ put: { size: 8 * 1024 * 1024 } })
    // The streamed reader holds about a chunk, the buffered one the whole object.
    console.log(`50 MB object: write + 2 reads (+ an 8 MB write) in ${Date.now() - started} ms; child RSS MB: streamed put ${put.rss}, streamed get ${streamed.rss}, buffered get ${buffered.rss}, buffered put ${again.rss}`)
    expect(streamed.rss).toBeLessThan(buffered.rss)
    // Streamed writes through a read-only binding are writes too.
    await t.mesh.deploy({ name: 'bigput-ro', path, handler: 'index.bigPut', memoryMb: 256, timeoutMs: 30_000, bindings: ['files=object:bind_big:ro'] })
    const refused = await t.mesh.invoke('bigput-ro', { mb: 2, name: 'big.bin', stream: true }).then(() => null, (e: any) => e)
    expect(refused).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'BindingError', message: expect.stringMatching(/read-only.*write-open is a write/) })
    const f = (await import('@nats-io/obj')).Objm
    const info = await (await new f(t.mesh.nc).open('bind_big')).info('big.bin')
    expect(info?.size).toBe(8 * 1024 * 1024)
    expect(info?.digest).toMatch(/^SHA-256=/)
  }, 120_000)

  it('refuses writes through a read-only binding with FNMESH_ERR_FORBIDDEN, and serves its reads', async () => {
    await t.mesh.deploy({ name: 'reader', path, handler: 'index.kv', bindings: ['counts=kv:bind_counts:ro'] })
    const read = await t.mesh.invoke<any>('reader', { key: 'n' })
    expect(read).toMatchObject({ value: '100', bytes: 3, keys: ['n'] })
    expect(await t.mesh.invoke<any>('reader', { key: 'n', put: '0' })).toMatchObject({ code: 'FNMESH_ERR_FORBIDDEN', message: expect.stringMatching(/read-only/) })
  }, 60_000)

  it('refuses forged IPC calls naming an undeclared bucket, binding or op with FNMESH_ERR_FORBIDDEN', async () => {
    await t.mesh.deploy({ name: 'forger', path, handler: 'index.forge', bindings: ['mine=kv:bind_mine', 'ro=kv:bind_counts:ro'] })
    await t.mesh.deploy({ name: 'nobind', path, handler: 'index.forge' })
    const tries = [
      ['forger', { name: 'mine', kind: 'kv', target: 'bind_counts' }],
      ['forger', { name: 'mine', kind: 'kv', target: 'fnmesh_functions' }],
      ['forger', { name: 'mine', kind: 'object', target: 'bind_mine' }],
      ['forger', { name: 'other', kind: 'kv', target: 'bind_counts' }],
      ['forger', { name: 'mine', kind: 'kv', target: 'bind_mine', op: 'purge' }],
      ['forger', { name: 'ro', kind: 'kv', target: 'bind_counts', op: 'put', data: 'MA==' }],
      ['forger', { name: 'ro', kind: 'kv', target: 'bind_counts', op: 'delete' }],
      ['nobind', { name: 'counts', kind: 'kv', target: 'bind_counts' }]
    ] as const
    for (const [fn, call] of tries) {
      const reply = await t.mesh.invoke<any>(fn, call)
      expect(reply, JSON.stringify(call)).toMatchObject({ t: 'bind-result', ok: false, error: { code: 'FNMESH_ERR_FORBIDDEN' } })
    }
    // The same channel serves what is declared, and the counter is untouched.
    expect(await t.mesh.invoke<any>('forger', { name: 'ro', kind: 'kv', target: 'bind_counts' })).toMatchObject({ ok: true, value: { revision: expect.any(Number) } })
    const kv = await new Kvm(t.mesh.nc).open('bind_counts')
    expect(new TextDecoder().decode((await kv.get('n'))?.value)).toBe('100')
  }, 60_000)

  it('refuses at deploy a binding to a bucket that cannot exist, or to the mesh\'s own, with FNMESH_ERR_INVALID_BINDING', async () => {
    expect(await code(t.mesh.deploy({ name: 'bad', path, handler: 'index.kv', bindings: ['c=kv:no.dots'] }))).toBe('FNMESH_ERR_INVALID_BINDING')
    expect(await code(t.mesh.deploy({ name: 'bad', path, handler: 'index.kv', bindings: ['c=kv:fnmesh_functions'] }))).toBe('FNMESH_ERR_INVALID_BINDING')
    expect(await code(t.mesh.deploy({ name: 'bad', path, handler: 'index.kv', bindings: ['c=object:bind_counts'] }))).toBe('FNMESH_ERR_INVALID_BINDING')
    const cli = await runCli(['deploy', path, '--name', 'bad', '--handler', 'index.kv', '--bind', 'c=kv:a b', '--nats', t.url])
    expect(cli.code).toBe(1)
    expect(cli.stderr).toMatch(/^error FNMESH_ERR_INVALID_BINDING: Binding "c=kv:a b" is invalid: bucket "a b" cannot exist/)
    expect((await t.mesh.functions()).map(f => f.name)).not.toContain('bad')
  }, 60_000)
})
