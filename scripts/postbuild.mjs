#!/usr/bin/env node
// tsc does not copy the generated protobufjs module (plain JS); copy it beside the compiled code,
// make the CLI entry executable, copy the admin dashboard's static files (and uPlot, from its npm
// package: served by the agent, never from a CDN), and mark the sandbox runtime's folder as ES modules: inside a
// mount namespace it is /var/runtime, with no package.json above it.
import { copyFileSync, cpSync, mkdirSync, chmodSync, existsSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const out = join(root, 'dist', 'proto', 'gen')
mkdirSync(out, { recursive: true })
for (const f of ['fnmesh.js', 'fnmesh.d.ts']) copyFileSync(join(root, 'proto', 'gen', f), join(out, f))
const cli = join(root, 'dist', 'node', 'src', 'cli', 'main.js')
if (existsSync(cli)) chmodSync(cli, 0o755)
const runtime = join(root, 'dist', 'node', 'src', 'sandbox', 'runtime')
if (existsSync(runtime)) writeFileSync(join(runtime, 'package.json'), '{"type":"module"}\n')

// The dashboard: its own files, then uPlot's script, style and licence.
const dashboard = join(root, 'dist', 'node', 'src', 'metrics', 'dashboard', 'public')
cpSync(join(root, 'node', 'src', 'metrics', 'dashboard', 'public'), dashboard, { recursive: true })
const uplot = join(dirname(createRequire(import.meta.url).resolve('uplot')), '..')
mkdirSync(join(dashboard, 'vendor'), { recursive: true })
for (const [from, to] of [['dist/uPlot.iife.min.js', 'uPlot.iife.min.js'], ['dist/uPlot.min.css', 'uPlot.min.css'], ['LICENSE', 'uPlot.LICENSE']]) {
  copyFileSync(join(uplot, from), join(dashboard, 'vendor', to))
}
