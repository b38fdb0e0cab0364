/**
 * Handoff of ranges this node holds but does not own (owner-based placement, placement.ts): the
 * copies a router kept from results, and ranges whose owners changed when a member joined or
 * left. Every `intervalMs` this node runs a push-only anti-entropy session (SCOPE_HANDOFF) with
 * each owner of such ranges that has not confirmed them yet; a session that completes with every
 * pushed record stored confirms, for that owner, the ranges as this node held them when it began.
 *
 * A foreign range is dropped only when all of its owners (R+1 live members other than this node)
 * confirmed exactly the records held here and are still connected (not suspect), the member list
 * has not changed for `dropAfterMs` nor while dropping, and the range has been foreign that long:
 * so no acknowledged record ever has fewer than R+1 live copies because of a drop. A node's own records are never foreign while it is live (it owns its
 * ranges), and with R+1 members or fewer every member owns everything: nothing is dropped.
 */
import { SyncScope, type MeterRange } from '../../../../proto/codec.js'
import type { Logger } from '../../logger.js'
import type { MeterStore } from '../ledger/store.js'
import type { SyncResult } from './sync.js'
import type { MemberView, Placement } from './placement.js'

export interface HandoffComponents {
  store: MeterStore
  placement: Placement
  logger: Logger
  /** one session with `peer` in `scope` (AntiEntropy.session) */
  session: (peer: string, full: boolean, scope: SyncScope) => Promise<SyncResult>
  /** when this node last completed a co-owned session with `peer` (ms), or -1 */
  syncedAt: (peer: string) => number
  /** whether `peer` is connected and heard from now (not suspect): only such owners' confirmations let a range go */
  live: (peer: string) => boolean
}

export interface HandoffInit {
  /** @default 5000 */
  intervalMs?: number
  /** A foreign range is kept at least this long after the member list last changed. @default 30000 */
  dropAfterMs?: number
}

interface Confirmation { count: number, hash: string, by: Set<string> }

const rangeKey = (nodeId: string, hourMs: number): string => `${nodeId}|${hourMs}`

export class Handoff {
  readonly stats = { sessions: 0, failures: 0, droppedRanges: 0, droppedRecords: 0 }
  private readonly confirmed = new Map<string, Confirmation>()
  private readonly foreignSince = new Map<string, number>()
  private viewKey = ''
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private stopped = true

  constructor (private readonly c: HandoffComponents, private readonly init: HandoffInit = {}) {}

  start (): void {
    if (!this.stopped) return
    this.stopped = false
    this.timer = setInterval(() => { this.soon() }, this.init.intervalMs ?? 5000)
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearInterval(this.timer)
    await this.running
  }

  /** Runs a round unless one is under way */
  soon (): void {
    if (this.stopped || this.running != null) return
    this.running = this.round().catch((err) => {
      this.c.logger.warn({ err: String(err?.message ?? err) }, 'meter handoff round failed')
    }).finally(() => { this.running = undefined })
  }

