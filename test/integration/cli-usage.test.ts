/**
 * Every numeric, duration and file option of every CLI command: a value the command line cannot
 * use is one stderr line `error FNMESH_ERR_BAD_USAGE: ...` and exit status 2, found before
 * anything connects (the NATS URL here is dead: a value that got through would give
 * FNMESH_ERR_NATS_UNAVAILABLE and exit 1 instead).
 */
import { describe, expect, it } from 'vitest'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'

const DEAD = ['--nats', 'nats://127.0.0.1:1']
const MISSING = '/nonexistent/fnmesh-missing-file'
const fn = fixture('ok.js')
const deploy = (...args: string[]): string[] => ['deploy', fn, '--name', 'x', ...args]

const CASES: string[][] = [
  // invoke
  ['invoke', 'x', '--timeout', 'abc'], ['invoke', 'x', '--timeout', '0'], ['invoke', 'x', '--timeout', '-1'], ['invoke', 'x', '--timeout', ''],
  ['invoke', 'x', '--data', `@${MISSING}`],
  // publish
  ['publish', 'a.b', '--data', `@${MISSING}`],
  // deploy
  deploy('--timeout', 'soon'), deploy('--timeout', '0'), deploy('--timeout', '901'),
  deploy('--memory', 'lots'), deploy('--memory', '64'), deploy('--memory', '1.5'),
  deploy('--concurrency', '-1'), deploy('--concurrency', 'x'),
  deploy('--retries', 'x'), deploy('--retries', '-1'), deploy('--retries', '101'),
  deploy('--retry-backoff', 'soon'), deploy('--retry-backoff', '0s'), deploy('--max-event-age', '6'),
  deploy('--route', 'POST /a', '--rate-limit', '0'), deploy('--route', 'POST /a', '--rate-limit', '5', '--burst', 'x'),
  deploy('--route', 'POST /a', '--schema', MISSING), deploy('--route', 'POST /a', '--auth', 'jwt', '--jwt-secret', MISSING, '--jwt-audience', 'a'),
  deploy('--route', 'POST /a', '--auth', 'jwt', '--jwt-jwks', MISSING, '--jwt-audience', 'a'), deploy('--sign', MISSING), deploy('--env', 'NOEQUALS'), deploy('--env', '=x'),
  // usage, logs
  ['usage', '--since', 'yesterday'], ['usage', '--since', '0h'], ['usage', '--until', '5'], ['usage', '--price', 'gbs=cheap'], ['usage', '--price', ''],
  ['logs', 'x', '--since', 'abc'],
  // keys
  ['keys', 'create', 'k', '--rate', 'fast'], ['keys', 'create', 'k', '--rate', '0'], ['keys', 'create', 'k', '--rate', '5', '--burst', '-3'],
  // dev
  ['dev', '--nodes', '0'], ['dev', '--nodes', '33'], ['dev', '--nodes', 'x'], ['dev', '--port', '70000'], ['dev', '--http', 'x'], ['dev', '--slots', '0'],
  // agent (checked before it connects or starts anything)
  ['agent', '--slots', 'many'], ['agent', '--slots', '0'], ['agent', '--replicas', 'x'], ['agent', '--replicas', '65'], ['agent', '--ack-replicas', '3', '--replicas', '2'], ['agent', '--ack-timeout', 'soon'], ['agent', '--ack-timeout', '5'],
  ['agent', '--retention', 'forever'], ['agent', '--retention', '1s'], ['agent', '--billing-granularity', '0'], ['agent', '--min-free-mb', '-5'],
  ['agent', '--sync-interval', 'often'], ['agent', '--tmp-mb', '0'], ['agent', '--tmp-mb', 'big'], ['agent', '--http', 'nope'], ['agent', '--http', '99999'],
  ['agent', '--sandbox', 'maybe'], ['agent', '--swarm-key', MISSING], ['agent', '--trust', MISSING], ['agent', '--name', 'bad name'],
  ['agent', '--admin', 'nope'], ['agent', '--admin', '70000'], ['agent', '--admin', '0.0.0.0:9100'], ['agent', '--admin', '9100', '--admin-token', MISSING]
]

describe('bad values of CLI options', () => {
  it('give FNMESH_ERR_BAD_USAGE and exit 2 for every numeric, duration and file option, before connecting', async () => {
    const results: Array<{ args: string[], code: number | null, stderr: string, stdout: string }> = []
    // a few at a time: each is a Node process start
    for (let i = 0; i < CASES.length; i += 6) {
      results.push(...await Promise.all(CASES.slice(i, i + 6).map(async (args) => ({ args, ...await runCli([...args, ...DEAD], { timeoutMs: 20_000 }) }))))
    }
    const wrong = results.filter(r => r.code !== 2 || !/^error FNMESH_ERR_BAD_USAGE: \S/.test(r.stderr) || r.stderr.trimEnd().split('\n').length !== 1 || r.stdout !== '')
    for (const r of results) console.log(`fnmesh ${r.args.join(' ')} -> ${r.code ?? 'signal'} ${r.stderr.trim()}`)
    expect(wrong.map(r => `fnmesh ${r.args.join(' ')} -> ${r.code ?? 'signal'} ${r.stderr.trim()}`)).toEqual([])
  }, 180_000)

  it('still accepts good values (they get as far as the dead NATS URL)', async () => {
    const good = [['invoke', 'x', '--timeout', '1.5'], deploy('--timeout', '0.5', '--memory', '256', '--retry-backoff', '2s', '--max-event-age', '1h'), ['usage', '--since', '2h', '--price', 'gbs=1,req=0.5']]
    for (const args of good) {
      const r = await runCli([...args, ...DEAD], { timeoutMs: 20_000 })
      expect(r.stderr, args.join(' ')).toMatch(/^error FNMESH_ERR_NATS_UNAVAILABLE: /)
      expect(r.code).toBe(1)
    }
  }, 60_000)
})
