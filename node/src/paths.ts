/**
 * Where the compiled files are. Child processes (agents, sandboxes) always run compiled
 * JavaScript from dist/, also when this module is loaded from TypeScript sources (tests).
 */
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

function findRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'proto'))) return dir
    const up = dirname(dir)
    if (up === dir) throw new Error('fnmesh: cannot find the package root')
    dir = up
  }
}

/** The package root (holds package.json) */
export const PACKAGE_ROOT = findRoot()

/** Absolute path of a compiled file, e.g. distPath('node/src/cli/main.js') */
export function distPath (rel: string): string {
  return join(PACKAGE_ROOT, 'dist', rel)
}
