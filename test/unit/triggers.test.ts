import { describe, expect, it } from 'vitest'
import { FnmeshError } from '../../proto/errors.js'
import { bindingsOf, eventInvocationId, minimalSubjects, subjectCovers } from '../../core/events.js'
import { parseTrigger, ticksBetween, triggerId } from '../../core/triggers.js'

function code (fn: () => unknown): string {
  try { fn() } catch (err) { expect(err).toBeInstanceOf(FnmeshError); return (err as FnmeshError).code }
  throw new Error('expected a throw')
}

describe('trigger parsing', () => {
  it('reads subject patterns, schedules and bucket triggers', () => {
    expect(parseTrigger('orders.*')).toEqual({ kind: 'subject', raw: 'orders.*', pattern: 'orders.*' })
    expect(parseTrigger('uploads.>')).toMatchObject({ kind: 'subject', pattern: 'uploads.>' })
    expect(parseTrigger('cron:*/5 * * * *')).toEqual({ kind: 'schedule', raw: 'cron:*/5 * * * *', cron: '*/5 * * * *' })
    expect(parseTrigger('rate:5m')).toEqual({ kind: 'schedule', raw: 'rate:5m', everyMs: 300_000 })
    expect(parseTrigger('rate(5 minutes)')).toMatchObject({ kind: 'schedule', everyMs: 300_000 })
    expect(parseTrigger('rate(1 second)')).toMatchObject({ everyMs: 1000 })
    expect(parseTrigger('rate:2h')).toMatchObject({ everyMs: 7_200_000 })
    expect(parseTrigger('object:photos')).toEqual({ kind: 'object', raw: 'object:photos', bucket: 'photos' })
    expect(parseTrigger('kv:settings')).toEqual({ kind: 'kv', raw: 'kv:settings', bucket: 'settings' })
  })

  it.each([
    ['foo:bar', /unknown trigger kind "foo"/],
    ['cron:not a cron', /cron|invalid/i],
    ['cron:* * * * * * * *', /fields/],
    ['rate:5 fortnights', /rate/],
    ['rate:0s', /at least 1 second/],
    ['rate(five minutes)', /rate/],
    ['orders created', /spaces/],
    ['orders..created', /empty tokens/],
    ['orders.>.x', /">" may only be the last token/],
    ['fnmesh.fn.x', /reserved/],
    ['$KV.x.y', /reserved/],
    ['_INBOX.x', /reserved/],
    ['object:bad bucket', /bucket name/],
    ['kv:', /bucket name/],
    ['', /empty/]
  ])('refuses "%s" with FNMESH_ERR_INVALID_TRIGGER', (raw, why) => {
    let err: FnmeshError | undefined
    try { parseTrigger(raw) } catch (e) { err = e as FnmeshError }
    expect(err?.code).toBe('FNMESH_ERR_INVALID_TRIGGER')
    expect(err?.message).toMatch(why)
  })

  it('gives each trigger a short id that is stable and distinct', () => {
    expect(triggerId(parseTrigger('orders.*'))).toBe(triggerId(parseTrigger(' orders.* ')))
    expect(triggerId(parseTrigger('orders.*'))).not.toBe(triggerId(parseTrigger('orders.>')))
    expect(triggerId(parseTrigger('rate:1s'))).toMatch(/^[0-9a-f]{10}$/)
  })
})

describe('schedule ticks', () => {
  it('puts rate ticks at multiples of the rate since the epoch, after the start and up to the end', () => {
    const t = parseTrigger('rate:1s') as Extract<ReturnType<typeof parseTrigger>, { kind: 'schedule' }>
    expect(ticksBetween(t, 10_500, 13_000)).toEqual([11_000, 12_000, 13_000])
    expect(ticksBetween(t, 11_000, 11_999)).toEqual([])
    expect(ticksBetween(t, 0, 1_000_000, 5)).toHaveLength(5)
  })

  it('follows cron expressions in UTC, with an optional seconds field', () => {
    const every5 = parseTrigger('cron:*/5 * * * *') as Extract<ReturnType<typeof parseTrigger>, { kind: 'schedule' }>
    const start = Date.UTC(2026, 0, 1, 10, 2, 0)
    expect(ticksBetween(every5, start, start + 11 * 60_000).map(ms => new Date(ms).toISOString())).toEqual(['2026-01-01T10:05:00.000Z', '2026-01-01T10:10:00.000Z'])
    const everySecond = parseTrigger('cron:* * * * * *') as Extract<ReturnType<typeof parseTrigger>, { kind: 'schedule' }>
    expect(ticksBetween(everySecond, start, start + 3000)).toEqual([start + 1000, start + 2000, start + 3000])
  })
})

describe('subjects of the events stream', () => {
  it('knows when one pattern covers another', () => {
    expect(subjectCovers('orders.>', 'orders.created')).toBe(true)
    expect(subjectCovers('orders.>', 'orders.*.x')).toBe(true)
    expect(subjectCovers('orders.>', 'orders')).toBe(false)
    expect(subjectCovers('orders.*', 'orders.created')).toBe(true)
    expect(subjectCovers('orders.*', 'orders.>')).toBe(false)
    expect(subjectCovers('orders.created', 'orders.*')).toBe(false)
    expect(subjectCovers('a.*.c', 'a.b.c')).toBe(true)
    expect(subjectCovers('a.*.c', 'a.b.d')).toBe(false)
    expect(subjectCovers('>', 'anything.at.all')).toBe(true)
  })

  it('keeps only patterns no other covers', () => {
    expect(minimalSubjects(['orders.created', 'orders.*', 'fnmesh.fn.>', 'orders.*', 'x.y'])).toEqual(['fnmesh.fn.>', 'orders.*', 'x.y'])
    expect(minimalSubjects(['a.b', 'a.>'])).toEqual(['a.>'])
  })

  it('binds a function to its own subjects and one consumer per trigger', () => {
    const b = bindingsOf({ name: 'thumb', triggers: ['uploads.>', 'object:photos', 'kv:cfg', 'rate:1m'] })
    expect(b.map(x => [x.stream, x.filter])).toEqual([
      ['FNMESH_EVENTS', 'fnmesh.fn.thumb.>'],
      ['FNMESH_EVENTS', 'uploads.>'],
      ['OBJ_photos', '$O.photos.M.>'],
      ['KV_cfg', '$KV.cfg.>']
    ])
    expect(new Set(b.map(x => x.consumer)).size).toBe(4)
    for (const x of b) expect(x.consumer).toMatch(/^fnmesh_thumb_[a-z0-9]+$/)
  })

  it('gives an event the same invocation id on every retry, and another function another id', () => {
    const id = eventInvocationId('thumb', 'evt-1')
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
    expect(eventInvocationId('thumb', 'evt-1')).toBe(id)
    expect(eventInvocationId('other', 'evt-1')).not.toBe(id)
    expect(eventInvocationId('thumb', 'evt-2')).not.toBe(id)
    expect(code(() => parseTrigger('nope:x'))).toBe('FNMESH_ERR_INVALID_TRIGGER')
  })
})
