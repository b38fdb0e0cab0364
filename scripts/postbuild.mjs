#!/usr/bin/env node
// tsc does not copy the generated protobufjs module (plain JS); copy it beside the compiled code,
// make the CLI entry executable, and mark the sandbox runtime's folder as ES modules: inside a
// mount namespace it is /var/runtime, with no package.json above it.
import { copyFileSync, mkdirSync, chmodSync, existsSync, writeFileSync } from 'node:fs'
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
