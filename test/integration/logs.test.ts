/**
 * Function logs across a mesh of 2 agents: each invocation's console lines carry its id, go out
 * on NATS from whichever agent ran it, and `fnmesh logs NAME [--follow]` (and the SDK) read them
 * from anywhere; the per-invocation cap and the agent's own error lines included. Also: the
 * environment given at deploy reaches the function.
 */
import { spawn } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CLI_PATH } from '../../node/src/dev/cluster.js'
import { formatLogLine, type LogEntry } from '../../sdk/src/logs.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor, within } from '../helpers/wait.js'

const LINE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\t([\w-]+)\t([A-Z]+)\t(.*)$/

describe('function logs on a mesh of 2 agents', () => {
  let t: TestMesh

  /** Every stored line of `fn`, through the SDK */
  const stored = async (fn: string, sinceMs?: number): Promise<LogEntry[]> => {
    const out: LogEntry[] = []
    for await (const l of t.mesh.logs(fn, { sinceMs, timeoutMs: 10_000 })) out.push(l)
    return out
  }

  beforeAll(async () => {
    t = await startMesh({ nodes: 2, slots: 3 })
  })

  afterAll(async () => {
    await t?.stop()
  })

  it('passes the variables given with deploy --env to the function', async () => {
    const dep = await runCli(['deploy', fixture('greet-env.js'), '--name', 'greet', '--env', 'GREETING=hello', '--env', 'TARGET=mesh', '--nats', t.url])
    expect(dep.stderr).toBe('')
    const res = await runCli(['invoke', 'greet', '--data', '{"n":0}', '--nats', t.url])
    expect(JSON.parse(res.stdout)).toEqual({ greeting: 'hello', target: 'mesh', n: 0 })
  })

  it('prints each invocation\'s lines with its id, from every agent that ran one, on `fnmesh logs NAME`', async () => {
    const runs = await Promise.all([1, 2, 3, 4, 5, 6].map(async n => await t.mesh.invokeDetailed('greet', { n }, { timeoutMs: 10_000 })))
    const ranOn = new Set(runs.map(r => r.nodeId))
    console.log(`greet ran on ${ranOn.size} agent(s)`)
    await waitFor(async () => (await stored('greet')).length >= 7, { timeoutMs: 10_000, message: 'the lines reaching the log stream' })
    const res = await runCli(['logs', 'greet', '--nats', t.url])
    expect(res.stderr).toBe('')
    expect(res.code).toBe(0)
    const lines = res.stdout.trimEnd().split('\n')
    for (const line of lines) expect(line).toMatch(LINE)
    for (const r of runs) {
      const mine = lines.filter(l => l.split('\t')[1] === r.invocationId)
      expect(mine, `lines of invocation ${r.invocationId}`).toHaveLength(1)
      expect(mine[0]).toMatch(new RegExp(`\\tINFO\\tgreeting ${(r as any).result.n} from greet$`))
    }
    const entries = await stored('greet')
    expect(new Set(entries.map(e => e.nodeId))).toEqual(ranOn)
    expect(formatLogLine(entries[0])).toMatch(LINE)
  })

  it('streams new lines with --follow until interrupted', async () => {
    const child = spawn(process.execPath, [CLI_PATH, 'logs', 'greet', '--follow', '--since', '1s', '--nats', t.url], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s })
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s })
    const exited = new Promise<number | null>(resolve => child.on('exit', resolve))
    try {
      const ids: string[] = []
      // Invocations go on until one shows up: the follower subscribes a moment after it starts.
      await waitFor(async () => {
        ids.push((await t.mesh.invokeDetailed('greet', { n: 100 + ids.length }, { timeoutMs: 10_000 })).invocationId)
        return ids.some(id => stdout.includes(`\t${id}\t`))
      }, { timeoutMs: 15_000, intervalMs: 200, message: `a followed line on stdout (stderr: ${stderr})` })
      const later = await t.mesh.invokeDetailed('greet', { n: 999 }, { timeoutMs: 10_000 })
      await waitFor(() => stdout.includes(`\t${later.invocationId}\tINFO\tgreeting 999 from greet`), { timeoutMs: 10_000, message: 'the next invocation\'s line' })
    } finally {
      child.kill('SIGINT')
    }
    expect(await within(exited, 10_000, 'logs --follow exiting on SIGINT')).toBe(0)
    expect(stderr).toBe('')
    for (const line of stdout.trimEnd().split('\n')) expect(line).toMatch(LINE)
  })

  it('cuts a flood of lines at the per-invocation limit and says so', async () => {
    await t.mesh.deploy({ name: 'flood', path: fixture('lambda/logs.js') })
    const r = await t.mesh.invokeDetailed('flood', { flood: 200 }, { timeoutMs: 10_000 })
    await waitFor(async () => (await stored('flood')).some(l => l.message.startsWith('[fnmesh] log output cut')), { timeoutMs: 10_000, message: 'the cut notice' })
    const lines = (await stored('flood')).filter(l => l.invocationId === r.invocationId)
    const kept = lines.filter(l => l.level === 'INFO')
    expect(kept.length).toBeGreaterThan(10)
    expect(kept.length).toBeLessThan(200)
    expect(kept.reduce((n, l) => n + Buffer.byteLength(l.message), 0)).toBeLessThanOrEqual(65536)
    expect(lines.filter(l => l.level === 'WARN' && l.message.startsWith('[fnmesh] log output cut'))).toHaveLength(1)
  })

  it('logs an invocation\'s error and timeout as Lambda does, with its id', async () => {
    await t.mesh.deploy({ name: 'fails', path: fixture('throw.js') })
    await t.mesh.deploy({ name: 'stuck', path: fixture('hang.js'), timeoutMs: 1000 })
    const failed = await t.mesh.invoke('fails', {}).catch((e: unknown) => e) as { code: string, invocationId: string }
    expect(failed.code).toBe('FNMESH_ERR_FUNCTION_ERROR')
    const timed = await t.mesh.invoke('stuck', {}, { timeoutMs: 20_000 }).catch((e: unknown) => e) as { code: string, invocationId: string }
    expect(timed.code).toBe('FNMESH_ERR_TIMEOUT')
    await waitFor(async () => (await stored('fails')).length > 0 && (await stored('stuck')).some(l => l.level === 'ERROR'), { timeoutMs: 10_000, message: 'the error lines' })
    expect((await stored('fails'))[0]).toMatchObject({ invocationId: failed.invocationId, level: 'ERROR', message: 'Invoke Error {"errorType":"TypeError","errorMessage":"boom","code":"FNMESH_ERR_FUNCTION_ERROR"}' })
    // (a namespace monitor may say on stderr how its sandbox was killed, before the agent's line)
    expect((await stored('stuck')).find(l => l.level === 'ERROR')).toMatchObject({ invocationId: timed.invocationId, level: 'ERROR', message: 'Task timed out after 1.00 seconds' })
  })

  it('prints nothing for a function without logs, and refuses a bad name', async () => {
    const res = await runCli(['logs', 'never-ran', '--nats', t.url])
    expect(res).toMatchObject({ code: 0, stdout: '', stderr: '' })
    const bad = await runCli(['logs', 'bad.name', '--nats', t.url])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/^error FNMESH_ERR_INVALID_ARGUMENT: /)
  })
})
