/**
 * The dashboard's static files: HTML, script and style from ./public (copied beside the compiled
 * code by scripts/postbuild.mjs, with uPlot from its npm package into ./public/vendor: nothing is
 * fetched from elsewhere, the machines may have no internet). A fixed list of names: no path from
 * the request ever reaches the file system.
 */
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

const PUBLIC = fileURLToPath(new URL('./public/', import.meta.url))

/**
 * Scripts and styles from this listener only: no inline script or style element, no eval, no
 * framing, data only from the same origin.
 */
export const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/** Headers of every dashboard answer, static or data */
export const SECURITY_HEADERS = {
  'content-security-policy': CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin'
}

const FILES: Record<string, { file: string, type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
  '/favicon.svg': { file: 'favicon.svg', type: 'image/svg+xml' },
  '/vendor/uPlot.iife.min.js': { file: 'vendor/uPlot.iife.min.js', type: 'text/javascript; charset=utf-8' },
  '/vendor/uPlot.min.css': { file: 'vendor/uPlot.min.css', type: 'text/css; charset=utf-8' }
}

const cache = new Map<string, Promise<Buffer>>()

/** True when `path` names one of the dashboard's files */
export function isAsset (path: string): boolean {
  return Object.hasOwn(FILES, path)
}

/** The file's bytes and type (read once, then kept) */
export async function readAsset (path: string): Promise<{ type: string, body: Buffer }> {
  const f = FILES[path]
  let body = cache.get(f.file)
  if (body == null) {
    body = readFile(PUBLIC + f.file)
    cache.set(f.file, body)
    body.catch(() => { cache.delete(f.file) })
  }
  return { type: f.type, body: await body }
}
