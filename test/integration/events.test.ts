/**
 * Events and triggers on a real nats-server with JetStream and 3 agents: every trigger kind runs
 * its function with the event it should see; CloudEvents in both content modes; idempotent
 * publish; retries then the dead-letter stream; concurrency limits that queue instead of failing;
 * bad triggers and bad events refused with a code.
 */
import { Kvm } from '@nats-io/kv'
import { Objm } from '@nats-io/obj'
import { connect, headers, type NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FnmeshError } from '../../proto/errors.js'
import { eventInvocationId } from '../../core/events.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { SeenLog } from '../helpers/seen.js'
import { waitFor } from '../helpers/wait.js'

async function rejection (p: Promise<unknown>): Promise<FnmeshError> {
  try {
    await p
  } catch (err) {
    expect(err).toBeInstanceOf(FnmeshError)
    return err as FnmeshError
  }
  throw new Error('expected a rejection')
}

describe('events and triggers on a mesh of 3 agents', () => {
  let t: TestMesh
  let seen: SeenLog
  let raw: NatsConnection
  const env = (): Record<string, string> => ({ NATS_PORT: String(t.cluster.nats.port) })

  beforeAll(async () => {
    t = await startMesh({ nodes: 3, slots: 4 })
    seen = await SeenLog.start(t.url)
    raw = await connect({ servers: t.url })
  })

  afterAll(async () => {
    await raw?.close()
    await seen?.stop()
    await t?.stop()
  })

  it('runs a function once for each event published on a subject it listens on, with a stable request id', async () => {
    await t.mesh.deploy({ name: 'orders', path: fixture('report.js'), triggers: ['orders.*'], egress: true, env: env() })
    const a = await t.mesh.publish('orders.created', { order: 1 }, { id: 'order-1' })
    const again = await t.mesh.publish('orders.created', { order: 1 }, { id: 'order-1' })
    expect(a.duplicate).toBe(false)
    expect(again.duplicate).toBe(true)
    await t.mesh.publish('orders.paid', { order: 2 }, { id: 'order-2', type: 'com.example.paid', source: '/shop' })
    await t.mesh.publish('other.thing', { order: 3 }).catch(() => {})
    const runs = await waitFor(() => seen.of('orders').length >= 2 && seen.of('orders'), { message: 'both order events running' })
    await new Promise(resolve => setTimeout(resolve, 500))
    expect(seen.of('orders').length).toBe(2)
    const byId = new Map(runs.map(r => [r.cloudEvent?.id, r]))
    expect(byId.get('order-1')?.event).toEqual({ order: 1 })
    expect(byId.get('order-1')?.requestId).toBe(eventInvocationId('orders', 'order-1'))
    expect(byId.get('order-2')?.cloudEvent).toMatchObject({ specversion: '1.0', id: 'order-2', type: 'com.example.paid', source: '/shop' })
  })

  it('runs a function for plain NATS publishes from a client that knows nothing of fnmesh', async () => {
    await t.mesh.deploy({ name: 'plain', path: fixture('report.js'), triggers: ['sensors.>'], egress: true, env: env() })
    raw.publish('sensors.room1.temp', JSON.stringify({ celsius: 21.5 }))
    raw.publish('sensors.room2.temp', 'not json at all')
    await raw.flush()
    const runs = await waitFor(() => seen.of('plain').length >= 2 && seen.of('plain'), { message: 'plain publishes running' })
    const events = runs.map(r => r.event)
    expect(events).toContainEqual({ celsius: 21.5 })
    expect(events).toContain('not json at all')
    expect(runs.map(r => r.cloudEvent?.subject).sort()).toEqual(['sensors.room1.temp', 'sensors.room2.temp'])
  })

  it('takes CloudEvents from other SDKs in structured and binary mode, and dead-letters invalid ones', async () => {
    await t.mesh.deploy({ name: 'ce', path: fixture('report.js'), triggers: ['ce.>'], egress: true, env: env() })
    const structured = headers()
    structured.set('content-type', 'application/cloudevents+json')
    raw.publish('ce.structured', JSON.stringify({ specversion: '1.0', id: 'ce-s-1', source: '/other/sdk', type: 'com.example.s', time: '2026-01-02T03:04:05Z', datacontenttype: 'application/json', data: { s: 1 }, tenant: 'acme' }), { headers: structured })
    const binary = headers()
    binary.set('ce-specversion', '1.0')
    binary.set('ce-id', 'ce-b-1')
    binary.set('ce-source', '/other/sdk')
    binary.set('ce-type', 'com.example.b')
    binary.set('content-type', 'application/json')
    raw.publish('ce.binary', JSON.stringify({ b: 2 }), { headers: binary })
    const invalid = headers()
    invalid.set('content-type', 'application/cloudevents+json')
    raw.publish('ce.invalid', JSON.stringify({ specversion: '1.0', id: '', source: '/x', type: 't' }), { headers: invalid })
    await raw.flush()
    const runs = await waitFor(() => seen.of('ce').length >= 2 && seen.of('ce'), { message: 'CloudEvents running' })
    const s = runs.find(r => r.cloudEvent?.id === 'ce-s-1')
    const b = runs.find(r => r.cloudEvent?.id === 'ce-b-1')
    expect(s?.event).toEqual({ s: 1 })
    expect(s?.cloudEvent).toMatchObject({ source: '/other/sdk', type: 'com.example.s', time: '2026-01-02T03:04:05Z', tenant: 'acme' })
    expect(b?.event).toEqual({ b: 2 })
    expect(b?.cloudEvent).toMatchObject({ type: 'com.example.b', datacontenttype: 'application/json' })
    const dead = await waitFor(async () => (await t.mesh.dlqList({ fn: 'ce' })).find(d => d.reason === 'invalid event'), { message: 'the invalid CloudEvent in the dead-letter stream' })
    expect(dead.error?.code).toBe('FNMESH_ERR_INVALID_EVENT')
    expect(dead.attempts).toBe(0)
    expect(seen.of('ce').length).toBe(2)
    // The SDK refuses invalid CloudEvents before they are sent.
    for (const bad of [
      { specversion: '1.0', id: '', source: '/x', type: 't' },
      { specversion: '1.0', id: '1', source: '/x', type: 't', time: 'yesterday' },
      { specversion: '1.0', id: '1', source: '/x', type: 't', data: 1, data_base64: 'AA==' },
      { specversion: '0.3', id: '1', source: '/x', type: 't' }
    ]) {
      expect((await rejection(t.mesh.publish('ce.x', bad))).code).toBe('FNMESH_ERR_INVALID_EVENT')
    }
  })

  it('fires a rate schedule about once a second with Scheduled Event payloads', async () => {
    await t.mesh.deploy({ name: 'tick', path: fixture('report.js'), triggers: ['rate:1s'], egress: true, env: env() })
    const runs = await waitFor(() => seen.of('tick').length >= 3 && seen.of('tick'), { timeoutMs: 15_000, message: 'three ticks' })
    expect(runs[0].event).toMatchObject({ 'detail-type': 'Scheduled Event', source: 'fnmesh.schedule', resources: ['rate:1s'] })
    const times = runs.map(r => Date.parse(r.event.time)).sort((x, y) => x - y)
    expect(new Set(times).size).toBe(times.length)
    for (const ms of times) expect(ms % 1000).toBe(0)
    // Stop it: a redeploy without the schedule.
    await t.mesh.deploy({ name: 'tick', path: fixture('report.js'), egress: true, env: env() })
  })

  it('runs a function for each put into an object store bucket and each change of a KV bucket', async () => {
    const os = await new Objm(raw).create('photos')
    // A KV bucket keeps `history` values per key: with 1, a change superseded before it is
    // delivered is not seen (the stream no longer holds it), as in any compacted change feed.
    const kv = await new Kvm(raw).create('settings', { history: 10 })
    await t.mesh.deploy({ name: 'storage', path: fixture('report.js'), triggers: ['object:photos', 'kv:settings'], egress: true, env: env() })
    const info = await os.putBlob({ name: 'cat.jpg' }, new Uint8Array(2048).fill(7))
    await kv.put('theme', 'dark')
    await kv.delete('theme')
    const runs = await waitFor(() => seen.of('storage').length >= 3 && seen.of('storage'), { message: 'object and kv events' })
    const obj = runs.find(r => r.event.bucket === 'photos')
    expect(obj?.event).toMatchObject({ bucket: 'photos', name: 'cat.jpg', size: 2048, digest: info.digest, operation: 'put' })
    const kvRuns = runs.filter(r => r.event.bucket === 'settings').map(r => r.event)
    expect(kvRuns).toContainEqual(expect.objectContaining({ key: 'theme', operation: 'PUT', value: 'dark' }))
    expect(kvRuns).toContainEqual(expect.objectContaining({ key: 'theme', operation: 'DEL' }))
    expect(kvRuns.every(e => typeof e.revision === 'number' && e.revision > 0)).toBe(true)
  })

  it('retries a failing function exactly its retries, with the same request id, then dead-letters it with why', async () => {
    await t.mesh.deploy({ name: 'failing', path: fixture('report.js'), triggers: ['jobs.>'], egress: true, env: { ...env(), FAIL: '1' }, retries: 2, retryBackoffMs: 100 })
    await t.mesh.publish('jobs.nightly', { job: 'x' }, { id: 'job-1' })
    const dead = await waitFor(async () => (await t.mesh.dlqList({ fn: 'failing' })).find(d => d.eventId === 'job-1'), { timeoutMs: 15_000, message: 'the failing event dead-lettered' })
    await new Promise(resolve => setTimeout(resolve, 500))
    const runs = seen.of('failing')
    expect(runs.length).toBe(3)
    expect(new Set(runs.map(r => r.requestId))).toEqual(new Set([eventInvocationId('failing', 'job-1')]))
    // Backoff: 100 ms, then 200 ms, between the runs.
    const starts = runs.map(r => r.started).sort((a, b) => a - b)
    expect(starts[1] - starts[0]).toBeGreaterThanOrEqual(100)
    expect(starts[2] - starts[1]).toBeGreaterThanOrEqual(200)
    expect(dead).toMatchObject({ function: 'failing', trigger: 'jobs.>', attempts: 3, reason: 'retries exhausted', event: { job: 'x' } })
    expect(dead.error).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_ERROR', errorMessage: 'failing on purpose' })
    const cli = await runCli(['dlq', 'list', '--fn', 'failing', '--json', '--nats', t.url])
    expect(JSON.parse(cli.stdout).map((d: { eventId: string }) => d.eventId)).toEqual(['job-1'])

    // Fixed, then replayed: it runs again (fresh retries) and leaves the queue.
    await t.mesh.deploy({ name: 'failing', path: fixture('report.js'), triggers: ['jobs.>'], egress: true, env: env() })
    const replay = await runCli(['dlq', 'replay', '--fn', 'failing', '--nats', t.url])
    expect(replay.stdout.trim()).toBe('replayed 1 events')
    await waitFor(() => seen.of('failing').length === 4, { message: 'the replayed event running' })
    expect(seen.of('failing')[3].event).toEqual({ job: 'x' })
    expect(await t.mesh.dlqList({ fn: 'failing' })).toEqual([])
  })

  it('purges the dead-letter stream', async () => {
    await t.mesh.deploy({ name: 'doomed', path: fixture('report.js'), triggers: ['doom.>'], egress: true, env: { ...env(), FAIL: '1' }, retries: 0 })
    await t.mesh.publish('doom.a', {})
    await t.mesh.publish('doom.b', {})
    await waitFor(async () => (await t.mesh.dlqList({ fn: 'doomed' })).length === 2, { message: 'two dead letters' })
    const res = await runCli(['dlq', 'purge', '--fn', 'doomed', '--json', '--nats', t.url])
    expect(JSON.parse(res.stdout)).toEqual({ purged: 2 })
    expect(await t.mesh.dlqList({ fn: 'doomed' })).toEqual([])
  })

  it('leaves events queued, not failed, when a function is at its concurrency limit, and shows the backlog', async () => {
    await t.mesh.deploy({ name: 'narrow', path: fixture('report.js'), triggers: ['narrow.>'], egress: true, env: { ...env(), SLEEP_MS: '300' }, concurrency: 1 })
    for (let i = 0; i < 12; i++) await t.mesh.publish('narrow.x', { i })
    const backlog = await waitFor(async () => (await t.mesh.functions()).find(f => f.name === 'narrow' && f.backlog > 0)?.backlog, { message: 'a backlog shown' })
    expect(backlog).toBeGreaterThan(0)
    const runs = await waitFor(() => seen.of('narrow').length === 12 && seen.of('narrow'), { timeoutMs: 20_000, message: 'all 12 events running' })
    // At most one at a time per node: 3 nodes, so never more than 3 runs at any moment.
    let peak = 0
    for (const r of runs) peak = Math.max(peak, runs.filter(o => o.started <= r.started && o.ended > r.started).length)
    expect(peak).toBeLessThanOrEqual(3)
    expect(peak).toBeGreaterThan(1)
    expect(await t.mesh.dlqList({ fn: 'narrow' })).toEqual([])
    await waitFor(async () => (await t.mesh.functions()).find(f => f.name === 'narrow')?.backlog === 0, { message: 'the backlog drained' })
  })

  it('refuses bad triggers at deploy and unroutable publishes with a clear code', async () => {
    for (const [trigger, text] of [
      ['foo:bar', 'unknown trigger kind'],
      ['cron:not a cron', 'cron'],
      ['rate:5 fortnights', 'rate'],
      ['orders created', 'spaces'],
      ['orders.>.x', '">"'],
      ['object:missing-bucket', 'does not exist'],
      ['kv:missing-bucket', 'does not exist'],
      ['fnmesh.fn.x', 'reserved']
    ]) {
      const res = await runCli(['deploy', fixture('ok.js'), '--name', 'badtrigger', '--on', trigger, '--nats', t.url])
      expect(res.code, trigger).toBe(1)
      expect(res.stderr.trim().split('\n')).toHaveLength(1)
      expect(res.stderr).toMatch(/^error FNMESH_ERR_INVALID_TRIGGER: /)
      expect(res.stderr).toContain(text)
    }
    expect((await t.mesh.functions()).map(f => f.name)).not.toContain('badtrigger')
    const err = await rejection(t.mesh.publish('nobody.listens', {}))
    expect(err.code).toBe('FNMESH_ERR_NOT_FOUND')
    expect((await rejection(t.mesh.publish('bad subject', {}))).code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    expect((await rejection(t.mesh.publish('wild.*', {}))).code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    const cli = await runCli(['publish', 'orders.x', '--data', '{bad', '--nats', t.url])
    expect(cli.stderr).toMatch(/^error FNMESH_ERR_INVALID_JSON: /)
  })
})
