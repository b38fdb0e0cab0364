import { describe, expect, it } from 'vitest'
import { FnmeshError } from '../../proto/errors.js'
import { buildRoutes, newAjv } from '../../core/http-routes.js'
import { checkSchemaPatterns } from '../../node/src/gateway/validate.js'

describe('JSON Schema patterns in RE2', () => {
  it('matches with JavaScript semantics for ordinary patterns (search, anchors, classes, \\u escapes, named groups)', () => {
    const v = newAjv().compile({ type: 'object', properties: { a: { type: 'string', pattern: '^[A-Z][0-9]+$' }, b: { type: 'string', pattern: 'x\\d' }, c: { type: 'string', pattern: '^\\u0041(?<n>b)$' } }, patternProperties: { '^h-': { type: 'number' } } })
    expect(v({ a: 'A12', b: 'zzx1zz', c: 'Ab', 'h-1': 1 })).toBe(true)
    expect(v({ a: 'a12' })).toBe(false)
    expect(v({ b: 'xx' })).toBe(false)
    expect(v({ 'h-1': 'no' })).toBe(false)
  })

  it('runs a backtracking pattern in linear time: ^(a+)+$ against 100,000 characters in well under a second', () => {
    const v = newAjv().compile({ type: 'string', pattern: '^(a+)+$' })
    const t0 = performance.now()
    expect(v('a'.repeat(100_000) + '!')).toBe(false)
    expect(performance.now() - t0).toBeLessThan(500)
  })

  it.each([
    ['lookahead', { pattern: '^(?=a)a$' }],
    ['negative lookahead', { properties: { x: { pattern: '(?!b)' } } }],
    ['backreference', { items: [{ pattern: '(a)\\1' }] }],
    ['lookbehind in patternProperties', { patternProperties: { '(?<=a)b': {} } }]
  ])('refuses a %s with FNMESH_ERR_INVALID_ARGUMENT naming where it is', (_, schema) => {
    let err: unknown
    try { checkSchemaPatterns(JSON.stringify(schema)) } catch (e) { err = e }
    expect(err).toBeInstanceOf(FnmeshError)
    expect((err as FnmeshError).code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    expect((err as FnmeshError).message).toMatch(/\/(pattern|patternProperties\/.+) pattern ".*" cannot run in linear time \(RE2\)/)
    expect(() => buildRoutes('f', ['POST /a'], { schema })).toThrow(/cannot run in linear time/)
  })

  it('ignores pattern-like values that are data, not schema (const, enum, default, examples)', () => {
    expect(() => { checkSchemaPatterns({ properties: { p: { const: { pattern: '(?=x)' }, default: { pattern: '(a)\\1' } } } }) }).not.toThrow()
  })
})
