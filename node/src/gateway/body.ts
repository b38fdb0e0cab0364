/**
 * Reading a request body with a size cap and a deadline: a body over the cap is refused as soon
 * as it is (413, from Content-Length before reading when it says so), and a client that stops
 * sending is cut off (408), so no request holds the gateway.
 */
import type { IncomingMessage } from 'node:http'
import { fnmeshError } from '../../../proto/errors.js'

export async function readBody (req: IncomingMessage, limit: number, timeoutMs: number): Promise<Buffer> {
  const declared = req.headers['content-length']
  if (declared != null && Number(declared) > limit) {
    throw fnmeshError('FNMESH_ERR_PAYLOAD_TOO_LARGE', `The request body is ${declared} bytes: the limit is ${limit}`)
  }
  return await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const timer = setTimeout(() => { done(fnmeshError('FNMESH_ERR_CLIENT_TIMEOUT', `The request body did not arrive within ${timeoutMs} ms`)) }, timeoutMs)
    const onData = (chunk: Buffer): void => {
      size += chunk.byteLength
      if (size > limit) { done(fnmeshError('FNMESH_ERR_PAYLOAD_TOO_LARGE', `The request body is over the limit of ${limit} bytes`)); return }
      chunks.push(chunk)
    }
    const onEnd = (): void => { done() }
    const onError = (err: Error): void => { done(fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `The request body could not be read: ${err.message}`)) }
    const done = (err?: Error): void => {
      clearTimeout(timer)
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
      if (err != null) { req.resume(); reject(err) } else resolve(Buffer.concat(chunks, size))
    }
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onError)
  })
}
