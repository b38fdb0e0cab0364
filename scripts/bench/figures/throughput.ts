/**
 * Figure: throughput at saturation of a trivial function (the 1 KB echo) on 3 agents, with a
 * fixed number of calls in flight, against raw NATS request-reply at the same concurrency.
 */
import { availableParallelism } from 'node:os'
import { CpuAccount, formatCpu, maxDefined } from '../cpu.js'
import { closedLoop, type ClosedLoopResult } from '../loops.js'
import { ECHO_FUNCTION, PAYLOAD_BYTES, RAW_SUBJECT } from '../mesh.js'
import { step } from '../progress.js'
import { compact, summarize } from '../stats.js'
import { barChart } from '../svg.js'
import { row, type Figure, type Row } from '../types.js'

/** Issue 13 (issue 6 asked for 0.25x) */
const TARGET = { ratio: 0.10, source: 'issue 13' }
/** CPU per invocation over every process of the mesh (agents, sandboxes, SDK, nats-server) */
const CPU_TARGET = { value: 0.4, source: 'issue 13' }

export const saturation: Figure = {
  id: 'saturation',
  title: `Throughput at saturation, ${PAYLOAD_BYTES} B echo`,
  run: async (ctx) => {
    const m = await ctx.mesh()
    // Below the slots first (no queueing: the cleanest CPU per invocation), then saturation.
    const below = Math.max(1, Math.floor(m.slots * 2 / 3))
    const levels = [below, 64, 256]
    const warmupMs = ctx.options.quick ? 1000 : 2000
    const durationMs = ctx.options.quick ? 2000 : 8000
    const meshCall = async (): Promise<void> => {
      await m.client.invokeDetailed(ECHO_FUNCTION, m.event, { timeoutMs: 10_000 })
    }
    const rawCall = async (): Promise<void> => {
      await m.raw.request(RAW_SUBJECT, m.eventBytes, { timeout: 10_000 })
    }
    const rows: Row[] = []
    const perSecond: Record<'fnmesh' | 'raw', number[]> = { fnmesh: [], raw: [] }
    const details: Record<string, unknown> = { warmupMs, durationMs, slots: m.slots, levels: {} }
    const cpuNotes: string[] = []
    let others: number | undefined
    // The mesh idle (adverts, heartbeats, anti-entropy, disk checks): a cost per second, not per
    // call, which CPU per call includes in proportion to how few calls a second there are.
    const idle = new CpuAccount(m.cpuGroups)
    await step(`the mesh idle for ${durationMs / 1000} s`, async () => {
      idle.start()
      await new Promise(resolve => setTimeout(resolve, durationMs))
      idle.stop()
    })
    const idleMsPerSecond = idle.perCall(idle.wallMs / 1000)
    details.idleCpuMsPerSecond = idleMsPerSecond
    if (idleMsPerSecond.total != null) cpuNotes.push(`CPU of the idle mesh, ms per second: ${formatCpu(idleMsPerSecond)}.`)
    for (const concurrency of levels) {
      const run = async (what: string, call: () => Promise<void>): Promise<ClosedLoopResult & { cpuMsPerCall: Record<string, number> }> => {
        const cpu = new CpuAccount(m.cpuGroups)
        // The first level also fills the pools (a sandbox per slot): spawns under load are slow
        // on a busy machine, and a child's start must not be billed to warm calls.
        const warm = concurrency === levels[0] ? 3 * warmupMs : warmupMs
        const r = await step(`${what}, ${concurrency} in flight for ${(warm + durationMs) / 1000} s`, async () =>
          await closedLoop(call, { concurrency, warmupMs: warm, durationMs, signal: ctx.signal, onWindow: (edge) => { if (edge === 'start') cpu.start(); else cpu.stop() } }))
        others = maxDefined(others, cpu.otherProcessesCores())
        // CPU over the sampled window, per call completed at the measured rate.
        return { ...r, cpuMsPerCall: cpu.perCall(r.perSecond * cpu.wallMs / 1000) }
      }
      const mesh = await run('fnmesh', meshCall)
      const raw = await run('raw NATS', rawCall)
      perSecond.fnmesh.push(mesh.perSecond)
      perSecond.raw.push(raw.perSecond)
      const saturated = concurrency > m.slots
      rows.push(row(`throughput, ${concurrency} in flight`, '/s', mesh.perSecond, 'raw NATS req-reply', raw.perSecond, 'higher', saturated ? TARGET : undefined))
      if (mesh.cpuMsPerCall.total != null && raw.cpuMsPerCall.total != null) {
        rows.push(row(`  CPU per call, all processes`, 'ms', mesh.cpuMsPerCall.total, 'raw NATS req-reply', raw.cpuMsPerCall.total, 'lower', CPU_TARGET))
        if (idleMsPerSecond.total != null && mesh.perSecond > 0) {
          rows.push(row(`  the same above the idle mesh's`, 'ms', Math.max(0, mesh.cpuMsPerCall.total - idleMsPerSecond.total / mesh.perSecond), 'raw NATS req-reply', raw.cpuMsPerCall.total, 'lower'))
        }
        cpuNotes.push(`CPU per call at ${concurrency} in flight: fnmesh ${formatCpu(mesh.cpuMsPerCall)}; raw NATS ${formatCpu(raw.cpuMsPerCall)}.`)
      }
      ;(details.levels as Record<string, unknown>)[concurrency] = { fnmesh: describe(mesh), rawNats: describe(raw) }
    }
    return {
      rows,
      charts: [{
        name: 'per-second',
        svg: barChart({
          title: 'Throughput at saturation: fnmesh (3 agents) against raw NATS request-reply',
          yLabel: 'completed calls per second',
          groups: levels.map(c => `${c} in flight`),
          series: [{ name: 'fnmesh invoke', values: perSecond.fnmesh }, { name: 'raw NATS echo', values: perSecond.raw }]
        })
      }],
      otherProcessesCores: others,
      details,
      notes: [
        `Closed loop: each of N callers in the benchmark process invokes again as soon as its call returns; ${warmupMs} ms warm-up (sandboxes spawn, JIT), then successful calls completed in ${durationMs} ms are counted.`,
        `fnmesh: SDK invoke of "${ECHO_FUNCTION}" on 3 agents with ${m.slots} slots in all: beyond that the routers queue (up to 500 ms) and then answer FNMESH_ERR_NO_CAPACITY, counted as errors, not throughput. ${below} in flight stays below the slots (no queueing): its CPU per call is the cleanest; the throughput target applies to the saturated levels.`,
        'CPU per call: CPU time (user + system, from /proc) of every process of the run over the measured window, divided by the calls completed in it; "sandboxes" counts every descendant of the agents (bwrap or unshare monitors and the Node children inside).',
        'raw NATS: one echo responder process, same nats-server, same payload, same callers.',
        ...cpuNotes,
        `All processes (nats-server, agents, sandboxes, responder, this one) share the ${availableParallelism()} cores of this machine.`
      ]
    }
  }
}

function describe (r: ClosedLoopResult & { cpuMsPerCall: Record<string, number> }): Record<string, unknown> {
  return { perSecond: Math.round(r.perSecond), ok: r.samples.length, completed: r.completed, errors: r.errors, latency: compact(summarize(r.samples)), cpuMsPerCall: r.cpuMsPerCall }
}
