/**
 * Issue 14's dashboard and watch views on a real 3-agent mesh with load: the page the admin
 * listener serves at /, driven by Debian's headless Chromium (playwright-core), checked against
 * what the CLI and SDK report; and `fnmesh nodes --watch` / `functions --watch` read refresh by
 * refresh. The browser part is skipped, saying why, when no chromium binary is found (.ci/run
 * installs it); the watch part always runs.
 *
 * Screenshots go to a temp folder; `npm run screenshots` runs this file with
 * FNMESH_SCREENSHOTS_DIR=docs (and a longer load) to refresh docs/dashboard.png and
 * docs/dashboard-activity.png.
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Browser, Page } from 'playwright-core'
import { CLI_PATH } from '../../node/src/dev/cluster.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { http } from '../helpers/http.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { sleep, waitFor, within } from '../helpers/wait.js'

const chromiumPath = [process.env.FNMESH_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find(p => p != null && p !== '' && existsSync(p))
if (chromiumPath == null) console.warn('skipping the dashboard browser tests: no chromium binary (apt-get install chromium, or set FNMESH_CHROMIUM)')
const SHOTS = process.env.FNMESH_SCREENSHOTS_DIR
/** extra seconds of load before the screenshots (npm run screenshots), for fuller charts */
const EXTRA_LOAD_S = Number(process.env.FNMESH_SCREENSHOTS_LOAD_S ?? 0)
const TOKEN = 'dashboard-test-token-0123456789'
const HOSTILE = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'

