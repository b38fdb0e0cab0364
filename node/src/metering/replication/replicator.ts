/**
 * Replication of this node's records: every signed batch is pushed to the live owners of its
 * range (placement.ts: this node and R others by rendezvous hashing of (node, hour); every live
 * peer while the mesh has R+1 members or fewer). The
 * caller (the executor, through the Meter) waits for `ackReplicas` peers to have it written
 * (default 1), so a node killed right after answering has its record elsewhere; the other peers
 * get it within pushDelayMs, several batches to a frame under load. A batch counts as
 * replicated once R peers (default 2) acknowledged it, and one short of that is pushed again,
 * to the peers that have not acknowledged it, every second until it is. Anti-entropy covers
 * anything that still slips through (a peer down for hours, a batch dropped from the retry list).
 */
import type { Libp2p } from '@libp2p/interface'
import { decode, encode, type Encodable, type MeterBundle, type RollupRegister } from '../../../../proto/codec.js'
import type { PeerTable } from '../../gossip/peer-table.js'
import type { Logger } from '../../logger.js'
import type { Intake } from './intake.js'
import { PushChannel } from './push.js'
import { rangeOf, type Placement } from './placement.js'
import { LagWindow } from './lag.js'
import { PUSH_PROTOCOL, WriteQueue, framesOf } from './wire.js'

export interface ReplicatorComponents { libp2p: Libp2p, table: PeerTable, nodeId: string, intake: Intake, logger: Logger, placement?: Placement }

export interface ReplicatorInit {
  /** Peers each record must reach (R). @default 2 */
  replicas?: number
  /** Peers that must have a record written before its invocation is answered. @default 1 */
  ackReplicas?: number
  /** Longest wait for those acks before answering anyway (the record is written here). @default 500 */
  ackTimeoutMs?: number
  /** Interval of pushing under-replicated batches again. @default 1000 */
  retryMs?: number
  /** The peers the answer does not wait for get a batch within this long, coalesced with the next ones. @default 50 */
  pushDelayMs?: number
}

interface Outgoing { bundle: Encodable<MeterBundle>, records: number, acked: Set<string>, startedAt: number, replicatedAt?: number, hourMs: number }

const MAX_RETRY_BATCHES = 20_000
const PUSH_TIMEOUT_MS = 5000
/** Batches merged into one push frame at most (frames stay far below the 4 MiB cap) */
const MAX_COALESCED = 200

/** Several bundles as one: proofs and records side by side */
function merge (bundles: Array<Encodable<MeterBundle>>): Encodable<MeterBundle> {
  return { proofs: bundles.flatMap(b => b.proofs ?? []), records: bundles.flatMap(b => b.records ?? []) }
}

export class Replicator {
  readonly replicas: number
  readonly lag = new LagWindow()
  readonly stats = { pushedBatches: 0, pushFailures: 0, droppedFromRetry: 0 }
  private readonly ackReplicas: number
  private readonly ackTimeoutMs: number
  private readonly channels = new Map<string, PushChannel>()
  private readonly retry = new Set<Outgoing>()
  private readonly deferred = new Map<string, { items: Array<{ o: Outgoing, settled: () => void }>, timer: NodeJS.Timeout | undefined }>()
  private readonly pushDelayMs: number
  private turn = 0
  private retryTimer: NodeJS.Timeout | undefined
  private started = false

  constructor (private readonly c: ReplicatorComponents, private readonly init: ReplicatorInit = {}) {
    this.replicas = init.replicas ?? 2
    this.ackReplicas = Math.min(init.ackReplicas ?? 1, this.replicas)
    this.ackTimeoutMs = init.ackTimeoutMs ?? 500
    this.pushDelayMs = init.pushDelayMs ?? 50
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    await this.c.libp2p.handle(PUSH_PROTOCOL, ({ stream, connection }) => { void this.serve(stream, connection.remotePeer.toString()) }, { maxInboundStreams: 64, maxOutboundStreams: 64 })
    this.c.table.on('removed', (id) => { this.channels.get(id)?.close(); this.channels.delete(id) })
    this.retryTimer = setInterval(() => { this.pushAgain() }, this.init.retryMs ?? 1000)
  }

  /** Records of own batches not yet on R peers (or on every live peer, when there are fewer) */
  get underReplicated (): number {
    let n = 0
    for (const o of this.retry) n += o.records
    return n
  }

