/**
 * The rules every function spec obeys, in one place: the deploy path checks its input with them
 * (core/deploy-options.ts) and the spec it is about to store (core/registry.ts), and every
 * agent checks each spec it reads from the registry with `validateStoredSpec` before anything is
 * bound or run (node/src/registry/cache.ts), as does `fnmesh functions`. Whoever can write to the
 * KV bucket can store anything there: nothing read back is trusted.
 *
 * Self-contained on purpose (proto/ plus the trigger, route and bundle parsers), so it can move to
 * a shared core module as it is.
 */
import type { HttpRoute } from '../proto/codec.js'
import { FnmeshError, InputError, UsageError } from '../proto/errors.js'
import { FUNCTION_NAME_PATTERN } from '../proto/subjects.js'
import { parseBindings, parseDestination } from './bindings.js'
import { checkStoredTerms } from './placement.js'
import { BUNDLE_LIMIT } from './bundle.js'
import { buildRoutes, type AuthMode, type HttpRouteOptions } from './http-routes.js'
import { parseTrigger } from './triggers.js'

/** Ranges (inclusive) of a spec's numeric settings */
export const LIMITS = {
  memoryMb: [128, 10240],
  timeoutMs: [1, 900_000],
  concurrency: [0, 10_000],
  retries: [0, 100],
  retryBackoffMs: [1, 3_600_000],
  maxEventAgeMs: [1000, 7 * 86_400_000],
  /** mesh-wide concurrency cap (0 = none) */
  reserved: [0, 100_000],
  /** sandboxes kept warm across the mesh (0 = none) */
  provisioned: [0, 1000]
} as const

/**
 * Highest version a spec may carry. Versions start at 1; a deploy past this one is refused
 * (FNMESH_ERR_VERSION_LIMIT) instead of wrapping, and agents refuse a stored spec outside 1..this.
 */
export const MAX_SPEC_VERSION = 1_000_000_000
/** Most triggers one function may have */
export const MAX_TRIGGERS = 32
/** Largest environment, bytes of names and values (as Lambda's) */
export const MAX_ENV_BYTES = 4096

/**
 * Variables the sandbox sets itself (as Lambda reserves them). AWS_REGION, AWS_DEFAULT_REGION,
 * TZ, NODE_PATH and NODE_OPTIONS have defaults a function may override (there is no real AWS
 * region to be in); NODE_OPTIONS is checked by `checkNodeOptions`. AWS_LAMBDA_NODEJS_* are the Node
 * runtime's own switches (AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA), which Lambda lets a function set.
 */
export const RESERVED_ENV = /^(_HANDLER|_X_AMZN_TRACE_ID|LAMBDA_TASK_ROOT|LAMBDA_RUNTIME_DIR|AWS_EXECUTION_ENV|AWS_LAMBDA_(?!NODEJS_).*|FNMESH_.*)$/
/**
 * Node options a function may not set in NODE_OPTIONS: a debugger port (--inspect*, --debug*)
 * would listen inside the sandbox, and the permission model's own switches would widen what the
 * runtime lets a function read, write or start.
 */
const FORBIDDEN_NODE_OPTION = /^(--inspect|--debug|--allow-|--permission|--experimental-permission|--no-experimental-permission|--experimental-policy|--policy-integrity)/
/**
 * Node options naming a file or folder: a function may name only its own (a relative path without
 * "..": Node starts in the task root), never one of the machine's, which a sandbox without a mount
 * namespace would otherwise load, read or write before the function runs.
 */
const PATH_NODE_OPTIONS = new Set(['-r', '--require', '--import', '--loader', '--experimental-loader', '--env-file', '--openssl-config',
  '--redirect-warnings', '--diagnostic-dir', '--report-dir', '--report-directory', '--report-filename', '--cpu-prof-dir', '--heap-prof-dir',
  '--icu-data-dir', '--snapshot-blob', '--tls-keylog'])
/** Runtimes a spec may name: "" is Node.js (the handler is a module export), "provided" a Lambda custom runtime */
export const RUNTIMES = ['', 'provided'] as const
export type RuntimeName = typeof RUNTIMES[number]
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
export const HANDLER_PATTERN = /^[A-Za-z0-9_\-@][A-Za-z0-9_\-@./]*\.[A-Za-z_$][A-Za-z0-9_$]*$/
const SHA256_HEX = /^[0-9a-f]{64}$/

type LimitKey = keyof typeof LIMITS

