/**
 * Peer discovery over NATS, so --bootstrap is optional: every agent posts its multiaddrs on
 * `fnmesh.discovery` at start and at an interval, and dials any agent it hears of and is not
 * connected to. A newcomer is dialed by everyone within one announce.
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { decode, encode } from '../../../proto/codec.js'
import { DISCOVERY_SUBJECT } from '../../../proto/subjects.js'
import type { Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { Gossip } from './gossip.js'

export interface DiscoveryInit {
  nc: NatsConnection
  gossip: Gossip
  name: string
  /** @default 5000 */
  intervalMs?: number
  logger: Logger
}

export class NatsDiscovery implements Startable {
  private sub: Subscription | undefined
  private timer: NodeJS.Timeout | undefined
  private lastReplyMs = 0

  constructor (private readonly init: DiscoveryInit) {}

  start (): void {
    if (this.sub != null) return
    this.sub = this.init.nc.subscribe(DISCOVERY_SUBJECT, {
      callback: (err, msg) => {
        if (err != null) return
        try {
          this.onAnnounce(decode('PeerAnnounce', msg.data))
        } catch (e: any) {
          this.init.logger.debug({ err: String(e?.message ?? e) }, 'ignored a malformed announce')
        }
      }
    })
    this.announce()
    this.timer = setInterval(() => { this.announce() }, this.init.intervalMs ?? 5000)
  }

  isStarted (): boolean {
    return this.sub != null
  }

  stop (): void {
    clearInterval(this.timer)
    this.sub?.unsubscribe()
    this.sub = undefined
  }

  announce (): void {
    const { gossip, nc } = this.init
    if (nc.isClosed()) return
    nc.publish(DISCOVERY_SUBJECT, encode('PeerAnnounce', {
      nodeId: gossip.nodeId,
      name: this.init.name,
      addrs: gossip.multiaddrs(),
      sentAtMs: Date.now()
    }))
  }

  private onAnnounce (a: { nodeId: string, addrs: string[] }): void {
    const { gossip } = this.init
    if (a.nodeId === gossip.nodeId || a.addrs.length > 64 || gossip.isConnected(a.nodeId)) return
    void gossip.dialPeer(a.nodeId, a.addrs)
    // Answer a newcomer at once (at most once a second) so it learns of this node too.
    const now = Date.now()
    if (now - this.lastReplyMs > 1000) {
      this.lastReplyMs = now
      this.announce()
    }
  }
}
