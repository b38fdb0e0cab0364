/**
 * Figure: the HTTP gateway. Requests per second and p50/p99 of a trivial function behind a
 * route, measured with wrk over loopback, next to the same HTTP library (node:http) answering a
 * constant response in its own process in the same run (the ceiling), and next to `fnmesh
 * invoke` of the same function over NATS (SDK, same number in flight). Then the cost of auth per
 * request: end to end (apikey, JWT HS256, JWT ES256 routes, same wrk run) and the CPU of the
 * check alone, timed in this process.
 */
import { spawn, spawnSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import type { HttpRoute } from '../../../proto/codec.js'
import { startDevCluster } from '../../../node/src/dev/cluster.js'
import { Authenticator, KeyStore } from '../../../node/src/gateway/auth.js'
import { silentLogger } from '../../../node/src/logger.js'
import { connect } from '../../../sdk/src/client.js'
import { hashApiKey } from '../../../core/apikeys.js'
import { closedLoop } from '../loops.js'
import { note, step } from '../progress.js'
import { compact, round, summarize } from '../stats.js'
import { row, type Figure, type Row } from '../types.js'

const CONNECTIONS = 16
const SECRET = 'bench-secret-bench-secret-bench-secret'

interface WrkResult { perSecond: number, p50: number, p99: number, requests: number, non2xx: number, errors: string }

/** wrk on PATH, installing Debian's package when this user can */
function findWrk (): string | undefined {
  const which = (): string => spawnSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' }).stdout.trim()
  if (which() !== '') return which()
  if (process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v apt-get']).status === 0) {
    note('wrk is missing: installing Debian\'s package (apt-get install -y wrk)')
    if (spawnSync('apt-get', ['install', '-y', '-qq', 'wrk'], { stdio: 'ignore' }).status !== 0) spawnSync('sh', ['-c', 'apt-get update -qq && apt-get install -y -qq wrk'], { stdio: 'ignore' })
  }
  return which() !== '' ? which() : undefined
}

function ms (text: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text)
  if (m == null) return NaN
  return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1)
}

async function wrk (bin: string, url: string, seconds: number, headers: Record<string, string> = {}): Promise<WrkResult> {
  const args = ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', '--timeout', '10s', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url]
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let text = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { text += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { text += d })
    const timer = setTimeout(() => { child.kill('SIGKILL') }, (seconds + 30) * 1000)
    child.on('exit', () => { clearTimeout(timer); resolve(text) })
    child.on('error', reject)
  })
  const perSecond = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN)
  const p50 = ms(/\s50%\s+(\S+)/.exec(out)?.[1] ?? '')
  const p99 = ms(/\s99%\s+(\S+)/.exec(out)?.[1] ?? '')
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0)
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0)
  const errors = /Socket errors:.*/.exec(out)?.[0] ?? ''
  if (!Number.isFinite(perSecond)) throw new Error(`wrk gave no result: ${out.slice(-500)}`)
  return { perSecond, p50, p99, requests, non2xx, errors }
}

/** The ceiling: node:http answering a constant JSON body, in its own process */
const CONSTANT_SERVER = `
const http = require('node:http')
const body = Buffer.from('{"ok":true}')
const s = http.createServer((req, res) => { res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length }); res.end(body) })
s.listen(0, '127.0.0.1', () => { process.stdout.write(String(s.address().port) + '\\n') })
`

