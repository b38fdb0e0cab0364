/**
 * The control API on NATS. `fnmesh.api.nodes`, `fnmesh.api.usage` and `fnmesh.api.export` are
 * answered by one agent of the queue group; `<subject>.<node id>` by that agent; `fnmesh.api.meter`
 * by every agent. Usage and export come from the answering agent's own replica of every record
 * (replication and anti-entropy make them all hold the same ones), so gone nodes' records count
 * too; `missing` names live peers it has not finished an anti-entropy session with yet.
 */
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node'
import { decode, encode, UsageBucket, type Encodable, type UsageReply } from '../../../proto/codec.js'
import { UsageError, toErrorInfo } from '../../../proto/errors.js'
import { AGENTS_QUEUE, API_EXPORT_SUBJECT, API_METER_SUBJECT, API_NODES_SUBJECT, API_USAGE_SUBJECT, nodeSubject } from '../../../proto/subjects.js'
import type { PeerTable } from '../gossip/peer-table.js'
import type { Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { Metering } from '../metering/metering.js'
import { gbSeconds } from '../metering/records/rollup.js'
import type { BucketName } from '../metering/queries/usage.js'

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
      const r = await this.c.metering.usage({ fn: q.function, sinceMs: q.sinceMs, untilMs: q.untilMs, bucket: BUCKETS[q.bucket] })
      if (r.buckets.length > MAX_BUCKET_ROWS) {
        throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Usage has ${r.buckets.length} rows of ${String(BUCKETS[q.bucket])} buckets, over the limit of ${MAX_BUCKET_ROWS}: use a coarser bucket, a shorter range or --fn`)
      }
      const names = new Map(this.c.table.all().map(e => [e.advert.nodeId, e.advert.name]))
      const reply: Encodable<UsageReply> = {
        functions: r.functions.map(f => ({ name: f.name, invocations: f.invocations, errors: f.errors, billedMs: f.billedMs, gbSeconds: gbSeconds(f.mbMs), coldStarts: f.coldStarts, byNode: f.byNode, mbMs: f.mbMs, bindingCalls: f.bindingCalls, bindingBytes: f.bindingBytes })),
        nodes: r.nodes.map(n => ({ nodeId: n.nodeId, name: names.get(n.nodeId) ?? '', invocations: n.invocations, errors: n.errors, billedMs: n.billedMs, gbSeconds: gbSeconds(n.mbMs), coldStarts: n.coldStarts, mbMs: n.mbMs })),
        answered: [this.c.nodeId],
        missing: this.c.metering.unsynced(),
        buckets: r.buckets
      }
      return encode('UsageReply', reply)
    } catch (err) {
      return encode('UsageReply', { error: toErrorInfo(err) })
    }
  }

  private async exportPage (msg: Msg): Promise<Uint8Array> {
    try {
      const q = decode('ExportQuery', msg.data)
      const page = await this.c.metering.exportPage({ fn: q.function, sinceMs: q.sinceMs, untilMs: q.untilMs, afterKey: q.afterKey, limit: q.limit > 0 ? q.limit : undefined })
      return encode('ExportPage', { records: page.records, nextKey: page.nextKey, nodeId: this.c.nodeId })
    } catch (err) {
      return encode('ExportPage', { error: toErrorInfo(err), nodeId: this.c.nodeId })
    }
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
