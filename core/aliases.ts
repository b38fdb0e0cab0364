/**
 * Versions and aliases (issue 15), the rules shared by the SDK, the CLI and agents: the syntax of
 * an invoke target (`NAME`, `NAME:ALIAS`, `NAME:VERSION`, `NAME:$LATEST`), the rules of a stored
 * alias (checked by `alias set` before it stores one and by every agent on every value it reads:
 * whoever can write to the registry bucket can store anything there), and the weighted choice of
 * a version.
 *
 * Aliases live in the registry's KV bucket under `alias.<function>.<alias>`: no function name
 * holds a ".", so such a key can never be a function's.
 */
import type { DeploySignature } from '../proto/codec.js'
import { FnmeshError, InputError, UsageError } from '../proto/errors.js'
import { FUNCTION_NAME_PATTERN } from '../proto/subjects.js'
import { MAX_SPEC_VERSION } from './spec-rules.js'

/** An alias name: a letter first (so it never reads as a version), then letters, digits, "-", "_" */
export const ALIAS_NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/
/** Registry keys of aliases start with this */
export const ALIAS_KEY_PREFIX = 'alias.'
/** The latest version, as Lambda names it */
export const LATEST = '$LATEST'
/** Weights are kept in parts per million: exact, and no float in a signed value */
export const PPM = 1_000_000
const VERSION_TEXT = /^[1-9][0-9]{0,9}$/

export const aliasKey = (fn: string, alias: string): string => `${ALIAS_KEY_PREFIX}${fn}.${alias}`

/** `{ function, alias }` of an alias key, or null when the key is not one (or malformed) */
export function parseAliasKey (key: string): { function: string, alias: string } | null {
  if (!key.startsWith(ALIAS_KEY_PREFIX)) return null
  const rest = key.slice(ALIAS_KEY_PREFIX.length)
  const dot = rest.indexOf('.')
  if (dot < 0) return null
  return { function: rest.slice(0, dot), alias: rest.slice(dot + 1) }
}

/** What an invoke target names */
export type Qualifier =
  | { kind: 'latest' }
  | { kind: 'version', version: number }
  | { kind: 'alias', alias: string }

/** An alias as stored, decoded (before its rules are checked) */
export interface StoredAlias {
  function: string
  name: string
  version: number
  /** 0 when the alias has one version */
  weightedVersion: number
  /** share of invocations for weightedVersion, parts per million */
  weightPpm: number
  serial: number
  updatedAtMs: number
  description: string
  signature?: DeploySignature | null
  /** the KV value: signatures are checked over these exact bytes */
  raw?: Uint8Array
}

/** The qualifier text after "NAME:" ("" = none) parsed strictly; FNMESH_ERR_INVALID_ARGUMENT when malformed */
export function parseQualifier (fn: string, text: string): Qualifier {
  if (text === '' || text === LATEST) return { kind: 'latest' }
  if (VERSION_TEXT.test(text)) {
    const version = Number(text)
    if (version <= MAX_SPEC_VERSION) return { kind: 'version', version }
  }
  if (ALIAS_NAME_PATTERN.test(text)) return { kind: 'alias', alias: text }
  throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Qualifier "${shorten(text)}" of "${shorten(fn)}" is invalid: expected a version (1 to ${MAX_SPEC_VERSION}), "${LATEST}", or an alias (a letter, then up to 63 letters, digits, "-" or "_")`)
}

/**
 * Splits an invoke target "NAME", "NAME:ALIAS", "NAME:VERSION" into the function name and the
 * qualifier text, both checked; FNMESH_ERR_INVALID_ARGUMENT when either is malformed.
 */
export function parseTarget (target: unknown): { function: string, qualifier: string } {
  const text = typeof target === 'string' ? target : String(target)
  const colon = text.indexOf(':')
  const fn = colon < 0 ? text : text.slice(0, colon)
  const qualifier = colon < 0 ? '' : text.slice(colon + 1)
  if (typeof target !== 'string' || !FUNCTION_NAME_PATTERN.test(fn)) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Function name "${shorten(fn)}" is invalid: expected 1 to 64 letters, digits, "-" or "_", starting with a letter or digit`)
  }
  if (colon >= 0) {
    if (qualifier === '') throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Invoke target "${shorten(text)}" is invalid: nothing after ":" (expected NAME:ALIAS or NAME:VERSION)`)
    parseQualifier(fn, qualifier)
  }
  return { function: fn, qualifier }
}

export function checkAliasName (fn: string, alias: unknown): string {
  if (typeof alias !== 'string' || !ALIAS_NAME_PATTERN.test(alias)) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Alias "${shorten(String(alias))}" of "${shorten(fn)}" is invalid: use a letter, then up to 63 letters, digits, "-" or "_" (a name of digits only would read as a version)`)
  }
  return alias
}

