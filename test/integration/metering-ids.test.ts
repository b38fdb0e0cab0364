/**
 * Ran implies metered, once per run, whatever ids callers and publishers choose, on a real
 * nats-server with 2 agents: the mesh mints invocation ids (a caller's id is only an idempotency
 * key), events over the id or payload limit are dead-lettered before they run, and nothing a
 * caller or function writes forges a line of `fnmesh logs`.
 */
import { connect, headers, type NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decode, encode } from '../../proto/codec.js'
import { FnmeshError } from '../../proto/errors.js'
import { MAX_ID_BYTES, invokeSubject } from '../../proto/subjects.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { meterRecords } from '../helpers/ledgers.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { SeenLog } from '../helpers/seen.js'
import { waitFor } from '../helpers/wait.js'

const LINE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\t([\w-]+)\t([A-Z]+)\t(.*)$/

async function rejection (p: Promise<unknown>): Promise<FnmeshError> {
  try {
    await p
  } catch (err) {
    expect(err).toBeInstanceOf(FnmeshError)
    return err as FnmeshError
  }
  throw new Error('expected a rejection')
}

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

describe('metering ids on a mesh of 2 agents', () => {
  let t: TestMesh
  let seen: SeenLog
  let raw: NatsConnection
  const env = (): Record<string, string> => ({ NATS_PORT: String(t.cluster.nats.port) })
  const invocations = async (fn: string): Promise<number> => (await t.mesh.usage({ fn })).functions[0]?.invocations ?? 0

  beforeAll(async () => {
    t = await startMesh({ nodes: 2, slots: 4 })
    seen = await SeenLog.start(t.url)
    raw = await connect({ servers: t.url })
  })

  afterAll(async () => {
    await raw?.close()
    await seen?.stop()
    await t?.stop()
  })

  it('bills 200 sequential calls that reuse one caller key as 200 invocations, each under its own minted id', async () => {
    await t.mesh.deploy({ name: 'same-key', path: fixture('ok.js') })
    const ids = new Set<string>()
    for (let i = 0; i < 200; i++) {
      // Half through the new option, half through its deprecated name.
      const options = i % 2 === 0 ? { idempotencyKey: 'reused-key' } : { invocationId: 'reused-key' }
      ids.add((await t.mesh.invokeDetailed('same-key', { i }, { ...options, timeoutMs: 10_000 })).invocationId)
    }
    expect(ids.size).toBe(200)
    expect(ids.has('reused-key')).toBe(false)
    await waitFor(async () => await invocations('same-key') === 200, { timeoutMs: 15_000, message: 'usage counting 200 invocations' })
    const records = await meterRecords(t.mesh, 'same-key')
    expect(records).toHaveLength(200)
    expect(new Set(records.map(r => r.idempotencyKey))).toEqual(new Set(['reused-key']))
  })

  it('leaves a function\'s usage intact when another function is called with its invocation id as key, over the SDK or raw NATS', async () => {
    await t.mesh.deploy({ name: 'victim', path: fixture('ok.js') })
    await t.mesh.deploy({ name: 'other', path: fixture('ok.js') })
    const a = await t.mesh.invokeDetailed('victim', {}, { timeoutMs: 10_000 })
    await waitFor(async () => await invocations('victim') === 1, { timeoutMs: 10_000, message: 'the victim\'s call metered' })
    await t.mesh.invokeDetailed('other', {}, { idempotencyKey: a.invocationId, timeoutMs: 10_000 })
    // A raw client speaking the wire format: field 3 is the idempotency key, never the invocation id.
    const reply = decode('InvokeResult', (await raw.request(invokeSubject('other'), encode('InvokeRequest', { function: 'other', payload: Buffer.from('{}'), idempotencyKey: a.invocationId, timeoutMs: 10_000 }), { timeout: 15_000 })).data)
    expect(reply.ok).toBe(true)
    expect(reply.invocationId).not.toBe(a.invocationId)
    await waitFor(async () => await invocations('other') === 2, { timeoutMs: 10_000, message: 'both calls of the other function metered' })
    await sleep(500)
    expect(await invocations('victim')).toBe(1)
    const victim = await meterRecords(t.mesh, 'victim')
    expect(victim.map(r => r.invocationId)).toEqual([a.invocationId])
  })

  it('dead-letters a raw event with a 16 KB id before it runs, and the SDK refuses to publish one', async () => {
    await t.mesh.deploy({ name: 'long-id', path: fixture('report.js'), triggers: ['longid.*'], egress: true, env: env() })
    const h = headers()
    h.set('content-type', 'application/cloudevents+json')
    const id = 'x'.repeat(16 * 1024)
    // A raw JetStream publish (the SDK would refuse it): a structured CloudEvent.
    await raw.request('longid.one', JSON.stringify({ specversion: '1.0', id, source: '/raw', type: 't', data: { n: 1 } }), { headers: h, timeout: 10_000 })
    await t.mesh.publish('longid.two', { n: 2 }, { id: 'short-id' })
    const dead = await waitFor(async () => (await t.mesh.dlqList({ fn: 'long-id' })).find(d => d.reason === 'invalid event'), { timeoutMs: 15_000, message: 'the long-id event in the dead-letter stream' })
    expect(dead.error?.code).toBe('FNMESH_ERR_INVALID_EVENT')
    expect(dead.error?.errorMessage).toMatch(/over the limit of 256/)
    expect(dead.attempts).toBe(0)
    expect(Buffer.byteLength(dead.eventId)).toBeLessThanOrEqual(MAX_ID_BYTES)
    await waitFor(() => seen.of('long-id').length >= 1, { timeoutMs: 10_000, message: 'the short-id event running' })
    await waitFor(async () => await invocations('long-id') === 1, { timeoutMs: 10_000, message: 'the short-id event metered' })
    await sleep(500)
    // Every run metered, and no run of the long id: 1 run, 1 record.
    expect(seen.of('long-id').map(r => r.cloudEvent?.id)).toEqual(['short-id'])
    expect((await meterRecords(t.mesh, 'long-id')).map(r => r.eventId)).toEqual(['short-id'])
    expect((await rejection(t.mesh.publish('longid.three', { n: 3 }, { id }))).code).toBe('FNMESH_ERR_INVALID_EVENT')
    expect((await rejection(t.mesh.publish('longid.three', { specversion: '1.0', id, source: '/x', type: 't' }))).code).toBe('FNMESH_ERR_INVALID_EVENT')
    // At the limit is fine.
    await t.mesh.publish('longid.four', { n: 4 }, { id: 'y'.repeat(MAX_ID_BYTES) })
    await waitFor(async () => await invocations('long-id') === 2, { timeoutMs: 10_000, message: 'the event with a 256-byte id metered' })
  })

  it('dead-letters a raw 7 MiB event before the function sees it', async () => {
    await t.mesh.deploy({ name: 'big-event', path: fixture('report.js'), triggers: ['bigevent.*'], egress: true, env: env() })
    const big = JSON.stringify({ blob: 'z'.repeat(7 * 1024 * 1024) })
    await raw.request('bigevent.one', big, { timeout: 15_000 })
    const dead = await waitFor(async () => (await t.mesh.dlqList({ fn: 'big-event' })).find(d => d.reason === 'event too large'), { timeoutMs: 20_000, message: 'the 7 MiB event in the dead-letter stream' })
    expect(dead.error?.code).toBe('FNMESH_ERR_PAYLOAD_TOO_LARGE')
    expect(dead.attempts).toBe(0)
    await sleep(500)
    expect(seen.of('big-event')).toEqual([])
    expect(await invocations('big-event')).toBe(0)
  })

  it('prints one line per log entry in `fnmesh logs`, whatever the caller\'s key or the function\'s messages hold', async () => {
    await t.mesh.deploy({ name: 'forger', path: fixture('lambda/logs.js') })
    const forged = '\n2020-01-01T00:00:00.000Z\tforged-id\tINFO\tforged line'
    const r = await t.mesh.invokeDetailed('forger', {}, { idempotencyKey: `key${forged}`, timeoutMs: 10_000 })
    expect(r.invocationId).not.toContain('\n')
    await waitFor(async () => {
      for await (const l of t.mesh.logs('forger', { timeoutMs: 10_000 })) if (l.message === 'multi\nline') return true
      return false
    }, { timeoutMs: 10_000, message: 'the multi-line message stored' })
    const res = await runCli(['logs', 'forger', '--nats', t.url])
    expect(res.code).toBe(0)
    const lines = res.stdout.trimEnd().split('\n')
    for (const line of lines) expect(line).toMatch(LINE)
    expect(lines.every(l => l.split('\t')[1] === r.invocationId)).toBe(true)
    expect(lines.some(l => l.endsWith('\tmulti\\nline'))).toBe(true)
    expect(res.stdout).not.toContain('forged')
  })
})