describe('the dashboard and watch views of a 3-agent mesh', () => {
  let t: TestMesh
  let dir: string
  const OK = 20
  const BOOM = 3
  const agent = (i: number): { nodeId: string, name: string, port: number } => {
    const a = t.cluster.agents[i]
    return { nodeId: a.nodeId, name: a.name, port: a.ready.adminPort as number }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-dash-'))
    await writeFile(join(dir, 'token'), TOKEN)
    await writeFile(join(dir, 'logger.js'), 'exports.handler = async (event) => { console.log(event.msg); return { logged: true } }\n')
    // agent-2's admin listener asks for a token; the others are on loopback without one.
    t = await startMesh({ nodes: 3, slots: [2, 2, 3], argsOf: (i) => ['--admin', '127.0.0.1:0', ...(i === 2 ? ['--admin-token', join(dir, 'token')] : [])] })
    await Promise.all([
      t.mesh.deploy({ name: 'ok', path: fixture('ok.js') }),
      t.mesh.deploy({ name: 'boom', path: fixture('throw.js') }),
      t.mesh.deploy({ name: 'slow', path: fixture('slow.js'), timeoutMs: 10_000 }),
      t.mesh.deploy({ name: 'checkout', path: join(dir, 'logger.js') }),
      t.mesh.deploy({ name: 'orders', path: fixture('throw.js'), triggers: ['dash.orders'], retries: 0 })
    ])
    const calls: Array<Promise<unknown>> = []
    for (let i = 0; i < OK; i++) calls.push(t.mesh.invoke('ok', { i }))
    for (let i = 0; i < BOOM; i++) calls.push(t.mesh.invoke('boom', { i }).catch(err => err))
    for (let i = 0; i < 8; i++) calls.push(t.mesh.invoke('slow', { ms: 20 + i * 15 }))
    await within(Promise.all(calls), 30_000, 'the first calls')
    for (let i = 0; i < 2; i++) await t.mesh.publish('dash.orders', { i })
  }, 90_000)

  afterAll(async () => {
    await t?.stop()
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  /** Usage as the dashboard's agent holds it (its replica of the ledger), once it has `n` runs of `fn` */
  const usageAt = async (via: string, fn: string, n: number): Promise<{ invocations: number, errors: number, coldStarts: number }> =>
    await waitFor(async () => {
      const u = (await t.mesh.usage({ via, fn })).functions.find(f => f.name === fn)
      return u != null && u.invocations === n ? u : undefined
    }, { timeoutMs: 20_000, message: `${via} holding ${n} meter records of "${fn}"` })

  it('serves the page under a strict Content-Security-Policy, and its data only with the token when one is set', async () => {
    const open = agent(0)
    const page = await http(open.port, 'GET', '/')
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toContain('text/html')
    const csp = page.headers.get('content-security-policy') ?? ''
    expect(csp).toContain("default-src 'none'")
    expect(csp).toContain("script-src 'self'")
    expect(csp).not.toContain('unsafe')
    expect(page.headers.get('x-content-type-options')).toBe('nosniff')
    // Every script is a file from this listener: none inline, none from elsewhere.
    const scripts = [...page.text.matchAll(/<script\b([^>]*)>/g)].map(m => m[1])
    expect(scripts.length).toBeGreaterThan(0)
    for (const s of scripts) expect(s).toMatch(/src="(vendor\/)?[\w.]+\.js"/)
    const uplot = await http(open.port, 'GET', '/vendor/uPlot.iife.min.js')
    expect(uplot.status).toBe(200)
    expect(uplot.text).toContain('uPlot')
    const snap = await http(open.port, 'GET', '/api/snapshot')
    expect(snap.status).toBe(200)
    expect(snap.json.self.id).toBe(open.nodeId)
    expect((await http(open.port, 'GET', '/api/snapshot?range=1y')).status).toBe(400)
    expect((await http(open.port, 'GET', '/../package.json')).status).toBe(404)

    const locked = agent(2)
    expect((await http(locked.port, 'GET', '/')).status).toBe(200)
    expect((await http(locked.port, 'GET', '/api/snapshot')).status).toBe(401)
    expect((await http(locked.port, 'GET', '/api/snapshot', { headers: { authorization: 'Bearer wrong-token-wrong-token' } })).status).toBe(401)
    expect((await http(locked.port, 'GET', '/api/snapshot', { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200)
    expect((await http(locked.port, 'GET', '/metrics')).status).toBe(401)
  })

  describe.skipIf(chromiumPath == null)('in headless Chromium', () => {
    let browser: Browser
    let page: Page
    const problems: string[] = []

    beforeAll(async () => {
      const { chromium } = await import('playwright-core')
      browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] })
      page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
      page.on('console', m => { if (m.type() === 'error') problems.push(m.text()) })
      page.on('pageerror', e => { problems.push(String(e)) })
    }, 30_000)

    afterAll(async () => {
      await browser?.close()
    })

    const cell = async (table: string, row: string, col: string): Promise<string> =>
      (await page.locator(`#${table} tr[${row}] td.${col}`).first().textContent({ timeout: 5000 }) ?? '').trim()

    it('shows every node and function with the figures the CLI and the SDK report', async () => {
      const a = agent(0)
      const ok = await usageAt(a.nodeId, 'ok', OK)
      const boom = await usageAt(a.nodeId, 'boom', BOOM)
      await page.goto(`http://127.0.0.1:${a.port}/`)
      await page.locator('#nodes tbody tr[data-node-id]').nth(2).waitFor({ timeout: 10_000 })

      const cli = await runCli(['nodes', '--json', '--nats', t.url])
      expect(cli.code).toBe(0)
      const nodes = JSON.parse(cli.stdout) as Array<{ id: string, name: string, slots: number, layers: string[] }>
      expect(await page.locator('#nodes tbody tr[data-node-id]').count()).toBe(nodes.length)
      for (const n of nodes) {
        const row = `data-node-id="${n.id}"`
        expect(await page.locator(`#nodes tr[${row}] .node-name`).textContent()).toBe(n.name)
        expect(await cell('nodes', row, 'slots')).toBe(String(n.slots))
        expect((await page.locator(`#nodes tr[${row}] td.layers .tag`).allTextContents())).toEqual(n.layers)
      }
      expect([...nodes.find(n => n.id === a.nodeId)?.layers ?? []].sort()).toEqual([...t.cluster.agents[0].ready.layers as string[]].sort())
      expect(await page.locator(`#nodes tr[data-node-id="${a.nodeId}"] .pill.self`).count()).toBe(1)

      await waitFor(async () => await cell('functions', 'data-fn="ok"', 'invocations') === String(ok.invocations), { timeoutMs: 10_000, message: 'the page showing the metered invocations of "ok"' })
      expect(await cell('functions', 'data-fn="boom"', 'invocations')).toBe(String(boom.invocations))
      expect(await cell('functions', 'data-fn="boom"', 'errors')).toMatch(new RegExp(`^${boom.errors} \\(100\\.0%\\)$`))
      expect(await cell('functions', 'data-fn="ok"', 'cold')).toBe(String(ok.coldStarts))
      // Runs of the last minute: latency percentiles, and the newest runs in the tail.
      expect(await cell('functions', 'data-fn="slow"', 'p50')).toMatch(/ms$/)
      expect(await cell('functions', 'data-fn="slow"', 'p99')).toMatch(/ms$/)
      expect(await page.locator('#runs tbody tr[data-invocation]').count()).toBeGreaterThan(0)
      // The dead-lettered events, as `fnmesh dlq list` counts them.
      const dead = await waitFor(async () => { const l = await t.mesh.dlqList({ fn: 'orders' }); return l.length === 2 ? l : undefined }, { timeoutMs: 20_000, message: 'two dead letters of "orders"' })
      await waitFor(async () => await cell('functions', 'data-fn="orders"', 'dlq') === String(dead.length), { timeoutMs: 10_000, message: 'the page showing 2 dead letters' })
      expect(await cell('functions', 'data-fn="orders"', 'backlog')).toBe('0')
      // Two charts drawn by uPlot, from the files the agent serves.
      expect(await page.locator('.uplot canvas').count()).toBe(2)
      expect(problems).toEqual([])
    }, 60_000)

    it('updates the figures live, without a reload', async () => {
      const a = agent(0)
      await page.evaluate(() => { (window as any).__sameDocument = true })
      const before = Number(await cell('functions', 'data-fn="ok"', 'invocations'))
      await Promise.all(Array.from({ length: 7 }, async (_, i) => await t.mesh.invoke('ok', { more: i })))
      await usageAt(a.nodeId, 'ok', before + 7)
      await waitFor(async () => await cell('functions', 'data-fn="ok"', 'invocations') === String(before + 7), { timeoutMs: 10_000, message: `the page showing ${before + 7} invocations of "ok"` })
      expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true)
      expect(await page.locator('#status').getAttribute('data-state')).toBe('live')
    }, 40_000)

    it('shows what functions log as text, never as markup', async () => {
      await t.mesh.invoke('checkout', { msg: HOSTILE })
      await waitFor(async () => (await page.locator('#logs td.msg').allTextContents()).includes(HOSTILE), { timeoutMs: 15_000, message: 'the hostile log line in the log tail' })
      expect(await page.locator('#logs img, #logs script, #main img').count()).toBe(0)
      expect(await page.evaluate(() => (window as any).__xss)).toBeUndefined()
      expect(problems).toEqual([])
    }, 30_000)

    it('takes screenshots of the whole page', async () => {
      // Shot while load runs (npm run screenshots), so the load bars and the tail are busy.
      const running = EXTRA_LOAD_S > 0 ? load(t, EXTRA_LOAD_S * 1000) : undefined
      if (running != null) await sleep(EXTRA_LOAD_S * 1000 - 4000)
      const out = SHOTS ?? join(dir, 'shots')
      await mkdir(out, { recursive: true })
      await page.selectOption('#range', '15m')
      await sleep(2500)
      await page.screenshot({ path: join(out, 'dashboard.png'), fullPage: true })
      // The charts and the live tails, as a 1280x900 window shows them.
      await page.evaluate(() => { document.querySelector('.grid2')?.scrollIntoView() })
      await page.screenshot({ path: join(out, 'dashboard-activity.png') })
      await running
      expect(existsSync(join(out, 'dashboard.png'))).toBe(true)
    }, 60_000 + EXTRA_LOAD_S * 1000)

    it('asks for the token when the listener wants one, and shows nothing without it', async () => {
      const locked = agent(2)
      const p = await browser.newPage({ viewport: { width: 1280, height: 900 } })
      try {
        await p.goto(`http://127.0.0.1:${locked.port}/`)
        await p.locator('#login-form').waitFor({ state: 'visible', timeout: 10_000 })
        expect(await p.locator('#main').isHidden()).toBe(true)
        await p.fill('#token', 'not-the-token-not-the-token')
        await p.click('#login-form button')
        await waitFor(async () => (await p.locator('#login-error').textContent()) === 'The token was refused', { timeoutMs: 10_000, message: 'the refused token said so' })
        expect(await p.locator('#nodes tbody tr[data-node-id]').count()).toBe(0)
        await p.fill('#token', TOKEN)
        await p.click('#login-form button')
        await p.locator('#nodes tbody tr[data-node-id]').nth(2).waitFor({ timeout: 10_000 })
        expect(await p.locator('#login').isHidden()).toBe(true)
      } finally {
        await p.close()
      }
    }, 30_000)
  })

  describe('fnmesh nodes --watch and functions --watch', () => {
    it('prints each refresh in turn when piped, and exits 0 on SIGINT', async () => {
      const w = watchCli(['nodes', '--watch', '--interval', '0.3', '--nats', t.url])
      const out = await w.until(s => (s.match(/^--- /gm) ?? []).length >= 3, 20_000)
      const exit = await w.interrupt()
      expect(exit).toEqual({ code: 0, signal: null })
      const refreshes = out.split(/^--- .*$/m).slice(1)
      expect(refreshes.length).toBeGreaterThanOrEqual(3)
      for (const a of t.cluster.agents) expect(refreshes[0]).toContain(a.name)
      expect(refreshes[0]).toMatch(/^\s*ID\s+NAME\s+SLOTS/m)
    }, 30_000)

    it('prints one JSON document per line per refresh with --json', async () => {
      const w = watchCli(['functions', '--watch', '--json', '--interval', '0.3', '--nats', t.url])
      const out = await w.until(s => s.split('\n').filter(Boolean).length >= 2, 20_000)
      expect(await w.interrupt()).toEqual({ code: 0, signal: null })
      const docs = out.split('\n').filter(Boolean).map(l => JSON.parse(l) as Array<{ name: string }>)
      expect(docs.length).toBeGreaterThanOrEqual(2)
      for (const d of docs) expect(d.map(f => f.name)).toEqual(expect.arrayContaining(['ok', 'boom', 'slow', 'orders']))
    }, 30_000)

    it.skipIf(!existsSync('/usr/bin/script'))('redraws in place on a terminal and gives the screen and the cursor back on Ctrl-C', async () => {
      // util-linux `script` gives the CLI a pseudo-terminal. It runs the command through $SHELL -c;
      // `exec` makes the shell become the CLI, or a shell that does not (dash) would itself be killed
      // by the terminal's SIGINT and `script -e` would exit 130 whatever the CLI did.
      const cmd = 'exec ' + [process.execPath, CLI_PATH, 'nodes', '--watch', '--interval', '0.3', '--nats', t.url].map(a => `'${a}'`).join(' ')
      const w = watchCli(['-qfec', cmd, '/dev/null'], '/usr/bin/script')
      const out = await w.until(s => (s.match(/\x1b\[H\x1b\[2J/g) ?? []).length >= 2, 20_000)
      expect(out.startsWith('\x1b[?1049h\x1b[?25l')).toBe(true)
      expect(out).toContain('fnmesh nodes, every 0.3s')
      const exit = await w.interrupt()
      expect(exit.code).toBe(0)
      expect(w.output()).toMatch(/\x1b\[\?25h\x1b\[\?1049l/)
    }, 30_000)

    it('refuses --interval without --watch as bad usage', async () => {
      const r = await runCli(['nodes', '--interval', '1', '--nats', t.url])
      expect(r.code).toBe(2)
      expect(r.stderr).toContain('--interval needs --watch')
    })
  })
})

/** A watch command running in the background: its output so far, and SIGINT */
function watchCli (args: string[], bin = process.execPath): { until: (ok: (out: string) => boolean, ms: number) => Promise<string>, interrupt: () => Promise<{ code: number | null, signal: string | null }>, output: () => string } {
  const child = spawn(bin, bin === process.execPath ? [CLI_PATH, ...args] : args, { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.setEncoding('utf8').on('data', (s: string) => { out += s })
  child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s })
  const exited = new Promise<{ code: number | null, signal: string | null }>(resolve => child.on('exit', (code, signal) => { resolve({ code, signal }) }))
  return {
    until: async (ok, ms) => {
      try {
        await waitFor(() => ok(out), { timeoutMs: ms, message: `fnmesh ${args.join(' ')} printing enough (so far: ${JSON.stringify(out.slice(-400))}; stderr: ${err.slice(-400)})` })
      } catch (e) {
        child.kill('SIGKILL')
        throw e
      }
      return out
    },
    interrupt: async () => {
      // Through `script`, Ctrl-C reaches the command as a terminal's interrupt character.
      if (bin === process.execPath) child.kill('SIGINT')
      else child.stdin.write('\x03')
      return await within(exited, 10_000, 'the watch exiting after Ctrl-C')
    },
    output: () => out
  }
}

/** Mixed load for fuller screenshots: ok, slow with varied durations, some errors and logs */
async function load (t: TestMesh, ms: number): Promise<void> {
  const end = Date.now() + ms
  let i = 0
  const worker = async (): Promise<void> => {
    while (Date.now() < end) {
      i++
      const k = i % 20
      const call = k < 7 ? t.mesh.invoke('ok', { i }) : k < 12 ? t.mesh.invoke('slow', { ms: 10 + (i * 37) % 180 }) : k < 19 ? t.mesh.invoke('checkout', { msg: `order ${1000 + i} accepted: ${1 + i % 5} items, total ${((i * 7919) % 10_000) / 100} EUR` }) : t.mesh.invoke('boom', { i })
      await call.catch(() => {})
      await sleep(25)
    }
  }
  await Promise.all(Array.from({ length: 6 }, worker))
}