export function checkName (name: unknown): string {
  if (typeof name !== 'string' || !FUNCTION_NAME_PATTERN.test(name)) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Function name "${String(name).slice(0, 100)}" is invalid: use 1-64 letters, digits, "-" or "_", starting with a letter or digit`)
  }
  return name
}

export function checkHandler (handler: unknown): string {
  const h = String(handler)
  if (typeof handler !== 'string' || h.length > 512 || !HANDLER_PATTERN.test(h) || h.slice(0, h.lastIndexOf('.')).split('/').some(p => p === '..' || p === '.' || p === '')) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Handler "${h.slice(0, 100)}" is malformed: expected "file.export" or "dir/file.export" inside the bundle`)
  }
  return h
}

/** A whole number within LIMITS[key] */
export function checkLimit (fn: string, key: LimitKey, value: unknown): number {
  const [min, max] = LIMITS[key]
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Option ${key} of "${fn}" is ${String(value)}: expected a whole number from ${min} to ${max}`)
  }
  return value
}

/** Names, reserved names, string values and the total size of an environment */
export function checkEnv (fn: string, env: unknown): Record<string, string> {
  if (env == null) return {}
  if (typeof env !== 'object' || Array.isArray(env)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Environment of "${fn}" must be an object of strings`)
  const out: Record<string, string> = {}
  let bytes = 0
  for (const [key, value] of Object.entries(env)) {
    if (!ENV_NAME.test(key)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Environment variable name "${key.slice(0, 100)}" is invalid`)
    if (RESERVED_ENV.test(key)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Environment variable "${key}" is reserved by the runtime`)
    if (typeof value !== 'string') throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Environment variable "${key}" must be a string`)
    if (key === 'NODE_OPTIONS') checkNodeOptions(value)
    bytes += Buffer.byteLength(key) + Buffer.byteLength(value)
    out[key] = value
  }
  if (bytes > MAX_ENV_BYTES) throw new InputError('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Environment of "${fn}" is ${bytes} bytes: the limit is ${MAX_ENV_BYTES} (as Lambda's)`)
  return out
}

/**
 * What a function's routes and triggers run (`--target`): "" (the latest; "$LATEST" is stored as
 * ""), a version 1..MAX_SPEC_VERSION, or an alias name (core/aliases.ts has the same grammar).
 */
export function checkTarget (fn: string, target: unknown): string {
  if (target == null || target === '' || target === '$LATEST') return ''
  const t = String(target)
  if (typeof target === 'string' && ((/^[1-9][0-9]{0,9}$/.test(t) && Number(t) <= MAX_SPEC_VERSION) || /^[A-Za-z][A-Za-z0-9_-]{0,63}$/.test(t))) return t
  throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Target "${t.slice(0, 80)}" of "${fn}" is invalid: expected an alias (a letter, then up to 63 letters, digits, "-" or "_"), a version (1 to ${MAX_SPEC_VERSION}) or "$LATEST"`)
}

/**
 * NODE_OPTIONS as Node splits it (spaces, double quotes, backslash escapes): every option
 * allowed except a debugger's and the permission model's (FORBIDDEN_NODE_OPTION).
 */
export function checkNodeOptions (value: string): string[] {
  const words: string[] = []
  let word = ''
  let quoted = false
  let inWord = false
  for (let i = 0; i < value.length; i++) {
    const c = value[i]
    if (c === '\\' && quoted && i + 1 < value.length) { word += value[++i]; continue }
    if (c === '"') { quoted = !quoted; inWord = true; continue }
    if (c === ' ' && !quoted) {
      if (inWord) words.push(word)
      word = ''
      inWord = false
      continue
    }
    word += c
    inWord = true
  }
  if (quoted) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', 'Environment variable "NODE_OPTIONS" has an unterminated string')
  if (inWord) words.push(word)
  for (let i = 0; i < words.length; i++) {
    const w = words[i]
    const eq = w.indexOf('=')
    // Node reads "_" in an option's name as "-"
    const name = (eq < 0 ? w : w.slice(0, eq)).replace(/_/g, '-')
    if (FORBIDDEN_NODE_OPTION.test(name)) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Environment variable "NODE_OPTIONS" may not hold "${w.slice(0, 60)}": debugger and permission options are the sandbox's own`)
    }
    if (PATH_NODE_OPTIONS.has(name)) {
      const value = eq >= 0 ? w.slice(eq + 1) : words[++i] ?? ''
      if (value.startsWith('/') || value.startsWith('~') || value.split(/[\\/]/).includes('..') || /^file:/i.test(value)) {
        throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Environment variable "NODE_OPTIONS" may not hold "${name} ${value.slice(0, 60)}": it may name only files of the function's own code (a relative path without "..")`)
      }
    }
  }
  return words
}

