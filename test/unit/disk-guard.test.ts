/**
 * The disk guard's decisions on a real folder (the full disk itself is tested on a tmpfs in
 * test/integration/disk-full.test.ts, which needs root).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { DiskGuard, isNoSpace } from '../../node/src/metering/ledger/disk.js'
import { recordingLogger } from '../helpers/meter.js'

describe('disk guard', () => {
  const dirs: string[] = []
  const guards: DiskGuard[] = []
  const guard = async (minFreeBytes: number): Promise<{ g: DiskGuard, changes: string[], log: ReturnType<typeof recordingLogger> }> => {
    const dir = await mkdtemp(join(tmpdir(), 'fnmesh-guard-'))
    dirs.push(dir)
    const changes: string[] = []
    const log = recordingLogger()
    const g = new DiskGuard({ dir, minFreeBytes, logger: log, intervalMs: 60_000, onChange: (r) => { changes.push(r) } })
    guards.push(g)
    return { g, changes, log }
  }

  afterEach(async () => {
    for (const g of guards.splice(0)) g.stop()
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
  })

  it('refuses work when free space is below the threshold, says why once, and not otherwise', async () => {
    const low = await guard(Number.MAX_SAFE_INTEGER)
    await low.g.start()
    expect(low.g.refusing).toMatch(/^disk full: \d+\.\d MB free in .*, below the \d+\.\d MB needed to meter invocations$/)
    await low.g.check()
    expect(low.changes).toHaveLength(1)
    expect(low.log.lines.filter(l => l.level === 'error').map(l => l.msg)).toEqual([`taking no new work: ${low.g.refusing}`])
    const fine = await guard(0)
    await fine.g.start()
    expect(fine.g.refusing).toBe('')
    expect(fine.changes).toEqual([])
    expect(fine.g.freeBytes).toBeGreaterThan(0)
  })

  it('refuses work at once when a write fails for lack of space, and takes work again once space is back', async () => {
    const { g, changes, log } = await guard(0)
    await g.start()
    g.writeFailed(new Error('IO error: /data/ledger/000003.log: Invalid argument'))
    expect(g.refusing).toBe('')
    g.writeFailed(Object.assign(new Error('IO error: /data/ledger/000003.log: No space left on device'), { code: 'LEVEL_IO_ERROR' }))
    expect(g.refusing).toMatch(/^disk full: writing the meter ledger in .* failed \(IO error: .*No space left on device\)$/)
    // The folder has plenty of room above the 0-byte threshold: the next check clears it.
    await g.check()
    expect(g.refusing).toBe('')
    expect(changes).toEqual([expect.stringMatching(/^disk full/), ''])
    expect(log.lines.some(l => l.msg === 'disk space is back: taking work again')).toBe(true)
  })

  it('tells a lack of space from other errors', () => {
    expect(isNoSpace(Object.assign(new Error('x'), { code: 'ENOSPC' }))).toBe(true)
    expect(isNoSpace(new Error('IO error: foo.log: No space left on device'))).toBe(true)
    expect(isNoSpace({ cause: { message: 'Disk quota exceeded' } })).toBe(true)
    expect(isNoSpace(new Error('IO error: Invalid argument'))).toBe(false)
    expect(isNoSpace(undefined)).toBe(false)
  })
})
