/**
 * Ships function log lines from this agent to NATS: lines are gathered per function for a short
 * interval and published as one `LogBatch` on `fnmesh.logs.<function>` (core NATS: a slow or
 * absent log reader never slows an invocation). The JetStream stream `fnmesh_logs` keeps them
 * for `fnmesh logs NAME`; `--follow` readers get them live. `fnmesh init` creates the stream
 * (agents never create JetStream assets).
 */
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { encode, type Encodable, type LogLine } from '../../../proto/codec.js'
import { LOGS_STREAM, LOGS_WILDCARD, logSubject } from '../../../proto/subjects.js'
import type { Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { FunctionLogLine } from '../sandbox/logs.js'

export interface LogShipperComponents {
  nc: NatsConnection
  nodeId: string
  logger: Logger
}

export interface LogShipperInit {
  /** Lines wait at most this long before they are published. @default 50 */
  flushMs?: number
  /** A function's pending lines are published at once past this many bytes. @default 262144 */
  maxBatchBytes?: number
  /** Lines waiting to be published across functions; past this, new lines are dropped (and counted). @default 8 MiB */
  maxPendingBytes?: number
  /** Retention of the log stream when the agent creates it. @default 24 h */
  streamMaxAgeMs?: number
  /** Size cap of the log stream when the agent creates it (oldest lines go first). @default 256 MiB */
  streamMaxBytes?: number
}

interface Pending { lines: Array<Encodable<LogLine>>, bytes: number }

export class LogShipper implements Startable {
  private readonly pending = new Map<string, Pending>()
  private readonly opts: Required<LogShipperInit>
  private timer: NodeJS.Timeout | undefined
  private pendingBytes = 0
  private started = false
  /** lines dropped because too many were waiting */
  dropped = 0
  /** lines published */
  shipped = 0

  constructor (private readonly c: LogShipperComponents, init: LogShipperInit = {}) {
    this.opts = {
      flushMs: init.flushMs ?? 50,
      maxBatchBytes: init.maxBatchBytes ?? 256 * 1024,
      maxPendingBytes: init.maxPendingBytes ?? 8 * 1024 * 1024,
      streamMaxAgeMs: init.streamMaxAgeMs ?? 24 * 3600_000,
      streamMaxBytes: init.streamMaxBytes ?? 256 * 1024 * 1024
    }
  }

  /** Checks that the log stream exists (`fnmesh init` makes it); without it, lines still reach --follow readers */
  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    try {
      const jsm = await jetstreamManager(this.c.nc, { checkAPI: false })
      await jsm.streams.info(LOGS_STREAM)
    } catch (err: any) {
      this.c.logger.warn({ err: String(err?.message ?? err) }, `cannot find the log stream ${LOGS_STREAM} (made by "fnmesh init"): function logs are only live (fnmesh logs --follow)`)
    }
  }

  isStarted (): boolean {
    return this.started
  }

  /** Queues one line for publishing */
  add (line: FunctionLogLine): void {
    const bytes = line.message.length + line.invocationId.length + 64
    if (this.pendingBytes + bytes > this.opts.maxPendingBytes) {
      if (this.dropped++ === 0) this.c.logger.warn('function log lines are arriving faster than they can be published: dropping some')
      return
    }
    let p = this.pending.get(line.function)
    if (p == null) {
      p = { lines: [], bytes: 0 }
      this.pending.set(line.function, p)
    }
    p.lines.push({ ...line, nodeId: this.c.nodeId })
    p.bytes += bytes
    this.pendingBytes += bytes
    if (p.bytes >= this.opts.maxBatchBytes) this.publish(line.function, p)
    else this.timer ??= setTimeout(() => { this.flush() }, this.opts.flushMs)
  }

  /** Publishes everything pending */
  flush (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    for (const [fn, p] of this.pending) this.publish(fn, p)
  }

  stop (): void {
    this.flush()
    this.started = false
  }

  private publish (fn: string, p: Pending): void {
    this.pending.delete(fn)
    this.pendingBytes -= p.bytes
    if (this.c.nc.isClosed()) return
    try {
      this.c.nc.publish(logSubject(fn), encode('LogBatch', { lines: p.lines }))
      this.shipped += p.lines.length
    } catch (err: any) {
      this.c.logger.debug({ fn, err: String(err?.message ?? err) }, 'could not publish log lines')
    }
  }
}
