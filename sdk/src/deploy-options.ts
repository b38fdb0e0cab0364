/**
 * Deploy options: user input -> validated spec with defaults applied. Shared by the SDK and CLI.
 */
import { InputError, UsageError } from '../../proto/errors.js'
import { FUNCTION_NAME_PATTERN } from '../../proto/subjects.js'
import type { HttpRoute } from '../../proto/codec.js'
import { buildRoutes, type AuthMode, type CorsOptions, type HttpRouteOptions, type JwtOptions, type RateLimitOptions } from './http-routes.js'
import { parseTrigger } from './triggers.js'

export interface DeployOptions {
  /** Function name: letters, digits, '-' and '_', at most 64 characters */
  name: string
  /** A file or a folder holding the function's code */
  path: string
  /** "file.export" relative to the bundle root. @default "index.handler" (a single file is stored as index.js/.mjs/.cjs) */
  handler?: string
  /** Memory limit in MB (Lambda's range). @default 128 */
  memoryMb?: number
  /** Timeout per invocation. @default 3000 (Lambda's default) */
  timeoutMs?: number
  /** Max concurrent sandboxes of this function on one node; 0 = the node's slots. @default 0 */
  concurrency?: number
  /** Environment variables the function sees */
  env?: Record<string, string>
  /** Event triggers (subject pattern, cron:, rate:, object:, kv:) */
  triggers?: string[]
  /** Allow outbound network. @default false */
  egress?: boolean
  /** Async events: retries after a failed run. @default 2 (as Lambda) */
  retries?: number
  /** Async events: delay before the first retry, doubling after each. @default 1000 */
  retryBackoffMs?: number
  /** Async events: older events go to the dead-letter stream instead of running. @default 6 hours */
  maxEventAgeMs?: number
  /** HTTP routes served by every agent's gateway: "GET /orders/{id}", "ANY /files/{proxy+}", or a route with its own settings */
  routes?: Array<string | HttpRouteOptions>
  /** Auth of the routes that do not set their own. @default "none" */
  auth?: AuthMode
  /** JWT settings of routes with auth "jwt" */
  jwt?: JwtOptions
  /** JSON Schema the JSON body of every route must match (object or JSON text) */
  schema?: object | string
  /** CORS of the routes (true: any origin) */
  cors?: CorsOptions | boolean
  /** Mesh-wide rate limit of each route */
  rateLimit?: RateLimitOptions
  /** Sign the deploy with this deployer key (PEM text, a path to a PEM file, or a KeyObject) */
  signingKey?: string | import('node:crypto').KeyObject
}

export const DEPLOY_DEFAULTS = { memoryMb: 128, timeoutMs: 3000, concurrency: 0, retries: 2, retryBackoffMs: 1000, maxEventAgeMs: 6 * 3_600_000 } as const
export const LIMITS = {
  memoryMb: [128, 10240],
  timeoutMs: [1, 900_000],
  concurrency: [0, 10_000],
  retries: [0, 100],
  retryBackoffMs: [1, 3_600_000],
  maxEventAgeMs: [1000, 7 * 86_400_000]
} as const

/** Variables the sandbox sets itself (as Lambda reserves them) */
const RESERVED_ENV = /^(_HANDLER|LAMBDA_TASK_ROOT|LAMBDA_RUNTIME_DIR|AWS_LAMBDA_.*|FNMESH_.*|NODE_OPTIONS)$/
const HANDLER_PATTERN = /^[A-Za-z0-9_\-@][A-Za-z0-9_\-@./]*\.[A-Za-z_$][A-Za-z0-9_$]*$/

export interface ValidDeploy {
  name: string
  path: string
  handler: string | undefined
  memoryMb: number
  timeoutMs: number
  concurrency: number
  env: Record<string, string>
  triggers: string[]
  egress: boolean
  retries: number
  retryBackoffMs: number
  maxEventAgeMs: number
  routes: HttpRoute[]
}

export function validateDeploy (input: DeployOptions): Readonly<ValidDeploy> {
  if (typeof input?.name !== 'string' || !FUNCTION_NAME_PATTERN.test(input.name)) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Function name "${String(input?.name)}" is invalid: use 1-64 letters, digits, "-" or "_", starting with a letter or digit`)
  }
  if (typeof input.path !== 'string' || input.path === '') {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot deploy "${input.name}": no path to its code`)
  }
  const handler = input.handler
  if (handler !== undefined && (!HANDLER_PATTERN.test(handler) || handler.slice(0, handler.lastIndexOf('.')).split('/').some(p => p === '..' || p === '.' || p === ''))) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Handler "${handler}" is malformed: expected "file.export" or "dir/file.export" inside the bundle`)
  }
  const int = (key: keyof typeof LIMITS, value: number | undefined, fallback: number): number => {
    const v = value ?? fallback
    const [min, max] = LIMITS[key]
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Option ${key} of "${input.name}" is ${String(value)}: expected a whole number from ${min} to ${max}`)
    }
    return v
  }
  const env: Record<string, string> = {}
  for (const [key, value] of Object.entries(input.env ?? {})) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Environment variable name "${key}" is invalid`)
    if (RESERVED_ENV.test(key)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Environment variable "${key}" is reserved by the runtime`)
    if (typeof value !== 'string') throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Environment variable "${key}" must be a string`)
    env[key] = value
  }
  const utf8 = new TextEncoder()
  const envBytes = Object.entries(env).reduce((n, [k, v]) => n + utf8.encode(k + v).byteLength, 0)
  if (envBytes > 4096) throw new InputError('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Environment of "${input.name}" is ${envBytes} bytes: the limit is 4096 (as Lambda's)`)
  if (input.triggers != null && !Array.isArray(input.triggers)) throw new UsageError('FNMESH_ERR_INVALID_TRIGGER', `Triggers of "${input.name}" must be a list`)
  if ((input.triggers ?? []).length > 32) throw new UsageError('FNMESH_ERR_INVALID_TRIGGER', `"${input.name}" has more than 32 triggers`)
  const triggers = [...new Set((input.triggers ?? []).map(t => parseTrigger(t).raw))]
  return Object.freeze({
    name: input.name,
    path: input.path,
    handler,
    memoryMb: int('memoryMb', input.memoryMb, DEPLOY_DEFAULTS.memoryMb),
    timeoutMs: int('timeoutMs', input.timeoutMs, DEPLOY_DEFAULTS.timeoutMs),
    concurrency: int('concurrency', input.concurrency, DEPLOY_DEFAULTS.concurrency),
    env,
    triggers,
    egress: input.egress === true,
    retries: int('retries', input.retries, DEPLOY_DEFAULTS.retries),
    retryBackoffMs: int('retryBackoffMs', input.retryBackoffMs, DEPLOY_DEFAULTS.retryBackoffMs),
    maxEventAgeMs: int('maxEventAgeMs', input.maxEventAgeMs, DEPLOY_DEFAULTS.maxEventAgeMs),
    routes: buildRoutes(input.name, input.routes ?? [], { auth: input.auth, jwt: input.jwt, schema: input.schema, cors: input.cors, rateLimit: input.rateLimit })
  })
}
