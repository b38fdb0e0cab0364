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
import { gatherAcks, type AckWait } from './acks.js'
import { PUSH_PROTOCOL, WriteQueue, framesOf } from './wire.js'

export interface ReplicatorComponents { libp2p: Libp2p, table: PeerTable, nodeId: string, intake: Intake, logger: Logger, placement?: Placement }

export interface ReplicatorInit {
  /** Peers each record must reach (R). @default 2 */
  replicas?: number
  /** Peers that must have a record written before its invocation is answered. @default 1 */
  ackReplicas?: number
  /** Longest wait for those acks; replicate() then resolves false (the records stay written here and are pushed again; the Meter decides what the answer is). @default 500 */
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
   * messages under load). An answer waits for `ackReplicas` peers for a record nobody carries
   * (`urgent`), and for ackReplicas - 1 peers other than the router's node for a record carried
   * to a router in `carriedTo` (its copy there is the last one; its own ack would not add a copy).
   * A push that fails or is slow is made up for by the next owner, then by any other live peer
   * (acks.ts), so one unreachable owner does not leave the record short. Resolves true once those
   * acks are in (at once when nothing waits), false if they are not within ackTimeoutMs: then the
   * records are on fewer peers than the answer needs, and it must not be given as a success. The
   * wait is capped by the members this node knows of (a mesh of M members holds M copies at most),
   * not by those reachable now.
   */
  async replicate (bundle: Encodable<MeterBundle>, records: number, urgent = true, hours?: number[], carriedTo?: string[]): Promise<boolean> {
    // A batch whose records started in different hours (one ran long) goes to each hour's owners.
    const distinct = hours == null ? [] : [...new Set(hours)]
    if (hours != null && distinct.length > 1 && hours.length === (bundle.records ?? []).length) {
      const each = await Promise.all(distinct.map(async (h) => {
        const recs = (bundle.records ?? []).filter((_, i) => hours[i] === h)
        return await this.replicate({ proofs: bundle.proofs, records: recs }, recs.length, urgent, recs.map(() => h), carriedTo)
      }))
      return each.every(Boolean)
    }
    const hourMs = distinct[0] ?? rangeOf(Date.now())
    const o: Outgoing = { bundle, records, acked: new Set(), startedAt: performance.now(), hourMs }
    const targets = this.targets(hourMs)
    this.stats.pushedBatches++
    const waits: AckWait[] = []
    if (urgent) waits.push({ need: this.ackReplicas })
    if (this.ackReplicas > 1) for (const router of new Set(carriedTo ?? [])) waits.push({ need: this.ackReplicas - 1, not: router })
    for (const w of waits) w.need = Math.min(w.need, this.members().filter(p => p !== w.not).length)
    const routers = new Set(waits.map(w => w.not))
    const now = waits.reduce((n, w) => Math.max(n, w.need), 0)
    const first = targets.length > 0 ? this.turn++ % targets.length : 0
    // Routers' nodes last: their acks do not count for the copies they carry.
    const rotated = [...targets.slice(first), ...targets.slice(0, first)].sort((a, b) => Number(routers.has(a)) - Number(routers.has(b)))
    // Every owner gets it: the first `now` at once (the answer waits for them), the rest coalesced.
    const settledOwners = new Set<string>()
    const ownerSettled = (peer: string): void => {
      settledOwners.add(peer)
      if (settledOwners.size === targets.length) this.track(o)
    }
    if (targets.length === 0) this.track(o)
    const immediate = new Set(rotated.slice(0, now))
    for (const peer of rotated) if (!immediate.has(peer)) this.defer(o, peer, () => { ownerSettled(peer) })
    const push = async (peer: string): Promise<boolean> => {
      const wasImmediate = immediate.delete(peer)
      await this.pushTo([o], peer)
      if (wasImmediate) ownerSettled(peer)
      return o.acked.has(peer)
    }
    const others = this.live().filter(p => !targets.includes(p)).sort((a, b) => Number(routers.has(a)) - Number(routers.has(b)))
    const ok = now === 0 || await gatherAcks({ candidates: [...rotated, ...others], waits, acked: o.acked, push, timeoutMs: this.ackTimeoutMs })
    // Owners the wait did not need to push to get theirs with the next coalesced push.
    for (const peer of immediate) this.defer(o, peer, () => { ownerSettled(peer) })
    immediate.clear()
    return ok
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
   * Hands `bundle` (records this node holds a copy of, signed by `signer`) to live peers other
   * than the signer until `ackReplicas` of them have it written (at least one), at most
   * ackTimeoutMs: the fallback when this node could not store the copy a result carried. Several
   * peers, because this node does not know which ones the signer's acks came from: a copy on one
   * of those would not be an extra one. Owners of the signer's range first. Resolves to whether
   * they have them all.
   */
  async forward (bundle: Encodable<MeterBundle>, records: number, signer: string, hourMs?: number): Promise<boolean> {
    const o: Outgoing = { bundle, records, acked: new Set(), startedAt: performance.now(), hourMs: hourMs ?? rangeOf(Date.now()) }
    const owners = this.targets(hourMs, signer).filter(p => p !== signer)
    const candidates = [...owners, ...this.live().filter(p => p !== signer && !owners.includes(p))]
    const need = Math.min(Math.max(1, this.ackReplicas), this.members().filter(p => p !== signer).length)
    if (need === 0) return false
    const push = async (peer: string): Promise<boolean> => {
      await this.pushTo([o], peer)
      return o.acked.has(peer)
    }
    return await gatherAcks({ candidates, waits: [{ need, not: signer }], acked: o.acked, push, timeoutMs: this.ackTimeoutMs })
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
    const live = this.live()
    const view = this.c.placement?.current()
    if (view == null || view.everyone || hourMs == null) return live
    const owners = new Set(view.owners(origin, hourMs))
    return live.filter(p => owners.has(p))
  }

  /** Peers a push can go to now: in the table, not suspect nor draining */
  private live (): string[] {
    return this.c.table.all().filter(e => !e.self && !e.suspect && !e.advert.draining).map(e => e.advert.nodeId)
  }

  /**
   * The other members this node counts (the placement's, suspect ones included): what caps the
   * acks an answer waits for. Not only the reachable ones: a member that cannot be reached for
   * now makes the answer wait for another copy, or fail, rather than need fewer copies.
   */
  private members (): string[] {
    const view = this.c.placement?.current()
    const all = view != null ? view.members : this.c.table.all().filter(e => !e.advert.draining).map(e => e.advert.nodeId)
    return all.filter(p => p !== this.c.nodeId)
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
    if (this.ownersMissing(o).length === 0) { this.retry.delete(o); return }
    if (!this.retry.has(o) && this.retry.size >= MAX_RETRY_BATCHES) {
      this.stats.droppedFromRetry++
      return
    }
    this.retry.add(o)
  }

  /**
   * Live owners still to ack `o`, none once R of them (or every live one) did: acks of peers that
   * are not owners (an answer's stand-ins, acks.ts) do not count, their copies are handed off
   */
  private ownersMissing (o: Outgoing): string[] {
    const owners = this.targets(o.hourMs)
    const missing = owners.filter(p => !o.acked.has(p))
    return owners.length - missing.length >= this.replicas ? [] : missing
  }

  private pushAgain (): void {
    for (const o of this.retry) {
      const missing = this.ownersMissing(o)
      if (missing.length === 0) { this.retry.delete(o); continue }
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