export const gatewayFigure: Figure = {
  id: 'gateway',
  title: 'HTTP gateway: trivial function over loopback (wrk), auth cost',
  run: async (ctx) => {
    const bin = findWrk()
    if (bin == null) throw new Error('wrk is not installed and could not be installed: run "apt-get install -y wrk"')
    const seconds = ctx.options.quick ? 2 : 8
    const work = await ctx.cleanup.tempDir('gw')
    // The ceiling, in its own process like the agent
    const server = spawn(process.execPath, ['-e', CONSTANT_SERVER], { stdio: ['ignore', 'pipe', 'ignore'] })
    ctx.cleanup.defer('stop the constant HTTP server', () => { server.kill('SIGKILL') })
    const constantPort = await new Promise<number>((resolve, reject) => {
      server.stdout.setEncoding('utf8').once('data', (d: string) => { resolve(Number(d.trim())) })
      server.once('exit', () => { reject(new Error('the constant HTTP server exited')) })
    })
    const starting = startDevCluster({ nodes: 1, args: ['--http', '127.0.0.1:0'] })
    ctx.cleanup.defer('stop the gateway mesh', async () => { await (await starting.catch(() => undefined))?.stop() }, 60_000)
    const cluster = await step('starting nats-server and 1 agent with --http', async () => await starting)
    const port = cluster.agents[0].ready.httpPort as number
    const mesh = await connect({ servers: cluster.nats.url })
    ctx.cleanup.defer('close the SDK client', async () => { await mesh.close() })
    const fn = join(work, 'index.js')
    await writeFile(fn, 'exports.handler = async () => ({ ok: true })\n')
    const es = await generateKeyPair('ES256')
    const jwks = { keys: [{ ...(await exportJWK(es.publicKey)), kid: 'b1', alg: 'ES256' }] }
    // One function behind every route: the variants share its warm sandboxes, so they differ
    // only by the route's auth.
    await mesh.deploy({
      name: 'gw-none',
      path: fn,
      routes: ['GET /none', { route: 'GET /key', auth: 'apikey' }, { route: 'GET /hs', auth: 'jwt', jwt: { secret: SECRET, audience: 'bench' } }, { route: 'GET /es', auth: 'jwt', jwt: { jwks, audience: 'bench' } }]
    })
    const { key } = await mesh.keys.create('bench')
    const exp = Math.floor(Date.now() / 1000) + 3600
    const hsToken = await new SignJWT({ sub: 'bench' }).setProtectedHeader({ alg: 'HS256' }).setAudience('bench').setExpirationTime(exp).sign(new TextEncoder().encode(SECRET))
    const esToken = await new SignJWT({ sub: 'bench' }).setProtectedHeader({ alg: 'ES256', kid: 'b1' }).setAudience('bench').setExpirationTime(exp).sign(es.privateKey)
    const base = `http://127.0.0.1:${port}`
    const variants: Record<string, [string, Record<string, string>]> = {
      constant: [`http://127.0.0.1:${constantPort}/`, {}],
      none: [`${base}/none`, {}],
      apikey: [`${base}/key`, { 'x-api-key': key }],
      'jwt HS256': [`${base}/hs`, { authorization: `Bearer ${hsToken}` }],
      'jwt ES256': [`${base}/es`, { authorization: `Bearer ${esToken}` }]
    }
    for (const [url, headers] of Object.values(variants)) await wrk(bin, url, 1, headers)
    // Interleaved rounds (A B C D E, A B C D E, ...) so that load from elsewhere on a shared
    // machine hits every variant alike.
    const rounds = ctx.options.quick ? 2 : 4
    const perRound = seconds / rounds
    const byVariant: Record<string, WrkResult[]> = Object.fromEntries(Object.keys(variants).map(k => [k, []]))
    await step(`wrk ${CONNECTIONS} connections, ${rounds} rounds of ${perRound} s per variant: ${Object.keys(variants).join(', ')}`, async () => {
      for (let r = 0; r < rounds; r++) {
        for (const [name, [url, headers]] of Object.entries(variants)) byVariant[name].push(await wrk(bin, url, perRound, headers))
      }
    })
    const results: Record<string, WrkResult> = Object.fromEntries(Object.entries(byVariant).map(([k, rs]) => [k, merge(rs)]))
    for (const [name, r] of Object.entries(results)) if (r.non2xx > 0) note(`${name}: ${r.non2xx} non-2xx answers`)
    const invoke = await step(`fnmesh invoke over NATS, ${CONNECTIONS} in flight, ${seconds} s`, async () =>
      await closedLoop(async () => { await mesh.invoke('gw-none', {}, { timeoutMs: 10_000 }) }, { concurrency: CONNECTIONS, warmupMs: 1000, durationMs: seconds * 1000, signal: ctx.signal }))
    const inv = summarize(invoke.samples)
    const cpu = await authCpu(key, hsToken, esToken, jwks)
    const g = results.none
    const rows: Row[] = [
      row(`gateway throughput, ${CONNECTIONS} connections`, '/s', g.perSecond, 'node:http constant response', results.constant.perSecond, 'higher'),
      row('  gateway p50', 'ms', g.p50, 'node:http constant response', results.constant.p50, 'lower'),
      row('  gateway p99', 'ms', g.p99, 'node:http constant response', results.constant.p99, 'lower'),
      row('gateway throughput', '/s', g.perSecond, `fnmesh invoke over NATS (SDK, ${CONNECTIONS} in flight)`, invoke.perSecond, 'higher'),
      row('  gateway p50', 'ms', g.p50, 'fnmesh invoke over NATS', inv.p50, 'lower'),
      row('  gateway p99', 'ms', g.p99, 'fnmesh invoke over NATS', inv.p99, 'lower')
    ]
    for (const name of ['apikey', 'jwt HS256', 'jwt ES256']) {
      rows.push(row(`${name} route throughput`, '/s', results[name].perSecond, 'route without auth', g.perSecond, 'higher'))
      rows.push(row(`  ${name} route p50`, 'ms', results[name].p50, 'route without auth', g.p50, 'lower'))
    }
    for (const [name, usPerCheck] of Object.entries(cpu)) rows.push(row(`${name} check, CPU per request`, 'ms', usPerCheck / 1000, 'gateway p50 without auth', g.p50, 'lower'))
    return {
      rows,
      details: { connections: CONNECTIONS, seconds, wrk: results, invoke: { perSecond: Math.round(invoke.perSecond), errors: invoke.errors, latency: compact(inv) }, authCheckMicroseconds: Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, round(v, 2)])) },
      notes: [
        `wrk -t1 -c${CONNECTIONS} --latency over loopback, keep-alive, ${seconds} s per variant in ${ctx.options.quick ? 2 : 4} interleaved rounds (requests/s over all rounds; p50 and p99 the median of the rounds' own, from wrk's HdrHistogram); one agent (--http, 8 slots) with a nats-server; the function a one-line async handler returning {ok:true} (a bare object: a 200 JSON response), behind four routes that differ only by auth.`,
        'The ceiling is the same HTTP library (node:http, the one the gateway uses) answering a constant body in its own process in the same run: the difference is the gateway\'s work plus the invocation (router, executor, sandbox round trip, meter record synced to LevelDB).',
        `fnmesh invoke: the SDK in this process, ${CONNECTIONS} calls in flight on the same function and agent (NATS request to the router, then the same path).`,
        'Auth, end to end: the same function behind routes with auth apikey, jwt HS256 (secret) and jwt ES256 (JWKS). Auth CPU: Authenticator.check() timed alone in this process (apikey: SHA-256 of the key and a map lookup; JWT: jose verify with exp/aud checks).',
        'Everything shares the 2 cores of this machine with wrk itself; other sessions\' load on a shared machine moves these numbers.'
      ]
    }
  }
}

