/**
 * Lambda's response streaming, as its Node runtime gives it: the `awslambda` global
 * (`streamifyResponse` marks a handler, `HttpResponseStream.from` puts the HTTP status and
 * headers in front of the body), and the response stream a streaming handler writes to. Each
 * piece written goes to the agent as a `chunk` message on the IPC channel; the next is sent once
 * the agent acknowledged it (`chunk-ack`), so the Writable's own buffering (highWaterMark) is all
 * the memory a fast writer holds here. Node built-ins only.
 */
import { Writable } from 'node:stream'
import { RuntimeError } from './errors.js'
import type { ChunkAck } from '../protocol.js'

/** Lambda's marks on a handler passed through awslambda.streamifyResponse */
const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming')
const HANDLER_HIGHWATERMARK = Symbol.for('aws.lambda.runtime.handler.streaming.highWaterMark')
const STREAM_RESPONSE = 'response'

/** The content type of a body that starts with HttpResponseStream's JSON prelude and 8 NUL bytes */
export const HTTP_INTEGRATION_TYPE = 'application/vnd.awslambda.http-integration-response'
const DEFAULT_CONTENT_TYPE = 'application/octet-stream'
const DELIMITER = new Uint8Array(8)
/** Largest data of one chunk message on the IPC channel */
const IPC_CHUNK = 256 * 1024

/** Puts `awslambda` on globalThis before the function's code loads (unless asked not to, as on Lambda) */
export function installAwsLambda (): void {
  const off = process.env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA
  if (off === '1' || off === 'true') return
  const awslambda = {
    streamifyResponse: (handler: any, options?: { highWaterMark?: unknown }) => {
      handler[HANDLER_STREAMING] = STREAM_RESPONSE
      if (typeof options?.highWaterMark === 'number') handler[HANDLER_HIGHWATERMARK] = Math.trunc(options.highWaterMark)
      return handler
    },
    HttpResponseStream
  }
  Object.defineProperty(globalThis, 'awslambda', { value: awslambda, writable: true, configurable: true, enumerable: false })
}

/** The handler's streaming mode; Lambda refuses any other mark than "response" at init */
export function streamingOf (handler: unknown): { streaming: boolean, highWaterMark?: number } {
  const h = handler as Record<symbol, unknown>
  const mark = h[HANDLER_STREAMING]
  if (mark === undefined || mark === null || mark === false) return { streaming: false }
  if (mark !== STREAM_RESPONSE) throw new RuntimeError('Runtime.MalformedStreamingHandler', 'Only response streaming is supported.', 'FNMESH_ERR_FUNCTION_INIT')
  const hwm = h[HANDLER_HIGHWATERMARK]
  return { streaming: true, highWaterMark: typeof hwm === 'number' && Number.isInteger(hwm) && hwm > 0 ? hwm : undefined }
}

class HttpResponseStream {
  /** Writes `prelude` (status, headers, cookies) as JSON and 8 NUL bytes before the body's first byte */
  static from (stream: ResponseStream, prelude: unknown): ResponseStream {
    stream.setContentType(HTTP_INTEGRATION_TYPE)
    const text = JSON.stringify(prelude)
    stream._onBeforeFirstWrite = (write) => {
      write(Buffer.from(text ?? 'null', 'utf8'))
      write(DELIMITER)
    }
    return stream
  }
}

/** Sends one piece to the agent and resolves when it acknowledged it */
export type SendChunk = (data: Buffer, contentType: string) => Promise<void>

export class ResponseStream extends Writable {
  private contentType = DEFAULT_CONTENT_TYPE
  private wrote = false
  /** HttpResponseStream.from's hook: called once with a writer before the first byte */
  _onBeforeFirstWrite: ((write: (chunk: Uint8Array) => void) => void) | undefined

  constructor (private readonly send: SendChunk, highWaterMark?: number) {
    super({ highWaterMark, decodeStrings: true })
  }

  setContentType (type: string): void {
    if (this.wrote) throw new RuntimeError('Runtime.InvalidStreamingOperation', 'Cannot set content-type, too late.', 'FNMESH_ERR_FUNCTION_ERROR')
    this.contentType = String(type)
  }

  override write (chunk: any, encoding?: any, cb?: any): boolean {
    if (typeof chunk !== 'string' && !(chunk instanceof Uint8Array)) chunk = JSON.stringify(chunk) ?? ''
    this.beforeFirst()
    return super.write(chunk, encoding, cb)
  }

  override end (chunk?: any, encoding?: any, cb?: any): this {
    if (typeof chunk === 'function') { cb = chunk; chunk = undefined }
    if (chunk != null) this.write(chunk, encoding)
    // A body of nothing still says its status and headers.
    this.beforeFirst()
    return super.end(cb)
  }

  private beforeFirst (): void {
    if (this.wrote) return
    this.wrote = true
    const hook = this._onBeforeFirstWrite
    this._onBeforeFirstWrite = undefined
    if (typeof hook === 'function') hook((c) => { super.write(c) })
  }

  override _writev (chunks: Array<{ chunk: any }>, callback: (error?: Error | null) => void): void {
    const data = Buffer.concat(chunks.map(c => Buffer.isBuffer(c.chunk) ? c.chunk : Buffer.from(c.chunk)))
    void this.sendAll(data).then(() => { callback() }, callback)
  }

  override _write (chunk: Buffer, _encoding: string, callback: (error?: Error | null) => void): void {
    void this.sendAll(chunk).then(() => { callback() }, callback)
  }

  private async sendAll (data: Buffer): Promise<void> {
    for (let at = 0; at < data.byteLength; at += IPC_CHUNK) await this.send(data.subarray(at, at + IPC_CHUNK), this.contentType)
  }
}

interface Pending { resolve: () => void, reject: (e: Error) => void }
const pending = new Map<number, Pending>()
let nextSeq = 1
let keepAlive: NodeJS.Timeout | undefined

/** An error the agent answered a chunk with (the stream's limit, the receiver gone) */
export class StreamError extends Error {
  constructor (readonly code: string, message: string, readonly errorType = 'Runtime.StreamError') {
    super(message)
    this.name = errorType
  }
}

/** The agent's answer to a chunk (main.ts routes `chunk-ack` here) */
export function onChunkAck (msg: ChunkAck): void {
  const p = pending.get(msg.n)
  if (p == null) return
  pending.delete(msg.n)
  if (pending.size === 0 && keepAlive != null) { clearInterval(keepAlive); keepAlive = undefined }
  if (msg.error == null) p.resolve()
  else p.reject(new StreamError(String(msg.error.code), String(msg.error.errorMessage), String(msg.error.errorType)))
}

/** The sender of one invocation's chunks over the IPC channel */
export function chunkSender (requestId: number): SendChunk {
  return async (data, contentType) => {
    if (process.send == null || !process.connected) throw new StreamError('FNMESH_ERR_INTERNAL', 'Response streaming needs the agent\'s IPC channel')
    const n = nextSeq++
    // The channel is unref'd during an invocation: a chunk waiting for its ack keeps the loop alive.
    keepAlive ??= setInterval(() => {}, 60_000)
    await new Promise<void>((resolve, reject) => {
      pending.set(n, { resolve, reject })
      process.send?.({ t: 'chunk', id: requestId, n, ct: contentType, data: data.toString('base64') })
    })
  }
}
