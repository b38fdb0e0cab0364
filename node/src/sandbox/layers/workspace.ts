/**
 * Each sandbox's own folders, one slot per live worker: `<root>/<slot>/task` (the function's code,
 * read-only, filled when a generic worker is specialised) and `<root>/<slot>/tmp` (its private
 * writable folder when it has no mount namespace of its own; a tmpfs mounted there by the sandbox
 * under unshare, or by the agent when `tmpMb` is given here). A slot is wiped before a new worker takes it, so nothing a function wrote
 * reaches another one. The code is hard-linked from the agent's unpacked-bundle cache (copied
 * across file systems): a cold start does not rewrite it.
 */
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { copyFile, link, mkdir, readdir } from 'node:fs/promises'
import { join, sep } from 'node:path'
import type { SlotPaths } from './command.js'

export interface SlotDirs extends SlotPaths {
  index: number
  dir: string
}

export class Workspace {
  private readonly used = new Set<number>()

  /**
   * `tmpMb`: when set, each slot's tmp is a tmpfs of that size mounted here (sandboxes without
   * their own mount namespace, agent root): a function that fills it gets ENOSPC, never the
   * data disk, and its files go when the slot is given back.
   */
  constructor (private readonly root: string, private readonly tmpMb?: number) {}

  /**
   * Creates the root, removing what a previous run left. `protect`: a folder (the data dir) whose
   * other entries become private to the agent, and which itself only lets others through, for
   * sandboxes that run under another uid without a mount namespace.
   */
  open (protect?: string): void {
    this.unmountAll()
    rmSync(this.root, { recursive: true, force: true })
    mkdirSync(this.root, { recursive: true, mode: 0o711 })
    chmodSync(this.root, 0o711)
    if (protect == null) return
    chmodSync(protect, 0o711)
    for (const entry of readdirSync(protect, { withFileTypes: true })) {
      const path = join(protect, entry.name)
      if (path === this.root) continue
      // A folder on the way to the root lets others through (and no more); the rest is private.
      if (this.root.startsWith(path + sep)) chmodSync(path, 0o711)
      else chmodSync(path, entry.isDirectory() ? 0o700 : statSync(path).mode & 0o700)
    }
  }

  /** Unmounts every tmpfs under the root, also those of a previous run that was killed */
  private unmountAll (): void {
    let lines: string[]
    try { lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n') } catch { return }
    const prefix = this.root.endsWith(sep) ? this.root : this.root + sep
    for (const line of lines) {
      // field 5 is the mount point, octal-escaped
      const point = line.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
      if (point?.startsWith(prefix) === true) unmount(point)
    }
  }

  /** A fresh slot: empty code folder, empty tmp owned by `uid` */
  take (uid?: number): SlotDirs {
    let index = 0
    while (this.used.has(index)) index++
    this.used.add(index)
    const dir = join(this.root, String(index))
    rmSync(dir, { recursive: true, force: true })
    mkdirSync(dir, { mode: 0o711 })
    const slot = { index, dir, task: join(dir, 'task'), tmp: join(dir, 'tmp') }
    mkdirSync(slot.task, { mode: 0o755 })
    mkdirSync(slot.tmp, { mode: 0o700 })
    if (this.tmpMb != null) {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${this.tmpMb}m,mode=0700,nosuid,nodev${uid != null ? `,uid=${uid},gid=${uid}` : ''}`, 'fnmesh-tmp', slot.tmp], { stdio: 'ignore' })
    }
    if (uid != null) chownSync(slot.tmp, uid, uid)
    // Pins the module type of a bundle without a package.json to CommonJS, as on Lambda, whatever
    // package.json lies above the data folder.
    writeFileSync(join(dir, 'package.json'), '{"type":"commonjs"}\n', { mode: 0o644 })
    return slot
  }

  /** Places the function's unpacked code into the slot's code folder */
  async fill (slot: SlotDirs, source: string): Promise<void> {
    await linkTree(source, slot.task)
  }

  /** Wipes the slot and frees its index */
  give (slot: SlotDirs): void {
    if (this.tmpMb != null) unmount(slot.tmp)
    rmSync(slot.dir, { recursive: true, force: true })
    this.used.delete(slot.index)
  }

  close (): void {
    this.unmountAll()
    rmSync(this.root, { recursive: true, force: true })
    this.used.clear()
  }
}

/** Detaches a slot's tmpfs (lazily: a process still holding a file there does not stop it) */
function unmount (path: string): void {
  try { execFileSync('umount', ['-l', path], { stdio: 'ignore' }) } catch {}
}


async function linkTree (from: string, to: string, top = true): Promise<void> {
  for (const entry of await readdir(from, { withFileTypes: true })) {
    // the cache's own marker (registry/cache.ts), not the function's
    if (top && entry.name === '.fnmesh-complete') continue
    const src = join(from, entry.name)
    const dst = join(to, entry.name)
    if (entry.isDirectory()) {
      await mkdir(dst, { mode: 0o755 })
      await linkTree(src, dst, false)
    } else if (entry.isFile()) {
      try {
        await link(src, dst)
      } catch (err: any) {
        if (err?.code !== 'EXDEV' && err?.code !== 'EPERM') throw err
        await copyFile(src, dst)
      }
    }
  }
}
