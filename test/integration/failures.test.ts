/**
 * Functions that throw, hang, exit or run out of memory: each gives its error code through the
 * SDK and the CLI, is metered as an error, and leaves every agent serving.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FnmeshError } from '../../proto/errors.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { countBy, startLoad } from '../helpers/load.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor, within } from '../helpers/wait.js'

interface Expected { code: string, errorType: string | RegExp, message: string | RegExp }

const EXPECTED: Record<string, Expected> = {
  throws: { code: 'FNMESH_ERR_FUNCTION_ERROR', errorType: 'TypeError', message: 'boom' },
  // Lambda's own words for a run the runtime could not finish: "RequestId: ID Error: ..."
  hangs: { code: 'FNMESH_ERR_TIMEOUT', errorType: 'Sandbox.Timedout', message: /^RequestId: [0-9a-f-]{36} Error: Task timed out after 1\.00 seconds$/ },
  exits: { code: 'FNMESH_ERR_FUNCTION_EXITED', errorType: 'Runtime.ExitError', message: /^RequestId: [0-9a-f-]{36} Error: Runtime exited with error: exit status 3$/ },
  oom: { code: 'FNMESH_ERR_OUT_OF_MEMORY', errorType: 'Runtime.OutOfMemory', message: /^RequestId: [0-9a-f-]{36} Error: Runtime exited with error: (signal: (killed|aborted)|exit status \d+)$/ }
}
const FAILING = Object.keys(EXPECTED)

/** Invokes and returns the FnmeshError it must throw */
async function invokeError (t: TestMesh, fn: string): Promise<FnmeshError> {
  const err = await within(t.mesh.invoke(fn, {}, { timeoutMs: 30_000 }).then(
    (result) => { throw new Error(`"${fn}" succeeded with ${JSON.stringify(result)}`) },
    (e: unknown) => e
  ), 35_000, `invoke "${fn}"`)
  expect(err).toBeInstanceOf(FnmeshError)
  return err as FnmeshError
}

