/**
 * Opening the ledger's LevelDB when its files may be damaged (a truncated table, manifest or
 * log after a crash, a bad disk, a careless copy). Nothing is thrown away: the damaged folder is
 * moved aside intact (`<ledger>.corrupt-<time>`), a copy of it is repaired in place (LevelDB's
 * RepairDB keeps every record it can still read), and the agent logs what happened. Records the
 * repair could not save come back from peers through anti-entropy, which is why they were
 * replicated in the first place; until then `fnmesh usage` on this node may show fewer.
 */
import { cp, mkdir, readFile, rename, rm } from 'node:fs/promises'
import { Level } from 'level'
import { InternalError } from '../../../../proto/errors.js'
import type { Logger } from '../../logger.js'

export type Db = Level<string, Uint8Array>

export const newDb = (dir: string): Db => new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' })

const causeOf = (err: any): string => String(err?.cause?.message ?? err?.message ?? err)

/** A LevelDB error that means damaged files, not a busy lock or a missing folder */
export function isDamage (err: any): boolean {
  const codes = [err?.code, err?.cause?.code]
  if (codes.includes('LEVEL_LOCKED')) return false
  return codes.includes('LEVEL_CORRUPTION') || codes.includes('LEVEL_IO_ERROR') || /corrupt|truncated|bad (block|magic)|checksum/i.test(causeOf(err))
}

/**
 * Opens the ledger; a damaged one is moved aside, repaired in a copy and opened again.
 * Returns the database and a description of the repair ('' when none was needed).
 */
export async function openLedgerDb (dir: string, log: Logger): Promise<{ db: Db, recovered: string }> {
  const db = newDb(dir)
  try {
    await db.open()
    return { db, recovered: await walDamage(dir, log) }
  } catch (err: any) {
    if (!isDamage(err)) {
      throw new InternalError('FNMESH_ERR_METER_UNAVAILABLE', `Cannot open the meter ledger at "${dir}": ${causeOf(err)}`, { cause: err })
    }
    return await repairAndOpen(dir, causeOf(err), log)
  }
}

/**
 * Moves the damaged ledger aside, repairs a copy in its place and opens it. Falls back to an
 * empty ledger if the copy cannot be repaired (the damaged folder is kept either way).
 */
export async function repairAndOpen (dir: string, why: string, log: Logger): Promise<{ db: Db, recovered: string }> {
  const aside = `${dir}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`
  log.error({ ledger: dir, reason: why, movedTo: aside }, 'the meter ledger is damaged: moving it aside and repairing a copy')
  await rename(dir, aside)
  try {
    await cp(aside, dir, { recursive: true })
    await rm(`${dir}/LOCK`, { force: true })
    // `level` is classic-level on Node; its typings omit the static repair()
    await (Level as unknown as { repair: (location: string) => Promise<void> }).repair(dir)
    const db = newDb(dir)
    await db.open()
    const recovered = `ledger damaged (${why}); the damaged files were kept at ${aside} and a repaired copy is in use: records it could not read come back from peers by anti-entropy`
    log.warn({ ledger: dir, keptAt: aside }, 'meter ledger repaired: records the repair could not read will come back from peers')
    return { db, recovered }
  } catch (err: any) {
    log.error({ ledger: dir, err: causeOf(err), keptAt: aside }, 'the damaged meter ledger could not be repaired: starting an empty one (peers hold replicas of its records)')
    await rm(dir, { recursive: true, force: true })
    await mkdir(dir, { recursive: true })
    const db = newDb(dir)
    await db.open()
    return { db, recovered: `ledger damaged beyond repair (${why}); kept at ${aside}; started empty: this node's records come back from peers by anti-entropy` }
  }
}

/** LevelDB drops a damaged tail of its write-ahead log on open and only says so in its LOG file */
async function walDamage (dir: string, log: Logger): Promise<string> {
  let text = ''
  try { text = await readFile(`${dir}/LOG`, 'utf8') } catch { return '' }
  const lines = text.split('\n').filter(l => /corrupt|dropping|ignoring error/i.test(l))
  if (lines.length === 0) return ''
  log.error({ ledger: dir, leveldb: lines.slice(0, 5) }, 'the meter ledger\'s write-ahead log was damaged: LevelDB dropped part of it on open; records in it that reached peers come back by anti-entropy')
  return `write-ahead log damaged: ${lines[0].trim()}`
}
