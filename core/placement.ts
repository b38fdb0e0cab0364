/**
 * Placement (issue 16): agents carry labels (`--label zone=a`, plus automatic arch, os, cpus and
 * memory), functions carry constraints (`--constraint key=value`: must hold) and preferences
 * (`--prefer key=value`: should hold). Parsed by the deploy (CLI, fnmesh.yaml, SDK) and again by
 * every agent from the stored spec (spec-rules.ts) and from each peer's advert (gossip.ts): the
 * router sends work only to nodes whose labels satisfy the constraints, preferring those that
 * satisfy the preferences; executors refuse what they do not satisfy; event pullers on such
 * nodes do not pull.
 *
 * A term is `key=value`, `key!=value`, or a whole-number comparison `key>=N` / `key<=N` (for
 * cpus and memory, say). `key=a` and `key=b` together hold when the label is either (a node has
 * one value per key, so "both" could never hold); every other term must hold on its own. A node
 * without the label satisfies no `=`, `>=` or `<=` term and every `!=` term.
 */
import { createHash } from 'node:crypto'
import { UsageError } from '../proto/errors.js'

/** Label keys: lower-case letters, digits and ".", "-", "_", "/" (room for "example.com/gpu") */
export const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$/
/** Label values: letters, digits and ".", "-", "_", at most 63 (empty is allowed) */
export const LABEL_VALUE = /^[A-Za-z0-9._-]{0,63}$/
/** Most labels a node carries (its own and the automatic ones) */
export const MAX_LABELS = 32
/** Most constraint or preference terms one function carries */
export const MAX_TERMS = 16
/** Labels every agent sets itself (memory in whole GiB); `--label` may override them (an agent limited by a cgroup, say) */
export const AUTO_LABELS = ['arch', 'os', 'cpus', 'memory'] as const

export type TermOp = '=' | '!=' | '>=' | '<='

export interface PlacementTerm {
  key: string
  op: TermOp
  value: string
  /** canonical text, as stored in FunctionSpec.constraints / prefer */
  raw: string
}

const clip = (text: string): string => text.length > 120 ? `${text.slice(0, 120)}...` : text

/** Parses one node label `key=value` */
export function parseLabel (text: unknown): [string, string] {
  const t = typeof text === 'string' ? text : String(text)
  const eq = t.indexOf('=')
  if (typeof text !== 'string' || eq < 0) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Label "${clip(t)}" is invalid: expected "key=value"`)
  const key = t.slice(0, eq)
  const value = t.slice(eq + 1)
  checkLabel(key, value)
  return [key, value]
}

function checkLabel (key: string, value: string): void {
  if (!LABEL_KEY.test(key)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Label key "${clip(key)}" is invalid: use 1-63 lower-case letters, digits, ".", "-", "_" or "/", starting and ending with a letter or digit`)
  if (!LABEL_VALUE.test(value)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Label value "${clip(value)}" of "${key}" is invalid: use at most 63 letters, digits, ".", "-" or "_"`)
}

/**
 * A node's labels: the automatic ones, then `--label` texts over them (later ones win). At most
 * MAX_LABELS in all.
 */
export function nodeLabels (given: readonly string[], auto: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(auto)) {
    checkLabel(k, v)
    out[k] = v
  }
  for (const text of given) {
    const [k, v] = parseLabel(text)
    out[k] = v
  }
  if (Object.keys(out).length > MAX_LABELS) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `A node carries at most ${MAX_LABELS} labels (the automatic ${AUTO_LABELS.join(', ')} included)`)
  return out
}

/**
 * Labels as read from a peer's advert: valid, or none at all (a peer whose labels do not parse
 * satisfies no constraint, so it gets no constrained work, and nothing else changes).
 */
export function advertLabels (labels: unknown): Record<string, string> | undefined {
  if (labels == null || typeof labels !== 'object') return undefined
  const entries = Object.entries(labels as Record<string, unknown>)
  if (entries.length > MAX_LABELS) return undefined
  for (const [k, v] of entries) {
    if (typeof v !== 'string' || !LABEL_KEY.test(k) || !LABEL_VALUE.test(v)) return undefined
  }
  return labels as Record<string, string>
}

const WHOLE = /^\d{1,15}$/

/** Parses one `key=value`, `key!=value`, `key>=N` or `key<=N` term */
export function parseTerm (text: unknown, what: 'constraint' | 'preference' = 'constraint'): PlacementTerm {
  const t = typeof text === 'string' ? text : String(text)
  const m = typeof text === 'string' ? /^([^=!<>]*)(!=|>=|<=|=)(.*)$/s.exec(t) : null
  if (m == null) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Placement ${what} "${clip(t)}" is invalid: expected "key=value", "key!=value", "key>=N" or "key<=N"`)
  const [, key, op, value] = m as unknown as [string, string, TermOp, string]
  try {
    checkLabel(key, value)
    if ((op === '>=' || op === '<=') && !WHOLE.test(value)) throw new Error(`"${op}" compares whole numbers, and "${clip(value)}" is not one`)
  } catch (err: any) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Placement ${what} "${clip(t)}" is invalid: ${String(err.message)}`)
  }
  return { key, op, value, raw: `${key}${op}${value}` }
}

/** A function's terms checked as a whole: at most MAX_TERMS, no repeats; canonical, in the order given */
export function parseTerms (fn: string, input: unknown, what: 'constraint' | 'preference'): PlacementTerm[] {
  if (input == null) return []
  const list = typeof input === 'string' ? [input] : input
  if (!Array.isArray(list)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Placement ${what}s of "${fn}" must be a list of "key=value"`)
  if (list.length > MAX_TERMS) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `"${fn}" may have at most ${MAX_TERMS} placement ${what}s`)
  const terms = list.map(t => parseTerm(t, what))
  const seen = new Set<string>()
  for (const term of terms) {
    if (seen.has(term.raw)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Placement ${what} "${term.raw}" of "${fn}" is given twice`)
    seen.add(term.raw)
  }
  return terms
}

/** Stored terms: each parses and is already canonical (as the deploy writes them) */
export function checkStoredTerms (fn: string, stored: readonly string[] | null | undefined, what: 'constraint' | 'preference'): void {
  if (stored == null || stored.length === 0) return
  const terms = parseTerms(fn, [...stored], what)
  terms.forEach((t, i) => {
    if (t.raw !== stored[i]) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Placement ${what} "${clip(String(stored[i]))}" of "${fn}" is not in canonical form`)
  })
}

