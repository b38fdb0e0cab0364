/**
 * Regular expressions of JSON Schemas (`pattern`, `patternProperties`) run in RE2 (the pure-JS
 * port `re2js`): matching time is linear in the input, so no request body can make a route's
 * schema backtrack for seconds (`^(a+)+$` against 40 bytes takes V8's engine seconds and RE2
 * well under a millisecond). JavaScript syntax is translated first (`\uXXXX`, `(?<name>)`);
 * what RE2 cannot run in linear time (lookaround, backreferences) does not compile, and the
 * deploy is refused.
 */
import { RE2JS } from 're2js'
import { UsageError } from '../proto/errors.js'

/** The part of a RegExp that Ajv's generated code uses */
interface LinearRegExp { test: (s: string) => boolean, toString: () => string }

/** Thrown when a schema's pattern does not compile in RE2 */
export class PatternError extends Error {
  constructor (readonly pattern: string, readonly why: string) {
    super(`pattern "${pattern.length > 200 ? pattern.slice(0, 200) + '...' : pattern}" cannot run in linear time (RE2): ${why}`)
  }
}

/**
 * Ajv's `code.regExp` engine. `flags` is "u" or "" (Ajv's unicodeRegExp); RE2 always works on
 * code points, so both compile the same.
 */
export const linearRegExp = Object.assign((pattern: string, _flags: string): LinearRegExp => {
  let re: RE2JS
  try {
    re = RE2JS.compile(RE2JS.translateRegExp(pattern))
  } catch (err: any) {
    throw new PatternError(pattern, String(err?.message ?? err).replace(/^error parsing regexp: /, ''))
  }
  return { test: (s: string) => re.test(s), toString: () => `/${pattern}/re2` }
}, { code: 'linearRegExp' })

/**
 * Checks that every pattern of a JSON Schema (given as JSON text or object) compiles in RE2.
 * Throws FNMESH_ERR_INVALID_ARGUMENT naming the pattern otherwise. Other schema problems are
 * left to Ajv's compile, which runs after.
 */
export function checkSchemaPatterns (schema: string | object, where = 'JSON Schema'): void {
  const parsed: unknown = typeof schema === 'string' ? JSON.parse(schema) : schema
  for (const { path, pattern } of schemaPatterns(parsed, '')) {
    try { linearRegExp(pattern, 'u') } catch (err: any) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `${where} is invalid: ${path} ${String(err?.message ?? err)}; lookaround and backreferences are not supported`)
    }
  }
}

/** Every `pattern` string and `patternProperties` key in schema positions (not inside const, enum, default, examples) */
function * schemaPatterns (node: unknown, path: string, depth = 0): Generator<{ path: string, pattern: string }> {
  if (depth > 64 || node == null || typeof node !== 'object') return
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) yield * schemaPatterns(node[i], `${path}/${i}`, depth + 1)
    return
  }
  for (const [key, value] of Object.entries(node as Record<string, unknown>)) {
    const at = `${path}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`
    if (DATA_KEYWORDS.has(key)) continue
    if (key === 'pattern' && typeof value === 'string') { yield { path: at, pattern: value }; continue }
    if (key === 'patternProperties' && value != null && typeof value === 'object' && !Array.isArray(value)) {
      for (const p of Object.keys(value)) yield { path: `${at}/${p}`, pattern: p }
    }
    yield * schemaPatterns(value, at, depth + 1)
  }
}

const DATA_KEYWORDS = new Set(['const', 'enum', 'default', 'examples'])
