/**
 * Figure: warm sync invoke through the whole mesh (SDK -> NATS -> router -> peer -> child ->
 * synced meter write -> back) against raw NATS request-reply with the same 1 KB payload on
 * the same nats-server, sequential, measured in alternating blocks.
 *
 * A second, shorter pass taps `fnmesh.exec.*` to tell invocations the router ran on its own
 * node from those it forwarded to a peer, and gives the latency of each: the cost of the
 * router hop. The tap adds work to this process, so the main figure is measured without it.
 */
import { randomUUID } from 'node:crypto'
import { decode } from '../../../proto/codec.js'
import { CpuAccount, formatCpu, maxDefined, waitForQuiet } from '../cpu.js'
import { interleaved } from '../loops.js'
import { ECHO_FUNCTION, PAYLOAD_BYTES, RAW_SUBJECT, type MeshEnv } from '../mesh.js'
import { step } from '../progress.js'
import { compact, summarize } from '../stats.js'
import { cdfSeries, lineChart } from '../svg.js'
import { latencyRows, row, type Figure } from '../types.js'

const TARGETS = {
  p50: { ratio: 4, source: 'issues 6, 13' },
  p99: { ratio: 5, source: 'issues 6, 13' }
}

export const warmInvoke: Figure = {
  id: 'warm-invoke',
  title: `Warm sync invoke, ${PAYLOAD_BYTES} B echo, sequential`,
  run: async (ctx) => {
    const m = await ctx.mesh()
    const n = ctx.options.quick ? 1000 : 5000
    const warmup = ctx.options.quick ? 300 : 1000
    const block = 250
    const byNode: Record<string, number> = {}
    const meshCall = async (): Promise<void> => {
      const r = await m.client.invokeDetailed<{ pad: string }>(ECHO_FUNCTION, m.event, { timeoutMs: 10_000 })
      if (r.result?.pad?.length !== m.event.pad.length) throw Object.assign(new Error('wrong echo'), { code: 'BENCH_WRONG_RESULT' })
      const name = m.agentName(r.nodeId)
      byNode[name] = (byNode[name] ?? 0) + 1
    }
    const rawCall = async (): Promise<void> => {
      const msg = await m.raw.request(RAW_SUBJECT, m.eventBytes, { timeout: 10_000 })
      if (msg.data.byteLength !== m.eventBytes.byteLength) throw Object.assign(new Error('wrong echo'), { code: 'BENCH_WRONG_RESULT' })
    }

    await step('waiting for the machine to go quiet', async () => await waitForQuiet(ctx.signal))
    await step(`warm-up: ${warmup} calls each`, async () => {
      await interleaved({ mesh: meshCall, raw: rawCall }, warmup, warmup, { label: 'warm-up calls', signal: ctx.signal })
    })
    for (const k of Object.keys(byNode)) delete byNode[k]
    const cpu: Record<string, CpuAccount> = { mesh: new CpuAccount(m.cpuGroups), raw: new CpuAccount(m.cpuGroups) }
    const measured = await step(`measuring ${n} sequential calls each (fnmesh and raw NATS, alternating blocks of ${block})`, async () =>
      await interleaved({ mesh: meshCall, raw: rawCall }, n, block, { signal: ctx.signal, hooks: { before: (v) => { cpu[v].start() }, after: (v) => { cpu[v].stop() } } }))
    const cpuPerCall = { fnmesh: cpu.mesh.perCall(n), rawNats: cpu.raw.perCall(n) }
    const mesh = summarize(measured.mesh.samples)
    const raw = summarize(measured.raw.samples)

    const split = await step(`route split pass: ${ctx.options.quick ? 500 : 1000} calls each with a tap on fnmesh.exec.*`, async () =>
      await routeSplit(m, ctx.options.quick ? 500 : 1000, block, rawCall, ctx.signal))
    const local = summarize(split.local)
    const forwarded = summarize(split.forwarded)
    const splitRaw = summarize(split.raw)
    const total = split.local.length + split.forwarded.length

    const rows = [
      ...latencyRows('warm invoke', mesh, 'raw NATS req-reply', raw, ['p50', 'p99', 'p999'], TARGETS),
      ...(cpuPerCall.fnmesh.total != null && cpuPerCall.rawNats.total != null ? [row('  CPU per call, all processes, sequential', 'ms', cpuPerCall.fnmesh.total, 'raw NATS req-reply', cpuPerCall.rawNats.total, 'lower')] : []),
      ...(local.n > 0 ? [row(`  ran on router's node (${pct(local.n, total)}) p50`, 'ms', local.p50, 'raw NATS, same pass', splitRaw.p50, 'lower')] : []),
      ...(forwarded.n > 0 ? [row(`  forwarded to a peer (${pct(forwarded.n, total)}) p50`, 'ms', forwarded.p50, 'raw NATS, same pass', splitRaw.p50, 'lower')] : [])
    ]
    return {
      rows,
      charts: [{
        name: 'cdf',
        svg: lineChart({
          title: 'Warm sync invoke latency, sequential 1 KB calls',
          xLabel: 'latency, ms (log scale)',
          yLabel: 'fraction of calls',
          logX: true,
          series: [cdfSeries('fnmesh invoke', mesh.cdf), cdfSeries('raw NATS request', raw.cdf), ...(local.n > 0 ? [cdfSeries('fnmesh, run locally', local.cdf)] : []), ...(forwarded.n > 0 ? [cdfSeries('fnmesh, forwarded', forwarded.cdf)] : [])]
        })
      }],
      otherProcessesCores: maxDefined(cpu.mesh.otherProcessesCores(), cpu.raw.otherProcessesCores()),
      details: {
        calls: n,
        warmupCalls: warmup,
        payloadBytes: PAYLOAD_BYTES,
        blockSize: block,
        fnmesh: compact(mesh),
        rawNats: compact(raw),
        errors: { fnmesh: measured.mesh.errors, rawNats: measured.raw.errors },
        executedBy: byNode,
        cpuMsPerCall: cpuPerCall,
        routeSplit: {
          calls: split.calls,
          local: compact(local),
          forwarded: compact(forwarded),
          rawNats: compact(splitRaw),
          localShare: total > 0 ? local.n / total : null,
          errors: split.errors
        }
      },
      notes: [
        `fnmesh: SDK invokeDetailed() to the "${ECHO_FUNCTION}" function (async (event) => event), ${AGENTS_NOTE}; the result is checked on every call.`,
        'raw NATS: request() from a second connection in the benchmark process to a plain echo responder in its own Node process, same nats-server, same 1 KB bytes.',
        `Both sequential, one call in flight, ${n} calls each after ${warmup} warm-up calls, alternating blocks of ${block} so that machine drift hits both alike. p999 of ${n} calls is the ${ordinal(n - Math.ceil(0.999 * n) + 1)}slowest call.`,
        `CPU per call (all processes, from /proc): fnmesh ${formatCpu(cpuPerCall.fnmesh)}; raw NATS ${formatCpu(cpuPerCall.rawNats)}.`,
        `Executed by: ${Object.entries(byNode).map(([k, v]) => `${k} ${v}`).join(', ')}. Router's node vs forwarded: a separate pass of ${split.calls} calls each (fnmesh with a tap on fnmesh.exec.*, and raw NATS as its own baseline, alternating blocks), not part of the main figure.`
      ]
    }
  }
}