/**
 * True if a node with `labels` satisfies every term (undefined labels: a node whose labels are
 * unknown or invalid, which satisfies only an empty list). Same-key `=` terms are alternatives.
 */
export function satisfies (labels: Readonly<Record<string, string>> | undefined, terms: readonly PlacementTerm[]): boolean {
  if (terms.length === 0) return true
  if (labels == null) return false
  const wanted = new Map<string, boolean>()
  for (const t of terms) {
    const has = Object.prototype.hasOwnProperty.call(labels, t.key) ? labels[t.key] : undefined
    switch (t.op) {
      case '=':
        wanted.set(t.key, (wanted.get(t.key) ?? false) || has === t.value)
        break
      case '!=':
        if (has === t.value) return false
        break
      default: {
        if (has == null || !WHOLE.test(has)) return false
        const a = Number(has)
        const b = Number(t.value)
        if (t.op === '>=' ? a < b : a > b) return false
      }
    }
  }
  for (const ok of wanted.values()) if (!ok) return false
  return true
}

/** Parsed terms of a stored spec, cached by its arrays (specs are immutable once stored) */
const cache = new WeakMap<readonly string[], PlacementTerm[]>()
export function termsOf (stored: readonly string[] | null | undefined): PlacementTerm[] {
  if (stored == null || stored.length === 0) return []
  let terms = cache.get(stored)
  if (terms == null) {
    // The spec was validated when read (spec-rules.ts); a term that does not parse holds nowhere.
    terms = stored.map(s => { try { return parseTerm(s) } catch { return { key: '', op: '=' as const, value: '\u0000', raw: s } } })
    cache.set(stored, terms)
  }
  return terms
}

/** What a spec asks of its nodes */
export interface Placement {
  constraints?: readonly string[] | null
  prefer?: readonly string[] | null
}

export function hasPlacement (spec: Placement): boolean {
  return (spec.constraints?.length ?? 0) > 0 || (spec.prefer?.length ?? 0) > 0
}

/** True if a node with `labels` may run the function */
export function eligible (labels: Readonly<Record<string, string>> | undefined, spec: Placement): boolean {
  return satisfies(labels, termsOf(spec.constraints))
}

/** True if a node with `labels` is where the function should run, given the choice */
export function preferred (labels: Readonly<Record<string, string>> | undefined, spec: Placement): boolean {
  return satisfies(labels, termsOf(spec.prefer))
}

/**
 * Provisioned concurrency (issue 15): how many of the `n` provisioned sandboxes of `fn@version` go on each of `nodes`: the nodes
 * ranked by SHA-256 of "fn@version/node id" (highest first), sandbox j on node j mod |nodes|.
 * The same answer on every agent whose table holds the same nodes.
 */
export function placeProvisioned (key: string, nodes: readonly string[], n: number): Map<string, number> {
  const ranked = [...new Set(nodes)]
    .map(id => ({ id, score: createHash('sha256').update(`${key}/${id}`).digest('hex') }))
    .sort((a, b) => a.score < b.score ? 1 : a.score > b.score ? -1 : 0)
  const out = new Map<string, number>()
  if (ranked.length === 0) return out
  for (let j = 0; j < n; j++) {
    const id = ranked[j % ranked.length].id
    out.set(id, (out.get(id) ?? 0) + 1)
  }
  return out
}

