/**
 * The function registry in JetStream: specs in the KV bucket `fnmesh_functions` (key = name,
 * a new version per deploy) and code in the object store `fnmesh_bundles`, content-addressed
 * by SHA-256. Used by the SDK to deploy and list, and by agents to resolve and fetch.
 */
import { createHash } from 'node:crypto'
import type { NatsConnection } from '@nats-io/transport-node'
import { Kvm, type KV } from '@nats-io/kv'
import { Objm, type ObjectStore } from '@nats-io/obj'
import { jetstreamManager } from '@nats-io/jetstream'
import { decode, encode, type DeploySignature, type Encodable, type FunctionAlias, type FunctionSpec, type HttpRoute } from '../proto/codec.js'
import { AuthError, InputError, NotFoundError, TransportError, FnmeshError, UsageError } from '../proto/errors.js'
import { jsRetry } from './js-retry.js'
import { isPermissionError } from './nats.js'
import { BUNDLES_BUCKET, FUNCTIONS_BUCKET, FUNCTION_NAME_PATTERN } from '../proto/subjects.js'
import { checkSpecSignature, publicKeyFromRaw, signSpecBytes, type DeployerKey } from './signing.js'
import { MAX_SPEC_VERSION, undecodableSpec, validateStoredSpec } from './spec-rules.js'
import { followKv, kvKeys, notInitialized, openBucket, type FollowKvInit } from './kv-follow.js'
import { ALIAS_KEY_PREFIX, aliasKey, checkAliasName, parseAliasKey, validateStoredAlias, type StoredAlias } from './aliases.js'

/** One alias value as read: an alias that decodes (not yet checked), one that does not (`error`), or a delete */
export interface AliasEntry {
  key: string
  revision: number
  alias: StoredAlias | null
  error?: FnmeshError
}

/** What `setAlias` stores */
export interface AliasInput {
  function: string
  alias: string
  version: number
  /** a second version and its share of invocations (parts per million), as Lambda's routing config */
  weightedVersion?: number
  weightPpm?: number
  description?: string
}

/** How many values of one key's history the registry reads at most (the bucket keeps 16) */
const HISTORY_READS = 64

/**
 * A spec as read from the registry. `raw` is the KV value it was decoded from: signed deploys
 * are verified over those exact bytes (core/signing.ts).
 */
export type StoredSpec = Omit<FunctionSpec, 'routes' | 'signature' | 'bindings' | 'constraints' | 'prefer' | 'reserved' | 'provisioned' | 'onSuccess' | 'onFailure' | 'target' | 'runtime'> & {
  /** what routes and triggers run: an alias or version, "" or absent = the latest */
  target?: string
  routes?: HttpRoute[]
  /** "" or absent: Node.js; "provided": a Lambda custom runtime (core/spec-rules.ts RUNTIMES) */
  runtime?: string
  /** mesh-wide concurrency cap (--reserved), 0 or absent = none */
  reserved?: number
  /** sandboxes kept warm across the mesh (--provisioned), 0 or absent = none */
  provisioned?: number
  /** destinations of async results, "publish:SUBJECT" or "" (core/bindings.ts parseDestination) */
  onSuccess?: string
  onFailure?: string
  /** declared bindings, canonical "NAME=KIND:TARGET[:ro]" (core/bindings.ts) */
  bindings?: string[]
  /** placement terms, canonical "key=value" / "key!=value" (core/placement.ts) */
  constraints?: string[]
  prefer?: string[]
  signature?: DeploySignature | null
  raw?: Uint8Array
}

/**
 * One value of the registry as read: a spec that decodes (`spec`, not yet checked against the
 * rules), or one that does not (`error`, FNMESH_ERR_INVALID_SPEC), or a delete (neither).
 * `revision` is the KV revision: the later revision of a key is its current value.
 */
export interface RegistryEntry {
  key: string
  revision: number
  spec: StoredSpec | null
  error?: FnmeshError
  /** seen on the bucket's subject, not yet read back: maybe never stored (revision 0) */
  hint?: boolean
}

