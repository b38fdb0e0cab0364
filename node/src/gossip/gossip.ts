/**
 * The gossip part: a libp2p host (TCP, Noise, yamux) running gossipsub, publishing this node's
 * signed capacity advert at a steady interval and promptly when load changes, and feeding
 * validated adverts of other nodes into the peer table.
 */
import { gossipsub, type GossipSub } from '@chainsafe/libp2p-gossipsub'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { preSharedKey } from '@libp2p/pnet'
import { TopicValidatorResult, type Libp2p, type Message, type PeerId, type PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { createHash } from 'node:crypto'
import { freemem } from 'node:os'
import { decode, encode, type CapacityAdvert } from '../../../proto/codec.js'
import { ADVERTS_TOPIC } from '../../../proto/subjects.js'
import type { Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { PeerTable } from './peer-table.js'
import { meshScoreParams, meshScoreThresholds } from './scoring.js'
import { WireBytes } from './wire-bytes.js'

/** What the rest of the agent reports for this node's advert */
export interface LoadSnapshot {
  slots: number
  inFlight: number
  warm: string[]
  invocations: number
  coldStarts: number
  warmStarts: number
  /** why this node takes no new work (its disk is full), or empty */
  refusing?: string
  /** "function@version" once per idle provisioned sandbox (--provisioned) */
  provisioned?: string[]
  /** sandbox isolation layers active on this node, as core/layers.ts bits */
  layers?: number
}

export interface GossipInit {
  privateKey: PrivateKey
  name: string
  listen: string[]
  bootstrap: string[]
  /** Private swarm: the pre-shared key file's bytes; hosts without the same key cannot connect */
  swarmKey?: Uint8Array
  /**
   * The keepalive: how often an idle node re-sends its advert (prompt adverts on load changes
   * come on top) @default keepaliveFor(mesh size)
   */
  advertIntervalMs?: number
  /** least time between prompt adverts @default advertGapFor(mesh size) */
  advertMinGapMs?: number
  table: PeerTable
  /** placement labels of this node (config.ts), sent in every advert */
  labels?: Readonly<Record<string, string>>
  snapshot: () => LoadSnapshot
  /**
   * "swim": membership is gossip/swim.ts's over NATS; this part runs only the libp2p host (meter
   * replication's streams) with no gossipsub, no adverts and no bootstrap dials. @default "gossip"
   */
  membership?: 'gossip' | 'swim'
  logger: Logger
}

const MAX_WARM = 1000
const PROMPT_COALESCE_MS = 20

/**
 * The least time between two prompt adverts of a node in a mesh of `nodes`: 1 ms per node, at
 * least 20 and at most 500 (the periodic interval). Small meshes get fresh views (a slot that
 * frees is known elsewhere within ~20 ms, which keeps invocations from queueing while a slot is
 * free), and what each node receives stays under ~1,000 prompt adverts a second up to 500 nodes
 * (N nodes x 1000 / N ms); past that only the periodic adverts remain. `npm run simulate` shows
 * both ends: p99 at 10 nodes and 80% load 72 -> 55 ms against a fixed 100 ms, and at 1,000
 * nodes 48 -> 46 ms with a third of the gossip.
 */
export function advertGapFor (nodes: number): number {
  return Math.min(500, Math.max(PROMPT_COALESCE_MS, Math.round(nodes)))
}
/**
 * How often an idle node re-sends its advert in a mesh of `nodes`: 200 ms per node, at least 1 s
 * and at most 10 s. What each idle node receives stays at or under 5 adverts a second up to 50
 * nodes (N / (N x 200 ms)), which keeps an idle agent near zero CPU; a peer is dropped after 3
 * keepalives without a word (it says its own in `keepaliveMs`), while a crashed process is taken
 * out of routing at once by its lost connection and a stopping one by its draining advert.
 */
export function keepaliveFor (nodes: number): number {
  return Math.min(KEEPALIVE_MAX_MS, Math.max(KEEPALIVE_MIN_MS, Math.round(nodes * 200)))
}
export const KEEPALIVE_MIN_MS = 1000
export const KEEPALIVE_MAX_MS = 10_000
const MAX_SLOTS = 1_000_000
/** Past this many agents, membership "gossip" warns once that "swim" scales better */
const LARGE_MESH = 50
/** in_flight counts the executor's queue too, of at most --max-queue (config.ts caps it at this) */
const MAX_QUEUE = 1_000_000
/** An advert's clock may run ahead of ours by this much (start time, send time) */
const MAX_CLOCK_AHEAD_MS = 5 * 60_000
/** Caps on what a peer may send over libp2p: gossip RPC frames and their contents */
const GOSSIP_LIMITS = {
  maxInboundDataLength: 256 * 1024,
  decodeRpcLimits: { maxSubscriptions: 64, maxMessages: 256, maxIhaveMessageIDs: 1000, maxIwantMessageIDs: 1000, maxIdontwantMessageIDs: 1000, maxControlMessages: 256, maxPeerInfos: 64 },
  allowedTopics: [ADVERTS_TOPIC],
  maxInboundStreams: 8,
  maxOutboundStreams: 8
}

export class Gossip implements Startable {
  private node: Libp2p<{ identify: unknown, pubsub: GossipSub }> | undefined
  private seq = 0
  private readonly startedAtMs = Date.now()
  private timer: NodeJS.Timeout | undefined
  private keepaliveMs = KEEPALIVE_MIN_MS
  private sweeper: NodeJS.Timeout | undefined
  private bootTimer: NodeJS.Timeout | undefined
  private promptTimer: NodeJS.Timeout | undefined
  private lastSentMs = 0
  private draining = false
  private readonly log: Logger
  private readonly advertIntervalMs: number | undefined
  private readonly advertMinGapMs: number | undefined
  /** adverts received, accepted, rejected (forged or malformed), ignored (stale) */
  readonly stats = { received: 0, accepted: 0, rejected: 0, ignored: 0, sent: 0 }
  /** libp2p bytes on the wire and per protocol, since start */
  readonly bytes = new WireBytes()

  constructor (private readonly init: GossipInit) {
    this.log = init.logger
    this.advertIntervalMs = init.advertIntervalMs
    this.advertMinGapMs = init.advertMinGapMs
  }

  get nodeId (): string {
    if (this.node == null) throw new Error('gossip not started')
    return this.node.peerId.toString()
  }

  get libp2p (): Libp2p {
    if (this.node == null) throw new Error('gossip not started')
    return this.node
  }

  multiaddrs (): string[] {
    return this.node?.getMultiaddrs().map(String) ?? []
  }

  isStarted (): boolean {
    return this.node != null
  }

  /** membership "swim": no gossipsub; the host serves meter replication only */
  private get swim (): boolean {
    return this.init.membership === 'swim'
  }

  async start (): Promise<void> {
    if (this.node != null) return
    const pubsubService = this.swim
      ? {}
      : {
          pubsub: gossipsub({
            emitSelf: false,
            allowPublishToZeroTopicPeers: true,
            // gossipsub's own default: its mesh upkeep need not be faster than our keepalive
            heartbeatInterval: 1000,
            // Flood publish hands each advert to every connected peer; the mesh only relays to
            // peers the publisher is not connected to (past the connection limit), so a small
            // degree suffices and spares every node copies it drops as duplicates (D = 6 by
            // default: ~7 copies of each advert in, ~7 out). IHAVE repair is of little worth for
            // adverts a newer one replaces within a keepalive: to few peers.
            D: 3,
            Dlo: 2,
            Dhi: 6,
            // gossipsub asks Dout < Dlo and Dout <= D / 2, Dscore <= D
            Dout: 1,
            Dscore: 1,
            Dlazy: 3,
            gossipFactor: 0.1,
            globalSignaturePolicy: 'StrictSign' as const,
            // Scoring for our threat model (scoring.ts): no per-address penalty, which took down
            // any mesh of more than ~14 agents behind one address; invalid adverts graylist.
            scoreParams: meshScoreParams([ADVERTS_TOPIC]),
            scoreThresholds: meshScoreThresholds(),
            // Every copy of an advert (one per mesh peer that forwards it) would otherwise have its
            // ed25519 signature checked (~130 µs) before gossipsub sees it is a duplicate.
            fastMsgIdFn: advertFastId,
            ...GOSSIP_LIMITS
          })
        }
    const node = await createLibp2p({
      privateKey: this.init.privateKey,
      addresses: { listen: this.init.listen },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      metrics: this.bytes.metrics(),
      // libp2p's connection monitor pings every connection every 10 s, each ping a new stream
      // with its protocol negotiation: ~1 ms of CPU per peer per ping, the largest part of an idle
      // agent's cost past a few peers (measured: 6 idle agents, 0.0166 core each with it, 0.0118
      // without). Liveness is the adverts' own: a crashed peer's connection drops (suspect at
      // once), and a hung or cut-off one is dropped after 3 of its keepalives of silence.
      connectionMonitor: { enabled: false },
      streamMuxers: [yamux({ maxInboundStreams: 64, maxOutboundStreams: 64, maxMessageSize: 256 * 1024 })],
      // With a swarm key, every connection is wrapped in XSalsa20 with the key before Noise runs:
      // a host without it fails the first bytes and never learns anything.
      ...(this.init.swarmKey != null ? { connectionProtector: preSharedKey({ psk: this.init.swarmKey }) } : {}),
      services: {
        identify: identify({ maxMessageSize: 8192 }),
        ...pubsubService
      }
    })
    this.node = node as unknown as Libp2p<{ identify: unknown, pubsub: GossipSub }>
    if (this.swim) {
      this.log.info({ nodeId: this.nodeId, addrs: this.multiaddrs() }, 'libp2p host started (membership "swim": no gossip)')
      return
    }
    const pubsub = this.node.services.pubsub
    pubsub.topicValidators.set(ADVERTS_TOPIC, (peer, msg) => this.validate(msg))
    pubsub.addEventListener('message', (evt) => {
      if (evt.detail.topic !== ADVERTS_TOPIC) return
      this.onAdvert(evt.detail)
    })
    pubsub.subscribe(ADVERTS_TOPIC)
    // A newly connected peer joining the topic hears this node soon, not one keepalive later
    // (and a node just started reaches its first peers at once): only connected peers cause this.
    pubsub.addEventListener('subscription-change', (evt) => {
      if (evt.detail.subscriptions.some(s => s.subscribe && s.topic === ADVERTS_TOPIC)) this.loadChanged()
    })
    node.addEventListener('peer:disconnect', (evt) => {
      // A lost connection stops new work at once; the peer is dropped if its adverts stop too.
      this.init.table.suspect(evt.detail.toString())
    })
    this.init.table.setSelf(this.buildAdvert())
    this.scheduleKeepalive()
    this.sweeper = setInterval(() => { this.init.table.sweep() }, 500)
    this.dialBootstrap()
    this.log.info({ nodeId: this.nodeId, addrs: this.multiaddrs() }, 'libp2p host started')
  }

  /** Publishes an advert soon (within advertMinGapMs) because load changed */
  loadChanged (): void {
    if (this.node == null || this.promptTimer != null || this.swim) return
    // A short coalescing delay lets a quick invocation start and finish within one advert, so
    // peers do not see a node as busy (and skip its warm sandbox) for a call already done.
    const gap = this.advertMinGapMs ?? advertGapFor(this.init.table.size)
    const wait = Math.max(PROMPT_COALESCE_MS, this.lastSentMs + gap - Date.now())
    this.promptTimer = setTimeout(() => {
      this.promptTimer = undefined
      void this.publish()
    }, wait)
  }

  /** The next keepalive, one interval after the last advert of any kind */
  private scheduleKeepalive (): void {
    clearTimeout(this.timer)
    if (this.node == null || this.draining) return
    this.keepaliveMs = this.advertIntervalMs ?? keepaliveFor(this.init.table.size)
    this.timer = setTimeout(() => { void this.publish() }, this.keepaliveMs)
  }

  /** Tells peers to route nothing more here: the last advert, with draining set */
  async leave (): Promise<void> {
    if (this.node == null || this.draining || this.swim) return
    this.draining = true
    clearTimeout(this.timer)
    await this.publish()
  }

  async stop (): Promise<void> {
    clearTimeout(this.timer)
    clearInterval(this.sweeper)
    clearTimeout(this.bootTimer)
    clearTimeout(this.promptTimer)
    const node = this.node
    this.node = undefined
    await node?.stop()
  }

  /** True if a libp2p connection to `id` is open */
  isConnected (id: string): boolean {
    if (this.node == null) return false
    try {
      return this.node.getConnections(peerIdFromString(id)).length > 0
    } catch {
      return false
    }
  }

  /** Dials `id` at `addrs` (multiaddrs ending in /p2p/<id>); failures are logged, not thrown */
  async dialPeer (id: string, addrs: string[]): Promise<void> {
    const node = this.node
    if (node == null || id === this.nodeId) return
    let peerId: PeerId
    try {
      peerId = peerIdFromString(id)
      const mas = addrs.map(a => multiaddr(a)).filter(ma => ma.getPeerId() === id)
      if (mas.length === 0) return
      await node.peerStore.merge(peerId, { multiaddrs: mas.map(ma => ma.decapsulateCode(421)) })
      await node.dial(peerId, { signal: AbortSignal.timeout(5000) })
    } catch (err: any) {
      this.log.debug({ peer: id, err: String(err?.message ?? err) }, 'dial failed')
    }
  }

  /** Free memory for adverts, read at most once a second (os.freemem() reads /proc/meminfo) */
  private freeMemMb (): number {
    const now = Date.now()
    if (now - this.freeMemAt >= 1000) {
      this.freeMemAt = now
      this.freeMem = Math.floor(freemem() / 1048576)
    }
    return this.freeMem
  }

  private freeMem = 0
  private warnedLarge = false
  private freeMemAt = 0

  /** Tells libp2p where `id` listens (membership "swim": from its entry), for meter replication's dials */
  async addPeerAddrs (id: string, addrs: readonly string[]): Promise<void> {
    const node = this.node
    if (node == null || id === this.nodeId) return
    try {
      const mas = addrs.map(a => multiaddr(a)).filter(ma => ma.getPeerId() === id)
      if (mas.length > 0) await node.peerStore.merge(peerIdFromString(id), { multiaddrs: mas.map(ma => ma.decapsulateCode(421)) })
    } catch (err: any) {
      this.log.debug({ peer: id, err: String(err?.message ?? err) }, 'bad peer addresses')
    }
  }

  /** This node's advert as it stands now (membership "swim" signs it as the node's entry) */
  advert (): CapacityAdvert {
    return this.buildAdvert()
  }

  private buildAdvert (): CapacityAdvert {
    const s = this.init.snapshot()
    return {
      nodeId: this.node?.peerId.toString() ?? '',
      name: this.init.name,
      slots: s.slots,
      inFlight: s.inFlight,
      freeMemMb: this.freeMemMb(),
      warm: s.warm.slice(0, MAX_WARM),
      seq: ++this.seq,
      draining: this.draining,
      startedAtMs: this.startedAtMs,
      sentAtMs: Date.now(),
      invocations: s.invocations,
      coldStarts: s.coldStarts,
      warmStarts: s.warmStarts,
      refusing: s.refusing ?? '',
      labels: { ...this.init.labels },
      provisioned: (s.provisioned ?? []).slice(0, MAX_WARM),
      layers: s.layers ?? 0,
      keepaliveMs: this.keepaliveMs,
      addrs: this.swim ? this.multiaddrs().slice(0, 32) : []
    }
  }

  private async publish (): Promise<void> {
    const node = this.node
    if (node == null) return
    // Any advert restarts the keepalive: a busy node's prompt adverts are its keepalives.
    this.scheduleKeepalive()
    const advert = this.buildAdvert()
    this.init.table.setSelf(advert)
    this.lastSentMs = Date.now()
    try {
      await node.services.pubsub.publish(ADVERTS_TOPIC, encode('CapacityAdvert', advert))
      this.stats.sent++
    } catch (err: any) {
      this.log.debug({ err: String(err?.message ?? err) }, 'advert publish failed')
    }
  }

  /** Signed by the node it describes, within range, newer than the last one seen */
  private validate (msg: Message): TopicValidatorResult {
    this.stats.received++
    if (msg.type !== 'signed') {
      this.stats.rejected++
      return TopicValidatorResult.Reject
    }
    let advert: CapacityAdvert
    try {
      advert = decode('CapacityAdvert', msg.data)
    } catch {
      this.stats.rejected++
      return TopicValidatorResult.Reject
    }
    if (advert.nodeId !== msg.from.toString() || !inRange(advert) || advert.refusing.length > 1024) {
      this.stats.rejected++
      this.log.warn({ from: msg.from.toString(), claims: advert.nodeId }, 'rejected an advert: signer or values out of range')
      return TopicValidatorResult.Reject
    }
    if (!this.init.table.isNewer(advert)) {
      this.stats.ignored++
      return TopicValidatorResult.Ignore
    }
    return TopicValidatorResult.Accept
  }

  private onAdvert (msg: Message): void {
    let advert: CapacityAdvert
    try {
      advert = decode('CapacityAdvert', msg.data)
    } catch {
      return
    }
    // A peer whose connection dropped stays suspect until it is connected again: a copy of its
    // last advert relayed late by another peer says nothing about it being alive.
    const entry = this.init.table.get(advert.nodeId)
    const keepSuspect = entry?.suspect === true && !this.isConnected(advert.nodeId)
    const result = this.init.table.upsert(advert, keepSuspect)
    if (result !== 'stale') this.stats.accepted++
    if (result === 'added' && !this.warnedLarge && this.init.table.size > LARGE_MESH) {
      this.warnedLarge = true
      this.log.warn({ peers: this.init.table.size }, `a mesh of more than ${LARGE_MESH} agents: with membership "gossip" every agent hears every other (its cost grows with the mesh); --membership swim keeps it flat (docs/SCALING.md)`)
    }
    if (result === 'added') this.log.info({ peer: advert.nodeId, name: advert.name, slots: advert.slots }, 'peer joined')
  }

  private dialBootstrap (): void {
    const pending = new Set(this.init.bootstrap)
    const attempt = async (): Promise<void> => {
      const node = this.node
      if (node == null) return
      for (const addr of [...pending]) {
        try {
          await node.dial(multiaddr(addr), { signal: AbortSignal.timeout(5000) })
          pending.delete(addr)
          this.log.info({ addr }, 'connected to bootstrap peer')
        } catch (err: any) {
          this.log.debug({ addr, err: String(err?.message ?? err) }, 'bootstrap dial failed; will retry')
        }
      }
      if (pending.size > 0 && this.node != null) this.bootTimer = setTimeout(() => { void attempt() }, 1000)
    }
    if (pending.size > 0) void attempt()
  }
}

/** Values a real agent can send: bounded counts, sane names, clocks not far ahead of ours */
export function inRange (a: CapacityAdvert, now = Date.now()): boolean {
  return a.slots >= 1 && a.slots <= MAX_SLOTS && a.inFlight <= a.slots + MAX_QUEUE &&
    a.warm.length <= MAX_WARM && a.warm.every(w => w.length <= 200) &&
    (a.provisioned ?? []).length <= MAX_WARM && (a.provisioned ?? []).every(w => w.length <= 200) &&
    /^[\w.-]{0,64}$/.test(a.name) && a.seq >= 1 &&
    a.startedAtMs > 0 && a.startedAtMs <= now + MAX_CLOCK_AHEAD_MS && a.sentAtMs <= now + MAX_CLOCK_AHEAD_MS &&
    a.freeMemMb <= 1 << 30 && a.invocations <= Number.MAX_SAFE_INTEGER && (a.keepaliveMs ?? 0) <= 600_000
}

/**
 * gossipsub's fast message id: a SHA-256 over every field of the message as received. A copy
 * with the same id is byte-for-byte a message whose signature already checked out (gossipsub
 * stores the fast id only after validation), so skipping its signature check is safe; a forged
 * or altered copy has another id and is checked in full.
 */
export function advertFastId (msg: { from?: Uint8Array, data?: Uint8Array, seqno?: Uint8Array, topic: string, signature?: Uint8Array, key?: Uint8Array }): string {
  const h = createHash('sha256')
  for (const part of [msg.from, msg.seqno, msg.data, msg.signature, msg.key]) {
    const len = Buffer.allocUnsafe(4)
    len.writeUInt32BE(part?.length ?? 0xffffffff)
    h.update(len)
    if (part != null) h.update(part)
  }
  h.update(msg.topic)
  return h.digest('base64')
}
