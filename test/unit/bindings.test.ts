import { describe, expect, it } from 'vitest'
import { decode, encode } from '../../proto/codec.js'
import { parseBinding, parseBindings, parseDestination, MAX_BINDINGS } from '../../core/bindings.js'
import { validateDeploy } from '../../core/deploy-options.js'
import { validateStoredSpec, type SpecFields } from '../../core/spec-rules.js'
import { rolePermissions } from '../../node/src/dev/nats-auth-config.js'
import { conditionOf, destinationEvent } from '../../node/src/triggers/destinations.js'

const sha = 'b'.repeat(64)
const spec: SpecFields = {
  name: 'counter', version: 1, handler: 'index.handler', memoryMb: 128, timeoutMs: 3000, concurrency: 0, env: {}, triggers: [],
  bundleObject: `sha256-${sha}`, bundleSha256: sha, bundleSize: 10, maxRetries: 2, retryBackoffMs: 1000, maxEventAgeMs: 21_600_000,
  bindings: ['counts=kv:counts', 'files=object:files:ro']
}

function code (fn: () => unknown): string {
  try { fn() } catch (err: any) { return `${String(err.code)}: ${String(err.message)}` }
  return 'no error'
}

describe('bindings: NAME=KIND:TARGET[:ro]', () => {
  it('parses kv and object bindings, read-only or not, into canonical text', () => {
    expect(parseBinding('counts=kv:counts')).toEqual({ name: 'counts', kind: 'kv', target: 'counts', readOnly: false, raw: 'counts=kv:counts' })
    expect(parseBinding('files=object:my-files_1:ro')).toMatchObject({ kind: 'object', target: 'my-files_1', readOnly: true, raw: 'files=object:my-files_1:ro' })
    expect(parseBindings('f', { a: 'kv:x', b: 'object:y:ro' }).map(b => b.raw)).toEqual(['a=kv:x', 'b=object:y:ro'])
  })

  it('refuses buckets that cannot exist, reserved buckets, bad names and unknown kinds with FNMESH_ERR_INVALID_BINDING', () => {
    expect(code(() => parseBinding('c=kv:bad.bucket'))).toMatch(/^FNMESH_ERR_INVALID_BINDING: .*bucket "bad.bucket" cannot exist/)
    expect(code(() => parseBinding('c=kv:'))).toMatch(/^FNMESH_ERR_INVALID_BINDING/)
    expect(code(() => parseBinding(`c=kv:${'x'.repeat(65)}`))).toMatch(/^FNMESH_ERR_INVALID_BINDING/)
    expect(code(() => parseBinding('c=kv:fnmesh_functions'))).toMatch(/^FNMESH_ERR_INVALID_BINDING: .*reserved/)
    expect(code(() => parseBinding('c=object:FNMESH_bundles'))).toMatch(/^FNMESH_ERR_INVALID_BINDING: .*reserved/)
    expect(code(() => parseBinding('__proto__=kv:x'))).toMatch(/^FNMESH_ERR_INVALID_BINDING: .*name/)
    expect(code(() => parseBinding('toString=kv:x'))).toMatch(/^FNMESH_ERR_INVALID_BINDING: .*name/)
    expect(code(() => parseBinding('c=sql:x'))).toMatch(/^FNMESH_ERR_INVALID_BINDING: .*unknown kind "sql"/)
    expect(code(() => parseBinding('c=kv:x:rw'))).toMatch(/^FNMESH_ERR_INVALID_BINDING/)
    expect(code(() => parseBinding('kv:x'))).toMatch(/^FNMESH_ERR_INVALID_BINDING/)
    expect(code(() => parseBindings('f', ['a=kv:x', 'a=kv:y']))).toMatch(/declared twice/)
    expect(code(() => parseBindings('f', Array.from({ length: MAX_BINDINGS + 1 }, (_, i) => `b${i}=kv:x`)))).toMatch(/at most 16/)
  })

  it('are part of the deploy options and of the stored spec, checked again as agents read it', () => {
    expect(validateDeploy({ name: 'counter', path: '.', bindings: ['counts=kv:counts'] }).bindings).toEqual(['counts=kv:counts'])
    expect(code(() => validateDeploy({ name: 'counter', path: '.', bindings: ['counts=kv:a/b'] }))).toMatch(/^FNMESH_ERR_INVALID_BINDING/)
    expect(validateStoredSpec(spec, 'counter')).toBeNull()
    const decoded = decode('FunctionSpec', encode('FunctionSpec', { ...spec, createdAtMs: 1 } as never))
    expect([...decoded.bindings]).toEqual(spec.bindings)
    expect(validateStoredSpec(decoded as unknown as SpecFields, 'counter')).toBeNull()
    for (const bindings of [['x=kv:fnmesh_functions'], ['x=kv:a.b'], ['x=kv:a', 'x=kv:b'], ['x = kv:a'], ['x=kv:a:ro:ro']]) {
      const err = validateStoredSpec({ ...spec, bindings }, 'counter')
      expect(err?.code, bindings.join()).toBe('FNMESH_ERR_INVALID_SPEC')
    }
  })

  it('parses publish bindings to subject patterns and invoke bindings to functions', () => {
    expect(parseBinding('out=publish:orders.>')).toEqual({ name: 'out', kind: 'publish', target: 'orders.>', readOnly: false, raw: 'out=publish:orders.>' })
    expect(parseBinding('out=publish:orders.*.created')).toMatchObject({ target: 'orders.*.created' })
    expect(parseBinding('out=publish:a:b.c')).toMatchObject({ kind: 'publish', target: 'a:b.c' })
    expect(parseBinding('next=invoke:resize-2')).toEqual({ name: 'next', kind: 'invoke', target: 'resize-2', readOnly: false, raw: 'next=invoke:resize-2' })
    for (const bad of ['o=publish:>', 'o=publish:*', 'o=publish:*.x', 'o=publish:a.>.b', 'o=publish:fnmesh.fn.x', 'o=publish:_INBOX.x', 'o=publish:$JS.API.x', 'o=publish:a..b', 'o=publish:', 'o=publish:a b', 'o=publish:a:ro', 'n=invoke:', 'n=invoke:-x', 'n=invoke:a.b', 'n=invoke:x:ro']) {
      expect(code(() => parseBinding(bad)), bad).toMatch(/^FNMESH_ERR_INVALID_BINDING/)
    }
  })

  it('parses destinations "publish:SUBJECT" with a literal subject, and checks them in stored specs', () => {
    expect(parseDestination('on-success', 'publish:orders.done')).toEqual({ subject: 'orders.done', raw: 'publish:orders.done' })
    expect(parseDestination('on-failure', '')).toBeNull()
    expect(parseDestination('on-failure', undefined)).toBeNull()
    for (const bad of ['publish:orders.*', 'publish:orders.>', 'kv:x', 'orders.done', 'publish:fnmesh.dlq.x', 'publish:']) {
      expect(code(() => parseDestination('on-failure', bad)), bad).toMatch(/^FNMESH_ERR_INVALID_BINDING/)
    }
    expect(validateDeploy({ name: 'f', path: '.', onSuccess: 'publish:a.ok', onFailure: 'publish:a.bad' })).toMatchObject({ onSuccess: 'publish:a.ok', onFailure: 'publish:a.bad' })
    expect(validateStoredSpec({ ...spec, onSuccess: 'publish:a.ok', onFailure: '' }, 'counter')).toBeNull()
    expect(validateStoredSpec({ ...spec, onSuccess: 'publish:a.*' }, 'counter')?.code).toBe('FNMESH_ERR_INVALID_SPEC')
    expect(validateStoredSpec({ ...spec, onFailure: 'publish: a' }, 'counter')?.code).toBe('FNMESH_ERR_INVALID_SPEC')
  })

  it('gives agents publish rights on exactly the subjects functions publish on, and refuses patterns that could reach the mesh\'s own', () => {
    const p = rolePermissions({ publishSubjects: ['orders.done', 'audit.*.>'] })
    expect(p.agent.publish).toEqual(expect.arrayContaining(['orders.done', 'audit.*.>']))
    expect(rolePermissions().agent.publish).not.toContain('orders.done')
    for (const bad of ['>', '*.x', 'fnmesh.x', '$KV.b.>', '_INBOX.x', 'a..b', 'a.>.b']) {
      expect(() => rolePermissions({ publishSubjects: [bad] }), bad).toThrow(/invalid/)
    }
  })

  it('describes an async outcome as a CloudEvent modelled on Lambda\'s destination record', () => {
    const s = { name: 'f', version: 3, onSuccess: 'publish:a.ok' } as any
    const ev = { eventId: 'e1', json: '{"x":1}', hops: 0 } as any
    const ok = JSON.parse(destinationEvent(s, ev, { condition: 'Success', attempts: 1, result: '{"y":2}' }, 0).body)
    expect(ok).toMatchObject({ specversion: '1.0', type: 'fnmesh.invocation.success', source: 'fnmesh/f', time: '1970-01-01T00:00:00.000Z', data: { condition: 'Success', function: 'f', version: 3, eventId: 'e1', attempts: 1, requestPayload: { x: 1 }, responsePayload: { y: 2 } } })
    expect(ok.id).toBe(JSON.parse(destinationEvent(s, ev, { condition: 'Success', attempts: 2, result: 'null' }).body).id)
    const bad = JSON.parse(destinationEvent(s, { ...ev, json: JSON.stringify({ big: 'x'.repeat(300_000) }) }, { condition: conditionOf('event too old'), attempts: 0, error: { code: 'FNMESH_ERR_TIMEOUT', errorType: 'Sandbox.Timedout', errorMessage: 'Task timed out', trace: [] } as any }).body)
    expect(bad).toMatchObject({ type: 'fnmesh.invocation.failure', data: { condition: 'EventAgeExceeded', requestTruncated: true, error: { code: 'FNMESH_ERR_TIMEOUT', errorType: 'Sandbox.Timedout', message: 'Task timed out' } } })
    expect(bad.data.requestPayload).toBeUndefined()
    expect(bad.id).not.toBe(ok.id)
  })
})