/**
 * A weight "VERSION=FRACTION" (the CLI's --weight) as { version, ppm }: a fraction strictly
 * between 0 and 1, at most 6 decimals.
 */
export function parseWeight (fn: string, text: string): { version: number, weightPpm: number } {
  const m = /^([1-9][0-9]{0,9})=(0?\.[0-9]{1,6}|0|1)$/.exec(text.trim())
  const weightPpm = m != null ? Math.round(Number(m[2]) * PPM) : 0
  if (m == null || weightPpm <= 0 || weightPpm >= PPM || Number(m[1]) > MAX_SPEC_VERSION) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Weight "${shorten(text)}" of "${shorten(fn)}" is invalid: expected VERSION=FRACTION with a fraction above 0 and below 1 (at most 6 decimals), e.g. 2=0.1`)
  }
  return { version: Number(m[1]), weightPpm }
}

/**
 * The rules of a stored alias under `key`: null when it obeys them, else the reason
 * (FNMESH_ERR_INVALID_ALIAS). Never throws.
 */
export function validateStoredAlias (alias: StoredAlias, key: string): FnmeshError | null {
  const bad = (why: string): FnmeshError => new InputError('FNMESH_ERR_INVALID_ALIAS', `Stored alias "${shorten(key)}" is invalid: ${why}`)
  const parts = parseAliasKey(key)
  if (parts == null || !FUNCTION_NAME_PATTERN.test(parts.function) || !ALIAS_NAME_PATTERN.test(parts.alias)) return bad('its key is not "alias.<function>.<alias>" with valid names')
  if (alias.function !== parts.function || alias.name !== parts.alias) return bad(`it names "${shorten(alias.function)}:${shorten(alias.name)}"`)
  const version = (v: number): boolean => Number.isInteger(v) && v >= 1 && v <= MAX_SPEC_VERSION
  if (!version(alias.version)) return bad(`version ${alias.version} is outside 1..${MAX_SPEC_VERSION}`)
  if (alias.weightedVersion !== 0 || alias.weightPpm !== 0) {
    if (!version(alias.weightedVersion)) return bad(`weighted version ${alias.weightedVersion} is outside 1..${MAX_SPEC_VERSION}`)
    if (alias.weightedVersion === alias.version) return bad('its weighted version is its main version')
    if (!Number.isInteger(alias.weightPpm) || alias.weightPpm <= 0 || alias.weightPpm >= PPM) return bad(`weight ${alias.weightPpm} ppm is outside 1..${PPM - 1}`)
  }
  if (!Number.isInteger(alias.serial) || alias.serial < 1) return bad(`serial ${alias.serial} is not a whole number from 1`)
  if (alias.description.length > 256) return bad('its description is over 256 characters')
  return null
}

/**
 * The version one invocation of `alias` runs: `weightedVersion` for `weightPpm` millionths of
 * draws of `rng` (uniform in [0, 1)), else `version`.
 */
export function pickVersion (alias: Pick<StoredAlias, 'version' | 'weightedVersion' | 'weightPpm'>, rng: () => number = Math.random): number {
  if (alias.weightedVersion === 0 || alias.weightPpm <= 0) return alias.version
  return rng() * PPM < alias.weightPpm ? alias.weightedVersion : alias.version
}

/** "2=0.1" style text of an alias's routing, for listings */
export function describeWeights (alias: Pick<StoredAlias, 'version' | 'weightedVersion' | 'weightPpm'>): Record<string, number> {
  if (alias.weightedVersion === 0) return { [String(alias.version)]: 1 }
  return { [String(alias.version)]: (PPM - alias.weightPpm) / PPM, [String(alias.weightedVersion)]: alias.weightPpm / PPM }
}

/** A name as quoted in an error message: a hostile one can be kilobytes long */
function shorten (text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}... (${text.length} characters)` : text
}
