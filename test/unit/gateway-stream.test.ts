/**
 * The gateway's streamed response (node/src/gateway/stream.ts) on a real HTTP server: the
 * HttpResponseStream prelude fed one byte at a time, a body without a prelude, a broken prelude,
 * and a stream cut short.
 */
import { createServer, request, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { HttpStreamSink } from '../../node/src/gateway/stream.js'

const PRELUDE_TYPE = 'application/vnd.awslambda.http-integration-response'

interface Got { status: number, headers: Record<string, string | string[] | undefined>, body: string, complete: boolean }

let server: Server | undefined
afterEach(async () => { await new Promise(resolve => server?.close(resolve)); server = undefined })

/** Serves one request with `feed` writing to a sink, and returns what the client got */
async function serve (feed: (sink: HttpStreamSink) => Promise<void>): Promise<Got> {
  server = createServer((req, res) => {
    const sink = new HttpStreamSink(res, false, { 'x-request-id': 'r1' })
    feed(sink).then(() => { sink.end(true) }, (err) => {
      if (res.headersSent) sink.end(false)
      else { res.writeHead(502); res.end(String(err?.code)) }
    })
  })
  await new Promise<void>(resolve => server?.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/' }, (res) => {
      let body = ''
      const done = (): void => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body, complete: res.complete }) }
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', done)
      res.on('aborted', done)
      res.on('error', done)
    })
    req.on('error', reject)
    req.end()
  })
}

describe('the gateway\'s streamed HTTP response', () => {
  it('reads the prelude fed byte by byte, then streams the body chunked', async () => {
    const bytes = Buffer.concat([Buffer.from(JSON.stringify({ statusCode: 418, headers: { 'x-a': 'b', 'content-type': 'text/plain' }, cookies: ['c=1'] })), Buffer.alloc(8), Buffer.from('body bytes')])
    const got = await serve(async (sink) => {
      for (let i = 0; i < bytes.byteLength; i++) await sink.write({ data: bytes.subarray(i, i + 1), contentType: PRELUDE_TYPE })
    })
    expect(got).toMatchObject({ status: 418, body: 'body bytes', complete: true })
    expect(got.headers).toMatchObject({ 'x-a': 'b', 'content-type': 'text/plain', 'set-cookie': ['c=1'], 'transfer-encoding': 'chunked', 'x-request-id': 'r1' })
  })

  it('answers 200 with the stream\'s content type when there is no prelude', async () => {
    const got = await serve(async (sink) => {
      await sink.write({ data: Buffer.from('a'), contentType: 'text/event-stream' })
      await sink.write({ data: Buffer.from('b') })
    })
    expect(got).toMatchObject({ status: 200, body: 'ab', complete: true })
    expect(got.headers['content-type']).toBe('text/event-stream')
  })

  it('refuses a prelude that is not a JSON object, or has no end within 64 KiB, before any header went', async () => {
    const notJson = await serve(async (sink) => { await sink.write({ data: Buffer.concat([Buffer.from('{nope'), Buffer.alloc(8)]), contentType: PRELUDE_TYPE }) })
    expect(notJson).toMatchObject({ status: 502, body: 'FNMESH_ERR_RESPONSE_INVALID' })
    const endless = await serve(async (sink) => {
      for (let i = 0; i < 70; i++) await sink.write({ data: Buffer.alloc(1024, 0x61), contentType: PRELUDE_TYPE })
    })
    expect(endless).toMatchObject({ status: 502, body: 'FNMESH_ERR_RESPONSE_INVALID' })
  })

  it('cuts a response short when the stream fails after its headers went', async () => {
    const got = await serve(async (sink) => {
      await sink.write({ data: Buffer.from('partial'), contentType: 'text/plain' })
      throw Object.assign(new Error('broken'), { code: 'FNMESH_ERR_FUNCTION_ERROR' })
    })
    expect(got.status).toBe(200)
    expect(got.complete).toBe(false)
  })
})
