/**
 * Declared bindings (issue 17): `NAME=KIND:TARGET[:ro]`, the only stores a function may reach,
 * through its agent over the sandbox's IPC channel. Parsed by the deploy (CLI --bind, fnmesh.yaml
 * `bindings:`, SDK `bindings`) and again by every agent from the stored spec (spec-rules.ts):
 * the agent serves a binding call only when it names one of these.
 */
import { UnsupportedError, UsageError } from '../proto/errors.js'

export type BindingKind = 'kv' | 'object'

export interface Binding {
  /** the property of `context.bindings` */
  name: string
  kind: BindingKind
  /** the KV bucket or object store */
  target: string
  readOnly: boolean
  /** canonical text, as stored in FunctionSpec.bindings */
  raw: string
}

/** Most bindings one function may declare */
export const MAX_BINDINGS = 16
/** A JS identifier of plain letters, so `context.bindings.NAME` works and nothing shadows Object's own */
const BINDING_NAME = /^[A-Za-z][A-Za-z0-9_]{0,63}$/
/** NATS KV and object store names (nats.js validates buckets with the same class of characters) */
export const BUCKET_NAME = /^[A-Za-z0-9_-]{1,64}$/
/** The mesh's own buckets (registry, bundles, keys, leases, schedules) are never bindable */
const RESERVED_BUCKET = /^fnmesh_/i
const OBJECT_PROTO = new Set(Object.getOwnPropertyNames(Object.prototype))

const bad = (text: string, why: string): never => {
  throw new UsageError('FNMESH_ERR_INVALID_BINDING', `Binding "${text.slice(0, 120)}" is invalid: ${why}`)
}

/** Parses one `NAME=KIND:TARGET[:ro]` */
export function parseBinding (text: unknown): Binding {
  if (typeof text !== 'string') return bad(String(text), 'expected text "NAME=KIND:TARGET[:ro]"')
  const eq = text.indexOf('=')
  if (eq < 0) return bad(text, 'expected "NAME=KIND:TARGET[:ro]"')
  const name = text.slice(0, eq)
  if (!BINDING_NAME.test(name) || OBJECT_PROTO.has(name)) bad(text, `name "${name.slice(0, 80)}" must be 1-64 letters, digits or "_", starting with a letter`)
  const parts = text.slice(eq + 1).split(':')
  const kind = parts[0]
  let readOnly = false
  if (parts.length === 3 && parts[2] === 'ro') readOnly = true
  else if (parts.length !== 2) bad(text, 'expected "NAME=KIND:TARGET" with an optional ":ro"')
  const target = parts[1]
  if (kind === 'publish' || kind === 'invoke') {
    throw new UnsupportedError('FNMESH_ERR_UNSUPPORTED', `Binding "${text.slice(0, 120)}": kind "${kind}" is not available in this version (kv and object are)`)
  }
  if (kind !== 'kv' && kind !== 'object') return bad(text, `unknown kind "${String(kind).slice(0, 40)}" (expected kv or object)`)
  if (!BUCKET_NAME.test(target)) bad(text, `bucket "${target.slice(0, 80)}" cannot exist: use 1-64 letters, digits, "-" or "_"`)
  if (RESERVED_BUCKET.test(target)) bad(text, `bucket "${target}" is one of the mesh's own (names starting "fnmesh_" are reserved)`)
  return { name, kind, target, readOnly, raw: `${name}=${kind}:${target}${readOnly ? ':ro' : ''}` }
}

/**
 * A list of bindings (texts, or an object NAME -> "KIND:TARGET[:ro]") checked as a whole: at most
 * MAX_BINDINGS, names unique. Returns them canonical, in the order given.
 */
export function parseBindings (fn: string, input: unknown): Binding[] {
  if (input == null) return []
  let texts: unknown[]
  if (Array.isArray(input)) texts = input
  else if (typeof input === 'object') texts = Object.entries(input).map(([k, v]) => `${k}=${String(v)}`)
  else return bad(String(input), `bindings of "${fn}" must be a list of "NAME=KIND:TARGET[:ro]"`)
  if (texts.length > MAX_BINDINGS) bad(`${texts.length} bindings`, `"${fn}" may declare at most ${MAX_BINDINGS}`)
  const out = texts.map(parseBinding)
  const seen = new Set<string>()
  for (const b of out) {
    if (seen.has(b.name)) bad(b.raw, `the name "${b.name}" is declared twice`)
    seen.add(b.name)
  }
  return out
}