export interface DeploySpecOptions {
  /** sign the spec with this deployer key */
  signer?: DeployerKey
  /** once aborted, no spec is stored (the bundle, content-addressed, may stay) */
  signal?: AbortSignal
}

/**
 * How long a deploy's JetStream steps retry transient errors (within the caller's own timeout):
 * longer than other calls' 20 s, as a deploy is rare and worth waiting for, and a leader election
 * of nats-server 2.9.10 after a server is SIGKILLed has taken over 20 s on a loaded 2-core machine.
 */
export const DEPLOY_RETRY_MS = 45_000

export class Registry {
  private constructor (private readonly nc: NatsConnection, readonly kv: KV, readonly bundles: ObjectStore) {}

  /**
   * Opens the registry buckets on this NATS server. Agents open only (FNMESH_ERR_NOT_INITIALIZED
   * when `fnmesh init` has not made them); with `create`, a missing bucket is created (the SDK
   * does that, which works only with admin rights).
   */
  static async open (nc: NatsConnection, options: { create?: boolean } = {}): Promise<Registry> {
    try {
      return await jsRetry(async () => await Registry.openOnce(nc, options))
    } catch (err) {
      throw jetstreamError(err, 'open the function registry')
    }
  }

  private static async openOnce (nc: NatsConnection, options: { create?: boolean }): Promise<Registry> {
    {
      let kv: KV
      try {
        kv = await openBucket(nc, FUNCTIONS_BUCKET)
      } catch (err) {
        if (options.create !== true || !(err instanceof FnmeshError && err.code === 'FNMESH_ERR_NOT_INITIALIZED')) throw err
        kv = await new Kvm(nc).create(FUNCTIONS_BUCKET, { history: 16 })
      }
      const bundles = options.create === true ? await new Objm(nc).create(BUNDLES_BUCKET) : await openObjects(nc)
      return new Registry(nc, kv, bundles)
    }
  }

  /** The latest spec of `name`, or null if none is deployed; FNMESH_ERR_INVALID_SPEC if it does not decode */
  async get (name: string): Promise<StoredSpec | null> {
    const entry = await this.entry(name)
    if (entry?.error != null) throw entry.error
    return entry?.spec ?? null
  }

  /** The current value of `key` as an entry (a spec that does not decode is an entry with its error), or null */
  async entry (key: string): Promise<RegistryEntry | null> {
    if (!FUNCTION_NAME_PATTERN.test(key)) return null
    return await this.read(key)
  }

  /** Any key, even one no function could have (a registry writer may store those too) */
  private async read (key: string): Promise<RegistryEntry | null> {
    let entry
    try {
      entry = await jsRetry(async () => await this.kv.get(key))
    } catch (err) {
      throw jetstreamError(err, `read function "${key}"`)
    }
    if (entry == null) return null
    return toEntry(entry)
  }

  async require (name: string): Promise<StoredSpec> {
    const spec = await this.get(name)
    if (spec == null) throw new NotFoundError('FNMESH_ERR_NOT_FOUND', `Function "${name}" is not deployed`)
    return spec
  }

  /** Every spec that decodes, by name (one that does not is left out: entries() has it) */
  async list (): Promise<StoredSpec[]> {
    return (await this.entries()).flatMap(e => e.spec != null ? [e.spec] : [])
  }

  /** The current value of every key, by key: specs that decode and those that do not */
  async entries (): Promise<RegistryEntry[]> {
    const out: RegistryEntry[] = []
    try {
      // Keys from the stream's info, not kv.keys(): that would need a consumer (core/kv-follow.ts).
      for (const key of await jsRetry(async () => await kvKeys(this.nc, FUNCTIONS_BUCKET))) {
        // Aliases share the bucket under a prefix no function name can have (aliases()).
        if (key.startsWith(ALIAS_KEY_PREFIX)) continue
        const entry = await this.read(key)
        if (entry != null && (entry.spec != null || entry.error != null)) out.push(entry)
      }
    } catch (err) {
      throw jetstreamError(err, 'list functions')
    }
    return out.sort((a, b) => a.key.localeCompare(b.key))
  }

