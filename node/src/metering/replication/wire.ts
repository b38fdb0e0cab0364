/**
 * Meter traffic between peers rides the agents' existing libp2p connections (TCP, Noise,
 * yamux), on two protocols: records pushed by the node that ran them, and anti-entropy.
 * Frames are length-prefixed protobuf messages, capped before decoding.
 *
 * Why libp2p streams and not NATS: replication then needs nothing but the peers themselves
 * (records acknowledged just before the NATS server goes away still reach the others, and the
 * NATS server does not carry every record N-1 times), each stream is authenticated to the remote
 * peer id by Noise, and a push stream per peer keeps batches pipelined in order.
 */
import type { Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from 'it-length-prefixed-stream'

export const PUSH_PROTOCOL = '/fnmesh/meter/push/1'
export const SYNC_PROTOCOL = '/fnmesh/meter/sync/1'

/** Largest frame accepted: a 4 MiB message plus room for its envelope */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024 + 64 * 1024

export type Frames = LengthPrefixedStream<Stream>

export const framesOf = (stream: Stream): Frames => lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })

/** Serialises writes on one stream (acks finish out of order; frames must not interleave) */
export class WriteQueue {
  private tail: Promise<void> = Promise.resolve()

  constructor (private readonly frames: Frames) {}

  async write (bytes: Uint8Array, signal?: AbortSignal): Promise<void> {
    const next = this.tail.then(async () => { await this.frames.write(bytes, { signal }) })
    this.tail = next.catch(() => {})
    await next
  }
}

/** Logs at most `perSecond` lines per key and counts the rest, so a hostile peer cannot flood the log */
export class LogLimiter {
  private readonly windows = new Map<string, { start: number, n: number, dropped: number }>()

  constructor (private readonly perSecond = 5) {}

  /** Returns the number of suppressed lines to report with this one, or -1 to suppress it */
  take (key: string, now = Date.now()): number {
    let w = this.windows.get(key)
    if (w == null || now - w.start >= 1000) {
      const dropped = w?.dropped ?? 0
      if (this.windows.size > 1000) this.windows.clear()
      this.windows.set(key, w = { start: now, n: 0, dropped: 0 })
      w.n++
      return dropped
    }
    if (++w.n > this.perSecond) { w.dropped++; return -1 }
    return 0
  }
}
