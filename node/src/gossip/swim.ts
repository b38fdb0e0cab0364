/**
 * Membership "swim" (`fnmesh agent --membership swim`, docs/SCALING.md): SWIM as memberlist and
 * Serf run it, over NATS, so that no node hears every other node.
 *
 * - **Failure detection.** Once a period (1 s) a node pings one member, in a shuffled round-robin
 *   order, on `fnmesh.swim.<node id>`. No answer within the ping timeout: it asks 3 other members
 *   to ping it (PING_REQ). No answer through them either: the member is suspect (routed to no
 *   more here), and dead after the suspicion timeout unless it refutes. NATS answers at once when
 *   nobody subscribes to the subject (a process that is gone): that is a failed ping without the
 *   wait or the indirect round.
 * - **Dissemination.** Membership changes (alive, suspect, dead) ride on every ping, ack and
 *   answer, each sent up to 4 x log10(N+1) times, newest first; while changes are pending a node
 *   also sends them to 2 random members a period (GOSSIP).
 * - **Members describe themselves.** A member's entry is its own CapacityAdvert (name, slots,
 *   labels, layers, multiaddrs, draining, refusing; no load), signed with its node
 *   key; its (start time, seq) is its incarnation. Nobody can forge another member's entry; a
 *   member that hears itself suspected or declared dead refutes with a newer entry, and one that
 *   messages a node holding it dead (it missed its death: paused, cut off) is told so on the
 *   answer. Load is not in membership: routing "probe" asks executors for it.
 * - **Join** asks one random member (queue group on `fnmesh.swim.join`) for its membership (push-
 *   pull, paged); that member spreads the newcomer's entry. A sync with a random member, and now
 *   and then with a member once declared dead (a healed partition), repairs what gossip missed.
 * - **Leave** sends the member's last entry, draining, to a few members, who spread it.
 *
 * Cost per node is flat in the mesh size: about 2 messages sent and 2 received a period at idle.
 */
