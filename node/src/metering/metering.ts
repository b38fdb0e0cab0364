/**
 * The metering part, as the agent sees it: `start()` opens the ledger (before anything runs: a
 * damaged one is repaired first), then `connect()`, once the libp2p host is up, starts signing,
 * replication, anti-entropy, sealing, compaction and the disk guard. The executor records through
 * it; the control API queries it.
 *
 *   executor ──record──> Meter ──sign──> MeterStore (LevelDB: written to the OS, fsynced within fsyncWindowMs)
 *                          └──push──> Replicator ══/fnmesh/meter/push/1══> peers' Intake ──> their store
 *   router (copy carried in a peer's result) ──keepCopy──> Intake ──> store
 *   AntiEntropy ══/fnmesh/meter/sync/1══> peers (digests, then the difference) ──> Intake ──> store
 */
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { decode, type Encodable, type MeterBundle, type MeterRecord, type MeterStatus } from '../../../proto/codec.js'
import { HOUR_MS, floorTo } from './records/keys.js'
import type { PeerTable } from '../gossip/peer-table.js'
import { Once, type Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import { AntiEntropy } from './replication/antientropy.js'
import { DiskGuard } from './ledger/disk.js'
import { exportPage, type ExportOptions } from './queries/export.js'
import { Intake } from './replication/intake.js'
import { Meter, type RecordOptions } from './meter.js'
import { Replicator } from './replication/replicator.js'
import { Handoff } from './replication/handoff.js'
import { Placement } from './replication/placement.js'
import { queryParts, type PartsResult } from './queries/parts.js'
import { BatchSigner, BundleVerifier } from './records/signing.js'
import { MeterStore } from './ledger/store.js'
import { queryUsage, type UsageOptions, type UsageResult } from './queries/usage.js'

export interface MeteringInit {
  /** the ledger folder */
  dir: string
  logger: Logger
  /** @default 2 */
  replicas?: number
  /** @default 1 */
  ackReplicas?: number
  /** @default 500 */
  ackTimeoutMs?: number
  /** @default 5000 */
  syncIntervalMs?: number
  /** @default 30 days */
  retentionMs?: number
  /** @default 1 hour */
  compactIntervalMs?: number
  /** @default 64 MiB */
  minFreeBytes?: number
  /** @default 20 minutes */
  sealAfterMs?: number
  /** Longest time a ledger write waits for its fsync (group fsync in the background). @default 50 */
  fsyncWindowMs?: number
  /** Peers no answer waits for get a batch within this long, coalesced (tests stretch it). @default 50 */
  pushDelayMs?: number
  /** A range this node no longer owns is dropped no sooner than this after membership changed (owners confirmed it). @default 30000 */
  handoffDropAfterMs?: number
  /** told when the node starts or stops refusing work */
  onRefusingChange?: (reason: string) => void
}

export interface MeteringComponents { privateKey: PrivateKey, nodeId: string, libp2p: Libp2p, table: PeerTable }

export class Metering implements Startable {
  private ledger: MeterStore | undefined
  private opening: Once<void> | undefined
  private connecting: Once<void> | undefined
  private closing: Once<void> | undefined
  private meter: Meter | undefined
  private replicator: Replicator | undefined
  private antiEntropy: AntiEntropy | undefined
  private intake: Intake | undefined
  private handoff: Handoff | undefined
  private placementOf: Placement | undefined
  private compactTimer: NodeJS.Timeout | undefined
  private nodeId = ''
  readonly guard: DiskGuard

  constructor (private readonly init: MeteringInit) {
    this.guard = new DiskGuard({ dir: init.dir, minFreeBytes: init.minFreeBytes, logger: init.logger, onChange: init.onRefusingChange })
  }

  /** The ledger; only once started */
  get store (): MeterStore {
    if (this.ledger == null) throw new Error('metering not started')
    return this.ledger
  }

  /** Opens (and if need be repairs) the ledger; idempotent. Records are taken after `connect` */
  async start (): Promise<void> {
    this.opening ??= new Once(async () => {
      this.ledger = await MeterStore.open({ dir: this.init.dir, logger: this.init.logger, retentionMs: this.init.retentionMs, fsyncWindowMs: this.init.fsyncWindowMs, onWriteError: (err) => { this.guard.writeFailed(err) } })
    })
    await this.opening.run()
  }

  /** The ledger is open (and not closed) */
  isStarted (): boolean {
    return this.ledger != null && this.closing == null
  }

  /**
   * Once the libp2p host is up (after `start`): the disk guard, signing, replication,
   * anti-entropy, sealing, compaction and a background check of the ledger; idempotent.
   */
  async connect (c: MeteringComponents): Promise<void> {
    if (!this.isStarted()) throw new Error('metering not started')
    this.connecting ??= new Once(async () => { await this.startNetwork(c) })
    await this.connecting.run()
  }

  private async startNetwork (c: MeteringComponents): Promise<void> {
    const log = this.init.logger
    this.nodeId = c.nodeId
    await this.guard.start()
    const intake = this.intake = new Intake(this.store, new BundleVerifier(), log)
    const placement = this.placementOf = new Placement(c.table, c.nodeId, this.init.replicas ?? 2)
    const replicator = this.replicator = new Replicator({ libp2p: c.libp2p, table: c.table, nodeId: c.nodeId, intake, logger: log, placement }, {
      replicas: this.init.replicas, ackReplicas: this.init.ackReplicas, ackTimeoutMs: this.init.ackTimeoutMs, pushDelayMs: this.init.pushDelayMs
    })
    await replicator.start()
    this.meter = new Meter({ store: this.store, signer: new BatchSigner(c.privateKey, c.nodeId), replicator, logger: log }, { sealAfterMs: this.init.sealAfterMs, carryWaitsForAcks: (this.init.ackReplicas ?? 1) > 1, strictAcks: (this.init.ackReplicas ?? 1) > 1 })
    this.meter.start()
    const antiEntropy = this.antiEntropy = new AntiEntropy({ libp2p: c.libp2p, table: c.table, store: this.store, intake, logger: log, placement, self: c.nodeId }, { intervalMs: this.init.syncIntervalMs })
    await antiEntropy.start()
    this.handoff = new Handoff({
      store: this.store,
      placement,
      logger: log,
      session: async (peer, full, scope) => await antiEntropy.session(peer, full, scope),
      syncedAt: (peer) => antiEntropy.syncedAt(peer),
      live: (peer) => { const e = c.table.get(peer); return e != null && !e.suspect && !e.advert.draining }
    }, { intervalMs: this.init.syncIntervalMs, dropAfterMs: this.init.handoffDropAfterMs })
    this.handoff.start()
    const compact = (): void => {
      void this.store.compact().then(n => { if (n > 0) log.info({ records: n }, 'compacted raw meter records older than the retention into rollups') },
        (err) => { log.warn({ err: String(err?.message ?? err) }, 'compaction failed') })
    }
    compact()
    this.compactTimer = setInterval(compact, this.init.compactIntervalMs ?? 3_600_000)
    // A truncated table only shows when read: read everything once, beside the node's work.
    void this.store.verify().then(
      (did) => { log.info({ records: this.store.tree.count, repaired: did !== '' }, 'meter ledger checked') },
      (err) => { log.warn({ err: String(err?.message ?? err) }, 'could not check the meter ledger') })
  }

  /** Why the node must take no new work ('' when it may) */
  refusing (): string {
    return this.guard.refusing
  }

  /**
   * Meters one invocation of this node (see Meter.record). With `carry`, resolves with the signed
   * bundle for the result to carry to the router's node (`router`) — unless `--ack-replicas 0`
   * asked for no second copy before the answer; with `--ack-replicas` N >= 2, once N - 1 owners
   * other than the router's node have it too.
   */
  async record (record: Encodable<MeterRecord>, options: RecordOptions = {}): Promise<Encodable<MeterBundle> | undefined> {
    if (this.meter == null) throw new Error('metering not started')
    return await this.meter.record(record, { carry: options.carry === true && (this.init.ackReplicas ?? 1) > 0, router: options.router })
  }

  /**
   * Stores the copy of a peer's record that came back with its result (this node routed the
   * invocation): verified like any push, written to the OS before it resolves. If it cannot be
   * stored here it goes to another peer, whose ack it waits for (at most the ack timeout).
   * Never throws; resolves to where the copy is: 'here', 'peer' or '' (only on its signer, which
   * keeps pushing it).
   */
  async keepCopy (bundle: MeterBundle, from: string): Promise<'here' | 'peer' | ''> {
    const records = bundle.records.length
    let why = ''
    try {
      if (this.intake == null) throw new Error('metering not connected')
      const ack = await this.intake.take(from, bundle, [], 'result')
      if (ack.stored + ack.known >= records) return 'here'
      // Refused records (a forged copy) are not worth handing on: the intake logged why.
      if (ack.rejected > 0) return ''
      why = ack.reason
    } catch (err: any) {
      why = String(err?.message ?? err)
    }
    let hourMs: number | undefined
    try { hourMs = floorTo(decode('MeterRecord', bundle.records[0]?.record).startMs, HOUR_MS) } catch {}
    const forwarded = await this.replicator?.forward(bundle, records, from, hourMs) ?? false
    this.init.logger.warn({ from, records, err: why, forwarded }, 'could not store the meter record copy a result carried')
    return forwarded ? 'peer' : ''
  }

  async usage (q: UsageOptions): Promise<UsageResult> {
    return await queryUsage(this.store, q)
  }

  /** This node's ranges within the query window, each with its digest: one leg of a mesh-wide usage query */
  async usageParts (q: UsageOptions): Promise<PartsResult> {
    return await queryParts(this.store, q)
  }

  /**
   * Whether this node's own ledger answers for the whole mesh: every live member owns every
   * range (R+1 members or fewer), so once anti-entropy settles each holds every record
   */
  holdsEverything (): boolean {
    return this.placementOf?.current().everyone ?? true
  }

  /** R: each range is held by its node and R owners */
  replicas (): number {
    return this.init.replicas ?? 2
  }

  /** Live members the placement counts (this node included) */
  members (): string[] {
    return [...(this.placementOf?.current().members ?? [this.nodeId])]
  }

  async exportPage (q: ExportOptions): Promise<Awaited<ReturnType<typeof exportPage>>> {
    return await exportPage(this.store, q)
  }

  /** Live peers this node has not completed an anti-entropy session with since they joined */
  unsynced (): string[] {
    return this.antiEntropy?.unsynced() ?? []
  }

  /** Cheap figures for the metrics scrape (status() walks the ledger folder) */
  gauges (): { underReplicated: number, lagP99Ms: number, freeBytes: number } {
    return {
      underReplicated: this.replicator?.underReplicated ?? 0,
      lagP99Ms: this.replicator?.lag.summary().p99 ?? 0,
      freeBytes: Number.isFinite(this.guard.freeBytes) ? this.guard.freeBytes : 0
    }
  }

  async status (resetLag = false): Promise<Encodable<MeterStatus>> {
    const lag = this.replicator?.lag.summary() ?? { samples: 0, p50: 0, p99: 0, max: 0 }
    if (resetLag) this.replicator?.lag.reset()
    return {
      nodeId: this.nodeId,
      replicas: this.replicator?.replicas ?? 0,
      records: this.store.tree.count,
      ownRecords: this.meter?.ownRecords ?? 0,
      underReplicated: this.replicator?.underReplicated ?? 0,
      lagSamples: lag.samples,
      lagP50Ms: lag.p50,
      lagP99Ms: lag.p99,
      lagMaxMs: lag.max,
      received: this.intake?.stats.received ?? 0,
      rejected: this.intake?.stats.rejected ?? 0,
      syncRounds: this.antiEntropy?.stats.rounds ?? 0,
      syncPulled: this.antiEntropy?.stats.pulled ?? 0,
      syncPushed: this.antiEntropy?.stats.pushed ?? 0,
      syncedWith: this.antiEntropy?.syncedWith() ?? [],
      refusing: this.guard.refusing,
      freeBytes: Number.isFinite(this.guard.freeBytes) ? this.guard.freeBytes : 0,
      diskBytes: await folderBytes(this.init.dir),
      recovered: this.store.recovered,
      fsyncWindowMs: this.store.fsyncWindowMs,
      fsyncs: this.store.syncStats.syncs,
      fsyncLagMaxMs: this.store.syncStats.maxLagMs,
      ...(this.handoff != null ? placementStatus(this.handoff.summary()) : {})
    }
  }

  /**
   * Stops every sub-part and closes the ledger after queued writes; idempotent. `graceful`
   * first hands the last records to every peer (see Replicator.settle).
   */
  async stop (graceful = false): Promise<void> {
    this.closing ??= new Once(async () => {
      // A start or connect under way finishes first, so nothing it opens is left behind.
      await this.opening?.run().catch(() => {})
      await this.connecting?.run().catch(() => {})
      clearInterval(this.compactTimer)
      this.guard.stop()
      await this.meter?.stop()
      await this.handoff?.stop()
      if (graceful) await this.replicator?.settle()
      await this.antiEntropy?.stop()
      this.replicator?.stop()
      await this.ledger?.close()
    })
    await this.closing.run()
  }
}

function placementStatus (s: ReturnType<Handoff['summary']>): Partial<Encodable<MeterStatus>> {
  return { members: s.members, ownedRanges: s.owned, foreignRanges: s.foreign, underReplicatedRanges: s.underReplicated, droppedRanges: s.dropped, ranges: s.ranges }
}

async function folderBytes (dir: string): Promise<number> {
  let total = 0
  try {
    for (const f of await readdir(dir)) total += (await stat(join(dir, f))).size
  } catch {}
  return total
}