/** The runtime of a spec: "provided" (aliases provided.al2, provided.al2023) or Node.js ("", nodejs, nodejs20.x...) */
export function checkRuntime (runtime: unknown): RuntimeName {
  if (runtime == null || runtime === '') return ''
  if (typeof runtime === 'string' && /^provided(\.al2|\.al2023)?$/.test(runtime)) return 'provided'
  if (typeof runtime === 'string' && /^nodejs([0-9]{1,2}\.x)?$/.test(runtime)) return ''
  throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Runtime "${String(runtime).slice(0, 60)}" is not supported: use "nodejs" (the default) or "provided" (a bundle with an executable bootstrap)`)
}

/** Every trigger parsed by the agent's own parser; returns them canonical and without repeats */
export function checkTriggers (fn: string, triggers: unknown): string[] {
  if (triggers == null) return []
  if (!Array.isArray(triggers)) throw new UsageError('FNMESH_ERR_INVALID_TRIGGER', `Triggers of "${fn}" must be a list`)
  if (triggers.length > MAX_TRIGGERS) throw new UsageError('FNMESH_ERR_INVALID_TRIGGER', `"${fn}" has more than ${MAX_TRIGGERS} triggers`)
  return [...new Set(triggers.map(t => parseTrigger(t).raw))]
}

/**
 * Stored routes, checked by building them again from the settings they hold with the deploy's
 * own builder: a route the deploy could not have produced is refused.
 */
export function checkStoredRoutes (fn: string, routes: readonly HttpRoute[] | undefined): void {
  if (routes == null || routes.length === 0) return
  const bad = (r: HttpRoute, why: string): never => { throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Route "${String(r.method)} ${String(r.path).slice(0, 100)}" of "${fn}" is invalid: ${why}`) }
  const options = routes.map((r): HttpRouteOptions => {
    const auth = (r.auth === '' ? 'none' : r.auth) as AuthMode
    if (r.jwt != null && auth !== 'jwt') bad(r, 'it has JWT settings but its auth is not "jwt"')
    if (r.burst > 0 && r.ratePerS === 0) bad(r, 'it has a burst but no rate')
    return {
      route: `${r.method} ${r.path}`,
      auth,
      jwt: r.jwt != null
        ? {
            secret: r.jwt.secret != null && r.jwt.secret.byteLength > 0 ? r.jwt.secret : undefined,
            jwks: r.jwt.jwks !== '' ? r.jwt.jwks : undefined,
            audience: [...r.jwt.audience],
            issuer: r.jwt.issuer !== '' ? r.jwt.issuer : undefined,
            algorithms: r.jwt.algorithms.length > 0 ? [...r.jwt.algorithms] : undefined
          }
        : undefined,
      schema: r.schema !== '' ? r.schema : undefined,
      cors: r.cors != null
        ? { origins: [...r.cors.allowOrigins], methods: [...r.cors.allowMethods], headers: [...r.cors.allowHeaders], exposeHeaders: [...r.cors.exposeHeaders], maxAgeS: r.cors.maxAgeS, credentials: r.cors.allowCredentials }
        : undefined,
      rateLimit: r.ratePerS > 0 ? { perSecond: r.ratePerS, burst: r.burst > 0 ? r.burst : undefined } : undefined
    }
  })
  buildRoutes(fn, options)
}

/** Stored bindings: each parses and is already in its canonical form (as the deploy writes it) */
export function checkStoredBindings (fn: string, bindings: readonly string[]): void {
  const parsed = parseBindings(fn, [...bindings])
  parsed.forEach((b, i) => {
    if (b.raw !== bindings[i]) throw new UsageError('FNMESH_ERR_INVALID_BINDING', `Binding "${String(bindings[i]).slice(0, 120)}" of "${fn}" is not in canonical form`)
  })
}

/** Stored destinations: each empty or canonical "publish:SUBJECT" */
export function checkStoredDestinations (fn: string, onSuccess: unknown, onFailure: unknown): void {
  for (const [which, v] of [['on-success', onSuccess], ['on-failure', onFailure]] as const) {
    const d = parseDestination(which, v)
    if (d != null && d.raw !== v) throw new UsageError('FNMESH_ERR_INVALID_BINDING', `Destination "${String(v).slice(0, 120)}" of "${fn}" is not in canonical form`)
  }
}

