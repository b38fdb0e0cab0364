/**
 * The table of live peers built from capacity adverts. A peer whose adverts stop is dropped after
 * peerTimeoutMs; a draining advert drops it at once; a lost connection makes it a suspect
 * (routed to no more) until it is heard from again.
 */
import { EventEmitter } from 'node:events'
import type { CapacityAdvert } from '../../../proto/codec.js'

export interface PeerEntry {
  advert: CapacityAdvert
  /** local clock, ms, when the last advert arrived */
  lastSeenMs: number
  self: boolean
  /** connection lost: no new work until the next advert */
  suspect: boolean
  /** local clock, ms, when it became suspect */
  suspectSinceMs?: number
}

/** A peer whose adverts stop is dropped after this long, unless configured otherwise */
export const PEER_TIMEOUT_MS = 2000
/** ... or after this many of its own keepalive intervals (its advert says), if that is longer */
export const KEEPALIVES_MISSED = 3
/** whatever a peer says its keepalive is, it is dropped after at most this long */
export const PEER_TIMEOUT_MAX_MS = 60_000

export type UpsertResult = 'added' | 'updated' | 'stale' | 'draining'

export interface PeerTableInit {
  /** @default PEER_TIMEOUT_MS (2000) */
  peerTimeoutMs?: number
  now?: () => number
}

export class PeerTable extends EventEmitter<{ added: [PeerEntry], updated: [PeerEntry], removed: [id: string, reason: string] }> {
  private readonly entries = new Map<string, PeerEntry>()
  /** newest (run start, seq) seen per node, kept after removal so late adverts stay ignored */
  private readonly newest = new Map<string, { startedAtMs: number, seq: number }>()
  private readonly peerTimeoutMs: number
  private readonly now: () => number

  constructor (init: PeerTableInit = {}) {
    super()
    this.peerTimeoutMs = init.peerTimeoutMs ?? PEER_TIMEOUT_MS
    this.now = init.now ?? Date.now
  }

  /** Sets this agent's own entry (never expires) */
  setSelf (advert: CapacityAdvert): void {
    const entry = this.entries.get(advert.nodeId)
    if (entry != null) {
      entry.advert = advert
      entry.lastSeenMs = this.now()
      return
    }
    this.entries.set(advert.nodeId, { advert, lastSeenMs: this.now(), self: true, suspect: false })
  }

  /** True if `advert` is newer than anything seen from its node (by run start, then seq) */
  isNewer (advert: CapacityAdvert): boolean {
    const n = this.newest.get(advert.nodeId)
    return n == null || advert.startedAtMs > n.startedAtMs || (advert.startedAtMs === n.startedAtMs && advert.seq > n.seq)
  }

  /**
   * Applies a remote advert. `keepSuspect`: the peer stays out of routing (its connection is
   * still down: this advert may have left it before it died and been relayed late by another
   * peer), but only for as long as its silence would take to drop it (timeoutOf): a peer that
   * keeps advertising through others after that is alive, only not connected here.
   */
  upsert (advert: CapacityAdvert, keepSuspect = false): UpsertResult {
    if (!this.isNewer(advert)) return 'stale'
    this.newest.set(advert.nodeId, { startedAtMs: advert.startedAtMs, seq: advert.seq })
    if (advert.draining) {
      this.remove(advert.nodeId, 'draining')
      return 'draining'
    }
    const existing = this.entries.get(advert.nodeId)
    if (existing != null) {
      if (existing.self) return 'stale'
      existing.advert = advert
      existing.lastSeenMs = this.now()
      existing.suspect = existing.suspect && keepSuspect && this.now() - (existing.suspectSinceMs ?? 0) <= this.timeoutOf({ ...existing, suspect: false })
      this.emit('updated', existing)
      return 'updated'
    }
    const entry: PeerEntry = { advert, lastSeenMs: this.now(), self: false, suspect: false }
    this.entries.set(advert.nodeId, entry)
    this.emit('added', entry)
    return 'added'
  }

  /** Stops routing to `id` until it is heard from again */
  suspect (id: string): void {
    const e = this.entries.get(id)
    if (e != null && !e.self && !e.suspect) {
      e.suspect = true
      e.suspectSinceMs = this.now()
    }
  }

  /** `id` answered just now (membership "swim": a ping's ack) */
  touch (id: string): void {
    const e = this.entries.get(id)
    if (e != null && !e.self) e.lastSeenMs = this.now()
  }

  remove (id: string, reason: string): void {
    const e = this.entries.get(id)
    if (e == null || e.self) return
    this.entries.delete(id)
    this.emit('removed', id, reason)
  }

  /**
   * Drops peers not heard from within their timeout: peerTimeoutMs, or KEEPALIVES_MISSED of the
   * keepalive interval their adverts give if that is longer (at most PEER_TIMEOUT_MAX_MS)
   */
  sweep (): void {
    const now = this.now()
    for (const [id, e] of this.entries) {
      if (!e.self && e.lastSeenMs < now - this.timeoutOf(e)) this.remove(id, 'adverts stopped')
    }
  }

  /**
   * How long `e` may stay silent before it is dropped: a peer whose connection dropped (suspect)
   * gets peerTimeoutMs, one still connected 3 of its keepalives
   */
  timeoutOf (e: PeerEntry): number {
    if (e.suspect) return this.peerTimeoutMs
    const said = KEEPALIVES_MISSED * (e.advert.keepaliveMs ?? 0)
    return Math.min(PEER_TIMEOUT_MAX_MS, Math.max(this.peerTimeoutMs, said))
  }

  get (id: string): PeerEntry | undefined {
    return this.entries.get(id)
  }

  has (id: string): boolean {
    return this.entries.has(id)
  }

  all (): PeerEntry[] {
    return [...this.entries.values()]
  }

  /** Entries work may be routed to: not suspect, not draining, not refusing work (disk full) */
  routable (): PeerEntry[] {
    return this.all().filter(e => !e.suspect && !e.advert.draining && (e.advert.refusing ?? '') === '')
  }

  get size (): number {
    return this.entries.size
  }
}