import { createHash, sign as edSign, verify as edVerify, type KeyObject } from 'node:crypto'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import type { PrivateKey } from '@libp2p/interface'
import { decode, encode, MemberState, SwimKind, type CapacityAdvert, type Encodable, type MemberUpdate, type SignedAdvert, type SwimMessage } from '../../../proto/codec.js'
import { DISCOVERY_SUBJECT, SWIM_JOIN_SUBJECT, SWIM_QUEUE, swimSubject } from '../../../proto/subjects.js'
import type { Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import { ed25519KeyOf, ed25519SigningKey } from '../metering/records/signing.js'
import { inRange } from './gossip.js'
import type { PeerTable } from './peer-table.js'

const DOMAIN = Buffer.from('fnmesh/member/1\n')

/** How often a node pings one member */
export const SWIM_PERIOD_MS = 1000
/** How long a direct ping may take before others are asked to try */
export const SWIM_PING_TIMEOUT_MS = 400
/** Members asked to ping a member that did not answer */
export const SWIM_INDIRECT = 3
/** Each period, with this probability, a member held dead is pinged (one that answers is told, and refutes) */
export const SWIM_RECONNECT_PROBABILITY = 0.1
/** Lifeguard's local health multiplier, at most: a node that fails to hear anyone waits up to 9x longer */
export const SWIM_MAX_HEALTH = 8
/**
 * Lifeguard: a suspicion with one accuser lasts SWIM_SUSPICION_MAX_MULT x the minimum; each
 * independent accuser shortens it, down to the minimum with SWIM_SUSPICION_CONFIRMATIONS of them
 */
export const SWIM_SUSPICION_MAX_MULT = 6
export const SWIM_SUSPICION_CONFIRMATIONS = 2
/** Suspicion lasts this many periods x log10(N+1) (at least SWIM_SUSPICION_MIN_MS) before a member is dead */
export const SWIM_SUSPICION_MULT = 4
export const SWIM_SUSPICION_MIN_MS = 3000
/** An update is piggybacked this many times x log10(N+1) */
export const SWIM_RETRANSMIT_MULT = 4
/** Updates on one message, at most */
export const SWIM_MAX_PIGGYBACK = 24
/**
 * Random members sent pending updates each period besides the ping, and at once (after
 * SWIM_GOSSIP_COALESCE_MS) when this node learns a change: each node passes a change on when it
 * first hears it, so it reaches N nodes in about log3(N) hops of milliseconds, not periods
 */
export const SWIM_GOSSIP_FANOUT = 3
export const SWIM_GOSSIP_COALESCE_MS = 20
/** Push-pull sync with one member this often, scaled up by log2(N/32) past 32 members (memberlist's pushPullScale) */
export const SWIM_SYNC_MS = 30_000
/** Joins asked again of random agents 1, 2, 4, 8 and 16 periods after start */
export const SWIM_REJOINS = 5
/** A sync page holds at most this many bytes of members */
export const SYNC_PAGE_BYTES = 512 * 1024
/** Members declared dead are remembered this long: their late updates are ignored, and a sync now and then tries them (a healed partition) */
export const SWIM_TOMBSTONE_MS = 60 * 60_000
/** Members at most (a larger mesh needs a larger bound) */
export const SWIM_MAX_MEMBERS = 100_000

type State = 'alive' | 'suspect'

interface Member {
  id: string
  advert: CapacityAdvert
  signed: SignedAdvert
  state: State
  since: number
  suspicion?: NodeJS.Timeout
  /** who suspected it independently (the first one included) */
  confirmers?: Set<string>
}

interface Tombstone { startedAtMs: number, seq: number, atMs: number }

interface Broadcast { update: Encodable<MemberUpdate>, transmits: number, bytes: number }

export interface SwimInit {
  nc: NatsConnection
  nodeId: string
  privateKey: PrivateKey
  table: PeerTable
  /** this node's advert as it stands now (seq and keepalive are filled in here) */
  advert: () => CapacityAdvert
  /** a member was added or changed: its multiaddrs, for meter replication's dials */
  onMember?: (advert: CapacityAdvert) => void
  /** a new member joined through this node (its join was answered here): the router probes it first (router.remember) */
  onJoined?: (id: string) => void
  logger: Logger
  periodMs?: number
  pingTimeoutMs?: number
  syncMs?: number
  now?: () => number
  rng?: () => number
}

/** (startedAtMs, seq) ordering of incarnations */
function newer (a: { startedAtMs: number, seq: number }, b: { startedAtMs: number, seq: number }): boolean {
  return a.startedAtMs > b.startedAtMs || (a.startedAtMs === b.startedAtMs && a.seq > b.seq)
}

function isNoResponders (err: any): boolean {
  for (let e = err, i = 0; e != null && i < 4; e = e.cause, i++) {
    if (typeof e.isNoResponders === 'function' && e.isNoResponders() === true) return true
    if (e.name === 'NoRespondersError' || e.constructor?.name === 'NoRespondersError') return true
  }
  return false
}

/** The fields of an advert that membership carries: a change in any of them is a new incarnation */
export function memberKey (a: CapacityAdvert): string {
  return JSON.stringify([a.name, a.slots, a.draining, a.refusing, a.layers, Object.entries(a.labels ?? {}).sort(), a.addrs ?? []])
}

/**
 * The entry this node signs: its advert without what changes with load (running, warm and
 * provisioned sandboxes, counters, free memory). Those would go stale in everyone's table (an
 * entry changes only with a new incarnation) and mislead routing; routing "probe" asks for them,
 * and provisioned sandboxes are found by their placement (router pickProvisioned).
 */
function entryOf (a: CapacityAdvert): CapacityAdvert {
  return { ...a, inFlight: 0, warm: [], provisioned: [], invocations: 0, coldStarts: 0, warmStarts: 0, freeMemMb: 0 }
}

export class Swim implements Startable {
  private readonly members = new Map<string, Member>()
  private readonly tombstones = new Map<string, Tombstone>()
  private readonly broadcasts = new Map<string, Broadcast>()
  private readonly keys = new Map<string, KeyObject | null>()
  private readonly signKey: KeyObject
  private readonly log: Logger
  private readonly periodMs: number
  private readonly pingTimeoutMs: number
  private readonly syncMs: number
  private readonly now: () => number
  private readonly rng: () => number
  private subs: Subscription[] = []
  private timer: NodeJS.Timeout | undefined
  private order: string[] = []
  private orderAt = 0
  private self!: { advert: CapacityAdvert, signed: SignedAdvert, key: string }
  private seq = 0
  private lastSyncMs = 0
  private lastJoinMs = 0
  private syncRounds = 0
  private running = false
  private startedMs = 0
  /** its first join is done (joined, or found nobody): it answers joins from then on */
  private joinedOnce = false
  private rejoins = 0
  private gossipTimer: NodeJS.Timeout | undefined
  private left = false
  /** messages by kind sent and received, updates applied and rejected, since start */
  readonly stats = { health: 0, sent: 0, received: 0, rejected: 0, pings: 0, pingFailures: 0, indirect: 0, suspected: 0, dead: 0, refuted: 0, joined: 0, bytesIn: 0, bytesOut: 0 }

  constructor (private readonly init: SwimInit) {
    this.log = init.logger
    this.periodMs = init.periodMs ?? SWIM_PERIOD_MS
    this.pingTimeoutMs = init.pingTimeoutMs ?? Math.min(SWIM_PING_TIMEOUT_MS, Math.floor(this.periodMs / 2))
    this.syncMs = init.syncMs ?? SWIM_SYNC_MS
    this.now = init.now ?? Date.now
    this.rng = init.rng ?? Math.random
    if (init.privateKey.type !== 'Ed25519') throw new Error(`Membership "swim" signs with an Ed25519 node key, not ${init.privateKey.type}`)
    this.signKey = ed25519SigningKey(init.privateKey)
  }

  isStarted (): boolean {
    return this.running
  }

  /** members other than this node, alive and suspect */
  get size (): number {
    return this.members.size
  }

  /** the state of `id` as this node sees it */
  stateOf (id: string): State | 'dead' | undefined {
    return this.members.get(id)?.state ?? (this.tombstones.has(id) ? 'dead' : undefined)
  }

  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    this.refreshSelf(true)
    const { nc } = this.init
    const handler = { callback: (err: Error | null, msg: { data: Uint8Array, reply?: string, respond: (b: Uint8Array) => boolean }) => { if (err == null) this.onMessage(msg.data, msg.reply != null && msg.reply !== '' ? (b) => msg.respond(b) : undefined) } }
    this.subs.push(nc.subscribe(swimSubject(this.init.nodeId), handler))
    // The queue group may hand this node its own join: it answers NACK and the joiner asks again.
    this.subs.push(nc.subscribe(SWIM_JOIN_SUBJECT, { queue: SWIM_QUEUE, ...handler }))
    // Agents with membership "gossip" announce themselves here: they and this one never meet.
    const mixed = nc.subscribe(DISCOVERY_SUBJECT, {
      callback: () => {
        mixed.unsubscribe()
        this.log.warn({}, 'agents with membership "gossip" share this NATS: they and this agent (membership "swim") do not see each other and split the mesh; start every agent with the same --membership')
      }
    })
    this.subs.push(mixed)
    await nc.flush()
    this.startedMs = this.now()
    await this.join()
    this.joinedOnce = true
    this.lastSyncMs = this.now()
    this.schedule()
  }

  /** Says this node is leaving: its last entry, draining, sent to a few members who spread it */
  async leave (): Promise<void> {
    if (!this.running || this.left) return
    this.left = true
    this.refreshSelf(true, true)
    const update = this.selfUpdate()
    const targets = this.sample(Math.min(8, this.members.size), () => true)
    for (const m of targets) this.send(m.id, { kind: SwimKind.GOSSIP, updates: [update] })
    await this.init.nc.flush().catch(() => {})
  }

  async stop (): Promise<void> {
    this.running = false
    clearTimeout(this.timer)
    clearTimeout(this.gossipTimer)
    for (const m of this.members.values()) clearTimeout(m.suspicion)
    for (const s of this.subs) s.unsubscribe()
    this.subs = []
  }

  // ------------------------------------------------------------------ this node's entry

  /**
   * Puts this node's current advert in the table (its load, for its own router and `fnmesh
   * nodes`) and, when a field membership carries changed, signs a new incarnation and spreads it
   */
  private refreshSelf (force = false, draining = false): void {
    const base = this.init.advert()
    const advert: CapacityAdvert = { ...base, nodeId: this.init.nodeId, draining: draining || base.draining, keepaliveMs: 0 }
    const key = memberKey(advert)
    if (force || this.self == null || key !== this.self.key) {
      advert.seq = ++this.seq
      advert.sentAtMs = this.now()
      const entry = entryOf(advert)
      const bytes = encode('CapacityAdvert', entry)
      const signature = edSign(null, Buffer.concat([DOMAIN, bytes]), this.signKey)
      this.self = { advert: entry, signed: { advert: bytes, signature }, key }
      if (this.running) this.enqueue(this.init.nodeId, this.selfUpdate())
    }
    this.init.table.setSelf({ ...advert, seq: this.self.advert.seq, startedAtMs: this.self.advert.startedAtMs })
  }

  private selfUpdate (): Encodable<MemberUpdate> {
    const a = this.self.advert
    return { state: MemberState.ALIVE, nodeId: this.init.nodeId, startedAtMs: a.startedAtMs, seq: a.seq, member: this.self.signed }
  }

  /**
   * Heard this node suspected or declared dead. Of an older incarnation: the accuser has not had
   * the newer one (its broadcasts may all have gone on answers nobody waited for, after a pause),
   * so it is carried again. Of this one: a newer one. Of a later one: none was ever signed (an
   * accusation is not signed: anyone could say it), so others hold an older one; a newer one than
   * this node's, never the accuser's seq (a seq near 2^53 would stop seq from rising).
   */
  private refute (u: MemberUpdate): void {
    const a = this.self.advert
    if (newer({ startedAtMs: a.startedAtMs, seq: a.seq }, u)) {
      if (!this.broadcasts.has(this.init.nodeId)) this.enqueue(this.init.nodeId, this.selfUpdate())
      return
    }
    this.stats.refuted++
    this.sicker()
    this.log.info({ by: u.from, state: MemberState[u.state] }, 'refuted a suspicion of this node')
    this.refreshSelf(true, this.left)
  }

  // ------------------------------------------------------------------ the protocol period

  /** Lifeguard's local health multiplier: 0 (healthy) to SWIM_MAX_HEALTH; timeouts and the period scale by 1 + it */
  private health = 0

  private sicker (): void {
    this.health = Math.min(SWIM_MAX_HEALTH, this.health + 1)
    this.stats.health = this.health
  }

  private healthier (): void {
    this.health = Math.max(0, this.health - 1)
    this.stats.health = this.health
  }

  private schedule (): void {
    if (!this.running) return
    this.timer = setTimeout(() => {
      void this.tick().catch((err: any) => { this.log.warn({ err: String(err?.message ?? err) }, 'membership round failed') }).finally(() => { this.schedule() })
    }, this.periodMs * (1 + this.health))
    this.timer.unref?.()
  }

  /** One period: refresh this node's entry, probe one member, spread pending updates, sync now and then */
  async tick (): Promise<void> {
    if (!this.running || this.init.nc.isClosed()) return
    this.refreshSelf()
    this.pruneTombstones()
    if (this.members.size === 0 && this.now() - this.lastJoinMs >= this.periodMs * (1 + this.rng())) {
      if (await this.join()) return
    } else if (this.rejoins < SWIM_REJOINS && this.now() - this.startedMs >= this.periodMs * 2 ** this.rejoins) {
      // Agents started together can form groups apart (A and B ask each other, C and D each
      // other): a few more asks of random agents in the first periods join them.
      this.rejoins++
      void this.join(false)
    }
    const target = this.nextTarget()
    if (target != null) void this.probe(target)
    this.gossip(target?.id)
    // Now and then a member held dead is pinged (Serf's reconnect): one that answers was cut off
    // or paused, not gone, and is told it was declared dead, so it refutes and both sides of a
    // healed partition meet again within seconds, not at the next sync.
    if (this.tombstones.size > 0 && this.rng() < SWIM_RECONNECT_PROBABILITY) void this.reconnect()
    const n = this.members.size + 1
    const syncEvery = this.syncMs * (n > 32 ? Math.ceil(Math.log2(n) - Math.log2(32)) + 1 : 1)
    if (this.now() - this.lastSyncMs >= syncEvery) {
      this.lastSyncMs = this.now()
      void this.periodicSync()
    }
  }

  /** Members in a shuffled round-robin (memberlist's): every member is pinged once per round */
  private nextTarget (): Member | undefined {
    while (true) {
      if (this.orderAt >= this.order.length) {
        this.order = [...this.members.keys()]
        for (let i = this.order.length - 1; i > 0; i--) {
          const j = Math.floor(this.rng() * (i + 1));
          [this.order[i], this.order[j]] = [this.order[j], this.order[i]]
        }
        this.orderAt = 0
        if (this.order.length === 0) return undefined
      }
      const m = this.members.get(this.order[this.orderAt++])
      if (m != null) return m
    }
  }

  /** Pings `m`; no answer: asks SWIM_INDIRECT others; none: suspects it */
  private async probe (m: Member): Promise<void> {
    this.stats.pings++
    const scale = 1 + this.health
    // A suspect is told of its suspicion in the ping itself, so it refutes at once (Lifeguard's buddy system)
    const tell = m.state === 'suspect' ? [{ state: MemberState.SUSPECT, nodeId: m.id, startedAtMs: m.advert.startedAtMs, seq: m.advert.seq, from: this.init.nodeId }] : undefined
    const direct = await this.ping(m.id, this.pingTimeoutMs * scale, tell)
    if (direct === 'ack') {
      this.init.table.touch(m.id)
      this.healthier()
      return
    }
    if (direct === 'timeout') {
      const helpers = this.sample(SWIM_INDIRECT, x => x.id !== m.id && x.state === 'alive')
      if (helpers.length > 0) {
        this.stats.indirect++
        const left = Math.max(50, (this.periodMs - this.pingTimeoutMs) * scale)
        const answers = await Promise.all(helpers.map(async h => await this.request(h.id, { kind: SwimKind.PING_REQ, target: m.id }, left).then(r => r?.kind ?? null, () => null)))
        if (answers.includes(SwimKind.ACK)) return
        // Nobody answered at all, not even a NACK: this node may be the slow one (Lifeguard's
        // local health): it waits longer from now on, and probes less often, until pings go through.
        if (answers.every(a => a == null)) this.sicker()
      }
    }
    // still the same incarnation, not refuted meanwhile
    const now = this.members.get(m.id)
    if (now == null || now !== m) return
    this.stats.pingFailures++
    this.suspect(m, this.init.nodeId)
  }

  private async reconnect (): Promise<void> {
    const ids = [...this.tombstones.keys()]
    const id = ids[Math.floor(this.rng() * ids.length)]
    if (await this.ping(id, this.pingTimeoutMs) !== 'ack') return
    const told = this.deadNotice(id)
    if (told != null) this.send(id, { kind: SwimKind.GOSSIP, updates: [told] })
  }

  /** A direct ping: 'ack', 'timeout', or 'gone' (nobody subscribes: the process or its NATS connection is gone) */
  private async ping (id: string, timeoutMs: number, tell?: Array<Encodable<MemberUpdate>>): Promise<'ack' | 'timeout' | 'gone'> {
    try {
      const r = await this.request(id, { kind: SwimKind.PING, ...(tell != null ? { updates: [...tell, ...this.piggyback()] } : {}) }, timeoutMs)
      return r?.kind === SwimKind.ACK && r.from === id ? 'ack' : 'timeout'
    } catch (err: any) {
      return isNoResponders(err) ? 'gone' : 'timeout'
    }
  }

  // ------------------------------------------------------------------ join and sync

  /**
   * Asks one random agent (queue group on SWIM_JOIN_SUBJECT) for the membership, paged, giving it
   * this node's entry. Agents started together may each find only themselves: a node that knows no
   * member asks again every period (tick), so they meet within a few.
   */
  private async join (log = true): Promise<boolean> {
    this.lastJoinMs = this.now()
    for (let attempt = 0; attempt < 4; attempt++) {
      try {
        const r = await this.requestRaw(SWIM_JOIN_SUBJECT, { kind: SwimKind.SYNC, updates: [this.selfUpdate()], digest: this.digest() }, 2000)
        // its own request, handed back by the queue group: ask again
        if (r == null || r.from === this.init.nodeId || r.kind !== SwimKind.SYNC_REPLY) continue
        await this.pullPages(r)
        this.stats.joined++
        if (log) this.log.info({ via: r.from, members: this.members.size + 1 }, 'joined the membership')
        return true
      } catch (err: any) {
        if (!isNoResponders(err)) this.log.debug({ err: String(err?.message ?? err) }, 'membership join attempt failed')
        return false
      }
    }
    return false
  }

  /**
   * Push-pull with a random alive member; every other round with whichever agent the queue group
   * hands the request to (it joins two groups that formed apart), and now and then with a member
   * once declared dead (a healed partition)
   */
  private async periodicSync (): Promise<void> {
    this.syncRounds++
    let id: string | undefined
    if (this.tombstones.size > 0 && this.rng() < 0.25) {
      const ids = [...this.tombstones.keys()]
      id = ids[Math.floor(this.rng() * ids.length)]
    } else if (this.syncRounds % 2 === 1) {
      id = this.sample(1, m => m.state === 'alive')[0]?.id
    }
    try {
      if (id == null) {
        await this.join(false)
        return
      }
      const r = await this.request(id, { kind: SwimKind.SYNC, updates: [this.selfUpdate()], digest: this.digest() }, 2000)
      if (r != null && r.kind === SwimKind.SYNC_REPLY) await this.pullPages(r)
    } catch {}
  }

  private async pullPages (first: SwimMessage): Promise<void> {
    let r: SwimMessage | undefined = first
    for (let pages = 0; r != null && pages < 1000; pages++) {
      this.onUpdates(r.updates, r.from)
      if (r.offset === 0 || !this.running) return
      r = await this.request(r.from, { kind: SwimKind.SYNC, offset: r.offset }, 2000)
    }
  }

  /** SHA-256 of the membership as this node sees it (ids and incarnations, alive and suspect) */
  digest (): Uint8Array {
    const h = createHash('sha256')
    const rows = [...this.members.values()].map(m => `${m.id}:${m.advert.startedAtMs}:${m.advert.seq}:${m.state}`)
    rows.push(`${this.init.nodeId}:${this.self.advert.startedAtMs}:${this.self.advert.seq}:alive`)
    for (const r of rows.sort()) h.update(r + '\n')
    return h.digest()
  }

  /** One page of the membership from `offset`: this node, then members by id */
  private syncPage (offset: number): { updates: Array<Encodable<MemberUpdate>>, next: number } {
    const all = [this.selfUpdate(), ...[...this.members.values()].sort((a, b) => a.id < b.id ? -1 : 1).map(m => this.updateOf(m))]
    const updates: Array<Encodable<MemberUpdate>> = []
    let bytes = 0
    let i = offset
    for (; i < all.length; i++) {
      const size = (all[i].member?.advert?.length ?? 0) + 200
      if (updates.length > 0 && bytes + size > SYNC_PAGE_BYTES) break
      updates.push(all[i])
      bytes += size
    }
    return { updates, next: i < all.length ? i : 0 }
  }

  private updateOf (m: Member): Encodable<MemberUpdate> {
    return { state: m.state === 'alive' ? MemberState.ALIVE : MemberState.SUSPECT, nodeId: m.id, startedAtMs: m.advert.startedAtMs, seq: m.advert.seq, member: m.signed, from: this.init.nodeId }
  }

  // ------------------------------------------------------------------ messages

  private onMessage (data: Uint8Array, respond?: (b: Uint8Array) => boolean): void {
    if (!this.running) return
    this.stats.received++
    this.stats.bytesIn += data.length
    let msg: SwimMessage
    try {
      msg = decode('SwimMessage', data)
      if (typeof msg.from !== 'string' || msg.from.length === 0 || msg.from.length > 128) throw new Error('no sender')
    } catch (err: any) {
      this.stats.rejected++
      this.log.debug({ code: 'FNMESH_ERR_DECODE', err: String(err?.message ?? err) }, 'ignored a malformed membership message')
      return
    }
    const known = this.members.has(msg.from)
    this.onUpdates(msg.updates, msg.from)
    if (msg.kind === SwimKind.SYNC && msg.offset === 0 && !known && this.members.has(msg.from)) this.init.onJoined?.(msg.from)
    // A sender this node holds dead (it hung, or was cut off, and is back) is told so, to refute:
    // on the answer, or in a message of its own when what it sent takes none (GOSSIP).
    const told = this.deadNotice(msg.from)
    if (told != null && respond == null) this.send(msg.from, { kind: SwimKind.GOSSIP, updates: [told] })
    const reply = (m: Encodable<SwimMessage>): void => {
      if (respond == null) return
      const updates = m.updates ?? this.piggyback()
      const bytes = encode('SwimMessage', { ...m, from: this.init.nodeId, updates: told != null ? [told, ...updates] : updates })
      this.stats.sent++
      this.stats.bytesOut += bytes.length
      respond(bytes)
    }
    switch (msg.kind) {
      case SwimKind.PING:
        reply({ kind: SwimKind.ACK })
        return
      case SwimKind.PING_REQ: {
        if (msg.target === this.init.nodeId) { reply({ kind: SwimKind.ACK }); return }
        void this.ping(msg.target, Math.max(50, this.pingTimeoutMs)).then(r => { reply({ kind: r === 'ack' ? SwimKind.ACK : SwimKind.NACK }) })
        return
      }
      case SwimKind.SYNC: {
        // Its own join handed back by the queue group, or one that reaches this node before it has
        // joined itself (agents started together): its membership is nobody's yet, and the asker
        // taking it would make a group apart. NACK: the asker asks again.
        if (msg.from === this.init.nodeId || !this.joinedOnce) { reply({ kind: SwimKind.NACK, updates: [] }); return }
        if (msg.offset === 0 && msg.digest.length > 0 && Buffer.from(msg.digest).equals(this.digest())) {
          reply({ kind: SwimKind.SYNC_REPLY, updates: [], offset: 0 })
          return
        }
        const page = this.syncPage(msg.offset)
        reply({ kind: SwimKind.SYNC_REPLY, updates: page.updates, offset: page.next })
        return
      }
      default:
    }
  }

  /**
   * A DEAD about `id` if this node holds it dead: it still talks, so it missed its death (paused
   * or cut off past its suspicion while the DEAD broadcasts went round); told on the answer, it
   * refutes. Otherwise nobody would take it back: its entry of that incarnation is ignored here.
   */
  private deadNotice (id: string): Encodable<MemberUpdate> | undefined {
    const t = this.tombstones.get(id)
    if (t == null || this.members.has(id)) return undefined
    return { state: MemberState.DEAD, nodeId: id, startedAtMs: t.startedAtMs, seq: t.seq, from: this.init.nodeId }
  }

  private onUpdates (updates: readonly MemberUpdate[], from: string): void {
    for (const u of updates) {
      try {
        this.apply(u)
      } catch (err: any) {
        this.stats.rejected++
        this.log.debug({ from, code: err?.code ?? 'FNMESH_ERR_DECODE', err: String(err?.message ?? err) }, 'ignored a membership update')
      }
    }
  }

  /** Applies one update by SWIM's rules; throws on one that does not check out */
  apply (u: MemberUpdate): void {
    if (typeof u.nodeId !== 'string' || u.nodeId.length === 0 || u.nodeId.length > 128) throw new Error('no node id')
    if (u.nodeId === this.init.nodeId) {
      if (u.state !== MemberState.ALIVE) this.refute(u)
      return
    }
    const m = this.members.get(u.nodeId)
    const tomb = this.tombstones.get(u.nodeId)
    switch (u.state) {
      case MemberState.ALIVE: {
        if (m != null && !newer(u, m.advert)) return
        if (tomb != null && !newer(u, tomb)) return
        const advert = this.check(u)
        this.alive(advert, u.member)
        return
      }
      case MemberState.SUSPECT: {
        if (m == null) {
          // unknown: its entry (carried on sync pages) makes it a member first
          if (u.member?.advert?.length > 0 && (tomb == null || newer(u, tomb))) this.alive(this.check(u), u.member)
          const added = this.members.get(u.nodeId)
          if (added != null && u.seq === added.advert.seq && u.startedAtMs === added.advert.startedAtMs) this.suspect(added, u.from)
          return
        }
        if (newer(m.advert, u)) return
        this.suspect(m, typeof u.from === 'string' && u.from.length > 0 && u.from.length <= 128 ? u.from : '?')
        return
      }
      case MemberState.DEAD: {
        // Only about a member held (memberlist's rule): a DEAD is not signed, so a tombstone is
        // only ever of an incarnation this node held. One of a made-up later run would keep the
        // member's every entry out (its refutations included) for SWIM_TOMBSTONE_MS.
        if (m == null) return
        if (newer(m.advert, u)) return
        this.dead(m, u.from)
        return
      }
      default:
        throw new Error(`unknown state ${String(u.state)}`)
    }
  }

  /** The member's own signed entry, decoded and checked: its id, incarnation, values and signature */
  private check (u: MemberUpdate): CapacityAdvert {
    const s = u.member
    if (s == null || s.advert.length === 0 || s.advert.length > 64 * 1024 || s.signature.length !== 64) throw new Error('no signed entry')
    const advert = decode('CapacityAdvert', s.advert)
    if (advert.nodeId !== u.nodeId || advert.startedAtMs !== u.startedAtMs || advert.seq !== u.seq) throw new Error('entry does not match the update')
    if (!inRange(advert, this.now()) || advert.refusing.length > 1024 || (advert.addrs ?? []).length > 32 || (advert.addrs ?? []).some(a => a.length > 256)) throw new Error('entry values out of range')
    const key = this.publicKey(u.nodeId)
    if (key == null || !edVerify(null, Buffer.concat([DOMAIN, s.advert]), key, s.signature)) throw new Error('bad signature')
    return advert
  }

  private publicKey (nodeId: string): KeyObject | null {
    let key = this.keys.get(nodeId)
    if (key === undefined) {
      const k = ed25519KeyOf(nodeId)
      key = typeof k === 'string' ? null : k
      if (this.keys.size > SWIM_MAX_MEMBERS) this.keys.clear()
      this.keys.set(nodeId, key)
    }
    return key
  }

  private alive (advert: CapacityAdvert, signed: SignedAdvert): void {
    const id = advert.nodeId
    const m = this.members.get(id)
    const update: Encodable<MemberUpdate> = { state: MemberState.ALIVE, nodeId: id, startedAtMs: advert.startedAtMs, seq: advert.seq, member: signed }
    if (advert.draining) {
      // its last entry: gone from routing at once, remembered so older entries stay ignored
      if (m != null) { clearTimeout(m.suspicion); this.members.delete(id) }
      this.tombstones.set(id, { startedAtMs: advert.startedAtMs, seq: advert.seq, atMs: this.now() })
      this.init.table.upsert(advert)
      this.enqueue(id, update)
      if (m != null) this.log.debug({ peer: id, name: advert.name }, 'peer left')
      return
    }
    if (m == null && this.members.size >= SWIM_MAX_MEMBERS) throw new Error('membership full')
    if (m != null) clearTimeout(m.suspicion)
    this.tombstones.delete(id)
    this.members.set(id, { id, advert, signed, state: 'alive', since: this.now() })
    const result = this.init.table.upsert(advert)
    if (result === 'added') this.log.debug({ peer: id, name: advert.name, slots: advert.slots }, 'peer joined')
    // Held dead before and its tombstone since pruned (away past SWIM_TOMBSTONE_MS: a long pause
    // or partition): the table still ignores that incarnation, so it would be a member never
    // routed to. Told it was declared dead, it refutes with a newer one the table takes.
    if (result === 'stale' && m == null) this.send(id, { kind: SwimKind.GOSSIP, updates: [{ state: MemberState.DEAD, nodeId: id, startedAtMs: advert.startedAtMs, seq: advert.seq, from: this.init.nodeId }] })
    this.init.onMember?.(advert)
    this.enqueue(id, update)
  }

  /**
   * Lifeguard's suspicion timeout: from max (one accuser, which may be a starved node) down to min
   * as independent accusers confirm it (SWIM_SUSPICION_CONFIRMATIONS of them), on a log scale
   */
  suspicionTimeoutMs (confirmations: number): number {
    const n = this.members.size + 1
    const min = Math.max(SWIM_SUSPICION_MIN_MS, SWIM_SUSPICION_MULT * Math.log10(n + 1) * this.periodMs)
    const max = SWIM_SUSPICION_MAX_MULT * min
    const k = SWIM_SUSPICION_CONFIRMATIONS
    if (confirmations >= k) return min
    return Math.max(min, Math.round(max - (max - min) * Math.log(confirmations + 1) / Math.log(k + 1)))
  }

  private suspect (m: Member, by: string): void {
    if (m.state === 'suspect') {
      // Another accuser: the suspicion runs out sooner, and its confirmation is passed on
      if (m.confirmers == null || m.confirmers.has(by) || m.confirmers.size > SWIM_SUSPICION_CONFIRMATIONS) return
      m.confirmers.add(by)
      this.armSuspicion(m)
      this.enqueue(m.id, { state: MemberState.SUSPECT, nodeId: m.id, startedAtMs: m.advert.startedAtMs, seq: m.advert.seq, from: by })
      return
    }
    this.stats.suspected++
    const replaced: Member = { ...m, state: 'suspect', since: this.now(), confirmers: new Set([by]) }
    this.members.set(m.id, replaced)
    this.init.table.suspect(m.id)
    this.armSuspicion(replaced)
    // What this node found is logged at info; what it heard, at debug: every node hears every
    // change, and at info a mesh of N would write N lines for each one.
    this.log[by === this.init.nodeId ? 'info' : 'debug']({ peer: m.id, name: m.advert.name, by }, 'peer suspected')
    this.enqueue(m.id, { state: MemberState.SUSPECT, nodeId: m.id, startedAtMs: m.advert.startedAtMs, seq: m.advert.seq, from: by })
  }

  /** (Re)sets the suspicion's timer: its timeout for the confirmations so far, from when it began */
  private armSuspicion (m: Member): void {
    clearTimeout(m.suspicion)
    const left = Math.max(0, m.since + this.suspicionTimeoutMs((m.confirmers?.size ?? 1) - 1) - this.now())
    m.suspicion = setTimeout(() => {
      if (this.members.get(m.id) === m) this.dead(m, this.init.nodeId)
    }, left)
    m.suspicion.unref?.()
  }

  private dead (m: Member, by: string): void {
    clearTimeout(m.suspicion)
    this.members.delete(m.id)
    this.tombstones.set(m.id, { startedAtMs: m.advert.startedAtMs, seq: m.advert.seq, atMs: this.now() })
    this.stats.dead++
    this.init.table.remove(m.id, 'dead')
    this.log[by === this.init.nodeId ? 'info' : 'debug']({ peer: m.id, name: m.advert.name, by }, 'peer dead')
    this.enqueue(m.id, { state: MemberState.DEAD, nodeId: m.id, startedAtMs: m.advert.startedAtMs, seq: m.advert.seq, from: by })
  }

  private pruneTombstones (): void {
    const cut = this.now() - SWIM_TOMBSTONE_MS
    for (const [id, t] of this.tombstones) if (t.atMs < cut) this.tombstones.delete(id)
  }

  // ------------------------------------------------------------------ dissemination

  /** Queues `update` for piggybacking (it replaces anything queued about the same node) and passes it on soon */
  private enqueue (id: string, update: Encodable<MemberUpdate>): void {
    this.broadcasts.set(id, { update, transmits: 0, bytes: (update.member?.advert?.length ?? 0) + 120 })
    if (this.gossipTimer == null && this.running) {
      this.gossipTimer = setTimeout(() => {
        this.gossipTimer = undefined
        this.gossip()
      }, SWIM_GOSSIP_COALESCE_MS)
    }
  }

  /** Sends pending updates to SWIM_GOSSIP_FANOUT random members (not `except`) */
  private gossip (except?: string): void {
    if (!this.running || this.broadcasts.size === 0) return
    for (const m of this.sample(SWIM_GOSSIP_FANOUT, x => x.id !== except && x.state === 'alive')) {
      const updates = this.piggyback()
      if (updates.length === 0) break
      this.send(m.id, { kind: SwimKind.GOSSIP, updates })
    }
  }

  /** The updates to carry on the next message: least sent first, each retired after its limit */
  private piggyback (): Array<Encodable<MemberUpdate>> {
    if (this.broadcasts.size === 0) return []
    const limit = Math.max(1, Math.ceil(SWIM_RETRANSMIT_MULT * Math.log10(this.members.size + 2)))
    const list = [...this.broadcasts.entries()].sort((a, b) => a[1].transmits - b[1].transmits)
    const out: Array<Encodable<MemberUpdate>> = []
    let bytes = 0
    for (const [id, b] of list) {
      if (out.length >= SWIM_MAX_PIGGYBACK || bytes + b.bytes > 64 * 1024) break
      out.push(b.update)
      bytes += b.bytes
      if (++b.transmits >= limit) this.broadcasts.delete(id)
    }
    return out
  }

  private sample (k: number, ok: (m: Member) => boolean): Member[] {
    const pool = [...this.members.values()].filter(ok)
    const out: Member[] = []
    while (out.length < k && pool.length > 0) {
      const i = Math.floor(this.rng() * pool.length)
      out.push(pool[i])
      pool[i] = pool[pool.length - 1]
      pool.pop()
    }
    return out
  }

  private send (id: string, m: Encodable<SwimMessage>): void {
    if (this.init.nc.isClosed()) return
    const bytes = encode('SwimMessage', { ...m, from: this.init.nodeId })
    this.stats.sent++
    this.stats.bytesOut += bytes.length
    this.init.nc.publish(swimSubject(id), bytes)
  }

  private async request (id: string, m: Encodable<SwimMessage>, timeoutMs: number): Promise<SwimMessage | undefined> {
    return await this.requestRaw(swimSubject(id), m, timeoutMs)
  }

  private async requestRaw (subject: string, m: Encodable<SwimMessage>, timeoutMs: number): Promise<SwimMessage | undefined> {
    const bytes = encode('SwimMessage', { ...m, from: this.init.nodeId, updates: m.updates ?? this.piggyback() })
    this.stats.sent++
    this.stats.bytesOut += bytes.length
    const r = await this.init.nc.request(subject, bytes, { timeout: timeoutMs })
    this.stats.received++
    this.stats.bytesIn += r.data.length
    try {
      const msg = decode('SwimMessage', r.data)
      if (msg.kind !== SwimKind.SYNC_REPLY) this.onUpdates(msg.updates, msg.from)
      return msg
    } catch {
      this.stats.rejected++
      return undefined
    }
  }
}
