/**
 * Parsers of CLI option values. A value the command line cannot use (not a number, out of
 * range, not a duration, a file that cannot be read) is FNMESH_ERR_BAD_USAGE, exit status 2, and
 * is found before anything connects: `--timeout abc` never reaches the mesh.
 */
import { accessSync, constants, statSync } from 'node:fs'
import { FnmeshError, UsageError } from '../../../proto/errors.js'
import { parseDuration } from '../../../core/duration.js'
import type { AgentOptions } from '../config.js'

/** A whole number from min to max */
export const int = (name: string, min = 0, max = Number.MAX_SAFE_INTEGER) => (value: string): number => {
  const n = Number(value)
  if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new UsageError('FNMESH_ERR_BAD_USAGE', `Option ${name} expects a whole number ${max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`}, got "${value}"`)
  }
  return n
}

/** Seconds (fractions allowed), more than 0 and at most max; returns milliseconds */
export const seconds = (name: string, maxS: number) => (value: string): number => {
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0 || n > maxS) {
    throw new UsageError('FNMESH_ERR_BAD_USAGE', `Option ${name} expects seconds, more than 0 and at most ${maxS}, got "${value}"`)
  }
  return Math.max(1, Math.round(n * 1000))
}

/** "90s", "15m", "2h", "7d" -> milliseconds, more than 0 */
export const duration = (name: string) => (value: string): number => {
  const ms = asUsage(name, () => parseDuration(value))
  if (ms <= 0) throw new UsageError('FNMESH_ERR_BAD_USAGE', `Option ${name} expects a duration of more than 0, got "${value}"`)
  return ms
}

/** Runs a parser of an option's value (`name` "" when its message names the option); whatever it refuses becomes FNMESH_ERR_BAD_USAGE */
export function asUsage<T> (name: string, parse: () => T): T {
  try {
    return parse()
  } catch (err) {
    if (err instanceof FnmeshError && err.code !== 'FNMESH_ERR_BAD_USAGE') {
      throw new UsageError('FNMESH_ERR_BAD_USAGE', name === '' ? err.message : `Option ${name}: ${err.message}`, { cause: err })
    }
    throw err
  }
}

/** A path that exists and can be read (a file, or a folder when `folder`) */
export const readable = (name: string, folder = false) => (value: string): string => {
  let st
  try {
    accessSync(value, constants.R_OK)
    st = statSync(value)
  } catch (err: any) {
    throw new UsageError('FNMESH_ERR_BAD_USAGE', `Option ${name}: cannot read "${value}" (${String(err?.code ?? err?.message)})`)
  }
  if (!st.isFile() && !(folder && st.isDirectory())) throw new UsageError('FNMESH_ERR_BAD_USAGE', `Option ${name}: "${value}" is not a file${folder ? ' or folder' : ''}`)
  return value
}

/**
 * Tracing options: --otlp-endpoint, else OTel's own environment variable (OTEL_SDK_DISABLED=true
 * turns that off); none of them: tracing is off and no OpenTelemetry SDK is loaded.
 */
export function otlpOptions (opts: { otlpEndpoint?: string, otlpHeader?: string[], otlpServiceName?: string }, env: NodeJS.ProcessEnv): AgentOptions['otlp'] {
  const fromEnv = env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true' ? undefined : env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || undefined
  const endpoint = opts.otlpEndpoint ?? fromEnv
  if (endpoint == null) return undefined
  const headers: Record<string, string> = {}
  for (const h of opts.otlpHeader ?? []) {
    const eq = h.indexOf('=')
    if (eq <= 0) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Option --otlp-header "${h.slice(0, 100)}" is invalid: expected NAME=VALUE`)
    headers[h.slice(0, eq).trim()] = h.slice(eq + 1).trim()
  }
  const delay = Number(env.OTEL_BSP_SCHEDULE_DELAY)
  return {
    endpoint,
    headers,
    serviceName: opts.otlpServiceName ?? (env.OTEL_SERVICE_NAME?.trim() || undefined),
    exportDelayMs: env.OTEL_BSP_SCHEDULE_DELAY != null && Number.isInteger(delay) && delay >= 10 && delay <= 60_000 ? delay : undefined
  }
}
