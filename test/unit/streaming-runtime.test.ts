/**
 * Lambda's response streaming inside real sandboxes (node/src/sandbox/runtime/streaming.ts and the
 * worker's chunk handling): the awslambda global, the order and content type of chunks, Lambda's
 * rules for streaming handlers, a chunk refused by the agent, and forged chunk messages.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FunctionError, fnmeshError } from '../../proto/errors.js'
import { silentLogger } from '../../node/src/logger.js'
import { SandboxPool } from '../../node/src/sandbox/pool.js'
import type { ChunkHandler, InvokeOutcome } from '../../node/src/sandbox/worker.js'
import type { StoredSpec } from '../../core/registry.js'
import { closePlans, spec, task, testPlan } from '../helpers/sandbox.js'
import { within } from '../helpers/wait.js'

describe('response streaming in real sandboxes', () => {
  let root: string
  let pool: SandboxPool
  let n = 0

  /** Runs `source` (index.mjs, export `handler`) once; chunks go to `onChunk` (default: collected) */
  const run = async (source: string, event: unknown = {}, opts: { onChunk?: ChunkHandler, fields?: Partial<StoredSpec>, times?: number } = {}): Promise<{ outs: InvokeOutcome[], chunks: Array<{ text: string, type: string }> }> => {
    const name = `fn${++n}`
    const dir = await task(root, name, { text: { 'index.mjs': source } })
    const s = spec({ name, handler: 'index.handler', ...opts.fields })
    const chunks: Array<{ text: string, type: string }> = []
    const onChunk: ChunkHandler = opts.onChunk ?? (async (data, type) => { chunks.push({ text: data.toString('utf8'), type }) })
    const outs: InvokeOutcome[] = []
    for (let i = 0; i < (opts.times ?? 1); i++) {
      const { worker } = await within(pool.acquire(s, dir, { invocationId: `inv-${name}-${i}` }), 15_000, `loading ${name}`)
      outs.push(await within(worker.invoke(`inv-${name}-${i}`, JSON.stringify(event), Date.now() + s.timeoutMs, { onChunk }), s.timeoutMs + 10_000, `invoking ${name}`))
      pool.release(worker)
    }
    return { outs, chunks }
  }

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'fnmesh-stream-rt-'))
    pool = new SandboxPool({ workDir: join(root, 'work'), protectDir: root, plan: testPlan({ mode: 'auto' }), prewarm: 1, resultLimit: 64 * 1024, logLimit: 8 * 1024, logger: silentLogger() })
    await pool.start()
  })

  afterAll(async () => {
    pool?.stop()
    await pool?.settled(5000)
    closePlans()
    await rm(root, { recursive: true, force: true })
  })

  it('sends each write as a chunk, in order, with the content type, then answers streamed', async () => {
    const { outs, chunks } = await run(`export const handler = awslambda.streamifyResponse(async (event, stream) => {
      stream.setContentType('text/csv')
      stream.write('a,')
      await new Promise(r => setTimeout(r, 20))
      stream.write(Buffer.from('b,'))
      stream.write({ c: 1 })
      stream.end('d')
    })`)
    expect(outs[0]).toMatchObject({ ok: true, streamed: true, payload: '' })
    expect(chunks.map(c => c.text).join('')).toBe('a,b,{"c":1}d')
    expect(new Set(chunks.map(c => c.type))).toEqual(new Set(['text/csv']))
  })

  it('puts the HttpResponseStream prelude and 8 NUL bytes before the body', async () => {
    const { chunks } = await run(`export const handler = awslambda.streamifyResponse(async (event, stream) => {
      stream = awslambda.HttpResponseStream.from(stream, { statusCode: 201, headers: { a: 'b' } })
      stream.end('body')
    })`)
    expect(chunks[0].type).toBe('application/vnd.awslambda.http-integration-response')
    expect(chunks.map(c => c.text).join('')).toBe(`{"statusCode":201,"headers":{"a":"b"}}${'\0'.repeat(8)}body`)
  })

  it('fails a streaming handler that returns no promise, or resolves without ending its stream, as Lambda does', async () => {
    const sync = await run('export const handler = awslambda.streamifyResponse((event, stream) => { stream.end("x") })')
    expect(sync.outs[0]).toMatchObject({ ok: false, error: { code: 'FNMESH_ERR_FUNCTION_ERROR', errorMessage: 'Streaming does not support non-async handlers.' } })
    const open = await run('export const handler = awslambda.streamifyResponse(async (event, stream) => { stream.write("x") })')
    expect(open.outs[0]).toMatchObject({ ok: false, error: { code: 'FNMESH_ERR_FUNCTION_ERROR', errorMessage: 'Response stream is not finished.' } })
  })

  it('refuses a handler marked for another streaming mode at init', async () => {
    const name = `fn${++n}`
    const dir = await task(root, name, { text: { 'index.mjs': 'export const handler = async () => 1; handler[Symbol.for("aws.lambda.runtime.handler.streaming")] = "request"' } })
    const err = await pool.acquire(spec({ name, handler: 'index.handler' }), dir, { invocationId: 'x' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(FunctionError)
    expect(err).toMatchObject({ code: 'FNMESH_ERR_FUNCTION_INIT', errorType: 'Runtime.MalformedStreamingHandler' })
  })

  it('leaves awslambda out when AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA is set, as Lambda does', async () => {
    const { outs } = await run('export const handler = async () => typeof globalThis.awslambda', {}, { fields: { env: { AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA: '1' } } })
    expect(outs[0]).toMatchObject({ ok: true, payload: '"undefined"' })
  })

  it('ends the invocation with the agent\'s error when it refuses a chunk, and the sandbox serves the next one', async () => {
    let calls = 0
    const { outs } = await run(`export const handler = awslambda.streamifyResponse(async (event, stream) => {
      for (let i = 0; i < 5; i++) { stream.write('x'.repeat(1000)); await new Promise(r => setTimeout(r, 5)) }
      stream.end()
    })`, {}, {
      times: 2,
      onChunk: async () => { if (++calls === 2) throw fnmeshError('FNMESH_ERR_STREAM_TOO_LARGE', 'The response stream passed the streamed limit') }
    })
    expect(outs[0]).toMatchObject({ ok: false, error: { code: 'FNMESH_ERR_STREAM_TOO_LARGE', errorMessage: 'The response stream passed the streamed limit' } })
    expect(outs[1]).toMatchObject({ ok: true, streamed: true })
  })

  it('kills a sandbox whose code forges a chunk message', async () => {
    const { outs } = await run('export const handler = async () => { process.send({ t: "chunk", id: 424242, n: 1, ct: "", data: "" }); await new Promise(r => setTimeout(r, 2000)); return 1 }')
    expect(outs[0]).toMatchObject({ ok: false, error: { code: 'FNMESH_ERR_FUNCTION_EXITED' } })
  })
})
