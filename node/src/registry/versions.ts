/**
 * The newest trusted version this agent has seen of each function, kept in a small file of its
 * data folder (`trusted-versions.json`) so a restart remembers it. With a trust list, a signed
 * spec older than this is a replay of an earlier deploy put back into the KV bucket, and is
 * refused (FNMESH_ERR_SPEC_ROLLBACK).
 *
 * The file is rewritten whole (temporary file, then rename: never half written), holds at most
 * `maxEntries` names (the least recently raised go first) and a file that does not parse is
 * logged and replaced, so it can never keep an agent from starting.
 */
import { readFile, rename, writeFile } from 'node:fs/promises'
import type { Logger } from '../logger.js'

export interface TrustedVersionsInit {
  /** the file; none keeps versions in memory only */
  path?: string
  logger: Logger
  /** @default 10000 */
  maxEntries?: number
}

/** function names, and "alias.<function>.<alias>" for the newest trusted serial of an alias */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$|^alias\.[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.[A-Za-z][A-Za-z0-9_-]{0,63}$/
/** Larger than any file maxEntries names make: a bigger one is not read */
const MAX_FILE_BYTES = 4 * 1024 * 1024

export class TrustedVersions {
  private readonly versions = new Map<string, number>()
  private writing: Promise<void> | undefined
  private dirty = false

  constructor (private readonly init: TrustedVersionsInit) {}

  /** Reads the file; a missing one is empty, a damaged one is logged and ignored */
  async load (): Promise<void> {
    const path = this.init.path
    if (path == null) return
    let text: string
    try {
      const bytes = await readFile(path)
      if (bytes.byteLength > MAX_FILE_BYTES) throw new Error(`${bytes.byteLength} bytes`)
      text = bytes.toString('utf8')
    } catch (err: any) {
      if (err?.code === 'ENOENT') return
      this.init.logger.warn({ file: path, err: String(err?.message ?? err) }, 'cannot read the trusted versions file: starting without it')
      return
    }
    try {
      const parsed = JSON.parse(text) as unknown
      if (parsed == null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object')
      for (const [name, v] of Object.entries(parsed as Record<string, unknown>)) {
        if (NAME.test(name) && typeof v === 'number' && Number.isInteger(v) && v > 0) this.versions.set(name, v)
      }
      this.trim()
    } catch (err: any) {
      this.init.logger.warn({ file: path, err: String(err?.message ?? err) }, 'the trusted versions file is damaged: starting without it (it is rewritten on the next trusted deploy)')
    }
  }

  /** The newest trusted version seen of `name`, 0 if none */
  newest (name: string): number {
    return this.versions.get(name) ?? 0
  }

  /** Records a trusted version of `name` (only ever raises it) and saves the file soon after */
  raise (name: string, version: number): void {
    if (version <= this.newest(name)) return
    this.versions.delete(name)
    this.versions.set(name, version)
    this.trim()
    this.save()
  }

  /** Resolves once what was raised so far is on disk */
  async flush (): Promise<void> {
    while (this.writing != null) await this.writing
  }

  private trim (): void {
    const max = this.init.maxEntries ?? 10_000
    for (const name of this.versions.keys()) {
      if (this.versions.size <= max) break
      this.versions.delete(name)
    }
  }

  private save (): void {
    const path = this.init.path
    if (path == null) return
    this.dirty = true
    // One write at a time; changes made during a write are saved by the next one.
    this.writing ??= (async () => {
      while (this.dirty) {
        this.dirty = false
        const tmp = `${path}.tmp-${process.pid}`
        try {
          await writeFile(tmp, JSON.stringify(Object.fromEntries(this.versions)), { mode: 0o600 })
          await rename(tmp, path)
        } catch (err: any) {
          this.init.logger.warn({ file: path, err: String(err?.message ?? err) }, 'cannot save the trusted versions file')
        }
      }
    })().finally(() => { this.writing = undefined })
  }
}
