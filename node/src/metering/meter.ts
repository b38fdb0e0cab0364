/**
 * This node's own meter: the executor hands it one record per invocation. Records that arrive
 * while the previous batch is being written form the next batch (group commit), which is signed
 * once, written to the local ledger (to the OS; the store fsyncs within its window) and pushed to
 * the peers at the same time. record() resolves when the record is written here and, if peers
 * are live, on `ackReplicas` of them too (bounded by the replicator's ack timeout; past it, with
 * `strictAcks` (--ack-replicas 2 or more) it rejects FNMESH_ERR_METER_UNAVAILABLE, as it does when
 * the write fails, and otherwise it resolves, the push going on) — unless the
 * caller carries the record itself (`carry`: a router on another node stores the copy that
 * travels with the result): then it resolves with the record's signed bundle as soon as it is
 * written here, and the push to the peers goes out with the next coalesced frame (with
 * `carryWaitsForAcks`, `--ack-replicas` 2 or more, once ackReplicas - 1 peers other than the
 * router's node have it written too, owners first: the router's copy is the last one; rejected
 * like the others when they do not, as strictAcks is then on). Settled
 * minutes are sealed (signed summaries) so their totals outlive the raw records.
 */
import { decode, encode, type Encodable, type MeterBundle, type MeterRecord, type RangeDigest, type RollupRegister } from '../../../proto/codec.js'
import { InternalError } from '../../../proto/errors.js'
import type { Logger } from '../logger.js'
import { localRegister, sealsOf } from './ledger/compaction.js'
import { decodeDigest, sameDigest, toRange } from './records/digest.js'
import { HOUR_MS, MINUTE_MS, floorTo, minuteDigestKey, parseDigestKey } from './records/keys.js'
import { refusal } from './records/record.js'
import type { BatchSigner } from './records/signing.js'
import type { MeterStore } from './ledger/store.js'

export interface MeterComponents {
  store: MeterStore
  signer: BatchSigner
  /** replicate() resolves whether the acks the answers wait for came in (false: they did not, within the ack timeout) */
  replicator?: { replicate: (bundle: any, records: number, urgent?: boolean, hours?: number[], carriedTo?: string[]) => Promise<boolean>, pushSeals: (seals: RollupRegister[]) => void }
  logger: Logger
}

export interface MeterInit {
  /** A minute is sealed this long after it ends (no record can start in it any more by then). @default 1200000 */
  sealAfterMs?: number
  /** @default 60000 */
  sealIntervalMs?: number
  /**
   * A carried record also waits for owners' acks (`--ack-replicas` 2 or more: the router's copy
   * counts as one, the replicator waits for the rest, not counting the router's node). @default false
   */
  carryWaitsForAcks?: boolean
  /**
   * An answer short of its acks at the ack timeout fails (FNMESH_ERR_METER_UNAVAILABLE; the router
   * runs the invocation again elsewhere) instead of being given. On with `--ack-replicas` 2 or
   * more, which asks for durability over a second run; off at 1 (the default): the function has
   * run, and running it again for a late ack would do its work twice, so the answer is given, the
   * record stays written here and its push goes on. @default false
   */
  strictAcks?: boolean
}

interface Pending { bytes: Uint8Array, carry: boolean, router?: string, resolve: (copy: Encodable<MeterBundle> | undefined) => void, reject: (err: Error) => void }

export interface RecordOptions {
  /**
   * The caller stores a second copy elsewhere (the router's node, from the result): resolve with
   * the signed bundle once written here, without waiting for a peer's ack.
   */
  carry?: boolean
  /** the node the carried copy goes to (the router's): with carryWaitsForAcks its ack does not count */
  router?: string
}

export class Meter {
  /** records of this node since start */
  ownRecords = 0
  /** records answered without the acks they waited for (not strictAcks), since start */
  answeredShort = 0
  private shortLoggedAt = 0

  /** Counts answers given short of their acks, and says so at most every 10 s */
  private shortOfAcks (records: number): void {
    this.answeredShort += records
    const now = Date.now()
    if (now - this.shortLoggedAt < 10_000) return
    this.shortLoggedAt = now
    this.c.logger.warn({ records, total: this.answeredShort }, 'meter records answered before a peer acknowledged them (ack timeout): they are written here and pushed again')
  }
  private queue: Pending[] = []
  private flushing: Promise<void> | undefined
  private sealTimer: NodeJS.Timeout | undefined
  private sealedThrough: number
  private closed = false

  constructor (private readonly c: MeterComponents, private readonly init: MeterInit = {}) {
    this.sealedThrough = c.store.horizonMs()
  }

  start (): void {
    if (this.sealTimer != null) return
    this.sealTimer = setInterval(() => { void this.seal().catch((err) => { this.c.logger.warn({ err: String(err?.message ?? err) }, 'sealing minutes failed') }) }, this.init.sealIntervalMs ?? 60_000)
  }

