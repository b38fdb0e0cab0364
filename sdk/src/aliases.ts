/**
 * Aliases and versions in the SDK (issue 15): setting, listing and deleting aliases in the
 * registry (core/registry.ts, the rules in core/aliases.ts) and usage per version from the raw
 * meter records.
 */
import { UsageError } from '../../proto/errors.js'
import { checkAliasName, describeWeights, parseWeight, PPM, validateStoredAlias, aliasKey, type StoredAlias } from '../../core/aliases.js'
import type { AliasEntry, Registry } from '../../core/registry.js'
import { checkName } from '../../core/spec-rules.js'
import { checkSpecSignature, loadDeployerKey, publicKeyFromRaw } from '../../core/signing.js'
import type { ExportedRecord } from './usage.js'

/** An alias as `alias list` shows it */
export interface AliasInfo {
  function: string
  alias: string
  version: number
  /** version -> share of invocations, e.g. { "1": 0.9, "2": 0.1 } */
  weights: Record<string, number>
  serial: number
  updatedAt: string
  description: string
  /** "invalid": every agent skips it (`code`, `reason` say why) */
  status: 'ok' | 'invalid'
  code: string
  reason: string
  /** whether its stored signature holds (which signers an agent trusts is its own --trust list) */
  signature: 'signed' | 'unsigned' | 'invalid'
  signedBy?: string
}

export interface AliasSetOptions {
  /** A second version and its share, "VERSION=FRACTION" or { version, fraction } (Lambda's routing config) */
  weight?: string | { version: number, fraction: number }
  description?: string
  /** Sign the alias with this deployer key (PEM text, a path to a PEM file, or a KeyObject) */
  signingKey?: string | import('node:crypto').KeyObject
}

export async function setAlias (registry: Registry, fn: string, alias: string, version: number, options: AliasSetOptions, signal: AbortSignal): Promise<AliasInfo> {
  checkName(fn)
  checkAliasName(fn, alias)
  if (!Number.isInteger(version) || version < 1) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Version "${String(version)}" of alias "${fn}:${alias}" is invalid: expected a whole number from 1`)
  let weighted: { version: number, weightPpm: number } | undefined
  if (typeof options.weight === 'string') weighted = parseWeight(fn, options.weight)
  else if (options.weight != null) weighted = parseWeight(fn, `${String(options.weight.version)}=${String(options.weight.fraction)}`)
  if (weighted?.version === version) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Alias "${fn}:${alias}": the weighted version is its main version ${version}`)
  if (options.description != null && options.description.length > 256) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Description of alias "${fn}:${alias}" is over 256 characters`)
  const signer = options.signingKey != null ? await loadDeployerKey(options.signingKey) : undefined
  const stored = await registry.setAlias({ function: fn, alias, version, weightedVersion: weighted?.version, weightPpm: weighted?.weightPpm, description: options.description }, { signer, signal })
  return aliasInfo({ key: aliasKey(fn, alias), revision: 0, alias: stored })
}

export async function listAliases (registry: Registry, fn?: string): Promise<AliasInfo[]> {
  if (fn != null) checkName(fn)
  return (await registry.aliases(fn)).map(aliasInfo)
}

export async function deleteAlias (registry: Registry, fn: string, alias: string): Promise<boolean> {
  checkName(fn)
  return await registry.deleteAlias(fn, alias)
}

function aliasInfo (e: AliasEntry): AliasInfo {
  const a: StoredAlias | null = e.alias
  const rest = e.key.slice('alias.'.length)
  const dot = rest.indexOf('.')
  const error = e.error ?? (a != null ? validateStoredAlias(a, e.key) : null)
  let signature: AliasInfo['signature'] = 'unsigned'
  let signedBy: string | undefined
  if (a?.signature != null && a.signature.publicKey.byteLength > 0) {
    signedBy = a.signature.publicKey.byteLength === 32 ? publicKeyFromRaw(a.signature.publicKey) : undefined
    const r = signedBy != null ? checkSpecSignature(a.raw, a.signature, new Set([signedBy]), 'alias') : { ok: false }
    signature = r.ok ? 'signed' : 'invalid'
  }
  return {
    function: a?.function ?? rest.slice(0, Math.max(0, dot)),
    alias: a?.name ?? rest.slice(dot + 1),
    version: a?.version ?? 0,
    weights: a != null ? describeWeights(a) : {},
    serial: a?.serial ?? 0,
    updatedAt: a != null && a.updatedAtMs > 0 ? new Date(a.updatedAtMs).toISOString() : '',
    description: a?.description ?? '',
    status: error == null ? 'ok' : 'invalid',
    code: error?.code ?? '',
    reason: error?.message ?? '',
    signature,
    ...(signedBy != null ? { signedBy } : {})
  }
}

/** Usage of one version of one function */
export interface VersionUsage {
  function: string
  version: number
  invocations: number
  errors: number
  billedMs: number
  gbSeconds: number
  coldStarts: number
}

/** Totals per (function, version) of raw meter records (within the retention, 30 days) */
export async function usageByVersion (records: AsyncIterable<ExportedRecord>): Promise<VersionUsage[]> {
  const out = new Map<string, VersionUsage & { mbMs: number }>()
  for await (const r of records) {
    const key = `${r.function}@${r.version}`
    let u = out.get(key)
    if (u == null) {
      u = { function: r.function, version: r.version, invocations: 0, errors: 0, billedMs: 0, gbSeconds: 0, coldStarts: 0, mbMs: 0 }
      out.set(key, u)
    }
    u.invocations++
    if (r.outcome !== 'ok') u.errors++
    u.billedMs += r.billedMs
    u.mbMs += r.billedMs * r.memoryMb
    if (r.cold) u.coldStarts++
  }
  return [...out.values()]
    .map(({ mbMs, ...u }) => ({ ...u, gbSeconds: mbMs / 1024 / 1000 }))
    .sort((a, b) => a.function.localeCompare(b.function) || a.version - b.version)
}

export { PPM }
