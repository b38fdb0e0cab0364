/**
 * Deploy options: user input -> validated spec with defaults applied. Shared by the SDK and CLI.
 */
import { UsageError } from '../proto/errors.js'
import { parseBindings, parseDestination } from './bindings.js'
import { parseTerms } from './placement.js'
import type { HttpRoute } from '../proto/codec.js'
import { buildRoutes, type AuthMode, type CorsOptions, type HttpRouteOptions, type JwtOptions, type RateLimitOptions } from './http-routes.js'
import { checkEnv, checkHandler, checkLimit, checkName, checkRuntime, checkTarget, checkTriggers, LIMITS, type RuntimeName } from './spec-rules.js'

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
  /**
   * Declared bindings, `context.bindings.NAME` in the function: "NAME=KIND:TARGET[:ro]" texts
   * (kv:BUCKET, object:BUCKET), or an object NAME -> "KIND:TARGET[:ro]". Buckets missing are made.
   */
  bindings?: string[] | Record<string, string>
  /**
   * "nodejs" (default: the handler is a module export) or "provided" (also provided.al2,
   * provided.al2023): a Lambda custom runtime, the bundle's executable `bootstrap` served the
   * Runtime API at AWS_LAMBDA_RUNTIME_API
   */
  runtime?: string
  /**
   * Placement: "key=value" or "key!=value" terms every node that runs it must satisfy with its
   * labels (agent --label, plus arch, os, cpus, memory). Same-key "=" terms are alternatives.
   */
  constraints?: string[]
  /** Placement: terms the nodes it runs on should satisfy while they have room */
  prefer?: string[]
  /** At most this many runs at once across the whole mesh (Lambda's reserved concurrency); 0 = no cap. @default 0 */
  reserved?: number
  /** Keep this many sandboxes warm across the mesh, on distinct nodes (Lambda's provisioned concurrency). @default 0 */
  provisioned?: number
  /** What the routes and triggers run: an alias ("live"), a version ("3") or the latest ("" or "$LATEST"). @default the latest */
  target?: string
  /** Async invocations: after a run succeeds, a CloudEvent with its result is published here ("publish:SUBJECT") */
  onSuccess?: string
  /** Async invocations: after the final failure (dead-lettered), a CloudEvent with the error and the event ("publish:SUBJECT") */
  onFailure?: string
  /** Sign the deploy with this deployer key (PEM text, a path to a PEM file, or a KeyObject) */
  signingKey?: string | import('node:crypto').KeyObject
}

export const DEPLOY_DEFAULTS = { memoryMb: 128, timeoutMs: 3000, concurrency: 0, retries: 2, retryBackoffMs: 1000, maxEventAgeMs: 6 * 3_600_000, reserved: 0, provisioned: 0 } as const
export { LIMITS }

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
  /** canonical binding texts */
  bindings: string[]
  /** "" (Node.js) or "provided" */
  runtime: RuntimeName
  /** canonical placement terms */
  constraints: string[]
  prefer: string[]
  reserved: number
  provisioned: number
  /** what routes and triggers run: an alias or version, "" = the latest */
  target: string
  /** "publish:SUBJECT" or "" */
  onSuccess: string
  onFailure: string
}

export function validateDeploy (input: DeployOptions): Readonly<ValidDeploy> {
  // The rules are those agents apply to every stored spec (spec-rules.ts), so a deploy that
  // passes here is never refused by an agent.
  const name = checkName(input?.name)
  if (typeof input.path !== 'string' || input.path === '') {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot deploy "${name}": no path to its code`)
  }
  const handler = input.handler !== undefined ? checkHandler(input.handler) : undefined
  const int = (key: keyof typeof LIMITS, value: number | undefined, fallback: number): number => checkLimit(name, key, value ?? fallback)
  const env = checkEnv(name, input.env ?? {})
  const triggers = checkTriggers(name, input.triggers)
  const runtime = checkRuntime(input.runtime)
  const bindings = parseBindings(name, input.bindings).map(b => b.raw)
  if (runtime === 'provided' && bindings.length > 0) {
    throw new UsageError('FNMESH_ERR_INVALID_BINDING', `Cannot deploy "${name}" with runtime provided and bindings: bindings reach a function as context.bindings, which only the Node.js runtime gives`)
  }
  const reserved = int('reserved', input.reserved, DEPLOY_DEFAULTS.reserved)
  const provisioned = int('provisioned', input.provisioned, DEPLOY_DEFAULTS.provisioned)
  if (reserved > 0 && provisioned > reserved) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot deploy "${name}": provisioned (${provisioned}) is over reserved (${reserved})`)
  }
  return Object.freeze({
    reserved,
    provisioned,
    name,
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
    routes: buildRoutes(name, input.routes ?? [], { auth: input.auth, jwt: input.jwt, schema: input.schema, cors: input.cors, rateLimit: input.rateLimit }),
    bindings,
    runtime,
    constraints: parseTerms(name, input.constraints, 'constraint').map(t => t.raw),
    prefer: parseTerms(name, input.prefer, 'preference').map(t => t.raw),
    target: checkTarget(name, input.target),
    onSuccess: parseDestination('on-success', input.onSuccess)?.raw ?? '',
    onFailure: parseDestination('on-failure', input.onFailure)?.raw ?? ''
  })
}