  /** One round: confirm foreign ranges with their owners, drop those all owners confirmed (also for tests) */
  async round (now = Date.now()): Promise<void> {
    const view = this.c.placement.current()
    this.resetOnChange(view)
    const self = this.c.placement.self
    const foreign = this.foreign(view)
    if (foreign.length === 0) return
    // Owners that still have to confirm something, each once per round.
    const peers = new Set<string>()
    for (const f of foreign) for (const o of view.owners(f.nodeId, f.hourMs)) if (o !== self && !this.isConfirmed(f, o)) peers.add(o)
    for (const peer of peers) {
      if (this.stopped) return
      // What the session will cover, as held when it starts.
      const before = foreign.filter(f => view.owners(f.nodeId, f.hourMs).includes(peer))
      try {
        this.stats.sessions++
        const res = await this.c.session(peer, true, SyncScope.SCOPE_HANDOFF)
        if (!res.complete || res.shortfall > 0) continue
        for (const f of before) {
          const k = rangeKey(f.nodeId, f.hourMs)
          let c = this.confirmed.get(k)
          if (c == null || c.count !== f.count || c.hash !== f.hash) this.confirmed.set(k, c = { count: f.count, hash: f.hash, by: new Set() })
          c.by.add(peer)
        }
      } catch (err: any) {
        this.stats.failures++
        this.c.logger.debug({ peer, err: String(err?.message ?? err) }, 'meter handoff session failed')
      }
    }
    if (this.c.placement.current() !== view) return
    const wait = this.init.dropAfterMs ?? 30_000
    if (now - this.c.placement.changedAt < wait) return
    for (const f of foreign) {
      // The member list may change while ranges are dropped: then the owners below are not current.
      if (this.c.placement.current() !== view || this.stopped) return
      const owners = view.owners(f.nodeId, f.hourMs).filter(o => o !== self)
      if (owners.length < view.replicas + 1) continue
      // An owner that confirmed and has since lost its connection (killed, not yet out of the
      // member list) may hold nothing any more: the copy here stays until it is back or replaced.
      if (!owners.every(o => this.c.live(o))) continue
      if ((now - (this.foreignSince.get(rangeKey(f.nodeId, f.hourMs)) ?? now)) < wait) continue
      if (!owners.every(o => this.isConfirmed(f, o))) continue
      const dropped = await this.c.store.dropRange(f.nodeId, f.hourMs, { count: f.count, hash: Buffer.from(f.hash, 'hex') })
      if (dropped > 0 || this.c.store.tree.hour(f.nodeId, f.hourMs).count === 0) {
        this.stats.droppedRanges++
        this.stats.droppedRecords += dropped
        this.confirmed.delete(rangeKey(f.nodeId, f.hourMs))
        this.foreignSince.delete(rangeKey(f.nodeId, f.hourMs))
        this.c.logger.info({ node: f.nodeId, hourMs: f.hourMs, records: dropped, owners }, 'dropped a meter range its owners confirmed holding')
      }
    }
  }

  /** Counts and up to `limit` ranges worth showing (under-replicated or foreign) for the status */
  summary (limit = 50): { members: number, owned: number, foreign: number, underReplicated: number, dropped: number, ranges: MeterRange[] } {
    const view = this.c.placement.current()
    this.resetOnChange(view)
    const self = this.c.placement.self
    const out = { members: view.members.length, owned: 0, foreign: 0, underReplicated: 0, dropped: this.stats.droppedRanges, ranges: [] as MeterRange[] }
    for (const { nodeId, hourMs, digest } of this.c.store.tree.entries()) {
      const owners = view.owners(nodeId, hourMs)
      const owned = view.isOwner(self, nodeId, hourMs)
      const f = { nodeId, hourMs, count: digest.count, hash: digest.hash.toString('hex') }
      const unconfirmed = owned
        ? owners.filter(o => o !== self && this.c.syncedAt(o) < this.c.placement.changedAt)
        : owners.filter(o => o !== self && !this.isConfirmed(f, o))
      if (owned) out.owned++
      else out.foreign++
      if (owned && unconfirmed.length > 0) out.underReplicated++
      if ((!owned || unconfirmed.length > 0) && out.ranges.length < limit) {
        out.ranges.push({ nodeId, hourMs, count: digest.count, owners: view.everyone ? [...view.members] : owners, unconfirmed, owned } as MeterRange)
      }
    }
    return out
  }

  private isConfirmed (f: { nodeId: string, hourMs: number, count: number, hash: string }, owner: string): boolean {
    const c = this.confirmed.get(rangeKey(f.nodeId, f.hourMs))
    return c != null && c.count === f.count && c.hash === f.hash && c.by.has(owner)
  }

  /** Ranges held here that this node does not own in `view` */
  private foreign (view: MemberView): Array<{ nodeId: string, hourMs: number, count: number, hash: string }> {
    const self = this.c.placement.self
    const now = Date.now()
    const out = []
    const seen = new Set<string>()
    for (const { nodeId, hourMs, digest } of this.c.store.tree.entries()) {
      if (view.isOwner(self, nodeId, hourMs)) continue
      const k = rangeKey(nodeId, hourMs)
      seen.add(k)
      if (!this.foreignSince.has(k)) this.foreignSince.set(k, now)
      out.push({ nodeId, hourMs, count: digest.count, hash: digest.hash.toString('hex') })
    }
    for (const k of this.foreignSince.keys()) if (!seen.has(k)) this.foreignSince.delete(k)
    return out
  }

  /** Confirmations hold for one member list: owners may differ under another */
  private resetOnChange (view: MemberView): void {
    if (view.key === this.viewKey) return
    this.viewKey = view.key
    this.confirmed.clear()
    this.foreignSince.clear()
  }
}
