/**
 * One outbound push stream to one peer (`/fnmesh/meter/push/1`): signed batches go out as
 * MeterPush frames, pipelined; the peer answers each with a MeterAck once the records are written (to the OS; fsynced within its window)
 * to its disk. A broken stream fails whatever awaits an ack and is opened again on the next send.
 */
import type { Libp2p, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { decode, encode, type Encodable, type MeterAck, type MeterPush } from '../../../../proto/codec.js'
import { PUSH_PROTOCOL, WriteQueue, framesOf, type Frames } from './wire.js'

interface Pending { resolve: (ack: MeterAck) => void, reject: (err: Error) => void, timer: NodeJS.Timeout }

export class PushChannel {
  private open: { frames: Frames, writes: WriteQueue, stream: Stream } | undefined
  private opening: Promise<{ frames: Frames, writes: WriteQueue, stream: Stream }> | undefined
  private seq = 0
  private readonly pending = new Map<number, Pending>()
  private closed = false

  constructor (private readonly libp2p: Libp2p, readonly peer: string, private readonly dialTimeoutMs = 3000) {}

  /** Sends one push and resolves with the peer's ack; rejects on a broken stream or after `timeoutMs` */
  async send (push: Omit<Encodable<MeterPush>, 'seq'>, timeoutMs: number): Promise<MeterAck> {
    if (this.closed) throw new Error('push channel closed')
    const { writes } = await this.connect()
    const seq = ++this.seq
    const acked = new Promise<MeterAck>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq)
        reject(new Error(`no ack from ${this.peer} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(seq, { resolve, reject, timer })
    })
    try {
      // No per-write timeout signal: the ack timer above bounds a stuck stream, and a timeout
      // signal per frame costs a timer and, when it fires, an exception with a stack trace.
      await writes.write(encode('MeterPush', { ...push, seq }))
    } catch (err) {
      this.failAll(err as Error)
      throw err
    }
    return await acked
  }

  get inFlight (): number {
    return this.pending.size
  }

  close (): void {
    this.closed = true
    this.failAll(new Error('push channel closed'))
  }

  private async connect (): Promise<{ frames: Frames, writes: WriteQueue, stream: Stream }> {
    if (this.open != null) return this.open
    this.opening ??= (async () => {
      const stream = await this.libp2p.dialProtocol(peerIdFromString(this.peer), PUSH_PROTOCOL, { signal: AbortSignal.timeout(this.dialTimeoutMs) })
      const frames = framesOf(stream)
      const open = { frames, writes: new WriteQueue(frames), stream }
      this.open = open
      void this.readAcks(open)
      return open
    })().finally(() => { this.opening = undefined })
    return await this.opening
  }

  private async readAcks (open: { frames: Frames, stream: Stream }): Promise<void> {
    try {
      for (;;) {
        const ack = decode('MeterAck', (await open.frames.read()).subarray())
        const p = this.pending.get(ack.seq)
        if (p == null) continue
        this.pending.delete(ack.seq)
        clearTimeout(p.timer)
        p.resolve(ack)
      }
    } catch (err: any) {
      // Only the current stream's failure fails the pending sends (they all went out on it).
      if (this.open === open) this.failAll(new Error(`push stream to ${this.peer} broke: ${String(err?.message ?? err)}`))
    }
  }

  private failAll (err: Error): void {
    const open = this.open
    this.open = undefined
    if (open != null) open.stream.abort(err)
    for (const [seq, p] of this.pending) {
      this.pending.delete(seq)
      clearTimeout(p.timer)
      p.reject(err)
    }
  }
}
