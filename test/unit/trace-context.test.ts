import { describe, expect, it } from 'vitest'
import { formatTraceparent, fromXRay, parseTraceparent, toXRay, traceContextOf, validTracestate } from '../../core/trace-context.js'

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const SPAN = '00f067aa0ba902b7'
const VALID = `00-${TRACE}-${SPAN}-01`

describe('W3C traceparent', () => {
  it('parses the specification\'s example and formats it back the same', () => {
    const tp = parseTraceparent(VALID)
    expect(tp).toEqual({ traceId: TRACE, spanId: SPAN, flags: 1 })
    expect(formatTraceparent(tp!)).toBe(VALID)
    expect(formatTraceparent({ traceId: TRACE, spanId: SPAN, flags: 0 })).toBe(`00-${TRACE}-${SPAN}-00`)
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-ff`)?.flags).toBe(255)
  })

  it('refuses every malformed value instead of guessing', () => {
    const bad: unknown[] = [
      undefined, null, 42, '', 'garbage',
      `01-${TRACE}-${SPAN}-01`, // only version 00 is accepted
      `ff-${TRACE}-${SPAN}-01`,
      `00-${'0'.repeat(32)}-${SPAN}-01`, // all-zero trace id
      `00-${TRACE}-${'0'.repeat(16)}-01`, // all-zero span id
      `00-${TRACE.toUpperCase()}-${SPAN}-01`, // upper case hex
      `00-${TRACE}-${SPAN}-1`,
      `00-${TRACE}-${SPAN}-01-extra`,
      ` ${VALID}`,
      `${VALID} `,
      `00-${TRACE.slice(1)}g-${SPAN}-01`,
      `00_${TRACE}_${SPAN}_01`,
      `${VALID},${VALID}` // two headers joined by a proxy
    ]
    for (const v of bad) expect(parseTraceparent(v), String(v)).toBeUndefined()
  })

  it('keeps a tracestate only beside a valid traceparent, and only when it is well formed', () => {
    expect(traceContextOf(VALID, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7')).toEqual({ traceparent: VALID, tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7' })
    expect(traceContextOf(VALID, 'tenant@vendor=x , other=y')).toEqual({ traceparent: VALID, tracestate: 'tenant@vendor=x,other=y' })
    expect(traceContextOf(VALID, 'Bad Key=1')).toEqual({ traceparent: VALID })
    expect(traceContextOf(VALID, 'a=1,a=2')).toEqual({ traceparent: VALID })
    expect(traceContextOf(VALID, 'x'.repeat(600))).toEqual({ traceparent: VALID })
    expect(traceContextOf('nope', 'congo=t61rcWkgMzE')).toBeUndefined()
    expect(validTracestate(Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(','))).toBeUndefined()
    expect(validTracestate(Array.from({ length: 32 }, (_, i) => `k${i}=v`).join(','))).toBeDefined()
    expect(validTracestate('k=va\nl')).toBeUndefined()
  })
})

describe('AWS X-Ray trace header', () => {
  it('maps a W3C context onto Root, Parent and Sampled as Lambda sets _X_AMZN_TRACE_ID', () => {
    expect(toXRay({ traceId: TRACE, spanId: SPAN, flags: 1 })).toBe(`Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=${SPAN};Sampled=1`)
    expect(toXRay({ traceId: TRACE, spanId: SPAN, flags: 0 })).toMatch(/;Sampled=0$/)
    // bit 0 is the sampled flag; the other bits do not change it
    expect(toXRay({ traceId: TRACE, spanId: SPAN, flags: 2 })).toMatch(/;Sampled=0$/)
  })

  it('reads the header back to the same trace, whatever the order of its fields', () => {
    const tp = parseTraceparent(VALID)!
    expect(fromXRay(toXRay(tp))).toEqual(tp)
    expect(fromXRay(`Sampled=1;Parent=${SPAN};Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Lineage=a:1`)).toEqual(tp)
    expect(fromXRay('Root=1-4bf92f35-77b34da6a3ce929d0e0e473;Parent=00f067aa0ba902b7')).toBeUndefined()
    expect(fromXRay('Root=1-00000000-000000000000000000000000;Parent=00f067aa0ba902b7')).toBeUndefined()
    expect(fromXRay(undefined)).toBeUndefined()
  })
})