  /**
   * The values of `name`'s key still in the registry's history (at most HISTORY_READS), oldest
   * first, that are puts and decode, by direct gets one message after another: kv.history() would
   * need a consumer on the registry's stream, which no role but the admin may create.
   */
  private async history (name: string): Promise<Array<{ spec: FunctionSpec, raw: Uint8Array }>> {
    const out: Array<{ spec: FunctionSpec, raw: Uint8Array }> = []
    try {
      const jsm = await jsRetry(async () => await jetstreamManager(this.nc, { checkAPI: false }))
      const subject = `$KV.${FUNCTIONS_BUCKET}.${name}`
      let seq = 0
      for (let i = 0; i < HISTORY_READS; i++) {
        const m = await jsRetry(async () => await jsm.direct.getMessage(`KV_${FUNCTIONS_BUCKET}`, { seq, next_by_subj: subject }))
        if (m == null) break
        seq = m.seq + 1
        if ((m.header?.get('KV-Operation') ?? '') !== '' || m.data.byteLength === 0) continue
        try { out.push({ spec: decode('FunctionSpec', m.data), raw: m.data }) } catch {}
      }
    } catch (err) {
      throw jetstreamError(err, `read the history of "${name}"`)
    }
    return out
  }

  /**
   * The version the next deploy of `name` takes: one more than the highest version among the
   * values still in the key's history (16) that decode, name `name`, are within 1..MAX_SPEC_VERSION and, when
   * `signer` is given, carry an intact signature (by any deployer key). A tampered copy with a huge
   * version therefore cannot make a signed deploy's version wrap, reach the limit or go back.
   */
  async nextVersion (name: string, signer?: DeployerKey): Promise<number> {
    let highest = 0
    for (const { spec, raw } of await this.history(name)) {
      if (spec.name !== name || !Number.isInteger(spec.version) || spec.version < 1 || spec.version > MAX_SPEC_VERSION) continue
      // Signed deploys count only intact signatures (any deployer's: a team may have several
      // keys), so a tampered copy with a huge version cannot push the next one to the limit.
      if (signer != null && !signatureIntact(raw, spec.signature)) continue
      highest = Math.max(highest, spec.version)
    }
    if (highest + 1 > MAX_SPEC_VERSION) {
      throw new UsageError('FNMESH_ERR_VERSION_LIMIT', `Cannot deploy "${name}": its next version would be ${highest + 1}, over the highest allowed (${MAX_SPEC_VERSION})`)
    }
    return highest + 1
  }