describe('failing functions on a mesh of 3 agents', () => {
  let t: TestMesh
  /** invocations made per function, to check the ledger against */
  const made: Record<string, number> = {}
  const count = (fn: string, n = 1): void => { made[fn] = (made[fn] ?? 0) + n }

  beforeAll(async () => {
    t = await startMesh({ nodes: 3, slots: 3 })
    await t.mesh.deploy({ name: 'ok', path: fixture('ok.js') })
    await t.mesh.deploy({ name: 'throws', path: fixture('throw.js') })
    await t.mesh.deploy({ name: 'hangs', path: fixture('hang.js'), timeoutMs: 1000 })
    await t.mesh.deploy({ name: 'exits', path: fixture('exit.js') })
    await t.mesh.deploy({ name: 'oom', path: fixture('oom.js'), memoryMb: 128, timeoutMs: 15_000 })
  })

  afterAll(async () => {
    await t?.stop()
  })

  it('gives a throwing, a hanging, an exiting and an out-of-memory function their error codes through the SDK while an ok function keeps succeeding', async () => {
    const ok = startLoad(t.mesh, 'ok', { concurrency: 2, event: i => ({ i }) })
    const failedOn: Record<string, string[]> = {}
    try {
      for (const fn of FAILING) {
        // Three at once, so they land on more than one agent.
        const errors = await Promise.all([1, 2, 3].map(async () => await invokeError(t, fn)))
        count(fn, 3)
        failedOn[fn] = errors.map(e => t.cluster.agents.find(a => a.nodeId === (e as any).nodeId)?.name ?? `? ${String((e as any).nodeId)}`)
        const want = EXPECTED[fn]
        for (const err of errors) {
          expect(err.code, `code of "${fn}"`).toBe(want.code)
          if (typeof want.errorType === 'string') expect(err.errorType).toBe(want.errorType)
          if (typeof want.message === 'string') expect(err.message).toBe(want.message)
          else expect(err.message).toMatch(want.message)
        }
      }
    } finally {
      ok.stop()
      await within(ok.done, 30_000, 'the ok load')
    }
    count('ok', ok.records.length)
    console.log('failures ran on:', failedOn, '| ok calls alongside:', ok.records.length, countBy(ok.records, r => r.ok ? 'ok' : r.code))
    expect(ok.records.filter(r => !r.ok).map(r => `${r.code}: ${r.message}`)).toEqual([])
    expect(ok.records.length).toBeGreaterThan(10)
    // The thrown error's stack comes back as the Lambda trace.
    const thrown = await invokeError(t, 'throws')
    count('throws')
    expect(thrown.trace.join('\n')).toMatch(/TypeError: boom/)
  })

  it('prints each failure on the CLI as one stderr line `error CODE: errorType: message` with exit status 1', async () => {
    const results = await Promise.all(FAILING.map(async fn => ({ fn, res: await runCli(['invoke', fn, '--data', '{}', '--nats', t.url], { timeoutMs: 40_000 }) })))
    for (const { fn, res } of results) {
      count(fn)
      const want = EXPECTED[fn]
      expect(res.code, `exit status of invoke ${fn}`).toBe(1)
      expect(res.stdout).toBe('')
      expect(res.stderr.endsWith('\n')).toBe(true)
      expect(res.stderr.trimEnd().split('\n'), `stderr of invoke ${fn}`).toHaveLength(1)
      expect(res.stderr).toMatch(new RegExp(`^error ${want.code}: `))
      expect(res.stderr).toMatch(new RegExp(`^error ${want.code}: ${String(want.errorType).replaceAll('.', '\\.')}: `))
      const message = res.stderr.trimEnd().slice(`error ${want.code}: ${String(want.errorType)}: `.length)
      if (typeof want.message === 'string') expect(message).toBe(want.message)
      else expect(message).toMatch(want.message)
    }
  })

  it('still runs an ok function on every agent after the failures', async () => {
    for (const a of t.cluster.agents) expect(a.running, `${a.name} is running`).toBe(true)
    const seen = new Set<string>()
    // Concurrent bursts: one caller alone would keep landing on the warmest agent.
    await waitFor(async () => {
      const outs = await Promise.all([1, 2, 3, 4, 5].map(async i => await t.mesh.invokeDetailed<{ ok: boolean }>('ok', { i }, { timeoutMs: 10_000 })))
      count('ok', outs.length)
      for (const o of outs) {
        expect(o.result.ok).toBe(true)
        seen.add(o.nodeId)
      }
      return t.cluster.agents.every(a => seen.has(a.nodeId))
    }, { timeoutMs: 20_000, intervalMs: 0, message: 'an ok result from every agent' })
  })

  it('still lists every agent in `fnmesh nodes --json`', async () => {
    const res = await runCli(['nodes', '--json', '--nats', t.url])
    expect(res.stderr).toBe('')
    expect(res.code).toBe(0)
    const nodes = JSON.parse(res.stdout) as Array<{ id: string, name: string, slots: number, inFlight: number, lastSeenMs: number }>
    expect(nodes.map(n => n.id).sort()).toEqual(t.cluster.agents.map(a => a.nodeId).sort())
    for (const n of nodes) {
      expect(n.slots).toBe(3)
      expect(typeof n.inFlight).toBe('number')
      expect(n.lastSeenMs).toBeLessThan(3000)
    }
  })

  it('meters every failed invocation as an error and every ok one as a success', async () => {
    const res = await runCli(['usage', '--json', '--nats', t.url], { timeoutMs: 20_000 })
    expect(res.code).toBe(0)
    const usage = JSON.parse(res.stdout) as { functions: Array<{ name: string, invocations: number, errors: number }>, missing: string[] }
    console.log('invocations made:', made, '| usage:', usage.functions.map(f => `${f.name} ${f.invocations}/${f.errors} errors`).join(', '))
    expect(usage.missing).toEqual([])
    const byName = Object.fromEntries(usage.functions.map(f => [f.name, { invocations: f.invocations, errors: f.errors }]))
    const want = Object.fromEntries(Object.entries(made).map(([fn, n]) => [fn, { invocations: n, errors: fn === 'ok' ? 0 : n }]))
    expect(byName).toEqual(want)
  })
})