  /** Meters one invocation of this node: resolves once it is written (and replicated, or with its bundle to carry: see above) */
  async record (record: Encodable<MeterRecord>, options: RecordOptions = {}): Promise<Encodable<MeterBundle> | undefined> {
    if (this.closed) throw new InternalError('FNMESH_ERR_METER_UNAVAILABLE', 'Cannot record usage: the meter is stopped')
    const bytes = encode('MeterRecord', record)
    const bad = refusal(decode('MeterRecord', bytes), this.c.signer.nodeId, Date.now())
    if (bad != null) throw new InternalError('FNMESH_ERR_METER_UNAVAILABLE', `Cannot record usage: the record is invalid (${bad})`)
    return await new Promise<Encodable<MeterBundle> | undefined>((resolve, reject) => {
      this.queue.push({ bytes, carry: options.carry === true, router: options.router, resolve, reject })
      this.flushing ??= this.flush()
    })
  }

  private async flush (): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue
        this.queue = []
        const { proof, verified } = this.c.signer.sign(batch.map(p => p.bytes))
        const bundle = { proofs: [proof], records: verified.map(v => ({ record: v.bytes, batchId: v.batchId, leaf: v.leafIndex })) }
        // Pushed while it is written here: the peers' writes overlap this one. A batch whose
        // records all travel with their results needs no ack: it goes out coalesced.
        // Each record goes to the owners of its range (this node's hour it started in).
        const waits = this.init.carryWaitsForAcks === true
        const carriedTo = waits ? [...new Set(batch.filter(p => p.carry).map(p => p.router ?? ''))] : undefined
        const replicated = this.c.replicator?.replicate(bundle, batch.length, batch.some(p => !p.carry), verified.map(v => floorTo(v.record.startMs, HOUR_MS)), carriedTo) ?? Promise.resolve(true)
        try {
          await this.c.store.ingest(verified, new Map([[proof.batchId, proof]]))
        } catch (err: any) {
          for (const p of batch) p.reject(err)
          continue
        }
        this.ownRecords += batch.length
        const copyOf = (i: number): Encodable<MeterBundle> => ({ proofs: [proof], records: [bundle.records[i]] })
        if (!waits) batch.forEach((p, i) => { if (p.carry) p.resolve(copyOf(i)) })
        // Short of the acks an answer waits for: the record stays here (and is pushed again); with
        // strictAcks the invocation is not answered as if its copies existed.
        void replicated.then((ok) => {
          const strict = this.init.strictAcks === true
          if (!ok && !strict) this.shortOfAcks(batch.length)
          const short = !ok && strict ? new InternalError('FNMESH_ERR_METER_UNAVAILABLE', 'Cannot answer the invocation: its meter record did not reach the peers --ack-replicas asks for within the ack timeout') : undefined
          batch.forEach((p, i) => {
            if (p.carry && !waits) return
            if (short != null) p.reject(short)
            else p.resolve(p.carry ? copyOf(i) : undefined)
          })
        })
      }
    } finally {
      this.flushing = undefined
    }
  }

  /** Seals this node's settled minutes whose seal is missing or out of date; resolves to how many */
  async seal (now = Date.now()): Promise<number> {
    const { store } = this.c
    const self = this.c.signer.nodeId
    const until = floorTo(now - (this.init.sealAfterMs ?? 1_200_000), MINUTE_MS)
    // Late records (long invocations) land in recent minutes: look back an hour before the cursor.
    const from = Math.max(store.horizonMs(), this.sealedThrough - HOUR_MS)
    if (until <= from) return 0
    const digests: RangeDigest[] = []
    for await (const [key, value] of store.db.iterator({ gte: minuteDigestKey(self, from), lt: minuteDigestKey(self, until) })) {
      const k = parseDigestKey(key)
      const d = decodeDigest(value)
      if (k != null && d.count > 0) digests.push(toRange(self, k.bucketMs, k.bucketMs + MINUTE_MS, d))
    }
    const existing = new Map((await sealsOf(store.db, self, digests.map(d => d.fromMs))).map(s => [s.digest.fromMs, s]))
    const seals: RollupRegister[] = []
    for (const d of digests) {
      const have = existing.get(d.fromMs)
      if (have != null && sameDigest(have.digest, d)) continue
      const local = await localRegister(store.db, store.reader, self, d.fromMs)
      seals.push(this.c.signer.seal(local.digest, local.rows, now))
    }
    if (seals.length > 0) {
      await store.adoptRegisters(seals)
      this.c.replicator?.pushSeals(seals)
    }
    this.sealedThrough = until
    return seals.length
  }

  /** Waits for queued records, then refuses new ones; idempotent */
  async stop (): Promise<void> {
    this.closed = true
    clearInterval(this.sealTimer)
    await this.flushing
  }
}