  /**
   * Pushes a signed batch to the live owners of its range: to those an answer waits for at once
   * (round-robin), to the others within pushDelayMs, coalesced with the batches that follow (fewer
   * messages under load). An answer waits for `ackReplicas` owners for a record nobody carries
   * (`urgent`), and for ackReplicas - 1 owners other than the router's node for a record carried
   * to a router in `carriedTo` (its copy there is the last one; its own ack would not add a copy).
   * Resolves when those have it written, when every push has settled, or after ackTimeoutMs,
   * whichever comes first; at once when nothing waits.
   */
  async replicate (bundle: Encodable<MeterBundle>, records: number, urgent = true, hours?: number[], carriedTo?: string[]): Promise<void> {
    // A batch whose records started in different hours (one ran long) goes to each hour's owners.
    const distinct = hours == null ? [] : [...new Set(hours)]
    if (hours != null && distinct.length > 1 && hours.length === (bundle.records ?? []).length) {
      await Promise.all(distinct.map(async (h) => {
        const recs = (bundle.records ?? []).filter((_, i) => hours[i] === h)
        await this.replicate({ proofs: bundle.proofs, records: recs }, recs.length, urgent, recs.map(() => h), carriedTo)
      }))
      return
    }
    const hourMs = distinct[0] ?? rangeOf(Date.now())
    const o: Outgoing = { bundle, records, acked: new Set(), startedAt: performance.now(), hourMs }
    const targets = this.targets(hourMs)
    this.stats.pushedBatches++
    if (targets.length === 0) { this.track(o); return }
    const waits: Array<{ need: number, not?: string }> = []
    if (urgent) waits.push({ need: this.ackReplicas })
    if (this.ackReplicas > 1) for (const router of new Set(carriedTo ?? [])) waits.push({ need: this.ackReplicas - 1, not: router })
    for (const w of waits) w.need = Math.min(w.need, targets.filter(p => p !== w.not).length)
    const routers = new Set(waits.map(w => w.not))
    const now = waits.reduce((n, w) => Math.max(n, w.need), 0)
    const first = this.turn++ % targets.length
    // Routers' nodes last: their acks do not count for the copies they carry.
    const rotated = [...targets.slice(first), ...targets.slice(0, first)].sort((a, b) => Number(routers.has(a)) - Number(routers.has(b)))
    const satisfied = (): boolean => waits.every(w => {
      let n = 0
      for (const p of o.acked) if (p !== w.not) n++
      return n >= w.need
    })
    await new Promise<void>((resolve) => {
      let settled = 0
      const timer = setTimeout(resolve, this.ackTimeoutMs)
      const done = (): void => { clearTimeout(timer); resolve() }
      if (now === 0) done()
      const onSettled = (): void => {
        settled++
        if (satisfied() || settled === targets.length) done()
        if (settled === targets.length) this.track(o)
      }
      rotated.forEach((peer, i) => {
        if (i < now) void this.pushTo([o], peer).then(onSettled)
        else this.defer(o, peer, onSettled)
      })
    })
  }

  /**
   * For a graceful stop: sends the coalesced pushes now, pushes under-replicated batches once
   * more, and waits for all of it (at most `timeoutMs`), so a node that leaves does not leave its
   * last records on one peer only.
   */
  async settle (timeoutMs = 2000): Promise<void> {
    const pending: Array<Promise<void>> = []
    for (const [peer, q] of this.deferred) {
      clearTimeout(q.timer)
      this.deferred.delete(peer)
      for (let i = 0; i < q.items.length; i += MAX_COALESCED) {
        const part = q.items.slice(i, i + MAX_COALESCED)
        pending.push(this.pushTo(part.map(x => x.o), peer).then(() => { for (const x of part) x.settled() }))
      }
    }
    for (const o of this.retry) {
      for (const p of this.targets(o.hourMs).filter(p => !o.acked.has(p))) pending.push(this.pushTo([o], p))
    }
    let timer: NodeJS.Timeout | undefined
    await Promise.race([Promise.all(pending), new Promise(resolve => { timer = setTimeout(resolve, timeoutMs) })])
    clearTimeout(timer)
  }

  /**
   * Hands `bundle` (records this node holds a copy of, signed by `signer`) to one live peer other
   * than the signer and waits for its ack, at most ackTimeoutMs: the fallback when this node could
   * not store the copy a result carried. Resolves to whether the peer has them all.
   */
  async forward (bundle: Encodable<MeterBundle>, records: number, signer: string, hourMs?: number): Promise<boolean> {
    const peer = this.targets(hourMs, signer).find(p => p !== signer)
    if (peer == null) return false
    try {
      const ack = await this.channel(peer).send({ bundle }, this.ackTimeoutMs)
      return ack.stored + ack.known >= records
    } catch {
      return false
    }
  }

  /** Sends seals to the live owners of their minutes (best effort: anti-entropy covers the rest) */
  pushSeals (seals: RollupRegister[]): void {
    const byPeer = new Map<string, RollupRegister[]>()
    for (const s of seals) {
      for (const peer of this.targets(rangeOf(s.digest.fromMs))) (byPeer.get(peer) ?? byPeer.set(peer, []).get(peer) as RollupRegister[]).push(s)
    }
    for (const [peer, list] of byPeer) void this.channel(peer).send({ seals: list }, PUSH_TIMEOUT_MS).catch(() => {})
  }

  stop (): void {
    this.started = false
    clearInterval(this.retryTimer)
    for (const q of this.deferred.values()) clearTimeout(q.timer)
    this.deferred.clear()
    for (const ch of this.channels.values()) ch.close()
    this.channels.clear()
    void this.c.libp2p.unhandle(PUSH_PROTOCOL).catch(() => {})
  }