/** The fields of a stored spec the rules look at (a StoredSpec, or a decoded FunctionSpec) */
export interface SpecFields {
  name: string
  version: number
  handler: string
  memoryMb: number
  timeoutMs: number
  concurrency: number
  env: Record<string, string>
  triggers: string[]
  egress?: boolean
  bundleObject: string
  bundleSha256: string
  bundleSize: number
  maxRetries: number
  retryBackoffMs: number
  maxEventAgeMs: number
  routes?: HttpRoute[] | null
  /** canonical "NAME=KIND:TARGET[:ro]" (core/bindings.ts) */
  bindings?: string[] | null
  /** "" (Node.js) or "provided" */
  runtime?: string | null
  /** canonical placement terms (core/placement.ts) */
  constraints?: string[] | null
  prefer?: string[] | null
  reserved?: number
  provisioned?: number
  /** what routes and triggers run: an alias or version, "" = the latest */
  target?: string | null
  /** "publish:SUBJECT" or "" */
  onSuccess?: string | null
  onFailure?: string | null
}

/**
 * Checks a spec read from (or about to be written to) the registry under KV key `key` with every
 * deploy rule: name and key, version 1..MAX_SPEC_VERSION, handler, limits, env, triggers, routes,
 * bundle fields. Returns null when it passes, else a FNMESH_ERR_INVALID_SPEC error saying which
 * rule failed (the rule's own error as its cause).
 */
export function validateStoredSpec (spec: SpecFields, key: string): FnmeshError | null {
  const label = `"${String(key).slice(0, 100)}"`
  try {
    checkName(key)
    if (spec.name !== key) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `it is stored under key ${label} but names itself "${String(spec.name).slice(0, 100)}"`)
    const v = spec.version
    if (!Number.isInteger(v) || v < 1 || v > MAX_SPEC_VERSION) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `version ${String(v)} is outside 1 to ${MAX_SPEC_VERSION}`)
    checkHandler(spec.handler)
    checkLimit(key, 'memoryMb', spec.memoryMb)
    checkLimit(key, 'timeoutMs', spec.timeoutMs)
    checkLimit(key, 'concurrency', spec.concurrency)
    checkLimit(key, 'retries', spec.maxRetries)
    checkLimit(key, 'retryBackoffMs', spec.retryBackoffMs)
    checkLimit(key, 'maxEventAgeMs', spec.maxEventAgeMs)
    checkLimit(key, 'reserved', spec.reserved ?? 0)
    checkLimit(key, 'provisioned', spec.provisioned ?? 0)
    if ((spec.reserved ?? 0) > 0 && (spec.provisioned ?? 0) > (spec.reserved ?? 0)) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `provisioned ${String(spec.provisioned)} is over reserved ${String(spec.reserved)}`)
    }
    checkEnv(key, spec.env)
    checkTriggers(key, spec.triggers)
    checkStoredRoutes(key, spec.routes ?? [])
    checkStoredBindings(key, spec.bindings ?? [])
    if ((spec.target ?? '') !== '' && checkTarget(key, spec.target) !== spec.target) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', 'its target is not in canonical form')
    if (spec.runtime != null && spec.runtime !== '' && spec.runtime !== 'provided') throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `its runtime "${String(spec.runtime).slice(0, 60)}" is not "" or "provided"`)
    checkStoredTerms(key, spec.constraints, 'constraint')
    checkStoredTerms(key, spec.prefer, 'preference')
    checkStoredDestinations(key, spec.onSuccess ?? '', spec.onFailure ?? '')
    if (typeof spec.bundleSha256 !== 'string' || !SHA256_HEX.test(spec.bundleSha256)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', 'its bundle digest is not 64 lowercase hex digits')
    if (spec.bundleObject !== `sha256-${spec.bundleSha256}`) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', 'its bundle object name is not "sha256-" and its digest')
    if (!Number.isInteger(spec.bundleSize) || spec.bundleSize < 1 || spec.bundleSize > BUNDLE_LIMIT) throw new InputError('FNMESH_ERR_BUNDLE_TOO_LARGE', `its bundle size ${String(spec.bundleSize)} is outside 1 to ${BUNDLE_LIMIT} bytes`)
    return null
  } catch (err: any) {
    const reason = String(err?.message ?? err)
    return new InputError('FNMESH_ERR_INVALID_SPEC', `Function ${label} version ${String(spec.version)} is invalid: ${reason}`, { cause: err })
  }
}

/** A spec whose stored bytes do not decode, as the same coded error */
export function undecodableSpec (key: string, cause: unknown): FnmeshError {
  const reason = String((cause as Error)?.message ?? cause)
  return new InputError('FNMESH_ERR_INVALID_SPEC', `Function "${String(key).slice(0, 100)}" is invalid: its stored spec does not decode (${reason})`, { cause })
}