const AGENTS_NOTE = '3 agents from startDevCluster (default slots)'
const ordinal = (k: number): string => k === 1 ? '' : `${k}${k === 2 ? 'nd' : k === 3 ? 'rd' : 'th'} `
const pct = (a: number, total: number): string => `${Math.round(100 * a / Math.max(1, total))}%`

/**
 * Sequential calls with known idempotency keys, classified by whether a router forwarded them,
 * alternating in blocks with raw NATS calls that give this pass its own baseline
 */
async function routeSplit (m: MeshEnv, calls: number, block: number, rawCall: () => Promise<void>, signal: AbortSignal): Promise<{ calls: number, local: number[], forwarded: number[], raw: number[], errors: number }> {
  const forwardedIds = new Set<string>()
  const sub = m.raw.subscribe('fnmesh.exec.*', {
    callback: (err, msg) => {
      if (err != null) return
      try { forwardedIds.add(decode('ExecRequest', msg.data).idempotencyKey) } catch {}
    }
  })
  await m.raw.flush()
  const prefix = randomUUID()
  const latency = new Map<string, number>()
  let r
  try {
    r = await interleaved({
      mesh: async (i) => {
        const id = `${prefix}-${i}`
        const t0 = performance.now()
        await m.client.invokeDetailed(ECHO_FUNCTION, m.event, { timeoutMs: 10_000, idempotencyKey: id })
        latency.set(id, performance.now() - t0)
      },
      raw: rawCall
    }, calls, block, { label: 'route split calls', signal })
    // A flush round trip on the tap's connection delivers every earlier message to it.
    await m.raw.flush()
  } finally {
    sub.unsubscribe()
  }
  const local: number[] = []
  const forwarded: number[] = []
  for (const [id, ms] of latency) (forwardedIds.has(id) ? forwarded : local).push(ms)
  return { calls, local, forwarded, raw: r.raw.samples, errors: Object.values(r.mesh.errors).reduce((a, b) => a + b, 0) }
}
