/**
 * Figure: cold start, the first invocation of a freshly deployed function, against a bare
 * `node -e ''` process start measured in the same run: with the environment the sandbox gives
 * its children ({PATH, LANG, TZ} only) and, for reference, with this process's environment
 * (which may carry NODE_EXTRA_CA_CERTS, a ~40 ms start cost on this machine).
 *
 * Each function has its own code (a distinct bundle digest), so every cold start also fetches
 * and unpacks its bundle on the chosen node, as a real first call does. Calls are paced so the
 * agents' pools of pre-booted generic workers refill between them: this is the cold start of an
 * isolated first call, not of a burst of them.
 */
import { spawn } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import { step, ticker } from '../progress.js'
import { compact, summarize } from '../stats.js'
import { latencyRows, row, type Figure } from '../types.js'
import { waitForQuiet } from '../cpu.js'
import { cdfSeries, lineChart } from '../svg.js'
import { SANDBOX_ENV } from './sandbox.js'

const GAP_MS = 250

export const coldStart: Figure = {
  id: 'cold-start',
  title: 'Cold start: first invocation of a freshly deployed function',
  run: async (ctx) => {
    const m = await ctx.mesh()
    const n = ctx.options.quick ? 12 : 50
    const prefix = `bench-cold-${Date.now().toString(36)}`
    const names = Array.from({ length: n }, (_, i) => `${prefix}-${i}`)
    const deployMs: number[] = []
    await step(`deploying ${n} functions`, async () => {
      const tick = ticker('deployed', n)
      for (const [i, name] of names.entries()) {
        ctx.signal.throwIfAborted()
        const t0 = performance.now()
        await m.deployCode(name, `// ${name}: its own bundle digest\nexport const handler = async (event) => ({ ok: true, n: event.n })\n`)
        deployMs.push(performance.now() - t0)
        tick(i + 1)
      }
    })

    // The figures before leave the shared mesh busy for a while (replicating and compacting
    // their records): cold starts are measured on a quiet machine.
    const settledMs = await step('waiting for the machine to go quiet', async () => await waitForQuiet(ctx.signal))
    const cold: number[] = []
    const coldDuration: number[] = []
    const notCold: string[] = []
    const errors: Record<string, number> = {}
    const byNode: Record<string, number> = {}
    const bareClean: number[] = []
    const bareInherited: number[] = []
    await step(`invoking each once (paced ${GAP_MS} ms), with node -e '' starts in between`, async () => {
      const tick = ticker('cold starts', n)
      for (const [i, name] of names.entries()) {
        ctx.signal.throwIfAborted()
        await sleep(GAP_MS)
        const t0 = performance.now()
        try {
          const r = await m.client.invokeDetailed(name, { n: i }, { timeoutMs: 30_000 })
          const ms = performance.now() - t0
          if (r.cold) {
            cold.push(ms)
            coldDuration.push(r.durationMs)
          } else {
            notCold.push(name)
          }
          byNode[m.agentName(r.nodeId)] = (byNode[m.agentName(r.nodeId)] ?? 0) + 1
        } catch (err: any) {
          const code = String(err?.code ?? err?.name ?? 'Error')
          errors[code] = (errors[code] ?? 0) + 1
        }
        await sleep(GAP_MS)
        bareClean.push(await nodeStart(SANDBOX_ENV))
        bareInherited.push(await nodeStart({ ...process.env }))
        tick(i + 1)
      }
    })
    const warm: number[] = []
    let coldAgain = 0
    await step('invoking each again', async () => {
      for (const [i, name] of names.entries()) {
        ctx.signal.throwIfAborted()
        const t0 = performance.now()
        try {
          const r = await m.client.invokeDetailed(name, { n: i }, { timeoutMs: 30_000 })
          // Cold again when routed to a node where the function has no warm sandbox.
          if (r.cold) coldAgain++
          else warm.push(performance.now() - t0)
        } catch {}
      }
    })

    const c = summarize(cold)
    const clean = summarize(bareClean)
    const inherited = summarize(bareInherited)
    const w = summarize(warm)
    const rows = [
      ...latencyRows('cold start', c, "node -e '' (sandbox env)", clean, ['p50', 'p99'], { p50: { ratio: 1, source: 'issue 3' } }),
      row('cold start p50', 'ms', c.p50, "node -e '' (inherited env)", inherited.p50, 'lower'),
      row('cold start p50', 'ms', c.p50, 'same functions, 2nd call if warm', w.p50, 'lower')
    ]
    return {
      rows,
      details: {
        functions: n,
        settledMs,
        gapMs: GAP_MS,
        coldClientMs: compact(c),
        coldHandlerDurationMs: compact(summarize(coldDuration)),
        secondCallWarmMs: compact(w),
        secondCallsColdAgain: coldAgain,
        nodeStartSandboxEnvMs: compact(clean),
        nodeStartInheritedEnvMs: compact(inherited),
        inheritedEnvHasExtraCaCerts: process.env.NODE_EXTRA_CA_CERTS != null,
        deployMs: compact(summarize(deployMs)),
        firstCallsNotCold: notCold.length,
        errors,
        executedBy: byNode
      },
      notes: [
        `${n} functions, each with its own bundle, deployed through the SDK, then each invoked once, ${GAP_MS} ms apart; "cold start" is the client-side latency of the calls reported cold (${cold.length} of ${n}${notCold.length > 0 ? `; ${notCold.length} came back warm and are left out` : ''}). It includes bundle fetch and unpack on the chosen node, loading the module in a pre-booted worker, the call and the synced meter write.`,
        `Second call of each function: ${coldAgain} of ${n} were cold again (routed to a node where it had no warm sandbox); the ${w.n} warm ones give the "2nd call" baseline.`,
        `The handler's own duration (durationMs) of those calls: p50 ${summarize(coldDuration).p50.toFixed(3)} ms.`,
        `node -e '': spawn to exit, sequential, one of each environment after every cold call, env {PATH, LANG, TZ} as the sandbox sets it, and the inherited one (NODE_EXTRA_CA_CERTS ${process.env.NODE_EXTRA_CA_CERTS != null ? 'set' : 'not set'}).`
      ],
      charts: [{
        name: 'cdf',
        svg: lineChart({
          title: 'Cold start through the mesh against a bare process start',
          xLabel: 'latency, ms (log scale)',
          yLabel: 'fraction of calls',
          logX: true,
          series: [
            cdfSeries('fnmesh cold start', c.cdf),
            cdfSeries("node -e '' (sandbox env)", clean.cdf),
            cdfSeries("node -e '' (inherited env)", inherited.cdf),
            ...(w.n > 0 ? [cdfSeries('2nd call, warm', w.cdf)] : [])
          ]
        })
      }]
    }
  }
}

/** ms from spawn to exit of `node -e ''` */
async function nodeStart (env: NodeJS.ProcessEnv): Promise<number> {
  const t0 = performance.now()
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', ''], { env, stdio: 'ignore' })
    const timer = setTimeout(() => { child.kill('SIGKILL') }, 10_000)
    child.once('error', (err) => { clearTimeout(timer); reject(err) })
    child.once('exit', (code) => { clearTimeout(timer); if (code === 0) resolve(); else reject(new Error(`node -e '' exited with ${String(code)}`)) })
  })
  return performance.now() - t0
}
