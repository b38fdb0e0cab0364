/**
 * Bindings that start more work (issue 17): publish (durable events that trigger other
 * functions), invoke (a sync call of another function through the mesh), destinations of async
 * results, the hop limit that stops loops, and forged or undeclared targets refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { headers } from '@nats-io/transport-node'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'

const code = async (p: Promise<unknown>): Promise<string> => await p.then(() => 'no error', (err: any) => String(err?.code))

describe('bindings that publish events, invoke functions and report async results', () => {
  let t: TestMesh
  const path = fixture('bindings')

  beforeAll(async () => {
    t = await startMesh({ nodes: 2, slots: 6 })
  }, 60_000)

  afterAll(async () => {
    await t?.stop()
  })

  it('chains two functions through an invoke binding and a publish binding that triggers a third', async () => {
    await t.mesh.deploy({ name: 'double', path, handler: 'index.double' })
    await t.mesh.deploy({ name: 'sink', path, handler: 'index.sink', triggers: ['chain.done.*'], bindings: ['seen=kv:flow_seen'] })
    await t.mesh.deploy({ name: 'chain', path, handler: 'index.chain', timeoutMs: 20_000, bindings: ['next=invoke:double', 'out=publish:chain.done.*'] })
    const out = await t.mesh.invoke<any>('chain', { n: 21 }, { timeoutMs: 30_000 })
    expect(out).toMatchObject({ doubled: { n2: 42 }, published: { id: 'chain-21', stream: 'FNMESH_EVENTS', duplicate: false } })
    // A second run publishes the same id: JetStream keeps one.
    expect(await t.mesh.invoke<any>('chain', { n: 21 }, { timeoutMs: 30_000 })).toMatchObject({ published: { duplicate: true } })
    const kv = await new Kvm(t.mesh.nc).open('flow_seen')
    await waitFor(async () => (await kv.get('n21')) != null, { timeoutMs: 20_000, message: 'the published event reaching sink' })
    const seen = JSON.parse(new TextDecoder().decode((await kv.get('n21'))?.value))
    expect(seen).toEqual({ event: { n: 21, doubled: 42, from: 'chain' }, hop: 'fnmesh/chain' })
    // The callee's error comes back with its code and type.
    await t.mesh.deploy({ name: 'tryout', path, handler: 'index.tryout', timeoutMs: 20_000, bindings: ['next=invoke:double', 'out=publish:allowed.*'] })
    expect(await t.mesh.invoke<any>('tryout', { invoke: { n: 2, fail: true } })).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'DoubleError', message: 'cannot double 2' })
    expect(await t.mesh.invoke<any>('tryout', { invoke: { n: 2 } })).toEqual({ ok: { n2: 4 } })
  }, 90_000)

  it('refuses publishes outside the declared pattern and forged publish or invoke targets with FNMESH_ERR_FORBIDDEN', async () => {
    expect(await t.mesh.invoke<any>('tryout', { publish: 'allowed.x' })).toMatchObject({ ok: { stream: 'FNMESH_EVENTS' } })
    for (const subject of ['other.x', 'allowed.x.y', 'allowed']) {
      expect(await t.mesh.invoke<any>('tryout', { publish: subject }), subject).toMatchObject({ code: 'FNMESH_ERR_FORBIDDEN' })
    }
    expect(await t.mesh.invoke<any>('tryout', { publish: 'allowed.*' })).toMatchObject({ code: 'FNMESH_ERR_INVALID_ARGUMENT' })
    // The function talks on the IPC channel itself, naming targets it did not declare.
    await t.mesh.deploy({ name: 'forger', path, handler: 'index.forge', bindings: ['out=publish:allowed.*', 'next=invoke:double'] })
    const b64 = Buffer.from('{"n":1}').toString('base64')
    const tries = [
      { name: 'out', kind: 'publish', target: 'other.*', op: 'publish', key: 'other.x', data: b64 },
      { name: 'out', kind: 'publish', target: '>', op: 'publish', key: 'fnmesh.fn.double.retry', data: b64 },
      { name: 'next', kind: 'invoke', target: 'sink', op: 'invoke', data: b64 },
      { name: 'next', kind: 'publish', target: 'double', op: 'publish', data: b64 },
      { name: 'out', kind: 'invoke', target: 'allowed.*', op: 'invoke', data: b64 },
      { name: 'next', kind: 'invoke', target: 'double', op: 'get', data: b64 }
    ]
    for (const call of tries) {
      expect(await t.mesh.invoke<any>('forger', call), JSON.stringify(call)).toMatchObject({ t: 'bind-result', ok: false, error: { code: 'FNMESH_ERR_FORBIDDEN' } })
    }
    // The same forged channel, naming what is declared, is served.
    expect(await t.mesh.invoke<any>('forger', { name: 'next', kind: 'invoke', target: 'double', op: 'invoke', data: b64 })).toMatchObject({ ok: true, value: { json: '{"n2":2}' } })
    // A function's event ids do not shadow anyone else's in JetStream's dedupe window.
    expect(await t.mesh.invoke<any>('forger', { name: 'out', kind: 'publish', target: 'allowed.*', op: 'publish', key: 'allowed.z', data: b64, eventId: 'shared-id' })).toMatchObject({ ok: true, value: { id: 'shared-id', duplicate: false } })
    expect(await t.mesh.publish('allowed.z', { n: 2 }, { id: 'shared-id' })).toMatchObject({ duplicate: false })
    // The deploy made the events stream capture the pattern; fnmesh init puts it back if it goes.
    const jsm = await jetstreamManager(t.mesh.nc)
    const info = await jsm.streams.info('FNMESH_EVENTS')
    expect(info.config.subjects).toContain('allowed.*')
    await jsm.streams.update('FNMESH_EVENTS', { ...info.config, subjects: info.config.subjects?.filter(x => x !== 'allowed.*') })
    expect(await t.mesh.invoke<any>('tryout', { publish: 'allowed.x' })).toMatchObject({ code: 'FNMESH_ERR_NOT_FOUND' })
    await t.mesh.init()
    expect((await jsm.streams.info('FNMESH_EVENTS')).config.subjects).toContain('allowed.*')
    expect(await t.mesh.invoke<any>('tryout', { publish: 'allowed.y' })).toMatchObject({ ok: { stream: 'FNMESH_EVENTS' } })
  }, 60_000)

  it('refuses at deploy publish and invoke bindings and destinations that cannot exist', async () => {
    for (const b of ['p=publish:>', 'p=publish:*.x', 'p=publish:fnmesh.fn.x', 'p=publish:$KV.x', 'p=publish:a..b', 'p=publish:a.b:ro', 'i=invoke:no such', 'i=invoke:a:ro']) {
      expect(await code(t.mesh.deploy({ name: 'bad', path, handler: 'index.kv', bindings: [b] })), b).toBe('FNMESH_ERR_INVALID_BINDING')
    }
    expect(await code(t.mesh.deploy({ name: 'bad', path, handler: 'index.kv', onSuccess: 'publish:a.*' }))).toBe('FNMESH_ERR_INVALID_BINDING')
    expect(await code(t.mesh.deploy({ name: 'bad', path, handler: 'index.kv', onFailure: 'kv:x' }))).toBe('FNMESH_ERR_INVALID_BINDING')
    const cli = await runCli(['deploy', path, '--name', 'bad', '--handler', 'index.kv', '--on-success', 'publish:', '--nats', t.url])
    expect(cli.code).toBe(1)
    expect(cli.stderr).toMatch(/^error FNMESH_ERR_INVALID_BINDING: /)
    expect((await t.mesh.functions()).map(f => f.name)).not.toContain('bad')
  }, 60_000)

  it('stops a function that publishes on its own trigger subject after 16 hops with FNMESH_ERR_LOOP_DETECTED', async () => {
    await t.mesh.deploy({ name: 'loop', path, handler: 'index.loop', timeoutMs: 10_000, triggers: ['loop.go'], bindings: ['counts=kv:flow_loop', 'again=publish:loop.go'] })
    await t.mesh.publish('loop.go', { n: 0 })
    const kv = await new Kvm(t.mesh.nc).open('flow_loop')
    await waitFor(async () => (await kv.get('loop-stop')) != null, { timeoutMs: 45_000, message: 'the loop stopping' })
    expect(JSON.parse(new TextDecoder().decode((await kv.get('loop-stop'))?.value))).toEqual({ code: 'FNMESH_ERR_LOOP_DETECTED', n: 16 })
    // the run from outside plus 16 hops, and no more
    await new Promise(resolve => setTimeout(resolve, 1500))
    expect(new TextDecoder().decode((await kv.get('loop'))?.value)).toBe('17')
    // An event that claims a longer chain (any NATS client may set the header) is dead-lettered unrun.
    const h = headers()
    h.set('Fnmesh-Hops', '17')
    await jetstream(t.mesh.nc).publish('loop.go', JSON.stringify({ n: 99 }), { headers: h, msgID: 'too-far' })
    await waitFor(async () => (await t.mesh.dlqList({ fn: 'loop' })).length === 1, { timeoutMs: 20_000, message: 'the dead letter' })
    expect((await t.mesh.dlqList({ fn: 'loop' }))[0]).toMatchObject({ reason: 'loop detected', attempts: 0, error: { code: 'FNMESH_ERR_LOOP_DETECTED' } })
    expect(new TextDecoder().decode((await kv.get('loop'))?.value)).toBe('17')
  }, 60_000)

  it('stops a function whose success destination triggers itself after 16 hops', async () => {
    await t.mesh.deploy({ name: 'dloop', path, handler: 'index.maybeFail', triggers: ['dloop.go'], onSuccess: 'publish:dloop.go' })
    await t.mesh.publish('dloop.go', { n: 0 })
    const runs = async (): Promise<number> => (await t.mesh.usage({ fn: 'dloop' })).functions[0]?.invocations ?? 0
    await waitFor(async () => await runs() >= 17, { timeoutMs: 45_000, message: '17 runs of dloop' })
    await new Promise(resolve => setTimeout(resolve, 2000))
    // the run from outside and 16 destinations that triggered it again; the 17th run's destination is not published
    expect(await runs()).toBe(17)
  }, 60_000)

  it('publishes a CloudEvent on the success and failure destinations of async invocations, once per event', async () => {
    const jsm = await jetstreamManager(t.mesh.nc)
    await t.mesh.deploy({ name: 'dest', path, handler: 'index.maybeFail', triggers: ['destin.go'], retries: 1, retryBackoffMs: 100, onSuccess: 'publish:dest.ok', onFailure: 'publish:dest.bad' })
    // A consumer of our own keeps the destinations (the events stream keeps what someone wants).
    await jsm.consumers.add('FNMESH_EVENTS', { durable_name: 'test_dest', filter_subject: 'dest.>', ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New })
    await t.mesh.publish('destin.go', { n: 1 }, { id: 'ev-ok' })
    await t.mesh.publish('destin.go', { n: 2, fail: true }, { id: 'ev-bad' })
    const consumer = await jetstream(t.mesh.nc).consumers.get('FNMESH_EVENTS', 'test_dest')
    const got: any[] = []
    await waitFor(async () => {
      const batch = await consumer.fetch({ max_messages: 10, expires: 1000 })
      for await (const m of batch) { got.push({ subject: m.subject, contentType: m.headers?.get('content-type'), ce: m.json() }); m.ack() }
      return got.length >= 2
    }, { timeoutMs: 30_000, message: 'both destinations' })
    const ok = got.find(g => g.subject === 'dest.ok')
    const bad = got.find(g => g.subject === 'dest.bad')
    expect(ok).toMatchObject({ contentType: 'application/cloudevents+json', ce: { specversion: '1.0', type: 'fnmesh.invocation.success', source: 'fnmesh/dest', data: { condition: 'Success', function: 'dest', eventId: 'ev-ok', attempts: 1, requestPayload: { n: 1 }, responsePayload: { n: 1, ok: true } } } })
    expect(bad).toMatchObject({ ce: { type: 'fnmesh.invocation.failure', source: 'fnmesh/dest', data: { condition: 'RetriesExhausted', function: 'dest', eventId: 'ev-bad', attempts: 2, requestPayload: { n: 2, fail: true }, responsePayload: { errorType: 'AskedError', errorMessage: 'asked to fail 2' }, error: { code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'AskedError', message: 'asked to fail 2' } } } })
    expect(ok.ce.data.invocationId).toMatch(/^[0-9a-f-]{36}$/)
    // Nothing more comes: one destination per event.
    const more = await consumer.fetch({ max_messages: 10, expires: 2000 })
    for await (const m of more) { got.push(m.subject); m.ack() }
    expect(got).toHaveLength(2)
    const fns = JSON.parse((await runCli(['functions', '--json', '--nats', t.url])).stdout)
    expect(fns.find((f: any) => f.name === 'dest')).toMatchObject({ onSuccess: 'publish:dest.ok', onFailure: 'publish:dest.bad' })
    const table = await runCli(['functions', '--nats', t.url])
    expect(table.stdout).toMatch(/BINDINGS/)
    expect(table.stdout).toContain('next=invoke:double,out=publish:chain.done.*')
    expect(table.stdout).toContain('on-success=publish:dest.ok,on-failure=publish:dest.bad')
  }, 60_000)
})
