/**
 * The router's own view of load it caused: invocations it sent to each peer and has not seen
 * finish. Only those sent after the peer's latest advert are added to the advert's in-flight
 * count; earlier ones are already in it.
 */

interface PeerLoad {
  /** adverts seen from the peer; dispatches remember the epoch they were sent in */
  epoch: number
  /** outstanding dispatches sent in the current epoch */
  sinceAdvert: number
  /** all outstanding dispatches to the peer */
  outstanding: number
  /** the peer said it was full: treat it as full until its next advert */
  full: boolean
  /** the peer refused to queue a dispatch allowed to wait this long (0: none) since its last advert */
  waitAboveMs: number
}

export interface Dispatch {
  peer: string
  epoch: number
}

export class LoadTracker {
  private readonly peers = new Map<string, PeerLoad>()

  private get (peer: string): PeerLoad {
    let p = this.peers.get(peer)
    if (p == null) {
      p = { epoch: 0, sinceAdvert: 0, outstanding: 0, full: false, waitAboveMs: 0 }
      this.peers.set(peer, p)
    }
    return p
  }

  /** A fresh advert from `peer` arrived: it counts everything sent before now */
  onAdvert (peer: string): void {
    const p = this.get(peer)
    p.epoch++
    p.sinceAdvert = 0
    p.full = false
    p.waitAboveMs = 0
  }

  /** Estimated in-flight at `peer` given its advertised count */
  estimate (peer: string, advertInFlight: number, slots: number): number {
    const p = this.peers.get(peer)
    if (p == null) return advertInFlight
    const estimate = advertInFlight + p.sinceAdvert
    return p.full ? Math.max(slots, estimate) : estimate
  }

  sent (peer: string): Dispatch {
    const p = this.get(peer)
    p.sinceAdvert++
    p.outstanding++
    return { peer, epoch: p.epoch }
  }

  finished (d: Dispatch): void {
    const p = this.peers.get(d.peer)
    if (p == null) return
    p.outstanding = Math.max(0, p.outstanding - 1)
    if (d.epoch === p.epoch) p.sinceAdvert = Math.max(0, p.sinceAdvert - 1)
  }

  markFull (peer: string): void {
    this.get(peer).full = true
  }

  /**
   * The peer would not queue a dispatch allowed to wait `budgetMs` (its queue was full, or its
   * expected wait longer): chooseQueue leaves it out for budgets up to that until its next advert
   */
  markQueueRefused (peer: string, budgetMs: number): void {
    const p = this.get(peer)
    p.full = true
    p.waitAboveMs = Math.max(p.waitAboveMs, budgetMs)
  }

  /** The longest budget the peer refused to queue since its last advert (undefined: none) */
  waitAbove (peer: string): number | undefined {
    const v = this.peers.get(peer)?.waitAboveMs ?? 0
    return v > 0 ? v : undefined
  }

  /** Dispatches to `peer` sent since its latest advert and not finished */
  sinceAdvert (peer: string): number {
    return this.peers.get(peer)?.sinceAdvert ?? 0
  }

  outstanding (peer: string): number {
    return this.peers.get(peer)?.outstanding ?? 0
  }

  /** The peer left: drop its counts; the epoch moves on, so late finishes of old dispatches count nothing */
  forget (peer: string): void {
    const p = this.peers.get(peer)
    if (p == null) return
    p.epoch++
    p.sinceAdvert = 0
    p.outstanding = 0
    p.full = false
    p.waitAboveMs = 0
  }
}
