import { headers } from '@nats-io/transport-node'
import { describe, expect, it } from 'vitest'
import { FnmeshError } from '../../proto/errors.js'
import { binaryHeaders, parseEventMessage, validateCloudEvent } from '../../core/cloudevents.js'

const valid = { specversion: '1.0', id: 'e1', source: '/s', type: 't' }
const fallback = { id: 'S-1', source: 'nats:a.b', type: 'fnmesh.nats.message', time: '2026-01-01T00:00:00.000Z', subject: 'a.b' }
const enc = (v: unknown): Uint8Array => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v))

function invalid (ce: unknown): string {
  try { validateCloudEvent(ce) } catch (err) { expect((err as FnmeshError).code).toBe('FNMESH_ERR_INVALID_EVENT'); return (err as Error).message }
  throw new Error('expected FNMESH_ERR_INVALID_EVENT')
}

describe('CloudEvent validation', () => {
  it('accepts the required attributes, optional ones and extensions', () => {
    expect(() => { validateCloudEvent(valid) }).not.toThrow()
    expect(() => { validateCloudEvent({ ...valid, time: '2026-01-02T03:04:05.123+02:00', subject: 'x', datacontenttype: 'application/json', data: { a: 1 }, tenant: 'acme', n: 3 }) }).not.toThrow()
    expect(() => { validateCloudEvent({ ...valid, data_base64: 'AAEC' }) }).not.toThrow()
  })

  it.each([
    [null, /JSON object/],
    [[1], /JSON object/],
    [{ ...valid, specversion: '0.3' }, /specversion/],
    [{ ...valid, id: '' }, /id must be/],
    [{ ...valid, source: 5 }, /source must be/],
    [{ specversion: '1.0', id: '1', source: '/s' }, /type must be/],
    [{ ...valid, time: 'yesterday' }, /time must be an RFC 3339/],
    [{ ...valid, time: '2026-13-45T99:00:00Z' }, /time/],
    [{ ...valid, data: 1, data_base64: 'AA==' }, /both present/],
    [{ ...valid, data_base64: 'not base64!' }, /not base64/],
    [{ ...valid, 'Bad-Name': 'x' }, /attribute name/],
    [{ ...valid, ext: { nested: true } }, /extension attribute/],
    [{ ...valid, subject: '' }, /subject/]
  ])('refuses %j', (ce, why) => {
    expect(invalid(ce)).toMatch(why)
  })
})

describe('events from NATS messages', () => {
  it('reads structured mode: attributes from the envelope, the data as the event', () => {
    const h = headers()
    h.set('content-type', 'application/cloudevents+json; charset=utf-8')
    const ev = parseEventMessage(enc({ ...valid, data: { a: 1 }, tenant: 'x' }), h, fallback)
    expect(ev.mode).toBe('structured')
    expect(JSON.parse(ev.json)).toEqual({ a: 1 })
    expect(ev.attributes).toEqual({ ...valid, tenant: 'x' })
  })

  it('reads binary mode: ce- headers, content type, the body as the data', () => {
    const h = binaryHeaders({ ...valid, datacontenttype: 'application/json', ext1: 'v' })
    const ev = parseEventMessage(enc({ b: 2 }), h, fallback)
    expect(ev.mode).toBe('binary')
    expect(JSON.parse(ev.json)).toEqual({ b: 2 })
    expect(ev.attributes).toEqual({ ...valid, datacontenttype: 'application/json', ext1: 'v' })
  })

  it('reads a structured CloudEvent sent without headers (the NATS binding, the Go SDK), with or without an empty header set', () => {
    const body = enc({ ...valid, datacontenttype: 'application/json', data: { a: 1 } })
    for (const h of [undefined, headers()]) {
      const ev = parseEventMessage(body, h, fallback)
      expect(ev.mode).toBe('structured')
      expect(JSON.parse(ev.json)).toEqual({ a: 1 })
      expect(ev.attributes).toEqual({ ...valid, datacontenttype: 'application/json' })
    }
    expect(parseEventMessage(enc(`  \n${JSON.stringify({ ...valid, data_base64: 'AAE=' })}`), undefined, fallback)).toMatchObject({ mode: 'structured', json: '{"data_base64":"AAE="}' })
    // one that names a specversion claims to be a CloudEvent, and is held to it
    expect(() => parseEventMessage(enc({ specversion: '1.0', id: 'x' }), undefined, fallback)).toThrow(/source must be/)
    // JSON without specversion stays a plain message
    expect(parseEventMessage(enc({ id: 'x', source: 's', type: 't' }), undefined, fallback).mode).toBe('plain')
  })

  it('takes the data\'s type from ce-datacontenttype in binary mode: text/plain 42 is the string "42"', () => {
    const h = headers()
    for (const [k, v] of Object.entries({ 'ce-specversion': '1.0', 'ce-id': 'e', 'ce-source': '/s', 'ce-type': 't', 'ce-datacontenttype': 'text/plain' })) h.set(k, v)
    const ev = parseEventMessage(enc('42'), h, fallback)
    expect(ev).toMatchObject({ mode: 'binary', json: '"42"' })
    expect(ev.attributes.datacontenttype).toBe('text/plain')
    // a content-type header still wins
    h.set('content-type', 'application/json')
    expect(parseEventMessage(enc('42'), h, fallback).json).toBe('42')
  })

  it('wraps a plain message: JSON stays JSON, text becomes a string, bytes become base64', () => {
    expect(parseEventMessage(enc({ c: 3 }), undefined, fallback)).toMatchObject({ mode: 'plain', json: '{"c":3}', attributes: { specversion: '1.0', ...fallback } })
    expect(JSON.parse(parseEventMessage(enc('hello'), undefined, fallback).json)).toBe('hello')
    expect(JSON.parse(parseEventMessage(new Uint8Array([0xff, 0xfe]), undefined, fallback).json)).toEqual({ data_base64: '//4=' })
    expect(parseEventMessage(new Uint8Array(0), undefined, fallback).json).toBe('null')
  })

  it('refuses a message that claims to be a CloudEvent and is not a valid one', () => {
    const h = headers()
    h.set('content-type', 'application/cloudevents+json')
    expect(() => parseEventMessage(enc('{not json'), h, fallback)).toThrow(/not JSON/)
    expect(() => parseEventMessage(enc({ ...valid, id: '' }), h, fallback)).toThrow(/id must be/)
    const b = headers()
    b.set('ce-specversion', '1.0')
    b.set('ce-id', 'x')
    expect(() => parseEventMessage(enc({}), b, fallback)).toThrow(/source must be/)
  })
})