  /**
   * Live peers that own this node's (or `origin`'s) range of `hourMs` (every live peer without a
   * placement, or none given), not suspect nor draining
   */
  private targets (hourMs?: number, origin = this.c.nodeId): string[] {
    const live = this.c.table.all().filter(e => !e.self && !e.suspect && !e.advert.draining).map(e => e.advert.nodeId)
    const view = this.c.placement?.current()
    if (view == null || view.everyone || hourMs == null) return live
    const owners = new Set(view.owners(origin, hourMs))
    return live.filter(p => owners.has(p))
  }

  private channel (peer: string): PushChannel {
    let ch = this.channels.get(peer)
    if (ch == null) this.channels.set(peer, ch = new PushChannel(this.c.libp2p, peer))
    return ch
  }

  /** One push of `list` (merged into one frame) to `peer`; never throws */
  private async pushTo (list: Outgoing[], peer: string): Promise<void> {
    const records = list.reduce((n, o) => n + o.records, 0)
    const bundle = list.length === 1 ? list[0].bundle : merge(list.map(o => o.bundle))
    try {
      const ack = await this.channel(peer).send({ bundle }, PUSH_TIMEOUT_MS)
      if (ack.stored + ack.known < records) {
        if (ack.rejected > 0) this.c.logger.error({ peer, rejected: ack.rejected, reason: ack.reason }, 'a peer refused records this node signed')
        else this.c.logger.debug({ peer, reason: ack.reason }, 'a peer could not store records; will push again')
        return
      }
      const now = performance.now()
      for (const o of list) {
        o.acked.add(peer)
        if (o.replicatedAt == null && o.acked.size >= this.replicas) {
          o.replicatedAt = now
          this.lag.add(now - o.startedAt)
        }
      }
    } catch (err: any) {
      this.stats.pushFailures++
      this.c.logger.debug({ peer, err: String(err?.message ?? err) }, 'meter push failed; will push again')
    }
  }

  /** Queues `o` for `peer`'s next coalesced push */
  private defer (o: Outgoing, peer: string, settled: () => void): void {
    let q = this.deferred.get(peer)
    if (q == null) this.deferred.set(peer, q = { items: [], timer: undefined })
    q.items.push({ o, settled })
    q.timer ??= setTimeout(() => {
      const queue = this.deferred.get(peer)
      this.deferred.delete(peer)
      if (queue == null) return
      for (let i = 0; i < queue.items.length; i += MAX_COALESCED) {
        const part = queue.items.slice(i, i + MAX_COALESCED)
        void this.pushTo(part.map(x => x.o), peer).then(() => { for (const x of part) x.settled() })
      }
    }, this.pushDelayMs)
  }

  /** Keeps `o` for another push if it is short of R peers and a live peer lacks it */
  private track (o: Outgoing): void {
    const live = this.targets(o.hourMs)
    if (o.acked.size >= this.replicas || live.every(p => o.acked.has(p))) { this.retry.delete(o); return }
    if (!this.retry.has(o) && this.retry.size >= MAX_RETRY_BATCHES) {
      this.stats.droppedFromRetry++
      return
    }
    this.retry.add(o)
  }

  private pushAgain (): void {
    for (const o of this.retry) {
      const missing = this.targets(o.hourMs).filter(p => !o.acked.has(p))
      if (missing.length === 0 || o.acked.size >= this.replicas) { this.retry.delete(o); continue }
      void Promise.all(missing.map(async p => { await this.pushTo([o], p) })).then(() => { this.track(o) })
    }
  }

  /** Serves one inbound push stream: verify, store (written to the OS), ack; several frames in flight */
  private async serve (stream: Parameters<typeof framesOf>[0], peer: string): Promise<void> {
    const frames = framesOf(stream)
    const writes = new WriteQueue(frames)
    let inFlight = 0
    let wake: (() => void) | undefined
    try {
      for (;;) {
        const bytes = (await frames.read()).subarray()
        while (inFlight >= 32) await new Promise<void>(resolve => { wake = resolve })
        inFlight++
        void (async () => {
          let seq = 0
          let ack
          try {
            const push = decode('MeterPush', bytes)
            seq = push.seq
            ack = await this.c.intake.take(peer, push.bundle, push.seals, 'push')
          } catch (err: any) {
            ack = err?.code === 'FNMESH_ERR_DECODE' || err?.code === 'FNMESH_ERR_PAYLOAD_TOO_LARGE'
              ? this.c.intake.garbage(peer, 'push', err)
              : { stored: 0, known: 0, rejected: 0, reason: `not stored: ${String(err?.message ?? err)}` }
          }
          await writes.write(encode('MeterAck', { ...ack, seq })).catch(() => {})
        })().finally(() => { inFlight--; wake?.(); wake = undefined })
      }
    } catch {
      stream.abort(new Error('push stream closed'))
    }
  }
}
