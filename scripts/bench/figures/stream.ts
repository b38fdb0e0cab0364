/**
 * Figure: time to first byte of a streamed response (awslambda.streamifyResponse, read with
 * mesh.invokeStream) beside the round trip of a buffered invoke of the same work, same payload,
 * same run: both functions take the 1 KB event and finish after WORK_MS; the streaming one writes
 * the event back at once, the buffered one returns it at the end. Sequential, alternating blocks.
 */
import { CpuAccount, waitForQuiet } from '../cpu.js'
import { interleaved } from '../loops.js'
import { PAYLOAD_BYTES } from '../mesh.js'
import { step } from '../progress.js'
import { compact, summarize } from '../stats.js'
import { row, type Figure } from '../types.js'

/** How long both functions work before they finish */
const WORK_MS = 200
const STREAMING = 'bench-stream'
const BUFFERED = 'bench-buffered'

export const streamFirstByte: Figure = {
  id: 'stream-ttfb',
  title: `Time to first byte, streamed, vs buffered invoke round trip (${PAYLOAD_BYTES} B, function works ${WORK_MS} ms)`,
  run: async (ctx) => {
    const m = await ctx.mesh()
    await step('deploying the streaming and buffered functions', async () => {
      await m.deployCode(STREAMING, [
        'export const handler = awslambda.streamifyResponse(async (event, stream) => {',
        '  stream.write(JSON.stringify(event))',
        `  await new Promise(resolve => setTimeout(resolve, ${WORK_MS}))`,
        '  stream.end()',
        '})',
        ''
      ].join('\n'))
      await m.deployCode(BUFFERED, `export const handler = async (event) => { await new Promise(resolve => setTimeout(resolve, ${WORK_MS})); return event }\n`)
    })
    const n = ctx.options.quick ? 40 : 200
    const warmup = ctx.options.quick ? 10 : 30
    const block = 10
    const firstByte: number[] = []
    const lastByte: number[] = []
    const streamed = async (): Promise<void> => {
      const t0 = performance.now()
      const s = await m.client.invokeStream(STREAMING, m.event, { timeoutMs: 10_000 })
      let first = true
      let bytes = 0
      for await (const c of s) {
        if (first) { firstByte.push(performance.now() - t0); first = false }
        bytes += c.byteLength
      }
      lastByte.push(performance.now() - t0)
      if (bytes !== m.eventBytes.byteLength) throw Object.assign(new Error('wrong body'), { code: 'BENCH_WRONG_RESULT' })
    }
    const buffered = async (): Promise<void> => {
      const r = await m.client.invoke<{ pad: string }>(BUFFERED, m.event, { timeoutMs: 10_000 })
      if (r?.pad?.length !== m.event.pad.length) throw Object.assign(new Error('wrong echo'), { code: 'BENCH_WRONG_RESULT' })
    }
    await step('waiting for the machine to go quiet', async () => await waitForQuiet(ctx.signal))
    await step(`warm-up: ${warmup} calls each`, async () => {
      await interleaved({ streamed, buffered }, warmup, warmup, { label: 'warm-up calls', signal: ctx.signal })
    })
    firstByte.length = 0
    lastByte.length = 0
    const cpu = new CpuAccount(m.cpuGroups)
    const measured = await step(`measuring ${n} sequential calls each (streamed and buffered, alternating blocks of ${block})`, async () =>
      await interleaved({ streamed, buffered }, n, block, { signal: ctx.signal, hooks: { before: () => { cpu.start() }, after: () => { cpu.stop() } } }))
    const ttfb = summarize(firstByte)
    const last = summarize(lastByte)
    const round = summarize(measured.buffered.samples)
    return {
      rows: [
        row('time to first byte, streamed p50', 'ms', ttfb.p50, 'buffered invoke round trip p50', round.p50, 'lower'),
        row('time to first byte, streamed p99', 'ms', ttfb.p99, 'buffered invoke round trip p99', round.p99, 'lower'),
        row('  streamed, time to last byte p50', 'ms', last.p50, 'buffered invoke round trip p50', round.p50, 'lower')
      ],
      otherProcessesCores: cpu.otherProcessesCores(),
      details: {
        calls: n,
        warmupCalls: warmup,
        workMs: WORK_MS,
        payloadBytes: PAYLOAD_BYTES,
        firstByte: compact(ttfb),
        lastByte: compact(last),
        buffered: compact(round),
        errors: { streamed: measured.streamed.errors, buffered: measured.buffered.errors }
      },
      notes: [
        `Streamed: SDK invokeStream() to "${STREAMING}" (writes the ${PAYLOAD_BYTES} B event at once, ends after ${WORK_MS} ms); first byte = the first chunk out of the iterator, timed from the call.`,
        `Buffered: SDK invoke() to "${BUFFERED}" (returns the event after ${WORK_MS} ms). Both on the bench's 3 agents, sequential, ${n} calls each after ${warmup} warm-up calls, alternating blocks of ${block}.`
      ]
    }
  }
}
