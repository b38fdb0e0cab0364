/**
 * Response streaming (awslambda.streamifyResponse) on 2 real agents with their HTTP gateways and a
 * real nats-server: chunks reach the SDK (mesh.invokeStream) and HTTP clients (chunked) before the
 * function finishes, a 10 MiB body passes where a buffered result is refused, the streamed limit
 * ends a stream with its code, plain invokes of streaming handlers and streamed invokes of
 * buffered ones, a failure after the first chunk, hono's streamHandle, and one meter record per run.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { fixtureWithPackages, http, httpPorts } from '../helpers/http.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'
import type { ExportedRecord } from '../../sdk/src/usage.js'

interface Timed { status: number, headers: Record<string, string | string[] | undefined>, chunks: Array<{ atMs: number, text: string }>, endMs: number, complete: boolean }

/** A raw HTTP GET that notes when each piece of the body arrived (fetch would hide that) */
async function timedGet (port: number, path: string, timeoutMs = 20_000): Promise<Timed> {
  const start = Date.now()
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', timeout: timeoutMs }, (res) => {
      const chunks: Timed['chunks'] = []
      res.on('data', (b: Buffer) => { chunks.push({ atMs: Date.now() - start, text: b.toString('utf8') }) })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, chunks, endMs: Date.now() - start, complete: res.complete }) })
      res.on('error', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, chunks, endMs: Date.now() - start, complete: false }) })
      res.on('aborted', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, chunks, endMs: Date.now() - start, complete: false }) })
    })
    req.on('error', reject)
    req.on('timeout', () => { req.destroy(new Error(`GET ${path} timed out`)) })
    req.end()
  })
}

async function recordsOf (t: TestMesh, fn: string, id: string): Promise<ExportedRecord[]> {
  const out: ExportedRecord[] = []
  for await (const r of t.mesh.exportRecords({ fn })) if (r.invocationId === id) out.push(r)
  return out
}

const text = (chunks: Uint8Array[]): string => Buffer.concat(chunks).toString('utf8')

