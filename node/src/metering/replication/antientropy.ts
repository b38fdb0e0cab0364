/**
 * Runs anti-entropy sessions over libp2p (`/fnmesh/meter/sync/1`): with a random live peer every
 * `intervalMs` (leaving out the last minutes, where pushes are still landing and both sides
 * always differ by records in flight), in full at once with a peer that (re)joins (so a node
 * back from hours away catches up in seconds, and its peers pick up what it holds), in full with
 * every peer when one leaves (what a crashed node pushed to only some of us reaches all; a full
 * session that fails runs again one interval later), and again right away when a session hit its
 * cap. One session at a time per node; any number served.
 */
import type { Libp2p, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { decode, encode, SyncScope, type Encodable, type SyncReply, type SyncRequest } from '../../../../proto/codec.js'
import { toErrorInfo } from '../../../../proto/errors.js'
import type { PeerTable } from '../../gossip/peer-table.js'
import type { Logger } from '../../logger.js'
import type { Intake } from './intake.js'
import type { MeterStore } from '../ledger/store.js'
import { answer, syncWith, type SessionScope, type SyncResult } from './sync.js'
import type { Placement } from './placement.js'
import { SYNC_PROTOCOL, framesOf } from './wire.js'

/** Membership-change sessions run at most once this often while changes keep coming */
const CHANGE_SETTLE_MS = 1000

export interface AntiEntropyComponents {
  libp2p: Libp2p
  table: PeerTable
  store: MeterStore
  intake: Intake
  logger: Logger
  /** owner-based placement: sessions cover the ranges both sides own (none: everything held) */
  placement?: Placement
  /** this node's id */
  self?: string
}

export interface AntiEntropyInit {
  /** Interval of sessions with a random peer. @default 5000 */
  intervalMs?: number
  /**
   * Periodic sessions leave out minutes that ended less than this long ago (pushes cover them);
   * sessions with a peer that just joined leave out nothing. @default 10000
   */
  settleMs?: number
  /** Longest wait for one reply. @default 15000 */
  requestTimeoutMs?: number
}

export class AntiEntropy {
  readonly stats = { rounds: 0, failures: 0, pulled: 0, pushed: 0 }
  /** peer id -> when the last session this node ran with it completed */
  private readonly synced = new Map<string, number>()
  private readonly joined = new Map<string, number>()
  private readonly queue: Array<{ peer: string, full: boolean }> = []
  /** full sessions that failed, to run again (peer -> timer) */
  private readonly retries = new Map<string, NodeJS.Timeout>()
  private running: Promise<void> | undefined
  private timer: NodeJS.Timeout | undefined
  private stopped = true
  private readonly onAdded = (e: { advert: { nodeId: string } }): void => {
    this.joined.set(e.advert.nodeId, Date.now())
    this.membershipChanged()
  }

  /** A node left (it may be gone for good): what only some of its co-owners hold must reach the others now */
  private readonly onRemoved = (): void => {
    this.membershipChanged()
  }

  /**
   * After membership changes, a full session with every partner (a newcomer catches up, what a
   * leaver pushed to only some co-owners reaches the others): at once for a change (after every
   * listener of the table ran: the placement's view includes it then), then at most once per
   * CHANGE_SETTLE_MS while more follow, and once more after the last. Members flapping (a starved
   * host suspected and refuting, a storm of joins) would otherwise set off a session per change
   * per partner, each maybe a new connection.
   */
  private membershipChanged (): void {
    if (this.stopped) return
    if (this.settleTimer != null) {
      this.changedSince = true
      return
    }
    setImmediate(() => { if (!this.stopped) for (const p of this.partners()) this.soon(p, true) })
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined
      if (this.changedSince) {
        this.changedSince = false
        this.membershipChanged()
      }
    }, CHANGE_SETTLE_MS)
  }

  private changedSince = false
  private settleTimer: NodeJS.Timeout | undefined

  constructor (private readonly c: AntiEntropyComponents, private readonly init: AntiEntropyInit = {}) {}

  async start (): Promise<void> {
    if (!this.stopped) return
    this.stopped = false
    await this.c.libp2p.handle(SYNC_PROTOCOL, ({ stream, connection }) => { void this.serve(stream, connection.remotePeer.toString()) }, { maxInboundStreams: 32, maxOutboundStreams: 8 })
    this.c.table.on('added', this.onAdded)
    this.c.table.on('removed', this.onRemoved)
    for (const e of this.c.table.all()) if (!e.self) this.onAdded(e)
    this.timer = setInterval(() => {
      const peers = this.partners()
      if (peers.length > 0) this.soon(peers[Math.floor(Math.random() * peers.length)])
    }, this.init.intervalMs ?? 5000)
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearInterval(this.timer)
    clearTimeout(this.settleTimer)
    this.c.table.off('added', this.onAdded)
    this.c.table.off('removed', this.onRemoved)
    this.queue.length = 0
    for (const t of this.retries.values()) clearTimeout(t)
    this.retries.clear()
    await this.c.libp2p.unhandle(SYNC_PROTOCOL).catch(() => {})
    await this.running
  }

  /** Live peers this node completed a session with since they last joined */
  syncedWith (): string[] {
    return this.peers().filter(p => (this.synced.get(p) ?? -1) >= (this.joined.get(p) ?? 0))
  }

  /** Live peers it has not: records they hold may be missing here */
  unsynced (): string[] {
    const done = new Set(this.syncedWith())
    return this.peers().filter(p => !done.has(p))
  }

  /** Queues a session with `peer`; `full` includes the minutes still settling */
  soon (peer: string, full = false): void {
    if (this.stopped) return
    const queued = this.queue.find(q => q.peer === peer)
    if (queued != null) { queued.full ||= full; return }
    this.queue.push({ peer, full })
    this.running ??= this.drain()
  }

  /** When this node last completed a session (not a handoff) with `peer`, or -1 */
  syncedAt (peer: string): number {
    return this.synced.get(peer) ?? -1
  }

  /**
   * Runs one session with `peer` now (also used by tests and the bench); `full` includes the
   * minutes still settling. `scope` defaults to the ranges both own (every range held while
   * every member owns everything); SCOPE_HANDOFF pushes the ranges only the peer owns.
   */
  async session (peer: string, full = true, scope?: SyncScope): Promise<SyncResult> {
    let sc: SessionScope | undefined
    const view = this.c.placement?.current()
    if (view != null && (scope === SyncScope.SCOPE_HANDOFF || !view.everyone)) sc = { scope: scope ?? SyncScope.SCOPE_CO_OWNED, view }
    if (sc == null && scope === SyncScope.SCOPE_HANDOFF) throw new Error('a handoff needs a placement')
    const stream = await this.c.libp2p.dialProtocol(peerIdFromString(peer), SYNC_PROTOCOL, { signal: AbortSignal.timeout(5000) })
    const frames = framesOf(stream)
    const timeout = this.init.requestTimeoutMs ?? 15_000
    try {
      const ask = async (req: Encodable<SyncRequest>): Promise<SyncReply> => {
        await frames.write(encode('SyncRequest', req), { signal: AbortSignal.timeout(timeout) })
        return decode('SyncReply', (await frames.read({ signal: AbortSignal.timeout(timeout) })).subarray())
      }
      const started = Date.now()
      const res = await syncWith(this.c.store, this.c.intake, peer, ask, { settleMs: full ? 0 : this.init.settleMs ?? 10_000, scope: sc, self: this.c.self })
      if (scope !== SyncScope.SCOPE_HANDOFF && res.complete && res.shortfall === 0) this.synced.set(peer, started)
      this.stats.rounds++
      this.stats.pulled += res.pulled
      this.stats.pushed += res.pushed
      if (res.pulled + res.pushed > 0) this.c.logger.info({ peer, ...res, ms: Date.now() - started }, 'anti-entropy: caught up with a peer')
      return res
    } finally {
      // Bounded: a peer that stopped reading must not hold this node's sessions (and handoffs) forever.
      await stream.close({ signal: AbortSignal.timeout(timeout) }).catch(() => { stream.abort(new Error('closed')) })
    }
  }

  /** Queues a full session with `peer` one interval from now (once per peer) */
  private later (peer: string): void {
    if (this.stopped || this.retries.has(peer)) return
    const timer = setTimeout(() => {
      this.retries.delete(peer)
      if (this.c.table.has(peer)) this.soon(peer, true)
    }, this.init.intervalMs ?? 5000)
    this.retries.set(peer, timer)
  }

  private peers (): string[] {
    return this.c.table.all().filter(e => !e.self && !e.suspect).map(e => e.advert.nodeId)
  }

  /**
   * The live peers a session with is worth having: all of them while every member holds
   * everything; with owner-based placement those that co-own a range this node holds and owns
   * (each side runs this for what it holds, so a range either side holds is compared; a range
   * held but no longer owned is the handoff's). A session with any other peer compares nothing,
   * and in a large mesh most peers are such: without this every node would dial every other.
   */
  partners (): string[] {
    const peers = this.peers()
    const view = this.c.placement?.current()
    const self = this.c.self
    if (view == null || view.everyone || self == null) return peers
    const live = new Set(peers)
    const out = new Set<string>()
    for (const h of this.c.store.tree.entries()) {
      const owners = view.owners(h.nodeId, h.hourMs)
      if (!owners.includes(self)) continue
      for (const o of owners) if (o !== self && live.has(o)) out.add(o)
    }
    return [...out]
  }

  private async drain (): Promise<void> {
    try {
      while (!this.stopped && this.queue.length > 0) {
        const { peer, full } = this.queue.shift() as { peer: string, full: boolean }
        if (!this.c.table.has(peer)) continue
        try {
          const res = await this.session(peer, full)
          if (!res.complete) this.soon(peer, full)
        } catch (err: any) {
          this.stats.failures++
          this.c.logger.debug({ peer, err: String(err?.message ?? err) }, 'anti-entropy session failed')
          // A full session is what a membership change relies on (see onAdded, onRemoved): it is
          // run again after a pause, not left to a random periodic one, while the peer is a member.
          if (full) this.later(peer)
        }
      }
    } finally {
      this.running = undefined
    }
  }

  /** Answers a peer's session: one reply per request until it closes the stream */
  private async serve (stream: Stream, peer: string): Promise<void> {
    const frames = framesOf(stream)
    try {
      for (;;) {
        const bytes = (await frames.read()).subarray()
        let reply: Encodable<SyncReply>
        try {
          reply = await answer(this.c.store, this.c.intake, peer, decode('SyncRequest', bytes), this.c.self)
        } catch (err: any) {
          if (err?.code === 'FNMESH_ERR_DECODE') this.c.intake.garbage(peer, 'sync', err)
          reply = { error: toErrorInfo(err) }
        }
        await frames.write(encode('SyncReply', reply))
      }
    } catch {
      stream.abort(new Error('sync stream closed'))
    }
  }
}
