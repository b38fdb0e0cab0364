/**
 * Ran implies metered, checked before anything runs: the executor builds the record a run would
 * write and refuses the run if peers would refuse that record; an event over the id or payload
 * limit is refused when it is prepared, before any run.
 */
import type { JsMsg } from '@nats-io/jetstream'
import { headers } from '@nats-io/transport-node'
import { describe, expect, it } from 'vitest'
import type { Encodable, MeterRecord } from '../../proto/codec.js'
import { FnmeshError } from '../../proto/errors.js'
import { MAX_ID_BYTES } from '../../proto/subjects.js'
import { Executor } from '../../node/src/executor/executor.js'
import { silentLogger } from '../../node/src/logger.js'
import { prepare } from '../../node/src/triggers/prepare.js'
import { bindingsOf } from '../../core/events.js'
import type { StoredSpec } from '../../core/registry.js'

function executorWith (spec: Partial<StoredSpec>): { executor: Executor, acquired: string[], records: Array<Encodable<MeterRecord>> } {
  const acquired: string[] = []
  const records: Array<Encodable<MeterRecord>> = []
  const full = { name: 'f', version: 1, memoryMb: 128, timeoutMs: 3000, ...spec } as unknown as StoredSpec
  const executor = new Executor({
    nodeId: '12D3KooWTestNode',
    functions: { spec: async () => full, taskRoot: async () => '/nonexistent' } as any,
    pool: {
      hasIdle: () => false,
      acquire: async (_s: unknown, _r: unknown, o: { invocationId: string }) => { acquired.push(o.invocationId); throw new Error('a run started') },
      release: () => {}
    } as any,
    meter: { record: async (r) => { records.push(r) }, refusing: () => '' },
    logger: silentLogger(),
    onLoadChange: () => {}
  })
  return { executor, acquired, records }
}

const request = { invocationId: 'inv-1', function: 'f', version: 1, payload: Buffer.from('{}'), attempt: 1, trigger: 'sync' }

describe('limits checked before a run', () => {
  it('never runs an invocation whose meter record would be refused, and says why with a code', async () => {
    for (const [spec, req, why] of [
      [{ memoryMb: 2 ** 31 }, {}, /memory 2147483648 MB is out of range/],
      [{ timeoutMs: 2 * 86_400_000 }, {}, /duration .* is out of range/],
      [{}, { eventId: 'e'.repeat(MAX_ID_BYTES + 1) }, /event id is over 256 bytes/],
      [{}, { idempotencyKey: 'k'.repeat(MAX_ID_BYTES + 1) }, /idempotency key is over 256 bytes/]
    ] as const) {
      const { executor, acquired, records } = executorWith(spec)
      const out = await executor.execute({ ...request, ...req })
      expect(out.ok).toBe(false)
      expect(out.error?.code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
      expect(out.error?.errorMessage).toMatch(why)
      expect(acquired).toEqual([])
      expect(records).toEqual([])
      expect(executor.inFlight).toBe(0)
    }
  })

  it('runs an invocation whose record is acceptable', async () => {
    const { executor, acquired } = executorWith({ memoryMb: 10240 })
    await executor.execute({ ...request, eventId: 'e'.repeat(MAX_ID_BYTES), idempotencyKey: 'k'.repeat(MAX_ID_BYTES) })
    expect(acquired).toEqual(['inv-1'])
  })
})

/** A JetStream message as prepare() reads it */
function jsMsg (subject: string, data: Uint8Array | string, h = headers()): JsMsg {
  return { subject, data: typeof data === 'string' ? Buffer.from(data) : data, headers: h, seq: 7, info: { stream: 'FNMESH_EVENTS' }, timestampNanos: BigInt(Date.now()) * 1_000_000n } as unknown as JsMsg
}

describe('events over the limits', () => {
  const [direct, subject] = bindingsOf({ name: 'f', triggers: ['orders.*'] })
  const code = (fn: () => unknown): string => {
    try { fn() } catch (err) { expect(err).toBeInstanceOf(FnmeshError); return (err as FnmeshError).code }
    return 'none'
  }

  it('refuses an event id over the limit, from a CloudEvent or from the fnmesh headers', () => {
    const structured = headers()
    structured.set('content-type', 'application/cloudevents+json')
    const ce = (id: string): string => JSON.stringify({ specversion: '1.0', id, source: '/s', type: 't', data: {} })
    expect(code(() => prepare(jsMsg('orders.x', ce('i'.repeat(16 * 1024)), structured), subject))).toBe('FNMESH_ERR_INVALID_EVENT')
    expect(prepare(jsMsg('orders.x', ce('i'.repeat(MAX_ID_BYTES)), structured), subject).eventId).toHaveLength(MAX_ID_BYTES)
    const retry = headers()
    retry.set('Fnmesh-Event-Id', 'r'.repeat(MAX_ID_BYTES + 1))
    expect(code(() => prepare(jsMsg('fnmesh.fn.f.retry', '{}', retry), direct))).toBe('FNMESH_ERR_INVALID_EVENT')
  })

  it('refuses an event over the payload limit, raw or once made the handler\'s JSON', () => {
    expect(code(() => prepare(jsMsg('orders.x', new Uint8Array(1025)), subject, 1024))).toBe('FNMESH_ERR_PAYLOAD_TOO_LARGE')
    // 800 bytes of binary data become over 1024 bytes of base64 JSON.
    const binary = headers()
    binary.set('content-type', 'application/octet-stream')
    expect(code(() => prepare(jsMsg('orders.x', new Uint8Array(800), binary), subject, 1024))).toBe('FNMESH_ERR_PAYLOAD_TOO_LARGE')
    expect(prepare(jsMsg('orders.x', '{"a":1}'), subject, 1024).json).toBe('{"a":1}')
  })
})