  /**
   * Stores the bundle (if not already there) and a new version of the spec. The version is
   * the previous one plus one, claimed with a compare-and-set on the KV revision.
   */
  async deploy (spec: Omit<StoredSpec, 'version' | 'bundleObject' | 'bundleSha256' | 'bundleSize' | 'createdAtMs' | 'signature' | 'raw'>, bundle: Uint8Array, options: DeploySpecOptions = {}): Promise<StoredSpec> {
    const sha256 = createHash('sha256').update(bundle).digest('hex')
    const object = `sha256-${sha256}`
    const retry = { budgetMs: DEPLOY_RETRY_MS, signal: options.signal }
    try {
      await jsRetry(async () => {
        const existing = await this.bundles.info(object)
        if (existing == null || existing.size !== bundle.byteLength) {
          await this.bundles.putBlob({ name: object }, bundle)
        }
      }, retry)
    } catch (err) {
      throw jetstreamError(err, `store the code of "${spec.name}"`)
    }
    for (let attempt = 0; attempt < 10; attempt++) {
      let previous
      try {
        previous = await jsRetry(async () => await this.kv.get(spec.name), retry)
      } catch (err) {
        throw jetstreamError(err, `deploy "${spec.name}"`)
      }
      const next: Encodable<FunctionSpec> = {
        ...spec,
        version: await this.nextVersion(spec.name, options.signer),
        bundleObject: object,
        bundleSha256: sha256,
        bundleSize: bundle.byteLength,
        createdAtMs: Date.now()
      }
      const unsigned = encode('FunctionSpec', next)
      const bytes = options.signer != null ? signSpecBytes(options.signer, unsigned) : unsigned
      const stored = toStored(decode('FunctionSpec', bytes), bytes)
      // The agents' own check: a deploy never stores what every agent would refuse.
      const invalid = validateStoredSpec(stored, spec.name)
      if (invalid != null) throw invalid
      options.signal?.throwIfAborted()
      try {
        // A retry after a lost ack meets "wrong last sequence": the loop then stores one more version.
        if (previous == null) await jsRetry(async () => await this.kv.create(spec.name, bytes), retry)
        else await jsRetry(async () => await this.kv.update(spec.name, bytes, previous.revision), retry)
        return stored
      } catch (err: any) {
        // Another deploy of the same name won the race: take the next version.
        if (/wrong last sequence|key exists/i.test(String(err?.message))) continue
        throw jetstreamError(err, `deploy "${spec.name}"`)
      }
    }
    throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot deploy "${spec.name}": too many concurrent deploys of the same name`)
  }

  /**
   * The spec of `name` at exactly `version`, from the key's history (the bucket keeps the last 16
   * values of each key): the latest value naming that version, or null. Not yet checked against
   * the rules or the trust list.
   */
  async versionAt (name: string, version: number): Promise<StoredSpec | null> {
    if (!FUNCTION_NAME_PATTERN.test(name)) return null
    let found: StoredSpec | null = null
    for (const { spec, raw } of await this.history(name)) {
      if (spec.name === name && spec.version === version) found = toStored(spec, raw)
    }
    return found
  }

  /** The versions of `name` still in the key's history that decode and name it, oldest first */
  async versions (name: string): Promise<number[]> {
    const out = new Set<number>()
    if (!FUNCTION_NAME_PATTERN.test(name)) return []
    for (const { spec, raw } of await this.history(name)) {
      if (spec.name === name && validateStoredSpec(toStored(spec, raw), name) == null) out.add(spec.version)
    }
    return [...out].sort((a, b) => a - b)
  }

  /**
   * Points alias `alias` of `function` at a version (and optionally a second, weighted one).
   * Each version must be in the registry and obey the spec rules; with `signer` the alias is
   * signed. Its serial is the previous one plus one, claimed by compare-and-set.
   */
  async setAlias (input: AliasInput, options: DeploySpecOptions = {}): Promise<StoredAlias> {
    const fn = input.function
    if (!FUNCTION_NAME_PATTERN.test(fn)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Function name "${fn.slice(0, 80)}" is invalid`)
    checkAliasName(fn, input.alias)
    const key = aliasKey(fn, input.alias)
    for (const v of [input.version, ...(input.weightedVersion != null && input.weightedVersion > 0 ? [input.weightedVersion] : [])]) {
      const spec = Number.isInteger(v) && v >= 1 && v <= MAX_SPEC_VERSION ? await this.versionAt(fn, v) : null
      if (spec == null) throw new NotFoundError('FNMESH_ERR_VERSION_NOT_FOUND', `Function "${fn}" has no version ${String(v)} in the registry (it keeps the last 16 versions)`)
      const invalid = validateStoredSpec(spec, fn)
      if (invalid != null) throw new NotFoundError('FNMESH_ERR_VERSION_NOT_FOUND', `Version ${v} of "${fn}" cannot be an alias target: ${invalid.message}`)
      if (options.signer != null && !signatureIntact(spec.raw as Uint8Array, spec.signature)) {
        throw new AuthError('FNMESH_ERR_UNSIGNED_DEPLOY', `Version ${v} of "${fn}" is not signed: a signed alias may name signed versions only`)
      }
    }
    for (let attempt = 0; attempt < 10; attempt++) {
      let previous
      try {
        previous = await jsRetry(async () => await this.kv.get(key))
      } catch (err) {
        throw jetstreamError(err, `read alias "${fn}:${input.alias}"`)
      }
      let serial = 0
      if (previous != null && previous.operation === 'PUT' && previous.value.byteLength > 0) {
        try { serial = Math.max(0, decode('FunctionAlias', previous.value).serial) } catch {}
      }
      const unsigned = encode('FunctionAlias', {
        function: fn,
        name: input.alias,
        version: input.version,
        weightedVersion: input.weightedVersion ?? 0,
        weightPpm: input.weightedVersion != null && input.weightedVersion > 0 ? input.weightPpm ?? 0 : 0,
        serial: serial + 1,
        updatedAtMs: Date.now(),
        description: input.description ?? ''
      })
      const bytes = options.signer != null ? signSpecBytes(options.signer, unsigned, 'alias') : unsigned
      const stored = toAlias(decode('FunctionAlias', bytes), bytes)
      const invalid = validateStoredAlias(stored, key)
      if (invalid != null) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', invalid.message)
      options.signal?.throwIfAborted()
      try {
        if (previous == null) await jsRetry(async () => await this.kv.create(key, bytes))
        else await jsRetry(async () => await this.kv.update(key, bytes, previous.revision))
        return stored
      } catch (err: any) {
        if (/wrong last sequence|key exists/i.test(String(err?.message))) continue
        throw jetstreamError(err, `set alias "${fn}:${input.alias}"`)
      }
    }
    throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot set alias "${fn}:${input.alias}": too many concurrent changes`)
  }

  /** The current value of one alias, or null (a delete, or none) */
  async aliasEntry (fn: string, alias: string): Promise<AliasEntry | null> {
    if (!FUNCTION_NAME_PATTERN.test(fn)) return null
    let entry
    try {
      entry = await jsRetry(async () => await this.kv.get(aliasKey(fn, alias)))
    } catch (err) {
      throw jetstreamError(err, `read alias "${fn}:${alias}"`)
    }
    if (entry == null) return null
    const e = toAliasEntry(entry)
    return e.alias != null || e.error != null ? e : null
  }

  /** Every alias (of `fn`, when given), those that decode and those that do not, by key */
  async aliases (fn?: string): Promise<AliasEntry[]> {
    const out: AliasEntry[] = []
    try {
      const prefix = fn != null ? `${ALIAS_KEY_PREFIX}${fn}.` : ALIAS_KEY_PREFIX
      for (const key of await jsRetry(async () => await kvKeys(this.nc, FUNCTIONS_BUCKET))) {
        if (!key.startsWith(prefix)) continue
        const entry = await jsRetry(async () => await this.kv.get(key))
        if (entry == null) continue
        const e = toAliasEntry(entry)
        if (e.alias != null || e.error != null) out.push(e)
      }
    } catch (err) {
      throw jetstreamError(err, 'list aliases')
    }
    return out.sort((a, b) => a.key.localeCompare(b.key))
  }

  /** Deletes an alias; false when there was none */
  async deleteAlias (fn: string, alias: string): Promise<boolean> {
    checkAliasName(fn, alias)
    const current = await this.aliasEntry(fn, alias)
    if (current == null) return false
    try {
      await jsRetry(async () => await this.kv.delete(aliasKey(fn, alias)))
    } catch (err) {
      throw jetstreamError(err, `delete alias "${fn}:${alias}"`)
    }
    return true
  }

  /** Fetches a bundle and checks its digest */
  async fetchBundle (spec: Pick<StoredSpec, 'name' | 'bundleObject' | 'bundleSha256'>): Promise<Uint8Array> {
    let bytes
    try {
      bytes = await jsRetry(async () => await readObject(this.nc, this.bundles, spec.bundleObject))
    } catch (err) {
      throw jetstreamError(err, `fetch the code of "${spec.name}"`)
    }
    if (bytes == null) throw new NotFoundError('FNMESH_ERR_NOT_FOUND', `Code of function "${spec.name}" (${spec.bundleObject}) is missing from the registry`)
    const digest = createHash('sha256').update(bytes).digest('hex')
    if (digest !== spec.bundleSha256) {
      throw new InputError('FNMESH_ERR_BUNDLE_INVALID', `Code of function "${spec.name}" does not match its digest (want ${spec.bundleSha256}, got ${digest})`)
    }
    return bytes
  }

  /**
   * Calls `onChange` for every put or delete, starting with the current values; a value that
   * does not decode comes as an entry with its error. Follows the bucket without a JetStream
   * consumer (core/kv-follow.ts): a put seen on the bucket's subject comes first as a hint
   * (`hint`, revision 0: maybe never stored, e.g. a deploy that lost its compare-and-set), then as
   * the stored value read back with its revision. Returns a stop function.
   */
  async watch (onChange: (entry: RegistryEntry) => void, init: FollowKvInit & { onAlias?: (entry: AliasEntry) => void } = {}): Promise<() => void> {
    const { onAlias, ...follow } = init
    return await followKv(this.nc, this.kv, FUNCTIONS_BUCKET, (key, entry, meta) => {
      try {
        if (key.startsWith(ALIAS_KEY_PREFIX)) {
          // Aliases are used only once read back (never from a hint): they are small and rare.
          if (meta.hint) return
          onAlias?.(entry != null ? toAliasEntry(entry) : { key, revision: meta.revision, alias: null })
          return
        }
        const e: RegistryEntry = entry != null ? toEntry(entry) : { key, revision: meta.revision, spec: null }
        if (meta.hint) e.hint = true
        onChange(e)
      } catch {
        // The listener's own failure must not end the watch: every later change still comes.
      }
    }, { hints: true, ...follow })
  }
}

/** Opens the bundle store without creating it */
async function openObjects (nc: NatsConnection): Promise<ObjectStore> {
  try {
    return await new Objm(nc).open(BUNDLES_BUCKET)
  } catch (err: any) {
    if (/not found/i.test(String(err?.message))) throw notInitialized(`OBJ_${BUNDLES_BUCKET}`, err)
    throw err
  }
}

/**
 * An object's bytes read with direct gets, chunk after chunk: ObjectStore.get() would create a
 * consumer, which agents may not (see core/kv-follow.ts). Null if there is no such object.
 */
async function readObject (nc: NatsConnection, store: ObjectStore, name: string): Promise<Uint8Array | null> {
  const info = await store.info(name)
  if (info == null || info.deleted) return null
  const out = new Uint8Array(info.size)
  if (info.size === 0) return out
  const jsm = await jetstreamManager(nc, { checkAPI: false })
  const stream = `OBJ_${BUNDLES_BUCKET}`
  const subject = `$O.${BUNDLES_BUCKET}.C.${info.nuid}`
  let seq = 0
  let at = 0
  while (at < info.size) {
    const m = await jsm.direct.getMessage(stream, { seq, next_by_subj: subject })
    if (m == null) throw new NotFoundError('FNMESH_ERR_NOT_FOUND', `Object "${name}" lost its data after ${at} of ${info.size} bytes`)
    if (at + m.data.byteLength > info.size) throw new InputError('FNMESH_ERR_BUNDLE_INVALID', `Object "${name}" holds more than its ${info.size} bytes`)
    out.set(m.data, at)
    at += m.data.byteLength
    seq = m.seq + 1
  }
  return out
}

/** True if `raw` carries a signature that verifies under its own embedded key */
function signatureIntact (raw: Uint8Array, signature: DeploySignature | null | undefined): boolean {
  if (signature == null || signature.publicKey.byteLength !== 32) return false
  return checkSpecSignature(raw, signature, new Set([publicKeyFromRaw(signature.publicKey)])).ok
}

function toAliasEntry (entry: { key: string, revision: number, operation: string, value: Uint8Array }): AliasEntry {
  if (entry.operation !== 'PUT' || entry.value.byteLength === 0) return { key: entry.key, revision: entry.revision, alias: null }
  try {
    return { key: entry.key, revision: entry.revision, alias: toAlias(decode('FunctionAlias', entry.value), entry.value) }
  } catch (err: any) {
    const parts = parseAliasKey(entry.key)
    return { key: entry.key, revision: entry.revision, alias: null, error: new InputError('FNMESH_ERR_INVALID_ALIAS', `Stored alias "${(parts != null ? `${parts.function}:${parts.alias}` : entry.key).slice(0, 160)}" does not decode: ${String(err?.message ?? err)}`) }
  }
}

/** A plain copy of a decoded alias */
function toAlias (a: FunctionAlias, raw?: Uint8Array): StoredAlias {
  return {
    function: a.function,
    name: a.name,
    version: a.version,
    weightedVersion: a.weightedVersion,
    weightPpm: a.weightPpm,
    serial: a.serial,
    updatedAtMs: a.updatedAtMs,
    description: a.description,
    signature: a.signature != null ? { publicKey: a.signature.publicKey, signature: a.signature.signature } : null,
    raw
  }
}

function toEntry (entry: { key: string, revision: number, operation: string, value: Uint8Array }): RegistryEntry {
  if (entry.operation !== 'PUT' || entry.value.byteLength === 0) return { key: entry.key, revision: entry.revision, spec: null }
  try {
    return { key: entry.key, revision: entry.revision, spec: toStored(decode('FunctionSpec', entry.value), entry.value) }
  } catch (err) {
    return { key: entry.key, revision: entry.revision, spec: null, error: undecodableSpec(entry.key, err) }
  }
}

/** A plain copy: decoded messages keep defaults on their prototype, which spreading would drop */
function toStored (spec: FunctionSpec, raw?: Uint8Array): StoredSpec {
  return {
    name: spec.name,
    version: spec.version,
    handler: spec.handler,
    memoryMb: spec.memoryMb,
    timeoutMs: spec.timeoutMs,
    concurrency: spec.concurrency,
    env: { ...spec.env },
    triggers: [...spec.triggers],
    egress: spec.egress,
    bundleObject: spec.bundleObject,
    bundleSha256: spec.bundleSha256,
    bundleSize: spec.bundleSize,
    createdAtMs: spec.createdAtMs,
    maxRetries: spec.maxRetries,
    retryBackoffMs: spec.retryBackoffMs,
    maxEventAgeMs: spec.maxEventAgeMs,
    routes: spec.routes.map(copyRoute),
    bindings: [...(spec.bindings ?? [])],
    ...(spec.runtime != null && spec.runtime !== '' ? { runtime: spec.runtime } : {}),
    constraints: [...(spec.constraints ?? [])],
    prefer: [...(spec.prefer ?? [])],
    reserved: spec.reserved,
    provisioned: spec.provisioned,
    target: spec.target ?? '',
    onSuccess: spec.onSuccess ?? '',
    onFailure: spec.onFailure ?? '',
    signature: spec.signature != null ? { publicKey: spec.signature.publicKey, signature: spec.signature.signature } : null,
    raw
  }
}

function copyRoute (r: HttpRoute): HttpRoute {
  return {
    method: r.method,
    path: r.path,
    auth: r.auth,
    jwt: r.jwt != null ? { secret: r.jwt.secret, jwks: r.jwt.jwks, audience: [...r.jwt.audience], issuer: r.jwt.issuer, algorithms: [...r.jwt.algorithms] } : null as never,
    schema: r.schema,
    cors: r.cors != null ? { allowOrigins: [...r.cors.allowOrigins], allowMethods: [...r.cors.allowMethods], allowHeaders: [...r.cors.allowHeaders], exposeHeaders: [...r.cors.exposeHeaders], maxAgeS: r.cors.maxAgeS, allowCredentials: r.cors.allowCredentials } : null as never,
    ratePerS: r.ratePerS,
    burst: r.burst
  }
}

function jetstreamError (err: any, what: string): FnmeshError {
  if (err instanceof FnmeshError) return err
  if (isPermissionError(err)) return new AuthError('FNMESH_ERR_FORBIDDEN', `Cannot ${what}: NATS refused it to this user (${String(err?.message ?? err)})`, { cause: err })
  const text = String(err?.message ?? err)
  const hint = /jetstream not enabled|503|no responders/i.test(text)
    ? 'JetStream is not enabled on this NATS server (start nats-server with -js)'
    : text
  return new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot ${what}: ${hint}`, { cause: err })
}
