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
  /** the peer refused a queued dispatch: its queue is full too, until its next advert */
  queueFull: boolean
}

export interface Dispatch {
  peer: string
  epoch: number
}

export class LoadTracker {
  private readonly peers = new Map<string, PeerLoad>()

  /** @param queuePerSlot how many invocations an executor queues per slot (executor/admit.ts) */
  constructor (private readonly queuePerSlot: number) {}

  private get (peer: string): PeerLoad {
    let p = this.peers.get(peer)
    if (p == null) {
      p = { epoch: 0, sinceAdvert: 0, outstanding: 0, full: false, queueFull: false }
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
    p.queueFull = false
  }

  /** Estimated in-flight at `peer` given its advertised count */
  estimate (peer: string, advertInFlight: number, slots: number): number {
    const p = this.peers.get(peer)
    if (p == null) return advertInFlight
    if (p.queueFull) return (1 + this.queuePerSlot) * slots
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

  /** The peer would not even queue more (chooseQueue leaves it out until its next advert) */
  markQueueFull (peer: string): void {
    const p = this.get(peer)
    p.full = true
    p.queueFull = true
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
    p.queueFull = false
  }
}
