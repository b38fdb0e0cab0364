/**
 * Declared bindings (issue 17): `NAME=KIND:TARGET[:ro]`, the only stores a function may reach,
 * through its agent over the sandbox's IPC channel. Parsed by the deploy (CLI --bind, fnmesh.yaml
 * `bindings:`, SDK `bindings`) and again by every agent from the stored spec (spec-rules.ts):
 * the agent serves a binding call only when it names one of these.
 */
import { UsageError } from '../proto/errors.js'
import { FUNCTION_NAME_PATTERN } from '../proto/subjects.js'

export type BindingKind = 'kv' | 'object' | 'publish' | 'invoke'

export interface Binding {
  /** the property of `context.bindings` */
  name: string
  kind: BindingKind
  /** the KV bucket or object store, the subject pattern (publish) or the function (invoke) */
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
/** A token of a subject a function may publish on (the SDK's publish takes the same) */
const SUBJECT_TOKEN = /^[A-Za-z0-9_\-:=@+~]+$/
/** Subjects fnmesh uses itself (and NATS's own): never published through a binding */
const RESERVED_SUBJECT = /^(fnmesh|_INBOX|\$)/i
/**
 * Most hops of a chain of functions calling or triggering each other through bindings and
 * destinations (a function publishing to its own trigger subject would otherwise loop forever):
 * an invoke or publish past it is refused, an event past it dead-lettered, with
 * FNMESH_ERR_LOOP_DETECTED.
 */
export const MAX_HOPS = 16
/** The header that carries an event's hop count (0 or absent: published from outside the mesh) */
export const HOPS_HEADER = 'Fnmesh-Hops'

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
  const rest = text.slice(eq + 1)
  const colon = rest.indexOf(':')
  const kind = colon > 0 ? rest.slice(0, colon) : rest
  let target = colon > 0 ? rest.slice(colon + 1) : ''
  let readOnly = false
  if (kind === 'publish' || kind === 'invoke') {
    if (target.endsWith(':ro')) bad(text, `a ${kind} binding cannot be read-only: it exists to write`)
    if (kind === 'publish') checkPublishPattern(text, target)
    else if (!FUNCTION_NAME_PATTERN.test(target)) bad(text, `function "${target.slice(0, 80)}" cannot exist: a name has 1-64 letters, digits, "-" or "_", starting with a letter or digit`)
    return { name, kind, target, readOnly, raw: `${name}=${kind}:${target}` }
  }
  if (kind !== 'kv' && kind !== 'object') return bad(text, `unknown kind "${String(kind).slice(0, 40)}" (expected kv, object, publish or invoke)`)
  if (target.endsWith(':ro')) { readOnly = true; target = target.slice(0, -3) }
  if (target.includes(':')) bad(text, 'expected "NAME=KIND:TARGET" with an optional ":ro"')
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

/**
 * A subject pattern a publish binding (or a destination, `literal`) may name: tokens of letters,
 * digits and -_:=@+~, `*` and a last `>` allowed, the first token literal and not one of the
 * mesh's own (the deploy adds the pattern to the events stream, which must never capture
 * everything or another stream's subjects).
 */
export function checkPublishPattern (text: string, pattern: string, literal = false): string {
  if (pattern.length === 0 || pattern.length > 256) bad(text, 'a subject has 1 to 256 characters')
  if (RESERVED_SUBJECT.test(pattern)) bad(text, `subject "${pattern.slice(0, 80)}" is reserved (subjects starting "fnmesh", "_INBOX" or "$")`)
  const tokens = pattern.split('.')
  tokens.forEach((t, i) => {
    if (!literal && t === '>' && i === tokens.length - 1 && i > 0) return
    if (!literal && t === '*' && i > 0) return
    if (!SUBJECT_TOKEN.test(t)) {
      bad(text, t === '' ? 'a subject cannot have empty tokens' : (t === '*' || t === '>') ? (literal ? 'this subject cannot hold wildcards' : 'the first token of a subject pattern must be literal, and ">" only last') : `token "${t.slice(0, 40)}" has characters a subject cannot hold`)
    }
  })
  return pattern
}

/** Destinations of async results: "publish:SUBJECT" (a literal subject) */
export interface Destination { subject: string, raw: string }

/** Parses `--on-success` / `--on-failure` "publish:SUBJECT"; empty or absent = none */
export function parseDestination (which: 'on-success' | 'on-failure', input: unknown): Destination | null {
  if (input == null || input === '') return null
  if (typeof input !== 'string') return bad(String(input), `--${which} must be text "publish:SUBJECT"`)
  const text = `${which}=${input}`
  if (!input.startsWith('publish:')) bad(text, 'a destination is "publish:SUBJECT" (the only kind in this version)')
  const subject = checkPublishPattern(text, input.slice('publish:'.length), true)
  return { subject, raw: `publish:${subject}` }
}

/** The subjects a function publishes on: its publish bindings' patterns and its destinations' subjects */
export function publishedSubjects (spec: { name: string, bindings?: readonly string[] | null, onSuccess?: string | null, onFailure?: string | null }): string[] {
  const out = parseBindings(spec.name, [...(spec.bindings ?? [])]).filter(b => b.kind === 'publish').map(b => b.target)
  for (const [which, d] of [['on-success', spec.onSuccess], ['on-failure', spec.onFailure]] as const) {
    const dest = parseDestination(which, d ?? '')
    if (dest != null) out.push(dest.subject)
  }
  return out
}
