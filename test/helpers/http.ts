import { cp, mkdir, readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fixture } from './fixtures.js'

export interface HttpReply {
  status: number
  headers: Headers
  text: string
  json: any
  /** every Set-Cookie header */
  cookies: string[]
}

/** One real HTTP request to a gateway on loopback, bounded by `timeoutMs` */
export async function http (port: number, method: string, path: string, opts: { headers?: Record<string, string>, body?: string | Buffer, timeoutMs?: number } = {}): Promise<HttpReply> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers: opts.headers, body: opts.body, signal: AbortSignal.timeout(opts.timeoutMs ?? 20_000) })
  const text = await r.text()
  let json: any
  try { json = JSON.parse(text) } catch {}
  return { status: r.status, headers: r.headers, text, json, cookies: r.headers.getSetCookie() }
}

/** The gateway ports of agents started with --http */
export const httpPorts = (agents: Array<{ ready: Record<string, unknown> }>): number[] => agents.map(a => a.ready.httpPort as number)

/**
 * A copy of fixture folder `folder` under `root` with npm packages of the project (and what they
 * depend on) copied into its node_modules, as a deploy would ship them.
 */
export async function fixtureWithPackages (root: string, folder: string, packages: string[]): Promise<string> {
  const dir = join(root, folder)
  await cp(fixture(folder), dir, { recursive: true })
  const require = createRequire(import.meta.url)
  const done = new Set<string>()
  const copy = async (name: string, from: string): Promise<void> => {
    if (done.has(name)) return
    done.add(name)
    // Node's own lookup: node_modules/<name> in `from` and each folder above it
    let pkgDir = ''
    for (let d = from; pkgDir === ''; d = dirname(d)) {
      if (existsSync(join(d, 'node_modules', name, 'package.json'))) pkgDir = join(d, 'node_modules', name)
      else if (dirname(d) === d) throw new Error(`package "${name}" needed by ${from} is not installed`)
    }
    const pkgJson = join(pkgDir, 'package.json')
    await mkdir(join(dir, 'node_modules', dirname(name)), { recursive: true })
    await cp(pkgDir, join(dir, 'node_modules', name), { recursive: true, dereference: true })
    const deps = Object.keys((JSON.parse(await readFile(pkgJson, 'utf8')) as { dependencies?: Record<string, string> }).dependencies ?? {})
    for (const d of deps) await copy(d, pkgDir)
  }
  for (const p of packages) await copy(p, dirname(require.resolve('../../package.json')))
  return dir
}
