/**
 * The agent's trust list of deployer keys (--trust FILE|DIR, repeatable): with one, the agent
 * runs and serves only specs signed by a listed key (core/signing.ts). A file holds one public
 * key per line ("ed25519:...", text after it and lines starting with # ignored); a folder, such
 * files (*.pub). The verdict is kept per spec object: each version is checked once.
 */
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { AuthError, UsageError } from '../../../proto/errors.js'
import type { StoredSpec } from '../../../core/registry.js'
import type { StoredAlias } from '../../../core/aliases.js'
import { checkSpecSignature, parsePublicKey, publicKeyFromRaw } from '../../../core/signing.js'

export class TrustList {
  private readonly verdicts = new WeakMap<object, AuthError | null>()

  private constructor (readonly keys: ReadonlySet<string>) {}

  static fromKeys (keys: Iterable<string>): TrustList {
    return new TrustList(new Set([...keys].map(k => publicKeyFromRaw(parsePublicKey(k)))))
  }

  /** Reads every key in `paths` (files or folders); an empty result is an error */
  static async load (paths: string[]): Promise<TrustList> {
    const keys: string[] = []
    for (const p of paths) {
      let info
      try { info = await stat(p) } catch { throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Trust list "${p}" does not exist`) }
      const files = info.isDirectory() ? (await readdir(p)).filter(f => f.endsWith('.pub')).sort().map(f => join(p, f)) : [p]
      for (const f of files) {
        for (const line of (await readFile(f, 'utf8')).split('\n')) {
          const t = line.trim()
          if (t === '' || t.startsWith('#')) continue
          keys.push(t.split(/\s+/)[0])
        }
      }
    }
    if (keys.length === 0) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `No deployer public key in ${paths.join(', ')}: an agent with a trust list needs at least one`)
    return TrustList.fromKeys(keys)
  }

  /** Throws FNMESH_ERR_UNSIGNED_DEPLOY or FNMESH_ERR_SIGNATURE_INVALID unless `spec` is signed by a trusted key */
  check (spec: StoredSpec): void {
    let verdict = this.verdicts.get(spec)
    if (verdict === undefined) {
      const r = checkSpecSignature(spec.raw, spec.signature, this.keys)
      verdict = r.ok ? null
        : r.reason === 'unsigned' ? new AuthError('FNMESH_ERR_UNSIGNED_DEPLOY', `Function "${spec.name}" version ${spec.version} is not signed: this agent runs only deploys signed by a trusted deployer key`)
          : r.reason === 'untrusted' ? new AuthError('FNMESH_ERR_UNSIGNED_DEPLOY', `Function "${spec.name}" version ${spec.version} is signed by ${r.publicKey ?? 'a key'}, which this agent does not trust`)
            : new AuthError('FNMESH_ERR_SIGNATURE_INVALID', `Function "${spec.name}" version ${spec.version}: the signature does not match the spec and code digest (tampered with after signing?)`)
      this.verdicts.set(spec, verdict)
    }
    if (verdict != null) throw verdict
  }

  /** Throws FNMESH_ERR_INVALID_ALIAS unless the alias is signed (as an alias) by a trusted key */
  checkAlias (alias: StoredAlias): void {
    let verdict = this.verdicts.get(alias)
    if (verdict === undefined) {
      const r = checkSpecSignature(alias.raw, alias.signature, this.keys, 'alias')
      const label = `Alias "${alias.function}:${alias.name}"`
      verdict = r.ok ? null
        : r.reason === 'unsigned' ? new AuthError('FNMESH_ERR_INVALID_ALIAS', `${label} is not signed: this agent follows only aliases signed by a trusted deployer key`)
          : r.reason === 'untrusted' ? new AuthError('FNMESH_ERR_INVALID_ALIAS', `${label} is signed by ${r.publicKey ?? 'a key'}, which this agent does not trust`)
            : new AuthError('FNMESH_ERR_INVALID_ALIAS', `${label}: the signature does not match (tampered with after signing?)`)
      this.verdicts.set(alias, verdict)
    }
    if (verdict != null) throw verdict
  }

  trusts (spec: StoredSpec): boolean {
    try { this.check(spec); return true } catch { return false }
  }
}