describe('response streaming on a 2-agent mesh', () => {
  let t: TestMesh
  let ports: number[]
  let dir: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-stream-'))
    // The first agent has one slot: once it is busy, its router sends work to the second.
    t = await startMesh({ nodes: 2, slots: [1, 4], args: ['--http', '127.0.0.1:0'] })
    ports = httpPorts(t.cluster.agents)
    const code = fixture('stream')
    await Promise.all([
      t.mesh.deploy({ name: 'slow', path: code, handler: 'index.slow', timeoutMs: 20_000, routes: ['GET /slow'] }),
      t.mesh.deploy({ name: 'rslow', path: code, handler: 'index.slow', timeoutMs: 20_000, routes: ['GET /rslow'] }),
      t.mesh.deploy({ name: 'big', path: code, handler: 'index.big', timeoutMs: 60_000, memoryMb: 256 }),
      t.mesh.deploy({ name: 'shttp', path: code, handler: 'index.http', timeoutMs: 20_000, routes: ['GET /shttp', 'GET /shttp-fast'] }),
      t.mesh.deploy({ name: 'fails', path: code, handler: 'index.fails', routes: ['GET /fails'] }),
      t.mesh.deploy({ name: 'sjson', path: code, handler: 'index.json' }),
      t.mesh.deploy({ name: 'buffered', path: code, handler: 'index.buffered' }),
      t.mesh.deploy({ name: 'globals', path: code, handler: 'index.globals' }),
      t.mesh.deploy({ name: 'hono', path: await fixtureWithPackages(dir, 'stream-hono', ['hono']), routes: ['GET /hono/{proxy+}'], timeoutMs: 20_000 })
    ])
    for (const port of ports) {
      for (const path of ['/slow', '/rslow', '/shttp', '/fails', '/hono/plain']) {
        await waitFor(async () => (await http(port, 'OPTIONS', path)).json?.code !== 'FNMESH_ERR_ROUTE_NOT_FOUND', { timeoutMs: 5000, intervalMs: 20, message: `the route ${path} on port ${port}` })
      }
    }
  }, 120_000)

  afterAll(async () => {
    await t?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('gives every Node handler the awslambda global before its code loads', async () => {
    expect(await t.mesh.invoke('globals')).toEqual({ type: 'object', streamify: 'function', from: 'function' })
  })

  it('streams to the SDK: the first chunk arrives well before the function finishes', async () => {
    for (let i = 0; i < 2; i++) {
      const start = Date.now()
      const s = await t.mesh.invokeStream('slow', { waitMs: 2000 })
      const firstAt = Date.now() - start
      expect(s.invocationId).toMatch(/^[0-9a-f-]{36}$/)
      expect(s.contentType).toBe('text/plain')
      const chunks: Uint8Array[] = []
      const times: number[] = []
      for await (const c of s) { chunks.push(c); times.push(Date.now() - start) }
      expect(text(chunks)).toBe('first\nsecond\n')
      const end = await s.done
      expect(end).toMatchObject({ streamed: true, bytes: 13, invocationId: s.invocationId })
      // The first chunk came before the 2 s wait ended; the last after it.
      expect(times[times.length - 1] - firstAt, `first at ${firstAt} ms, last at ${times[times.length - 1]} ms`).toBeGreaterThan(1000)
    }
  })

  it('streams to HTTP clients with chunked encoding, the first bytes before the function finishes', async () => {
    for (const port of ports) {
      const r = await timedGet(port, '/slow?waitMs=2000')
      expect(r.status).toBe(200)
      expect(r.headers['transfer-encoding']).toBe('chunked')
      expect(r.headers['content-type']).toBe('text/plain')
      expect(r.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
      expect(r.chunks.map(c => c.text).join('')).toBe('first\nsecond\n')
      expect(r.endMs - r.chunks[0].atMs, JSON.stringify(r.chunks)).toBeGreaterThan(1000)
    }
  })

  it('streams from a function running on the other agent: executor -> router -> HTTP client, chunk by chunk', async () => {
    const [a, b] = t.cluster.agents
    let remote: Timed | undefined
    await waitFor(async () => {
      // a's one slot busy with /slow (1 s), so a's router sends /rslow to b.
      const hold = timedGet(ports[0], '/slow')
      await new Promise(resolve => setTimeout(resolve, 300))
      const r = await timedGet(ports[0], '/rslow?waitMs=2000')
      await hold
      expect(r.chunks.map(c => c.text).join('')).toBe('first\nsecond\n')
      const id = String(r.headers['x-request-id'])
      let records: ExportedRecord[] = []
      await waitFor(async () => (records = await recordsOf(t, 'rslow', id)).length === 1, { timeoutMs: 10_000, message: `the record of ${id}` })
      if (records[0].nodeId !== b.nodeId) return false
      remote = r
      return true
    }, { timeoutMs: 30_000, intervalMs: 200, message: `a run routed by ${a.nodeId} to ${b.nodeId}` })
    const r = remote as Timed
    expect(r.headers['transfer-encoding']).toBe('chunked')
    expect(r.endMs - r.chunks[0].atMs, JSON.stringify(r.chunks)).toBeGreaterThan(1000)
  }, 60_000)

  it('takes the HTTP status, headers and cookies from the HttpResponseStream prelude', async () => {
    const r = await timedGet(ports[0], '/shttp?waitMs=2000')
    expect(r.status).toBe(201)
    expect(r.headers['x-fn']).toBe('stream-http')
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2'])
    expect(r.chunks.map(c => c.text).join('')).toBe('hello world')
    expect(r.endMs - r.chunks[0].atMs).toBeGreaterThan(1000)
  })

  it('runs hono\'s streamHandle app: it loads, streams and answers its plain routes', async () => {
    const r = await timedGet(ports[1], '/hono/stream')
    expect(r.status).toBe(200)
    expect(r.headers['x-app']).toBe('hono')
    expect(r.chunks.map(c => c.text).join('')).toBe('one two')
    expect(r.endMs - r.chunks[0].atMs).toBeGreaterThan(1000)
    const plain = await http(ports[0], 'GET', '/hono/plain')
    expect(plain.status).toBe(202)
    expect(plain.json).toEqual({ ok: true })
  })

  it('passes a 10 MiB streamed body, which a plain invoke refuses over the buffered limit', async () => {
    const s = await t.mesh.invokeStream('big', { mib: 10 }, { timeoutMs: 60_000 })
    let bytes = 0
    let ok = true
    let index = 0
    for await (const c of s) {
      // Bytes arrive in order: piece i is filled with i % 256.
      for (let j = 0; j < c.byteLength; j += 4096) if (c[j] !== Math.floor((index + j) / 65536) % 256) ok = false
      index += c.byteLength
      bytes += c.byteLength
    }
    expect(bytes).toBe(10 * 1024 * 1024)
    expect(ok).toBe(true)
    await expect(t.mesh.invoke('big', { mib: 10 }, { timeoutMs: 60_000 })).rejects.toMatchObject({ code: 'FNMESH_ERR_RESULT_INVALID', errorType: 'Runtime.ResponseSizeTooLarge' })
  }, 120_000)

  it('ends a stream over the streamed limit (20 MiB) with FNMESH_ERR_STREAM_TOO_LARGE', async () => {
    const s = await t.mesh.invokeStream('big', { mib: 21 }, { timeoutMs: 60_000 })
    let bytes = 0
    const read = (async () => { for await (const c of s) bytes += c.byteLength })()
    await expect(read).rejects.toMatchObject({ code: 'FNMESH_ERR_STREAM_TOO_LARGE' })
    await expect(s.done).rejects.toMatchObject({ code: 'FNMESH_ERR_STREAM_TOO_LARGE' })
    expect(bytes).toBeLessThanOrEqual(20 * 1024 * 1024)
    expect(bytes).toBeGreaterThan(10 * 1024 * 1024)
  }, 120_000)

  it('gives a plain invoke of a streaming handler the whole body, and a streamed invoke of a buffered handler its result as one chunk', async () => {
    expect(await t.mesh.invoke('sjson')).toEqual({ a: 1 })
    expect(await t.mesh.invoke('slow', { waitMs: 10 })).toBe('first\nsecond\n')
    const s = await t.mesh.invokeStream('buffered', { n: 7 })
    const chunks: Uint8Array[] = []
    for await (const c of s) chunks.push(c)
    expect(chunks).toHaveLength(1)
    expect(JSON.parse(text(chunks))).toEqual({ echo: { n: 7 } })
    expect(s.contentType).toBe('application/json')
    expect(await s.done).toMatchObject({ streamed: false })
  })

  it('writes a stream to stdout with fnmesh invoke --stream', async () => {
    const r = await runCli(['invoke', 'slow', '--stream', '--data', '{"waitMs":10}', '--nats', t.url])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(r.stdout).toBe('first\nsecond\n')
  })

  it('ends a stream that fails after its first chunk with the function\'s error, once', async () => {
    const s = await t.mesh.invokeStream('fails', {})
    const chunks: Uint8Array[] = []
    const read = (async () => { for await (const c of s) chunks.push(c) })()
    await expect(read).rejects.toMatchObject({ code: 'FNMESH_ERR_FUNCTION_ERROR', message: 'broken mid-stream' })
    expect(text(chunks)).toBe('partial')
    const r = await timedGet(ports[0], '/fails')
    // Headers and the first bytes went: the response is cut short, never completed.
    expect(r.status).toBe(200)
    expect(r.complete).toBe(false)
  })

  it('meters each streamed run once, with the bytes streamed', async () => {
    const s = await t.mesh.invokeStream('slow', { waitMs: 10 }, { idempotencyKey: 'meter-stream-1' })
    for await (const c of s) expect(c.byteLength).toBeGreaterThan(0)
    const id = s.invocationId
    await waitFor(async () => {
      const records = await recordsOf(t, 'slow', id)
      return records.length === 1 && records[0].streamBytes === 13
    }, { timeoutMs: 15_000, message: `one meter record with streamBytes 13 for ${id}` })
  })

  it('stops the function when the reader cancels', async () => {
    const s = await t.mesh.invokeStream('big', { mib: 15 }, { timeoutMs: 60_000 })
    let got = 0
    for await (const c of s) { got += c.byteLength; if (got > 1024 * 1024) break }
    await expect(s.done).rejects.toMatchObject({ code: 'FNMESH_ERR_ABORTED' })
    // The run ends (with the receiver gone) and is metered once.
    await waitFor(async () => {
      const records = await recordsOf(t, 'big', s.invocationId)
      return records.length === 1 && records[0].errorCode !== ''
    }, { timeoutMs: 30_000, message: 'the cancelled run metered with an error' })
  }, 90_000)

  // Last: it kills an agent.
  it('never runs a streamed invocation again once its first chunk went, when the agent running it dies', async () => {
    const key = `no-rerun-${Date.now()}`
    const s = await t.mesh.invokeStream('slow', { waitMs: 4000 }, { idempotencyKey: key, timeoutMs: 30_000 })
    const it = s[Symbol.asyncIterator]()
    expect(Buffer.from((await it.next()).value as Uint8Array).toString()).toBe('first\n')
    const victim = t.cluster.agents.find(a => a.nodeId === s.nodeId)
    expect(victim, `the agent running it (${s.nodeId})`).toBeDefined()
    victim?.kill('SIGKILL')
    await expect(it.next()).rejects.toMatchObject({ code: 'FNMESH_ERR_PEER_UNAVAILABLE' })
    // The survivor never ran it: no record of the key there, even after the function's 4 s.
    await new Promise(resolve => setTimeout(resolve, 5000))
    const survivor = t.cluster.agents.find(a => a !== victim)
    const records: ExportedRecord[] = []
    for await (const r of t.mesh.exportRecords({ fn: 'slow', via: survivor?.nodeId })) if (r.idempotencyKey === key) records.push(r)
    expect(records.filter(r => r.nodeId === survivor?.nodeId)).toEqual([])
  }, 60_000)
})
