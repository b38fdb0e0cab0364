/**
 * The meter store: every node's records (this node's and its peers' replicas) in one LevelDB,
 * with the digests for anti-entropy and the rollups. One writer
 * applies group commits in order: records that arrive while a write is under way share the next
 * batch, and each commit's read-modify-write sees the one before it.
 *
 * Writes are not synced one by one. A LevelDB write without `sync` has reached the kernel when
 * it resolves (leveldb-1.20 log_writer.cc flushes its stdio buffer, fflush -> write(), after
 * every log record; db_impl.cc fsyncs only when `sync` is set), so a killed process loses
 * nothing it wrote. Durability against power loss comes from a group fsync in the background:
 * the first write after the last fsync starts a timer of `fsyncWindowMs`, and when it fires the
 * LevelDB log files are fdatasync'd off the writer's path (libuv's thread pool). A write is
 * therefore on disk at most fsyncWindowMs plus one fdatasync after it resolved.
 */
import { open as openFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { decode, type MeterProof, type RollupRegister } from '../../../../proto/codec.js'
import { InternalError } from '../../../../proto/errors.js'
import type { Logger } from '../../logger.js'
import { DigestTree, decodeDigest } from '../records/digest.js'
import { MINUTE_MS, floorTo, parseDigestKey } from '../records/keys.js'
import { planIngest, type Op, type Outcome, type Plan, type Reader } from './plan.js'
import { compactChunk, planDrop, planRegisters } from './compaction.js'
import { isNoSpace } from './disk.js'
import { rebuildDerived } from './rebuild.js'
import { openLedgerDb, isDamage, repairAndOpen, type Db } from './recovery.js'
import type { VerifiedRecord } from '../records/signing.js'

export interface StoreInit {
  dir: string
  logger: Logger
  /** Raw records older than this are compacted into rollups. @default 30 days */
  retentionMs?: number
  now?: () => number
  /** called when a write fails (the disk guard listens for ENOSPC) */
  onWriteError?: (err: Error) => void
  /** Longest time a write stays in the OS before the background fsync covers it. @default 50 */
  fsyncWindowMs?: number
}

/** LevelDB's write-ahead logs: 000123.log */
const LOG_FILE = /^\d+\.log$/

/** Background fsync counters */
export interface SyncStats {
  /** fsyncs done (each covers every write that resolved before it started) */
  syncs: number
  /** fsyncs that failed (retried at the next window) */
  failures: number
  /** longest time from a write resolving to the fsync covering it completing, ms */
  maxLagMs: number
}

export interface IngestResult { stored: number, known: number, stale: number }

type Job =
  | { kind: 'ingest', items: readonly VerifiedRecord[], proofs: ReadonlyMap<string, MeterProof>, resolve: (r: IngestResult) => void, reject: (e: Error) => void }
  | { kind: 'registers', registers: readonly RollupRegister[], resolve: (n: number) => void, reject: (e: Error) => void }
  | { kind: 'compact', resolve: (n: number) => void, reject: (e: Error) => void }
  | { kind: 'repair', why: string, resolve: (n: number) => void, reject: (e: Error) => void }
  | { kind: 'drop', nodeId: string, hourMs: number, expect: { count: number, hash: Uint8Array }, resolve: (n: number) => void, reject: (e: Error) => void }

const CACHE_LIMIT = 50_000

export class MeterStore {
  readonly tree = new DigestTree()
  /** records stored since open, by this store's writer */
  stored = 0
  private queue: Job[] = []
  private writing: Promise<void> | undefined
  private closed = false
  private readonly cache = new Map<string, Uint8Array | undefined>()
  private readonly knownProofs = new Set<string>()
  /** a write failed for lack of space: LevelDB may keep failing until it is reopened */
  private reopenNeeded = false
  private lastReopen = 0
  readonly retentionMs: number
  readonly now: () => number
  readonly fsyncWindowMs: number
  readonly syncStats: SyncStats = { syncs: 0, failures: 0, maxLagMs: 0 }
  /** when the oldest write not yet covered by an fsync resolved (performance.now), if any */
  private dirtySince: number | undefined
  private syncTimer: NodeJS.Timeout | undefined
  private syncing: Promise<void> | undefined

  private constructor (public db: Db, public recovered: string, private readonly init: StoreInit) {
    this.retentionMs = init.retentionMs ?? 30 * 86_400_000
    this.now = init.now ?? Date.now
    this.fsyncWindowMs = init.fsyncWindowMs ?? 50
  }

  static async open (init: StoreInit): Promise<MeterStore> {
    const { db, recovered } = await openLedgerDb(init.dir, init.logger)
    const store = new MeterStore(db, recovered, init)
    try {
      if (recovered !== '') await store.rebuild()
      else if (await store.hasLegacyIndex()) {
        // Written when one record per invocation id was billed: recount with every record.
        await store.rebuild('recounted the meter rollups of a ledger that billed one record per invocation id: every run is billed now')
      }
      await store.loadTree()
    } catch (err: any) {
      if (!isDamage(err)) { await db.close().catch(() => {}); throw err }
      await store.repair(String(err?.cause?.message ?? err?.message ?? err))
    }
    return store
  }

  /**
   * Reads every entry once to find damage LevelDB only reports when a block is read (a
   * truncated table); repairs the ledger if it finds any. Resolves to '' or what it did.
   */
  async verify (): Promise<string> {
    try {
      let n = 0
      for await (const entry of this.db.iterator()) {
        // Yield now and then: this runs beside the node's work.
        if (++n % 5000 === 0) await new Promise(resolve => setImmediate(resolve))
        void entry
      }
      return ''
    } catch (err: any) {
      if (!isDamage(err) || this.closed) throw err
      const why = String(err?.cause?.message ?? err?.message ?? err)
      await this.enqueue<number>((resolve, reject) => ({ kind: 'repair', why, resolve, reject }))
      return this.recovered
    }
  }

  /** Moves the damaged ledger aside, repairs a copy, rebuilds what derives from the records */
  private async repair (why: string): Promise<void> {
    await this.db.close().catch(() => {})
    const { db, recovered } = await repairAndOpen(this.init.dir, why, this.init.logger)
    this.db = db
    this.recovered = recovered
    this.cache.clear()
    this.knownProofs.clear()
    await this.rebuild()
    this.tree.clear()
    await this.loadTree()
  }

  private async hasLegacyIndex (): Promise<boolean> {
    for await (const _ of this.db.keys({ gte: 'i!', lt: 'i!~', limit: 1 })) return true
    return false
  }

  /** Rebuilds digests and rollups from what the ledger holds (after a repair) */
  private async rebuild (why = 'rebuilt the meter index, digests and rollups from the records the repair kept'): Promise<void> {
    const raw = await rebuildDerived(this.db, this.horizonMs())
    this.init.logger.warn({ records: raw }, why)
  }

  /** Minutes before this are kept as rollups only */
  horizonMs (): number {
    return floorTo(this.now() - this.retentionMs, MINUTE_MS)
  }

  /** Stores verified records and resolves once they are written to the OS (fsynced within the window) */
  async ingest (items: readonly VerifiedRecord[], proofs: ReadonlyMap<string, MeterProof>): Promise<IngestResult> {
    return await this.enqueue<IngestResult>((resolve, reject) => ({ kind: 'ingest', items, proofs, resolve, reject }))
  }

  /** Merges rollup registers of old minutes (max-register); resolves to how many replaced ours */
  async adoptRegisters (registers: readonly RollupRegister[]): Promise<number> {
    return await this.enqueue<number>((resolve, reject) => ({ kind: 'registers', registers, resolve, reject }))
  }

  /**
   * Drops everything held of `nodeId`'s hour starting at `hourMs` (records, digests, seals and
   * rollups: another node owns it now, and its owners confirmed holding it) if it still holds
   * exactly the records of `expect`; resolves to how many records it dropped (0: it changed).
   */
  async dropRange (nodeId: string, hourMs: number, expect: { count: number, hash: Uint8Array }): Promise<number> {
    return await this.enqueue<number>((resolve, reject) => ({ kind: 'drop', nodeId, hourMs, expect, resolve, reject }))
  }

  /** Drops raw records older than the retention (their rollups stay); resolves to how many */
  async compact (): Promise<number> {
    return await this.enqueue<number>((resolve, reject) => ({ kind: 'compact', resolve, reject }))
  }

  /** Reads through the cache of digest and rollup values the writer keeps hot */
  readonly reader: Reader = {
    getMany: async (keys) => {
      const out: Array<Uint8Array | undefined> = new Array(keys.length)
      const miss: number[] = []
      keys.forEach((k, i) => { if (this.cache.has(k)) out[i] = this.cache.get(k); else miss.push(i) })
      if (miss.length > 0) {
        const got = await this.db.getMany(miss.map(i => keys[i]))
        miss.forEach((i, j) => { out[i] = got[j] ?? undefined })
      }
      return out
    },
    get: async (key) => (await this.reader.getMany([key]))[0]
  }

  /** Waits for queued writes, fsyncs them, then closes; idempotent */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.writing
    await this.sync()
    clearTimeout(this.syncTimer)
    await this.db.close()
  }

  /** True while some write is not on disk yet (not fsynced, or its fsync is under way) */
  get unsynced (): boolean {
    return this.dirtySince != null || this.syncing != null
  }

  /**
   * Fsyncs the LevelDB logs now, covering every write that resolved before the call; resolves
   * when done (a failure is logged and counted, and retried at the next window).
   */
  async sync (): Promise<void> {
    // An fsync under way may have started before the latest writes: wait for it, then cover them.
    while (this.syncing != null) await this.syncing
    if (this.dirtySince == null) return
    const since = this.dirtySince
    this.dirtySince = undefined
    clearTimeout(this.syncTimer)
    this.syncTimer = undefined
    this.syncing = (async () => {
      try {
        await fsyncLogs(this.init.dir)
        this.syncStats.syncs++
        this.syncStats.maxLagMs = Math.max(this.syncStats.maxLagMs, performance.now() - since)
      } catch (err: any) {
        this.syncStats.failures++
        this.init.logger.error({ err: String(err?.message ?? err) }, 'meter ledger fsync failed; trying again')
        this.dirtied(since)
      }
    })().finally(() => { this.syncing = undefined })
    await this.syncing
  }

  /** A write resolved: make sure an fsync covers it within the window */
  private dirtied (since = performance.now()): void {
    if (this.dirtySince != null) return
    this.dirtySince = since
    const wait = Math.max(0, since + this.fsyncWindowMs - performance.now())
    this.syncTimer = setTimeout(() => { void this.sync() }, wait)
    this.syncTimer.unref?.()
  }

  get isClosed (): boolean {
    return this.closed
  }

  private async enqueue<T> (job: (resolve: (v: T) => void, reject: (e: Error) => void) => Job): Promise<T> {
    if (this.closed) throw new InternalError('FNMESH_ERR_METER_UNAVAILABLE', 'Cannot record usage: the ledger is closed')
    return await new Promise<T>((resolve, reject) => {
      this.queue.push(job(resolve, reject))
      this.writing ??= this.drain()
    })
  }

  private async drain (): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const job = this.queue[0]
        if (job.kind === 'ingest') {
          // Group commit: every ingest queued now shares one batch.
          const jobs: Array<Extract<Job, { kind: 'ingest' }>> = []
          while (this.queue[0]?.kind === 'ingest') jobs.push(this.queue.shift() as Extract<Job, { kind: 'ingest' }>)
          await this.runIngest(jobs)
        } else {
          this.queue.shift()
          await this.runOther(job)
        }
      }
    } finally {
      this.writing = undefined
    }
  }

  private async runIngest (jobs: Array<Extract<Job, { kind: 'ingest' }>>): Promise<void> {
    await this.reopenIfNeeded()
    const items = jobs.flatMap(j => j.items)
    const proofs = new Map<string, MeterProof>()
    for (const j of jobs) for (const [id, p] of j.proofs) proofs.set(id, p)
    try {
      const plan = await planIngest(this.reader, items, proofs, this.horizonMs(), this.knownProofs)
      await this.commit(plan.ops, plan)
      for (const id of proofs.keys()) this.rememberProof(id)
      for (const j of jobs) {
        const r: IngestResult = { stored: 0, known: 0, stale: 0 }
        const seen = new Set<string>()
        for (const it of j.items) {
          const o: Outcome = seen.has(it.key) ? 'known' : plan.outcome.get(it.key) ?? 'known'
          seen.add(it.key)
          r[o]++
        }
        j.resolve(r)
      }
    } catch (err: any) {
      const e = this.failure(err)
      for (const j of jobs) j.reject(e)
    }
  }

  private async runOther (job: Exclude<Job, { kind: 'ingest' }>): Promise<void> {
    try {
      if (job.kind === 'repair') {
        await this.repair(job.why)
        job.resolve(0)
      } else if (job.kind === 'drop') {
        const plan = await planDrop(this.db, this.reader, job.nodeId, job.hourMs, job.expect)
        if (plan == null) { job.resolve(0); return }
        await this.db.batch(plan.ops)
        this.dirtied()
        // The dropped keys may be cached: forget the cache (it refills from LevelDB).
        this.cache.clear()
        this.tree.setHour(job.nodeId, job.hourMs, { count: 0, hash: Buffer.alloc(32) })
        job.resolve(plan.records)
      } else if (job.kind === 'registers') {
        const plan = await planRegisters(this, job.registers)
        await this.commit(plan.ops, plan)
        job.resolve(plan.adopted)
      } else {
        let total = 0
        for (;;) {
          const chunk = await compactChunk(this.db, this.horizonMs())
          if (chunk.ops.length > 0) {
            await this.db.batch(chunk.ops)
            this.dirtied()
          }
          total += chunk.records
          if (!chunk.more) break
          // Let queued group commits through between chunks.
          if (this.queue.length > 0) { this.queue.push(job); return }
        }
        job.resolve(total)
      }
    } catch (err: any) {
      job.reject(this.failure(err))
    }
  }

  /** Writes a plan's ops (to the OS; fsynced within the window), then publishes its staged values to the cache and tree */
  private async commit (ops: Op[], plan: Pick<Plan, 'staged' | 'hours' | 'stored'>): Promise<void> {
    if (ops.length === 0) return
    await this.db.batch(ops)
    this.dirtied()
    for (const [k, v] of plan.staged) this.cache.set(k, v)
    if (this.cache.size > CACHE_LIMIT) {
      // Oldest first (Map order): the current minute's rows stay hot.
      let drop = this.cache.size - CACHE_LIMIT / 2
      for (const k of this.cache.keys()) { if (drop-- <= 0) break; this.cache.delete(k) }
    }
    for (const h of plan.hours) this.tree.setHour(h.nodeId, h.hourMs, h.digest)
    this.stored += plan.stored
  }

  /**
   * After a write failed for lack of space, LevelDB can hold on to the error (a failed table
   * write is sticky): reopen it, at most every 2 s, before the next write.
   */
  private async reopenIfNeeded (): Promise<void> {
    if (!this.reopenNeeded || Date.now() - this.lastReopen < 2000) return
    this.lastReopen = Date.now()
    try {
      await this.db.close().catch(() => {})
      this.db = (await openLedgerDb(this.init.dir, this.init.logger)).db
      this.cache.clear()
      this.tree.clear()
      await this.loadTree()
      this.reopenNeeded = false
      this.init.logger.info('reopened the meter ledger after writes failed for lack of space')
    } catch (err: any) {
      this.init.logger.warn({ err: String(err?.message ?? err) }, 'cannot reopen the meter ledger yet')
    }
  }

  private failure (err: any): Error {
    // Staged values may not be on disk: forget them all.
    this.cache.clear()
    if (isNoSpace(err)) this.reopenNeeded = true
    this.init.onWriteError?.(err)
    const message = String(err?.cause?.message ?? err?.message ?? err)
    this.init.logger.error({ err: message, damaged: isDamage(err) }, 'meter write failed')
    // Damaged files: find out what is readable and repair (after this job, in the writer's turn).
    if (isDamage(err) && !isNoSpace(err) && !this.closed) setImmediate(() => { void this.verify().catch(() => {}) })
    return new InternalError('FNMESH_ERR_METER_UNAVAILABLE', `Cannot record usage: ${message}`, { cause: err })
  }

  private rememberProof (id: string): void {
    if (this.knownProofs.size >= 20_000) this.knownProofs.clear()
    this.knownProofs.add(id)
  }

  /** Loads every hour digest into the in-memory tree */
  private async loadTree (): Promise<void> {
    for await (const [key, value] of this.db.iterator({ gte: 'h!', lt: 'h!~' })) {
      const k = parseDigestKey(key)
      if (k != null) this.tree.setHour(k.nodeId, k.bucketMs, decodeDigest(value))
    }
  }

  /** The proof of a batch, if stored */
  async proof (batchId: string): Promise<MeterProof | undefined> {
    const bytes = await this.db.get(`p!${batchId}`)
    return bytes != null ? decode('MeterProof', bytes) : undefined
  }
}

/**
 * fdatasyncs LevelDB's log files in `dir`. fsync acts on the file, whichever descriptor wrote it,
 * so this covers every write LevelDB made to them before the call. Tables and the manifest are
 * synced by LevelDB itself when it writes them; a log deleted meanwhile was already in a table.
 */
async function fsyncLogs (dir: string): Promise<void> {
  const logs = (await readdir(dir)).filter(f => LOG_FILE.test(f))
  await Promise.all(logs.map(async (f) => {
    let fh
    try {
      fh = await openFile(join(dir, f), 'r')
    } catch (err: any) {
      if (err?.code === 'ENOENT') return
      throw err
    }
    try {
      await fh.datasync()
    } finally {
      await fh.close()
    }
  }))
}
