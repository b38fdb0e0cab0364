/**
 * Figure: async event throughput end to end (SDK publish -> JetStream -> agents pull -> sandbox
 * -> synced meter record -> ack) on 3 agents, against JetStream publish-with-ack alone on the
 * same server with the same payload and the same number of publishes in flight.
 */
import { jetstream, jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { step } from '../progress.js'
import { row, type Figure } from '../types.js'

const FN = 'bench-events'
const SUBJECT = 'bench.events.item'
const BASELINE_STREAM = 'BENCH_JS_BASELINE'
const IN_FLIGHT = 64

async function pipelined (n: number, concurrency: number, send: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) await send(next++)
  }))
  return performance.now() - started
}

export const asyncEvents: Figure = {
  id: 'events',
  title: 'Async events: end to end vs JetStream publish with ack',
  run: async (ctx) => {
    const m = await ctx.mesh()
    const n = ctx.options.quick ? 1000 : 10_000
    const dir = join(m.workDir, FN)
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, 'index.mjs'), 'export const handler = async (event) => event\n')
    await m.client.deploy({ name: FN, path: dir, triggers: ['bench.events.>'], timeoutMs: 10_000 })
    const body = { pad: 'x'.repeat(90) }
    const bytes = Buffer.from(JSON.stringify(body))

    // Baseline: the same publishes into a plain stream of their own.
    const jsm = await jetstreamManager(m.raw)
    await jsm.streams.add({ name: BASELINE_STREAM, subjects: ['bench.jsonly.>'], storage: StorageType.File, retention: RetentionPolicy.Limits })
    ctx.cleanup.defer('delete the baseline stream', async () => { await jsm.streams.delete(BASELINE_STREAM).catch(() => {}) })
    const js = jetstream(m.raw)
    const baselineMs = await step(`JetStream publish with ack, ${n} messages, ${IN_FLIGHT} in flight`, async () =>
      await pipelined(n, IN_FLIGHT, async (i) => await js.publish('bench.jsonly.item', bytes, { msgID: `b-${i}` })))

    const before = (await m.client.usage({ fn: FN })).functions[0]?.invocations ?? 0
    const started = performance.now()
    const publishMs = await step(`fnmesh publish, ${n} events, ${IN_FLIGHT} in flight`, async () =>
      await pipelined(n, IN_FLIGHT, async (i) => await m.client.publish(SUBJECT, body, { id: `e-${Date.now()}-${i}` })))
    const endToEndMs = await step(`waiting until all ${n} events ran and were metered`, async () => {
      const deadline = Date.now() + 300_000
      for (;;) {
        const done = ((await m.client.usage({ fn: FN })).functions[0]?.invocations ?? 0) - before
        if (done >= n) return performance.now() - started
        if (Date.now() > deadline || ctx.signal.aborted) throw new Error(`only ${done} of ${n} events ran within 300 s`)
        await new Promise(resolve => setTimeout(resolve, 100))
      }
    })
    const baselineRate = n / (baselineMs / 1000)
    return {
      rows: [
        row('async events end to end', '/s', n / (endToEndMs / 1000), 'JetStream publish with ack', baselineRate, 'higher'),
        row('  fnmesh publish (SDK) alone', '/s', n / (publishMs / 1000), 'JetStream publish with ack', baselineRate, 'higher')
      ],
      details: { events: n, inFlight: IN_FLIGHT, payloadBytes: bytes.byteLength, baselineMs, publishMs, endToEndMs, slots: m.slots },
      notes: [
        `${n} events of ${bytes.byteLength} B published by the SDK (CloudEvents binary mode, ${IN_FLIGHT} publishes in flight) to a subject "${FN}" listens on; end to end = from the first publish until the last event ran in a sandbox, was metered (synced) and acknowledged (counted through fnmesh usage, polled every 100 ms).`,
        `Baseline: the same number of JetStream publishes with ack (file storage, ${IN_FLIGHT} in flight) into a stream of their own, on the same nats-server, in the same run.`
      ]
    }
  }
}
