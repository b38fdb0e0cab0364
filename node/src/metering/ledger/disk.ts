/**
 * The disk guard: a node that cannot write meter records must not run invocations (they would go
 * unmetered), so it watches the free space where its ledger lives. Below `minFreeBytes`, or after
 * a write fails for lack of space, it refuses new work with a reason (the executor answers
 * FNMESH_ERR_DISK_FULL, the advert carries the reason so routers skip the node and `fnmesh nodes`
 * shows it) until the space is back above the threshold plus a margin.
 */
import { statfs } from 'node:fs/promises'
import type { Logger } from '../../logger.js'

export interface DiskGuardInit {
  dir: string
  /** @default 64 MiB */
  minFreeBytes?: number
  /** @default 1000 */
  intervalMs?: number
  logger: Logger
  /** called when the reason to refuse work appears, changes or clears ('' = serving) */
  onChange?: (refusing: string) => void
}

const MiB = 1024 * 1024
const fmt = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MB`

export const isNoSpace = (err: any): boolean => /ENOSPC|no space left|disk full|quota exceeded|EDQUOT/i.test(`${String(err?.code)} ${String(err?.message)} ${String(err?.cause?.message)}`)

export class DiskGuard {
  refusing = ''
  freeBytes = Number.NaN
  private timer: NodeJS.Timeout | undefined
  private writeFailure = false
  private readonly min: number

  constructor (private readonly init: DiskGuardInit) {
    this.min = init.minFreeBytes ?? 64 * MiB
  }

  async start (): Promise<void> {
    if (this.timer != null) return
    await this.check()
    this.timer = setInterval(() => { void this.check() }, this.init.intervalMs ?? 1000)
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** A ledger write failed: if for lack of space, refuse work at once */
  writeFailed (err: unknown): void {
    if (!isNoSpace(err)) return
    this.writeFailure = true
    this.set(`disk full: writing the meter ledger in ${this.init.dir} failed (${String((err as any)?.cause?.message ?? (err as any)?.message ?? err)})`)
  }

  async check (): Promise<void> {
    let free: number
    try {
      const s = await statfs(this.init.dir)
      free = Number(s.bavail) * Number(s.bsize)
    } catch (err: any) {
      this.init.logger.warn({ dir: this.init.dir, err: String(err?.message ?? err) }, 'cannot read the free space of the data folder')
      return
    }
    this.freeBytes = free
    // A margin above the threshold, so a node near it does not flap between serving and not.
    const margin = Math.max(this.min / 4, MiB)
    if (free < this.min) {
      this.set(`disk full: ${fmt(free)} free in ${this.init.dir}, below the ${fmt(this.min)} needed to meter invocations`)
    } else if (this.refusing !== '' && free >= this.min + margin) {
      this.writeFailure = false
      this.set('')
    } else if (this.refusing !== '' && !this.writeFailure) {
      this.set(`disk full: ${fmt(free)} free in ${this.init.dir}, waiting for ${fmt(this.min + margin)} before taking work again`)
    }
  }

  private set (reason: string): void {
    if (reason === this.refusing) return
    const was = this.refusing
    this.refusing = reason
    if (reason !== '' && was === '') this.init.logger.error({ freeBytes: this.freeBytes, minFreeBytes: this.min }, `taking no new work: ${reason}`)
    else if (reason === '') this.init.logger.info({ freeBytes: this.freeBytes }, 'disk space is back: taking work again')
    this.init.onChange?.(reason)
  }
}