/** Rounds of one variant -> one result: rates over all rounds, the median of each percentile */
function merge (rs: WrkResult[]): WrkResult {
  const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)] }
  const requests = rs.reduce((n, r) => n + r.requests, 0)
  return {
    perSecond: rs.reduce((n, r) => n + r.perSecond, 0) / rs.length,
    p50: median(rs.map(r => r.p50)),
    p99: median(rs.map(r => r.p99)),
    requests,
    non2xx: rs.reduce((n, r) => n + r.non2xx, 0),
    errors: rs.map(r => r.errors).filter(Boolean).join('; ')
  }
}

/** Microseconds of CPU per auth check, in this process */
async function authCpu (key: string, hsToken: string, esToken: string, jwks: object): Promise<Record<string, number>> {
  const store = new KeyStore(silentLogger())
  // The store as the gateway fills it from KV, with the one key
  ;(store as unknown as { byHash: Map<string, unknown> }).byHash.set(hashApiKey(key), { name: 'bench', sha256: hashApiKey(key), prefix: '', ratePerS: 0, burst: 0, createdAtMs: 0 })
  const auth = new Authenticator(store)
  const route = (auth: string, jwt?: HttpRoute['jwt']): HttpRoute => ({ method: 'GET', path: '/x', auth, jwt: jwt as never, schema: '', cors: null as never, ratePerS: 0, burst: 0 })
  const cases: Record<string, [HttpRoute, Record<string, string>]> = {
    apikey: [route('apikey'), { 'x-api-key': key }],
    'jwt HS256': [route('jwt', { secret: new TextEncoder().encode(SECRET), jwks: '', audience: ['bench'], issuer: '', algorithms: ['HS256'] }), { authorization: `Bearer ${hsToken}` }],
    'jwt ES256': [route('jwt', { secret: new Uint8Array(0), jwks: JSON.stringify(jwks), audience: ['bench'], issuer: '', algorithms: ['ES256'] }), { authorization: `Bearer ${esToken}` }]
  }
  const out: Record<string, number> = {}
  for (const [name, [r, headers]] of Object.entries(cases)) {
    for (let i = 0; i < 500; i++) await auth.check(r, headers)
    const n = 5000
    const t0 = performance.now()
    for (let i = 0; i < n; i++) await auth.check(r, headers)
    out[name] = (performance.now() - t0) * 1000 / n
  }
  return out
}
