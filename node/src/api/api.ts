/**
 * The control API on NATS. `fnmesh.api.nodes`, `fnmesh.api.usage` and `fnmesh.api.export` are
 * answered by one agent of the queue group; `<subject>.<node id>` by that agent; `fnmesh.api.meter`
 * by every agent. While every live member owns every range (R+1 members or fewer), usage and
 * export come from the answering agent's own replica of every record, so gone nodes' records
 * count too; `missing` names live peers it has not finished an anti-entropy session with yet.
 * In a larger mesh no agent holds every record (owner-based placement): the answering agent asks
 * every live member for its ranges (`UsageQuery.parts` on `fnmesh.api.usage.<node id>`) and
 * merges them, each (node, hour) once (queries/parts.ts); `missing` then names members that did
 * not answer. An export page likewise asks every live member for its own records after the
 * cursor (`ExportQuery.local` on `fnmesh.api.export.<node id>`) and merges them by record key
 * (queries/export.ts), so every record comes once, from any agent, a page at a time.
 */
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node'
import { decode, encode, UsageBucket, type Encodable, type ExportPage, type ExportQuery, type UsageReply } from '../../../proto/codec.js'
import { UsageError, toErrorInfo } from '../../../proto/errors.js'
import { AGENTS_QUEUE, API_EXPORT_SUBJECT, API_METER_SUBJECT, API_NODES_SUBJECT, API_USAGE_SUBJECT, nodeSubject } from '../../../proto/subjects.js'
import type { PeerTable } from '../gossip/peer-table.js'
import type { Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { Metering } from '../metering/metering.js'
import { gbSeconds } from '../metering/records/rollup.js'
import type { BucketName, UsageResult } from '../metering/queries/usage.js'
import { mergeParts } from '../metering/queries/parts.js'
import { EXPORT_PAGE, MAX_PAGE, byteOrder, legLimit, mergeLegs, type ExportLeg } from '../metering/queries/export.js'
import { parseRecordKey } from '../metering/records/keys.js'

export interface ApiComponents {
  nc: NatsConnection
  nodeId: string
  name: string
  table: PeerTable
  metering: Metering
  logger: Logger
}

/** Bucket rows in one usage reply at most (a reply must fit in one NATS message) */
const MAX_BUCKET_ROWS = 50_000
/** Rows of one fan-out leg at most (about 60 bytes each: a leg fits in one NATS message) */
const MAX_PART_ROWS = 100_000
/** Longest wait for one member's leg of a mesh-wide usage query */
const PART_TIMEOUT_MS = 4000

const BUCKETS: Record<number, BucketName | undefined> = {
  [UsageBucket.BUCKET_MINUTE]: 'minute',
  [UsageBucket.BUCKET_HOUR]: 'hour',
  [UsageBucket.BUCKET_DAY]: 'day'
}

export class ControlApi implements Startable {
  private subs: Subscription[] = []

  constructor (private readonly c: ApiComponents) {}

  start (): void {
    if (this.subs.length > 0) return
    const { nc, nodeId } = this.c
    const on = (subject: string, queue: string | undefined, handler: (msg: Msg) => Promise<Uint8Array>): Subscription =>
      nc.subscribe(subject, {
        queue,
        callback: (err, msg) => {
          if (err != null) return
          handler(msg).then(bytes => { msg.respond(bytes) }, (e) => {
            this.c.logger.warn({ subject, err: String(e?.message ?? e) }, 'control request failed')
          })
        }
      })
    this.subs = [
      on(API_NODES_SUBJECT, AGENTS_QUEUE, async () => this.nodes()),
      on(API_USAGE_SUBJECT, AGENTS_QUEUE, async (msg) => await this.usage(msg)),
      on(nodeSubject(API_USAGE_SUBJECT, nodeId), undefined, async (msg) => await this.usage(msg)),
      on(API_EXPORT_SUBJECT, AGENTS_QUEUE, async (msg) => await this.exportPage(msg)),
      on(nodeSubject(API_EXPORT_SUBJECT, nodeId), undefined, async (msg) => await this.exportPage(msg)),
      on(API_METER_SUBJECT, undefined, async (msg) => await this.meterStatus(msg)),
      on(nodeSubject(API_METER_SUBJECT, nodeId), undefined, async (msg) => await this.meterStatus(msg))
    ]
  }

  isStarted (): boolean {
    return this.subs.length > 0
  }

  stop (): void {
    for (const s of this.subs) s.unsubscribe()
    this.subs = []
  }

  private nodes (): Uint8Array {
    const now = Date.now()
    return encode('NodesReply', {
      nodes: this.c.table.all().map(e => ({ advert: e.advert, lastSeenMs: e.self ? 0 : Math.max(0, now - e.lastSeenMs), self: e.self }))
    })
  }

  private async usage (msg: Msg): Promise<Uint8Array> {
    try {
      const q = decode('UsageQuery', msg.data)
      const options = { fn: q.function, sinceMs: q.sinceMs, untilMs: q.untilMs, bucket: BUCKETS[q.bucket] }
      if (q.parts) {
        const p = await this.c.metering.usageParts(options)
        if (p.rows > MAX_PART_ROWS) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Usage on node ${this.c.nodeId} has ${p.rows} rows, over the limit of ${MAX_PART_ROWS}: use a coarser bucket, a shorter range or --fn`)
        return encode('UsageReply', { parts: p.parts, answered: [this.c.nodeId] })
      }
      let r: UsageResult
      let answered = [this.c.nodeId]
      let missing: string[]
      if (this.c.metering.holdsEverything()) {
        r = await this.c.metering.usage(options)
        missing = this.c.metering.unsynced()
      } else {
        ({ r, answered, missing } = await this.fanOut(msg.data, options))
      }
      if (r.buckets.length > MAX_BUCKET_ROWS) {
        throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Usage has ${r.buckets.length} rows of ${String(BUCKETS[q.bucket])} buckets, over the limit of ${MAX_BUCKET_ROWS}: use a coarser bucket, a shorter range or --fn`)
      }
      const names = new Map(this.c.table.all().map(e => [e.advert.nodeId, e.advert.name]))
      const reply: Encodable<UsageReply> = {
        functions: r.functions.map(f => ({ name: f.name, invocations: f.invocations, errors: f.errors, billedMs: f.billedMs, gbSeconds: gbSeconds(f.mbMs), coldStarts: f.coldStarts, byNode: f.byNode, mbMs: f.mbMs, bindingCalls: f.bindingCalls, bindingBytes: f.bindingBytes })),
        nodes: r.nodes.map(n => ({ nodeId: n.nodeId, name: names.get(n.nodeId) ?? '', invocations: n.invocations, errors: n.errors, billedMs: n.billedMs, gbSeconds: gbSeconds(n.mbMs), coldStarts: n.coldStarts, mbMs: n.mbMs })),
        answered,
        missing,
        buckets: r.buckets
      }
      return encode('UsageReply', reply)
    } catch (err) {
      return encode('UsageReply', { error: toErrorInfo(err) })
    }
  }

  /** Asks every live member for its ranges (this node's own read here) and merges them */
  private async fanOut (query: Uint8Array, options: Parameters<Metering['usageParts']>[0]): Promise<{ r: UsageResult, answered: string[], missing: string[] }> {
    const self = this.c.nodeId
    const body = encode('UsageQuery', { ...decode('UsageQuery', query), parts: true })
    const peers = this.c.metering.members().filter(m => m !== self)
    const answered = [self]
    const missing: string[] = []
    const legs = await Promise.all([
      this.c.metering.usageParts(options).then(p => p.parts),
      ...peers.map(async (peer) => {
        try {
          const reply = decode('UsageReply', (await this.c.nc.request(nodeSubject(API_USAGE_SUBJECT, peer), body, { timeout: PART_TIMEOUT_MS })).data)
          if (reply.error != null && reply.error.code !== '') {
            if (reply.error.code === 'FNMESH_ERR_INVALID_ARGUMENT') throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', reply.error.errorMessage)
            throw new Error(reply.error.errorMessage)
          }
          answered.push(peer)
          return reply.parts
        } catch (err: any) {
          if (err instanceof UsageError) throw err
          missing.push(peer)
          this.c.logger.debug({ peer, err: String(err?.message ?? err) }, 'a member did not answer its part of a usage query')
          return []
        }
      })
    ])
    return { r: mergeParts(legs, options.fn, options.bucket), answered: answered.sort(), missing: missing.sort() }
  }

  private async exportPage (msg: Msg): Promise<Uint8Array> {
    try {
      const q = decode('ExportQuery', msg.data)
      const options = { fn: q.function, sinceMs: q.sinceMs, untilMs: q.untilMs, afterKey: q.afterKey, limit: q.limit > 0 ? q.limit : undefined }
      if (q.local || this.c.metering.holdsEverything()) {
        const page = await this.c.metering.exportPage(options)
        return encode('ExportPage', { records: page.records, nextKey: page.nextKey, nodeId: this.c.nodeId, keys: q.local ? page.keys : [] })
      }
      const { page, missing } = await this.exportFanOut(q, pageLimit(options.limit))
      return encode('ExportPage', { records: page.records, nextKey: page.nextKey, nodeId: this.c.nodeId, missing })
    } catch (err) {
      return encode('ExportPage', { error: toErrorInfo(err), nodeId: this.c.nodeId })
    }
  }

  /**
   * One export page of the whole mesh (owner-based placement): every live member's own records
   * after the cursor (this node's read here), merged by record key (queries/export.ts mergeLegs).
   * At most members x legLimit records are in memory, whatever the ledgers hold.
   */
  private async exportFanOut (q: ExportQuery, limit: number): Promise<{ page: ReturnType<typeof mergeLegs>, missing: string[] }> {
    const self = this.c.nodeId
    const members = this.c.metering.members()
    const per = legLimit(limit, members.length, this.c.metering.replicas() + 1)
    const body = encode('ExportQuery', { function: q.function, sinceMs: q.sinceMs, untilMs: q.untilMs, afterKey: q.afterKey, limit: per, local: true })
    const missing: string[] = []
    const ask = async (peer: string): Promise<ExportLeg> => {
      const reply = decode('ExportPage', (await this.c.nc.request(nodeSubject(API_EXPORT_SUBJECT, peer), body, { timeout: PART_TIMEOUT_MS })).data, { maxBytes: 16 * 1024 * 1024 })
      if (reply.error != null && reply.error.code !== '') {
        if (reply.error.code === 'FNMESH_ERR_INVALID_ARGUMENT') throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', reply.error.errorMessage)
        throw new Error(reply.error.errorMessage)
      }
      checkLeg(reply, q.afterKey)
      return { records: reply.records, keys: reply.keys, nextKey: reply.nextKey }
    }
    const legs = await Promise.all([
      this.c.metering.exportPage({ fn: q.function, sinceMs: q.sinceMs, untilMs: q.untilMs, afterKey: q.afterKey, limit: per }),
      ...members.filter(m => m !== self).map(async (peer): Promise<ExportLeg> => {
        // One more try: a member that misses its leg leaves out records only it holds.
        for (let attempt = 0; ; attempt++) {
          try {
            return await ask(peer)
          } catch (err: any) {
            if (err instanceof UsageError) throw err
            if (attempt === 0) continue
            missing.push(peer)
            this.c.logger.warn({ peer, err: String(err?.message ?? err) }, 'a member did not answer its leg of an export page')
            return { records: [], keys: [], nextKey: '' }
          }
        }
      })
    ])
    return { page: mergeLegs(legs, limit), missing: missing.sort() }
  }

  private async meterStatus (msg: Msg): Promise<Uint8Array> {
    try {
      const q = msg.data.byteLength > 0 ? decode('MeterStatusQuery', msg.data) : undefined
      return encode('MeterStatus', await this.c.metering.status(q?.resetLag === true))
    } catch (err) {
      return encode('MeterStatus', { nodeId: this.c.nodeId, error: toErrorInfo(err) })
    }
  }
}

const pageLimit = (limit: number | undefined): number => Math.min(Math.max(1, limit ?? EXPORT_PAGE), MAX_PAGE)

/**
 * A member's leg is untrusted input: one key per record, in ledger order, after the cursor, each
 * naming its record's node, minute and invocation id
 */
function checkLeg (leg: ExportPage, afterKey: string): void {
  if (leg.keys.length !== leg.records.length) throw new Error(`an export leg has ${leg.keys.length} keys for ${leg.records.length} records`)
  let prev = afterKey
  leg.keys.forEach((k, i) => {
    const key = parseRecordKey(k)
    const r = leg.records[i]
    if (key == null || key.nodeId !== r.nodeId || key.invocationId !== r.invocationId || key.minuteMs !== Math.floor(Number(r.startMs) / 60_000) * 60_000) throw new Error('an export leg has a key that does not name its record')
    if (prev !== '' && byteOrder(k, prev) <= 0) throw new Error('an export leg is not in key order after the cursor')
    prev = k
  })
}
