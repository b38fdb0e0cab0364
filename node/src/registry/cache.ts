/**
 * The agent's view of the registry: specs kept current by a KV watch (with a direct read on a
 * miss, so a function deployed a moment ago is found), and bundles unpacked once per digest
 * into the data folder, read-only.
 */
import { existsSync } from 'node:fs'
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { dirname, join, resolve, sep } from 'node:path'
import { decode } from '../../../proto/codec.js'
import { FnmeshError, InputError } from '../../../proto/errors.js'
import { BUNDLE_LIMIT, BUNDLE_MAX_FILES, checkBundlePath } from '../../../sdk/src/bundle.js'
import type { Registry, StoredSpec } from '../../../sdk/src/registry.js'
import type { Logger } from '../logger.js'
import type { TrustList } from './trust.js'

export interface FunctionCacheInit {
  registry: Registry
  /** where bundles are unpacked: <dir>/<sha256>/ */
  bundlesDir: string
  logger: Logger
  /** called when a spec changes or is deleted */
  onChange?: (name: string, spec: StoredSpec | null) => void
  /** Largest bundle this node fetches and unpacks, bytes. @default 50 MiB (the SDK's limit) */
  maxBundleBytes?: number
  /** When set, only code of deploys signed by a trusted key is fetched and run */
  trust?: TrustList
}

export class FunctionCache {
  private readonly specs = new Map<string, StoredSpec>()
  private readonly unpacking = new Map<string, Promise<string>>()
  private stopWatch: (() => void) | undefined

  constructor (private readonly init: FunctionCacheInit) {}

  async start (): Promise<void> {
    // Private to the agent: sandboxes see only their own function's code, linked into their slot.
    await mkdir(this.init.bundlesDir, { recursive: true, mode: 0o700 })
    this.stopWatch = await this.init.registry.watch((name, spec) => {
      if (spec == null) this.specs.delete(name)
      else if ((this.specs.get(name)?.version ?? 0) <= spec.version) this.specs.set(name, spec)
      this.init.onChange?.(name, spec)
    })
  }

  stop (): void {
    this.stopWatch?.()
    this.stopWatch = undefined
  }

  /** The latest spec of `name` (at least `minVersion`), or null if it is not deployed */
  async spec (name: string, minVersion = 0): Promise<StoredSpec | null> {
    const cached = this.specs.get(name)
    if (cached != null && cached.version >= minVersion) return cached
    const fresh = await this.init.registry.get(name)
    if (fresh != null && (this.specs.get(name)?.version ?? 0) <= fresh.version) this.specs.set(name, fresh)
    return fresh
  }

  /** Every spec known now (latest versions) */
  all (): StoredSpec[] {
    return [...this.specs.values()]
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
