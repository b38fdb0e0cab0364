/**
 * Figure: what issue 14's metrics and traces cost a warm sync invoke. Three meshes of one agent
 * each (own nats-server, same echo function, same 1 KB event): plain; metrics on (--admin, and
 * /metrics scraped every second, far more often than a Prometheus would); tracing on
 * (--otlp-endpoint to an OTLP/HTTP sink in this process that reads and answers each export). The
 * three are called in alternating blocks, so machine drift hits them alike, and each is a ratio
 * to the plain one. One agent each, so that the difference is the observability and not where
 * the router sent a call (the spans of a forwarded call are the same ones).
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startDevCluster, type DevCluster } from '../../../node/src/dev/cluster.js'
import { connect, type Mesh } from '../../../sdk/src/client.js'
import { waitForQuiet } from '../cpu.js'
import { interleaved } from '../loops.js'
import { paddedEvent, PAYLOAD_BYTES } from '../mesh.js'
import { step } from '../progress.js'
import { compact, summarize } from '../stats.js'
import { row, type Figure } from '../types.js'

const TARGETS = {
  metrics: { ratio: 1.05, source: 'issue 14' }
}

interface Sink { url: string, requests: number, bytes: number, server: Server }

/** An OTLP/HTTP endpoint that takes every export and answers 200 (the cost of a collector is not fnmesh's) */
async function startSink (): Promise<Sink> {
  const sink: Sink = { url: '', requests: 0, bytes: 0, server: undefined as unknown as Server }
  sink.server = createServer((req, res) => {
    req.on('data', (c: Buffer) => { sink.bytes += c.byteLength })
    req.on('end', () => { sink.requests++; res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end() })
  })
  await new Promise<void>(resolve => { sink.server.listen(0, '127.0.0.1', resolve) })
  sink.url = `http://127.0.0.1:${(sink.server.address() as AddressInfo).port}`
  return sink
}

export const observabilityCost: Figure = {
  id: 'observability',
  title: `Warm sync invoke with metrics and with tracing on, ${PAYLOAD_BYTES} B echo, 1 agent`,
  run: async (ctx) => {
    const n = ctx.options.quick ? 1000 : 4000
    const warmup = ctx.options.quick ? 300 : 1000
    const block = 200
    const sink = await startSink()
    ctx.cleanup.defer('stop the OTLP sink', async () => { sink.server.closeAllConnections(); await new Promise<void>(resolve => { sink.server.close(() => { resolve() }) }) })
    const dir = await ctx.cleanup.tempDir('obs-fn')
    await mkdir(join(dir, 'echo'), { recursive: true })
    await writeFile(join(dir, 'echo', 'index.mjs'), 'export const handler = async (event) => event\n')
    const variants = {
      plain: [] as string[],
      metrics: ['--admin', '127.0.0.1:0'],
      tracing: ['--otlp-endpoint', sink.url]
    }
    const meshes: Record<string, { cluster: DevCluster, client: Mesh }> = {}
    await step('starting 3 one-agent meshes: plain, --admin, --otlp-endpoint', async () => {
      for (const [name, args] of Object.entries(variants)) {
        const starting = startDevCluster({ nodes: 1, args })
        ctx.cleanup.defer(`stop the ${name} mesh`, async () => { await (await starting.catch(() => undefined))?.stop() }, 60_000)
        const cluster = await starting
        const client = await connect({ servers: cluster.natsUrls })
        ctx.cleanup.defer(`close the ${name} client`, async () => { await client.close() })
        await client.deploy({ name: 'obs-echo', path: join(dir, 'echo'), timeoutMs: 10_000 })
        meshes[name] = { cluster, client }
      }
    })
    const adminPort = meshes.metrics.cluster.agents[0].ready.adminPort as number
    let scrapes = 0
    let scrapeBytes = 0
    const scraper = setInterval(() => {
      fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(5000) })
        .then(async r => { scrapeBytes += (await r.text()).length; scrapes++ })
        .catch(() => {})
    }, 1000)
    ctx.cleanup.defer('stop scraping', () => { clearInterval(scraper) })
    const event = paddedEvent(PAYLOAD_BYTES)
    const call = (name: string) => async (): Promise<void> => {
      const r = await meshes[name].client.invoke<{ pad: string }>('obs-echo', event, { timeoutMs: 10_000 })
      if (r?.pad?.length !== event.pad.length) throw Object.assign(new Error('wrong echo'), { code: 'BENCH_WRONG_RESULT' })
    }
    const calls = { plain: call('plain'), metrics: call('metrics'), tracing: call('tracing') }
    await step('waiting for the machine to go quiet', async () => await waitForQuiet(ctx.signal))
    await step(`warm-up: ${warmup} calls each`, async () => { await interleaved(calls, warmup, block, { label: 'warm-up calls', signal: ctx.signal }) })
    const before = { requests: sink.requests, bytes: sink.bytes, scrapes }
    const measured = await step(`measuring ${n} sequential calls each (plain, metrics, tracing; alternating blocks of ${block})`, async () =>
      await interleaved(calls, n, block, { signal: ctx.signal }))
    clearInterval(scraper)
    // the last batch of spans goes out within the export delay (1 s)
    await new Promise(resolve => setTimeout(resolve, 1500))
    const plain = summarize(measured.plain.samples)
    const metrics = summarize(measured.metrics.samples)
    const tracing = summarize(measured.tracing.samples)
    const exports = sink.requests - before.requests
    const exportBytes = sink.bytes - before.bytes
    return {
      rows: [
        row('warm p50, metrics on (tracing off)', 'ms', metrics.p50, 'plain agent, same run', plain.p50, 'lower', TARGETS.metrics),
        row('warm p50, tracing on (OTLP)', 'ms', tracing.p50, 'plain agent, same run', plain.p50, 'lower'),
        row('warm p99, metrics on', 'ms', metrics.p99, 'plain agent, same run', plain.p99, 'lower'),
        row('warm p99, tracing on', 'ms', tracing.p99, 'plain agent, same run', plain.p99, 'lower')
      ],
      details: {
        calls: n,
        warmupCalls: warmup,
        blockSize: block,
        plain: compact(plain),
        metrics: compact(metrics),
        tracing: compact(tracing),
        errors: { plain: measured.plain.errors, metrics: measured.metrics.errors, tracing: measured.tracing.errors },
        scrapes: scrapes - before.scrapes,
        scrapeBytes,
        otlpExports: exports,
        otlpBytes: exportBytes,
        otlpBytesPerCall: Math.round(exportBytes / Math.max(1, n))
      },
      notes: [
        `Three meshes of one agent each (own nats-server, default slots), the same echo function and ${PAYLOAD_BYTES} B event, SDK invoke(), sequential, ${n} calls each after ${warmup} warm-up calls, alternating blocks of ${block}.`,
        `metrics: --admin 127.0.0.1:0, /metrics scraped every second during the run (${scrapes - before.scrapes} scrapes). tracing: --otlp-endpoint to a sink in the benchmark process that reads each export and answers 200: ${exports} exports, ${Math.round(exportBytes / 1024)} KiB, ~${Math.round(exportBytes / Math.max(1, n))} B of OTLP protobuf per call (gateway-less sync calls: route, dispatch, executor, run, meter spans; cold start when cold).`,
        'The target (issue 14) bounds the cost with tracing off; the cost with tracing on is stated, not bounded.'
      ]
    }
  }
}
