/**
 * A streaming handler's body as an HTTP response with chunked transfer encoding, as Lambda
 * function URLs in RESPONSE_STREAM mode answer: the status and headers come from the
 * HttpResponseStream prelude (content type application/vnd.awslambda.http-integration-response:
 * JSON, then 8 NUL bytes, then the body), else 200 with the stream's content type; each chunk
 * is written as it arrives, and the next is taken once the socket drained (backpressure to the
 * function). A stream that fails after its headers went is cut short (no final chunk), so the
 * client sees a truncated response rather than a complete one.
 */
import type { ServerResponse } from 'node:http'
import type { StreamPiece, StreamSink } from '../../../core/stream.js'
import { FnmeshError, fnmeshError } from '../../../proto/errors.js'
import { mapResult } from './response.js'

const HTTP_INTEGRATION_TYPE = 'application/vnd.awslambda.http-integration-response'
const DEFAULT_TYPE = 'application/octet-stream'
/** Longest prelude accepted before its delimiter */
const MAX_PRELUDE = 64 * 1024
const DELIMITER_LEN = 8

export class HttpStreamSink implements StreamSink {
  /** the body has started (headers written or a prelude being read) */
  started = false
  private prelude: Buffer | undefined
  private contentType = ''
  private closed = false

  constructor (private readonly res: ServerResponse, private readonly head: boolean, private readonly extraHeaders: Record<string, string>) {
    res.on('close', () => { this.closed = true })
  }

  get headersSent (): boolean {
    return this.res.headersSent
  }

  async write (piece: StreamPiece): Promise<void> {
    if (this.closed || this.res.destroyed) throw fnmeshError('FNMESH_ERR_ABORTED', 'The HTTP client closed the connection')
    if (!this.started) {
      this.started = true
      this.contentType = piece.contentType ?? ''
      if (this.contentType === HTTP_INTEGRATION_TYPE) this.prelude = Buffer.alloc(0)
    }
    let data = Buffer.from(piece.data.buffer, piece.data.byteOffset, piece.data.byteLength)
    if (this.prelude != null) {
      const buf = Buffer.concat([this.prelude, data])
      const at = findDelimiter(buf)
      if (at < 0) {
        if (buf.byteLength > MAX_PRELUDE) throw fnmeshError('FNMESH_ERR_RESPONSE_INVALID', `The function's response is invalid: no end of the HttpResponseStream prelude within ${MAX_PRELUDE} bytes`)
        this.prelude = buf
        return
      }
      this.prelude = undefined
      this.writeHead(buf.subarray(0, at).toString('utf8'))
      data = buf.subarray(at + DELIMITER_LEN)
    } else if (!this.res.headersSent) {
      this.writeHead(undefined)
    }
    if (data.byteLength === 0 || this.head) return
    if (this.res.write(data)) return
    await new Promise<void>((resolve, reject) => {
      const done = (): void => { this.res.off('drain', done); this.res.off('close', done); if (this.closed) reject(fnmeshError('FNMESH_ERR_ABORTED', 'The HTTP client closed the connection')); else resolve() }
      this.res.on('drain', done)
      this.res.on('close', done)
    })
  }

  /** The invocation ended after its body started: finish the response, or cut it short on error */
  end (ok: boolean): void {
    if (this.res.destroyed) return
    if (ok) {
      // A prelude with no delimiter at all: what came was the prelude alone.
      if (this.prelude != null) { this.writeHead(this.prelude.toString('utf8')); this.prelude = undefined }
      if (!this.res.headersSent) this.writeHead(undefined)
      this.res.end()
      return
    }
    this.res.destroy()
  }

  private writeHead (preludeText: string | undefined): void {
    let status = 200
    let headers: Record<string, string | string[]> = { 'content-type': this.contentType !== '' ? this.contentType : DEFAULT_TYPE }
    if (preludeText != null) {
      let prelude: unknown
      try {
        prelude = preludeText === '' ? {} : JSON.parse(preludeText)
      } catch {
        throw fnmeshError('FNMESH_ERR_RESPONSE_INVALID', 'The function\'s response is invalid: the HttpResponseStream prelude is not JSON')
      }
      if (prelude == null || typeof prelude !== 'object' || Array.isArray(prelude)) throw fnmeshError('FNMESH_ERR_RESPONSE_INVALID', 'The function\'s response is invalid: the HttpResponseStream prelude is not an object')
      const p = prelude as Record<string, unknown>
      // The gateway's own result rules check the status, headers and cookies.
      const mapped = mapResult(JSON.stringify({ statusCode: p.statusCode ?? 200, headers: p.headers, multiValueHeaders: p.multiValueHeaders, cookies: p.cookies }))
      status = mapped.status
      headers = { 'content-type': DEFAULT_TYPE, ...mapped.headers }
    }
    try {
      this.res.writeHead(status, { ...headers, ...this.extraHeaders })
    } catch (err: any) {
      throw err instanceof FnmeshError ? err : fnmeshError('FNMESH_ERR_RESPONSE_INVALID', `The function's response is invalid: ${String(err?.message)}`)
    }
    // Headers now, so the client sees the response begin before the first body byte.
    this.res.flushHeaders()
  }
}

function findDelimiter (buf: Buffer): number {
  let run = 0
  for (let i = 0; i < buf.byteLength; i++) {
    if (buf[i] === 0) {
      run++
      if (run === DELIMITER_LEN) return i - DELIMITER_LEN + 1
    } else run = 0
  }
  return -1
}
