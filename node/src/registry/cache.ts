/**
 * The agent's view of the registry: specs kept current by a KV watch (with a direct read on a
 * miss, so a function deployed a moment ago is found), and bundles unpacked once per digest
 * into the data folder, read-only.
 *
 * Nothing read from the registry is trusted: every value, from the watch or a direct read, goes
 * through the trust list (when there is one), then the deploy's own rules (validateStoredSpec:
 * name = key, version, limits, env, triggers, routes, bundle fields), then, with a trust list,
 * the rollback check (not older than the newest trusted version seen, kept across restarts).
 * A value that fails is kept aside with its reason, logged once, and never handed to triggers,
 * the gateway, the pool or the executor: asking for it gives its coded error at once.
 */
import { existsSync } from 'node:fs'
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { dirname, join, resolve, sep } from 'node:path'
import { decode } from '../../../proto/codec.js'
import { AuthError, FnmeshError, InputError } from '../../../proto/errors.js'
import { BUNDLE_LIMIT, BUNDLE_MAX_FILES, checkBundlePath } from '../../../core/bundle.js'
import type { AliasEntry, Registry, RegistryEntry, StoredSpec } from '../../../core/registry.js'
import { aliasKey, parseQualifier, pickVersion, validateStoredAlias, type StoredAlias } from '../../../core/aliases.js'
import { NotFoundError } from '../../../proto/errors.js'
import { validateStoredSpec } from '../../../core/spec-rules.js'
import type { Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { TrustList } from './trust.js'
import type { TrustedVersions } from './versions.js'

export interface FunctionCacheInit {
  registry: Registry
  /** where bundles are unpacked: <dir>/<sha256>/ */
  bundlesDir: string
  logger: Logger
  /**
   * called when a usable spec changes, or a function is deleted or becomes unusable (null);
   * `previous` is the usable spec it replaces, if any
   */
  onChange?: (name: string, spec: StoredSpec | null, previous: StoredSpec | null) => void
  /** Largest bundle this node fetches and unpacks, bytes. @default 50 MiB (the SDK's limit) */
  maxBundleBytes?: number
  /** When set, only code of deploys signed by a trusted key is fetched and run */
  trust?: TrustList
  /** With `trust`: the newest trusted version seen of each function; older signed specs are refused */
  versions?: TrustedVersions
  /** Specs of pinned (older) versions kept in memory. @default 64 */
  maxPinned?: number
}

/** What an invoke target resolved to: the spec to run and whether it is pinned (not simply the latest) */
export interface Resolved {
  spec: StoredSpec
  pinned: boolean
  /** the alias it went through, if any */
  alias?: string
}

/** A function whose current registry value this agent does not use, and why */
export interface SkippedSpec {
  name: string
  /** its version (0 when it does not decode) */
  version: number
  /** FNMESH_ERR_INVALID_SPEC, FNMESH_ERR_UNSIGNED_DEPLOY, FNMESH_ERR_SIGNATURE_INVALID, FNMESH_ERR_SPEC_ROLLBACK */
  error: FnmeshError
}

export class FunctionCache implements Startable {
  private readonly specs = new Map<string, StoredSpec>()
  private readonly skipped = new Map<string, SkippedSpec>()
  /** the KV revision applied last per key: an older one (a direct read raced the watch) is ignored */
  private readonly revisions = new Map<string, number>()
  /** keys whose usable spec came from a hint and awaits its read-back */
  private readonly hinted = new Set<string>()
  private readonly unpacking = new Map<string, Promise<string>>()
  /** usable aliases by KV key, and refused ones with their reason */
  private readonly aliases = new Map<string, StoredAlias>()
  private readonly refusedAliases = new Map<string, FnmeshError>()
  private readonly aliasRevisions = new Map<string, number>()
  /** specs of exact versions read from the key's history ("name@version"), least recently used first */
  private readonly pinned = new Map<string, StoredSpec | FnmeshError>()
  private stopWatch: (() => void) | undefined

  constructor (private readonly init: FunctionCacheInit) {}

  async start (): Promise<void> {
    if (this.stopWatch != null) return
    // Private to the agent: sandboxes see only their own function's code, linked into their slot.
    await mkdir(this.init.bundlesDir, { recursive: true, mode: 0o700 })
    await this.init.versions?.load()
    this.stopWatch = await this.init.registry.watch((entry) => { this.apply(entry) }, { onAlias: (entry) => { this.applyAlias(entry) } })
  }

  isStarted (): boolean {
    return this.stopWatch != null
  }

  /** Stops the watch; resolves once the trusted versions seen are saved */
  async stop (): Promise<void> {
    this.stopWatch?.()
    this.stopWatch = undefined
    await this.init.versions?.flush()
  }

  /**
   * The latest usable spec of `name` (at least `minVersion`), or null if it is not deployed.
   * Throws the reason (a coded error) when its current value is refused.
   */
  async spec (name: string, minVersion = 0): Promise<StoredSpec | null> {
    const cached = this.specs.get(name)
    if (cached != null && cached.version >= minVersion) return cached
    const refused = this.skipped.get(name)
    if (refused != null && refused.version >= minVersion) throw refused.error
    const entry = await this.init.registry.entry(name)
    if (entry != null) this.apply(entry)
    const now = this.specs.get(name)
    if (now != null) return now
    const skipped = this.skipped.get(name)
    if (skipped != null) throw skipped.error
    return null
  }

  /**
   * The usable spec of `name` at exactly `version`: the latest when it is that version, else the
   * value from the key's history (checked like any other: trust, then the rules; an older version
   * asked for by number is not a rollback). FNMESH_ERR_VERSION_NOT_FOUND when there is none.
   */
  async specAt (name: string, version: number): Promise<StoredSpec> {
    let latest: StoredSpec | null = null
    let latestError: unknown
    try { latest = await this.spec(name) } catch (err) { latestError = err }
    if (latest?.version === version) return latest
    const id = `${name}@${version}`
    let known = this.pinned.get(id)
    if (known == null) {
      const spec = await this.init.registry.versionAt(name, version)
      if (spec == null) {
        if (latest == null && latestError == null) throw new NotFoundError('FNMESH_ERR_NOT_FOUND', `Function "${name}" is not deployed`)
        throw new NotFoundError('FNMESH_ERR_VERSION_NOT_FOUND', `Function "${name}" has no version ${version} in the registry (it keeps the last 16 versions)`)
      }
      known = this.judge(name, spec, false, false) ?? spec
    } else {
      this.pinned.delete(id)
    }
    this.pinned.set(id, known)
    for (const k of this.pinned.keys()) {
      if (this.pinned.size <= (this.init.maxPinned ?? 64)) break
      this.pinned.delete(k)
    }
    if (known instanceof FnmeshError) throw known
    return known
  }

  /**
   * What one invocation of `name` with `qualifier` ("" = latest, a version, "$LATEST" or an alias)
   * runs. An alias with two versions picks one by its weights, per call. Throws the coded reason:
   * FNMESH_ERR_NOT_FOUND, FNMESH_ERR_ALIAS_NOT_FOUND, FNMESH_ERR_VERSION_NOT_FOUND, a refused
   * spec's or alias's code, FNMESH_ERR_INVALID_ARGUMENT for a malformed qualifier. Null: the
   * function is not deployed (unqualified calls only).
   */
  async resolve (name: string, qualifier: string, rng: () => number = Math.random): Promise<Resolved | null> {
    const q = parseQualifier(name, qualifier)
    if (q.kind === 'latest') {
      const spec = await this.spec(name)
      return spec != null ? { spec, pinned: false } : null
    }
    if (q.kind === 'version') return { spec: await this.specAt(name, q.version), pinned: true }
    const key = aliasKey(name, q.alias)
    let alias = this.aliases.get(key)
    if (alias == null && !this.refusedAliases.has(key)) {
      // Not seen by the watch yet (set a moment ago): read it once.
      const entry = await this.init.registry.aliasEntry(name, q.alias)
      if (entry != null) this.applyAlias(entry)
      alias = this.aliases.get(key)
    }
    const refused = this.refusedAliases.get(key)
    if (alias == null && refused != null) throw refused
    if (alias == null) throw new NotFoundError('FNMESH_ERR_ALIAS_NOT_FOUND', `Function "${name}" has no alias "${q.alias}"`)
    return { spec: await this.specAt(name, pickVersion(alias, rng)), pinned: true, alias: q.alias }
  }

  /** Versions of `name` that usable aliases point at (kept warm across a new deploy) */
  aliasVersions (name: string): number[] {
    const out = new Set<number>()
    for (const a of this.aliases.values()) {
      if (a.function !== name) continue
      out.add(a.version)
      if (a.weightedVersion > 0) out.add(a.weightedVersion)
    }
    return [...out]
  }

  /** Usable aliases (of `name`, when given) */
  allAliases (name?: string): StoredAlias[] {
    return [...this.aliases.values()].filter(a => name == null || a.function === name)
  }

  /** Applies one alias value: usable (trust, rules, no replay of an older trusted serial), or kept aside with its reason */
  private applyAlias (entry: AliasEntry): void {
    const key = entry.key
    const known = this.aliasRevisions.get(key) ?? 0
    if (entry.revision !== 0 && entry.revision < known) return
    if (entry.revision !== 0) this.aliasRevisions.set(key, entry.revision)
    this.aliases.delete(key)
    this.refusedAliases.delete(key)
    if (entry.alias == null && entry.error == null) return
    let error: FnmeshError | null = entry.error ?? null
    const alias = entry.alias
    if (error == null && alias != null) {
      const { trust, versions } = this.init
      try {
        trust?.checkAlias(alias)
        error = validateStoredAlias(alias, key)
        if (error == null && trust != null && versions != null) {
          const newest = versions.newest(key)
          if (alias.serial < newest) {
            error = new AuthError('FNMESH_ERR_INVALID_ALIAS', `Alias "${alias.function}:${alias.name}" serial ${alias.serial} is older than serial ${newest}, which this agent already trusted: a replayed alias is not followed`)
          } else versions.raise(key, alias.serial)
        }
      } catch (err) {
        error = err as FnmeshError
      }
    }
    if (error == null && alias != null) {
      this.aliases.set(key, alias)
      return
    }
    const e = error as FnmeshError
    this.refusedAliases.set(key, e)
    this.init.logger.warn({ alias: key.slice(0, 200), code: e.code, err: e.message }, 'refused an alias from the registry: it is not followed')
  }

  /** Every usable spec known now (latest versions) */
  all (): StoredSpec[] {
    return [...this.specs.values()]
  }

  /** Functions whose current value is refused, with the reason */
  refused (): SkippedSpec[] {
    return [...this.skipped.values()]
  }

  /** Applies one registry value: the spec becomes usable, or is kept aside with its reason */
  private apply (entry: RegistryEntry): void {
    const key = entry.key
    if (entry.hint === true) { this.applyHint(entry); return }
    if (entry.revision === 0 && entry.spec == null && entry.error == null) {
      // Gone from the stream (purged) with no revision to order by: later puts take higher ones.
      this.revisions.delete(key)
    } else {
      // After a hint, the value read back decides even at the same revision (the hint may never
      // have been stored).
      const known = this.revisions.get(key) ?? 0
      if (entry.revision < known || (entry.revision === known && !this.hinted.delete(key))) return
      this.hinted.delete(key)
      this.revisions.set(key, entry.revision)
    }
    const had = this.specs.get(key) ?? null
    this.specs.delete(key)
    if (entry.spec == null && entry.error == null) {
      this.skipped.delete(key)
      if (had != null) this.notify(key, null, had)
      return
    }
    const error = entry.error ?? this.judge(key, entry.spec as StoredSpec)
    if (error == null) {
      this.skipped.delete(key)
      this.specs.set(key, entry.spec as StoredSpec)
      this.notify(key, entry.spec, had)
      return
    }
    const version = entry.spec?.version ?? 0
    this.skipped.set(key, { name: key, version, error })
    // Once per value: each revision is applied once.
    this.init.logger.warn({ fn: key, version, code: error.code, err: error.message }, 'refused a function spec from the registry: it is not run, bound or served')
    if (had != null) this.notify(key, null, had)
  }

  /**
   * A put seen on the bucket's subject before it is read back (it may never have been stored: a
   * deploy that lost its compare-and-set publishes too). Used at once only when it is usable and
   * newer than what this agent uses, so a deploy is served without waiting for the read-back,
   * which follows within a round trip and decides. Never recorded as refused or as trusted.
   */
  private applyHint (entry: RegistryEntry): void {
    const spec = entry.spec
    if (spec == null) return
    const had = this.specs.get(entry.key) ?? null
    if (had != null && had.version >= spec.version) return
    if (this.judge(entry.key, spec, false) != null) return
    this.hinted.add(entry.key)
    this.skipped.delete(entry.key)
    this.specs.set(entry.key, spec)
    this.notify(entry.key, spec, had)
  }

  /** Trust first, then the deploy rules, then (trusted specs) the rollback check: null if usable */
  private judge (key: string, spec: StoredSpec, record = true, rollback = true): FnmeshError | null {
    const { trust, versions } = this.init
    if (trust != null) {
      try { trust.check(spec) } catch (err) { return err as FnmeshError }
    }
    const invalid = validateStoredSpec(spec, key)
    if (invalid != null) return invalid
    if (trust != null && versions != null && rollback) {
      const newest = versions.newest(key)
      if (spec.version < newest) {
        return new AuthError('FNMESH_ERR_SPEC_ROLLBACK', `Function "${key}" version ${spec.version} is older than version ${newest}, which this agent already trusted: a replayed deploy is not run`)
      }
      if (record) versions.raise(key, spec.version)
    }
    return null
  }

  private notify (name: string, spec: StoredSpec | null, previous: StoredSpec | null): void {
    try {
      this.init.onChange?.(name, spec, previous)
    } catch (err: any) {
      this.init.logger.error({ fn: name, code: 'FNMESH_ERR_INTERNAL', err: String(err?.message ?? err) }, 'applying a function spec change failed')
    }
  }

  /** The folder holding the function's unpacked code, fetching it on first use */
  async taskRoot (spec: StoredSpec): Promise<string> {
    // Checked on every run, before any code is fetched or a sandbox used (cached per version).
    this.init.trust?.check(spec)
    const dir = join(this.init.bundlesDir, spec.bundleSha256)
    if (existsSync(join(dir, '.fnmesh-complete'))) return dir
    let pending = this.unpacking.get(spec.bundleSha256)
    if (pending == null) {
      pending = this.unpack(spec, dir).finally(() => { this.unpacking.delete(spec.bundleSha256) })
      this.unpacking.set(spec.bundleSha256, pending)
    }
    return await pending
  }

  private async unpack (spec: StoredSpec, dir: string): Promise<string> {
    const started = performance.now()
    // Specs and bundles may come from anyone who can write to the registry, not only the SDK.
    const limit = this.init.maxBundleBytes ?? BUNDLE_LIMIT
    const tooLarge = (size: number): InputError =>
      new InputError('FNMESH_ERR_BUNDLE_TOO_LARGE', `Code of function "${spec.name}" is ${size} bytes: over this node's bundle limit of ${limit} bytes`)
    if (spec.bundleSize > limit) throw tooLarge(spec.bundleSize)
    const bytes = await this.init.registry.fetchBundle(spec)
    if (bytes.byteLength > limit) throw tooLarge(bytes.byteLength)
    const bundle = decode('Bundle', bytes, { maxBytes: limit })
    if (bundle.files.length > BUNDLE_MAX_FILES) {
      throw new InputError('FNMESH_ERR_BUNDLE_TOO_LARGE', `Code of function "${spec.name}" has ${bundle.files.length} files: over the limit of ${BUNDLE_MAX_FILES}`)
    }
    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`
    await rm(tmp, { recursive: true, force: true })
    await mkdir(tmp, { recursive: true })
    try {
      for (const file of bundle.files) {
        const target = resolve(tmp, checkBundlePath(file.path))
        if (!target.startsWith(tmp + sep)) {
          throw new InputError('FNMESH_ERR_BUNDLE_INVALID', `Bundle path "${file.path}" escapes the bundle`)
        }
        await mkdir(dirname(target), { recursive: true })
        // Read-only for everyone, keeping only the execute bits: the code is never changed in place.
        await writeFile(target, file.data, { mode: 0o444 | (file.mode & 0o111), flag: 'wx' })
      }
      await writeFile(join(tmp, '.fnmesh-complete'), spec.bundleSha256)
      await rm(dir, { recursive: true, force: true })
      await rename(tmp, dir)
    } catch (err: any) {
      await rm(tmp, { recursive: true, force: true })
      if (err instanceof FnmeshError) throw err
      // Two entries for one path, a file where a folder must be...: the bundle is malformed.
      throw new InputError('FNMESH_ERR_BUNDLE_INVALID', `Code of function "${spec.name}" cannot be unpacked: ${String(err?.code ?? err?.message ?? err)}`, { cause: err })
    }
    this.init.logger.info({ fn: spec.name, version: spec.version, files: bundle.files.length, bytes: bytes.byteLength, ms: Math.round(performance.now() - started) }, 'bundle unpacked')
    return dir
  }
}
