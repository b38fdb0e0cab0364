/**
 * Streamed replies over NATS (awslambda.streamifyResponse): the sender's side, with credit-based
 * flow control, and the receiver's acknowledgements. Shared by the agent (executor -> router ->
 * caller) and the SDK (the caller).
 *
 * Every message of a stream is a reply to the request that asked for it, so it travels under the
 * asker's inbox prefix and the agents' `allow_responses` permission: a chunk (header
 * `Fnmesh-Status: chunk`, a `StreamChunk`) carries the sender's ack inbox as its reply subject;
 * the receiver answers each chunk it has taken with a `StreamAck` whose own reply subject is its
 * inbox, which renews the sender's right to reply there. The sender keeps at most
 * STREAM_WINDOW_BYTES and STREAM_WINDOW_CHUNKS unacknowledged, so a slow reader bounds the memory
 * of every hop; a reader that takes nothing for `idleMs` ends the stream (FNMESH_ERR_STREAM_STALLED).
 */
import { createInbox, headers as natsHeaders, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node'
import { decode, encode, type StreamChunk } from '../proto/codec.js'
import { FnmeshError, fnmeshError } from '../proto/errors.js'
import { Headers, STREAM_CHUNK_MAX, STREAM_IDLE_MS, STREAM_WINDOW_BYTES, STREAM_WINDOW_CHUNKS, Status } from '../proto/subjects.js'

/** One piece of a streamed body as it moves between parts; the first may say what the stream is */
export interface StreamPiece {
  data: Uint8Array
  contentType?: string
  invocationId?: string
  nodeId?: string
}

/**
 * Where a streamed body goes (the next hop). `write` resolves when the next hop has room for
 * more and rejects with a coded FnmeshError when the stream cannot go on (the receiver went
 * away, stalled, or the stream is over its limit).
 */
export interface StreamSink {
  write: (piece: StreamPiece) => Promise<void>
}

const CHUNK_HEADERS = natsHeaders()
CHUNK_HEADERS.set(Headers.status, Status.chunk)

/** A new inbox subject under this connection's inbox prefix (the role's, see nats-auth-config.ts) */
export function newInbox (nc: NatsConnection): string {
  const prefix = (nc as unknown as { options?: { inboxPrefix?: string } }).options?.inboxPrefix
  return createInbox(prefix != null && prefix !== '' ? prefix : undefined)
}

/** True for a chunk message of a streamed reply */
export function isChunk (msg: Msg): boolean {
  return msg.headers?.get(Headers.status) === Status.chunk
}

/** Decodes a chunk, checking it is the next one expected */
export function readChunk (msg: Msg, expectedSeq: number): StreamChunk {
  const chunk = decode('StreamChunk', msg.data)
  if (chunk.seq !== expectedSeq) throw fnmeshError('FNMESH_ERR_DECODE', `Stream chunk ${chunk.seq} came where chunk ${expectedSeq} was expected`)
  if (chunk.data.byteLength > STREAM_CHUNK_MAX) throw fnmeshError('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Stream chunk of ${chunk.data.byteLength} bytes is over the limit of ${STREAM_CHUNK_MAX}`)
  return chunk
}

/** Tells the sender of `msg` that everything up to `seq` was taken (or, with cancel, to stop) */
export function ackChunk (msg: Msg, seq: number, inbox: string, cancel = false): void {
  if (msg.reply == null || msg.reply === '') return
  try {
    msg.respond(encode('StreamAck', { seq, cancel }), { reply: inbox })
  } catch {}
}

/**
 * Sends a streamed body to `to` (the reply subject of the request that asked for it), chunk by
 * chunk, within the credit window. Single writer: call write() after the previous one resolved.
 */
export class StreamSender implements StreamSink {
  /** bytes of body sent */
  bytes = 0
  /** chunks sent */
  seq = 0
  private acked = 0
  private readonly inFlight: Array<{ seq: number, bytes: number }> = []
  private unackedBytes = 0
  private readonly inbox: string
  private readonly sub: Subscription
  private wake: (() => void) | undefined
  private failure: FnmeshError | undefined
  private readonly idleMs: number

  constructor (private readonly nc: NatsConnection, private readonly to: string, options: { idleMs?: number } = {}) {
    this.idleMs = options.idleMs ?? STREAM_IDLE_MS
    this.inbox = newInbox(nc)
    this.sub = nc.subscribe(this.inbox, { callback: (err, msg) => { if (err == null) this.onAck(msg) } })
  }

  /** True once a chunk went out: the body has started, so the invocation must not run again */
  get started (): boolean {
    return this.seq > 0
  }

  async write (piece: StreamPiece): Promise<void> {
    let first = true
    for (let at = 0; at < piece.data.byteLength || (first && piece.data.byteLength === 0); at += STREAM_CHUNK_MAX) {
      const data = piece.data.subarray(at, at + STREAM_CHUNK_MAX)
      await this.room()
      const seq = ++this.seq
      const meta = seq === 1 ? { contentType: piece.contentType ?? '', invocationId: piece.invocationId ?? '', nodeId: piece.nodeId ?? '' } : {}
      this.inFlight.push({ seq, bytes: data.byteLength })
      this.unackedBytes += data.byteLength
      this.bytes += data.byteLength
      try {
        this.nc.publish(this.to, encode('StreamChunk', { seq, data, ...meta }), { reply: this.inbox, headers: CHUNK_HEADERS })
      } catch (err: any) {
        throw fnmeshError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot send a stream chunk: ${String(err?.message ?? err)}`)
      }
      first = false
      if (piece.data.byteLength === 0) break
    }
  }

  /** Stops listening for acks; idempotent */
  close (): void {
    this.fail(undefined)
    try { this.sub.unsubscribe() } catch {}
  }

  private async room (): Promise<void> {
    if (this.failure != null) throw this.failure
    if (this.unackedBytes < STREAM_WINDOW_BYTES && this.inFlight.length < STREAM_WINDOW_CHUNKS) return
    let lastAcked = this.acked
    for (;;) {
      const progressed = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => { this.wake = undefined; resolve(false) }, this.idleMs)
        this.wake = () => { clearTimeout(timer); this.wake = undefined; resolve(true) }
      })
      if (this.failure != null) throw this.failure
      if (this.unackedBytes < STREAM_WINDOW_BYTES && this.inFlight.length < STREAM_WINDOW_CHUNKS) return
      if (!progressed && this.acked === lastAcked) {
        this.fail(fnmeshError('FNMESH_ERR_STREAM_STALLED', `The receiver of the stream took nothing for ${this.idleMs} ms (${this.bytes} bytes sent)`))
        throw this.failure as unknown as FnmeshError
      }
      lastAcked = this.acked
    }
  }

  private fail (err: FnmeshError | undefined): void {
    if (err != null) this.failure ??= err
    else this.failure ??= fnmeshError('FNMESH_ERR_ABORTED', 'The stream was closed')
    this.wake?.()
  }

  private onAck (msg: Msg): void {
    let ack
    try {
      ack = decode('StreamAck', msg.data)
    } catch {
      return
    }
    if (ack.cancel) {
      this.fail(fnmeshError('FNMESH_ERR_ABORTED', `The receiver cancelled the stream after ${ack.seq} chunks`))
      return
    }
    // Cumulative: a late or repeated ack changes nothing; one beyond what was sent is ignored.
    if (ack.seq <= this.acked || ack.seq > this.seq) return
    this.acked = ack.seq
    while (this.inFlight.length > 0 && this.inFlight[0].seq <= ack.seq) {
      this.unackedBytes -= (this.inFlight.shift() as { bytes: number }).bytes
    }
    this.wake?.()
  }
}
