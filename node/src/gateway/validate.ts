/**
 * JSON Schema validation of request bodies with Ajv (every problem reported, common formats
 * known), compiled once per route of a spec version and kept while that route object lives.
 * Patterns run in RE2 (linear time; core/schema-patterns.ts).
 */
import type { ValidateFunction } from 'ajv'
import type { HttpRoute } from '../../../proto/codec.js'
import { fnmeshError } from '../../../proto/errors.js'
import { newAjv } from '../../../core/http-routes.js'

/** For checks of stored specs: throws FNMESH_ERR_INVALID_ARGUMENT when a pattern of the schema does not compile in RE2 */
export { checkSchemaPatterns } from '../../../core/schema-patterns.js'

export interface Problem {
  /** JSON Pointer into the body, "" for the body itself */
  path: string
  message: string
}

export class BodyValidator {
  private readonly compiled = new WeakMap<HttpRoute, ValidateFunction>()
  private readonly ajv = newAjv()

  /** The problems of `body` against the route's schema, [] when it matches or there is none */
  problems (route: HttpRoute, body: unknown): Problem[] {
    if (route.schema === '') return []
    const validate = this.validator(route)
    if (validate(body)) return []
    return (validate.errors ?? []).slice(0, 100).map(e => ({
      path: e.instancePath,
      message: e.keyword === 'additionalProperties' ? `must not have property "${String((e.params as { additionalProperty?: string }).additionalProperty)}"`
        : e.keyword === 'required' ? `must have property "${String((e.params as { missingProperty?: string }).missingProperty)}"`
          : e.message ?? e.keyword
    }))
  }

  private validator (route: HttpRoute): ValidateFunction {
    let v = this.compiled.get(route)
    if (v == null) {
      try {
        // No $id clash between functions (or versions): schemas are compiled on their own, never
        // registered by id.
        const schema = JSON.parse(route.schema) as Record<string, unknown>
        delete schema.$id
        v = this.ajv.compile(schema)
      } catch (err: any) {
        throw fnmeshError('FNMESH_ERR_INTERNAL', `The route's JSON Schema does not compile: ${String(err?.message ?? err)}`)
      }
      this.compiled.set(route, v)
    }
    return v
  }
}

/** "body/qty must be integer; body must have property \"sku\"" */
export function describeProblems (problems: Problem[]): string {
  return problems.slice(0, 10).map(p => `body${p.path} ${p.message}`).join('; ') + (problems.length > 10 ? `; and ${problems.length - 10} more` : '')
}
