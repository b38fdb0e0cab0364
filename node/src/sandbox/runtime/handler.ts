/**
 * Lambda's handler contract: parse "dir/module.nested.fn", load the module with Lambda's
 * precedence (extensionless file, then .js as CommonJS unless the nearest package.json says
 * "type": "module", then .js as ESM in such a package, then .mjs, then .cjs, then a package
 * in node_modules), await its top-level await, and find the (possibly nested) export.
 *
 * Also imported by the agent (pool.ts) to refuse a malformed handler before using a sandbox.
 */
import { readFileSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { basename, dirname, join, resolve, sep } from 'node:path'
import { pathToFileURL } from 'node:url'
import { handlerNotFound, importModuleError, malformedHandler, userCodeSyntaxError } from './errors.js'

export interface HandlerName {
  /** folder part with its trailing "/", "" for the bundle root */
  moduleRoot: string
  /** file name without extension */
  moduleName: string
  /** property path of the export, e.g. "nested.handler" */
  handlerPath: string
}

const FUNCTION_EXPR = /^([^.]*)\.(.*)$/

/** Splits a handler string as Lambda does; throws Runtime.MalformedHandlerName */
export function parseHandler (handler: string): HandlerName {
  if (handler.includes('..')) {
    throw malformedHandler(`'${handler}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`)
  }
  // Lambda accepts absolute module roots; here the code must come from the function's own bundle.
  if (handler.startsWith('/') || handler.includes('\\') || handler.includes('\0')) {
    throw malformedHandler(`'${handler}' is not a valid handler name. The module must be a path inside the function's code`)
  }
  const base = basename(handler)
  const match = FUNCTION_EXPR.exec(base)
  if (match == null) throw malformedHandler('Bad handler')
  return { moduleRoot: handler.slice(0, handler.length - base.length), moduleName: match[1], handlerPath: match[2] }
}

function isFile (path: string): boolean {
  try { return statSync(path).isFile() } catch { return false }
}

/**
 * True when the nearest package.json from `folder` up to `appRoot` says "type": "module". A
 * node_modules folder ends the search (as in Lambda); so does the bundle root: nothing above it
 * belongs to the function.
 */
export function hasTypeModule (folder: string, appRoot: string): boolean {
  for (let dir = folder; ; dir = dirname(dir)) {
    if (dir.endsWith(`${sep}node_modules`)) return false
    const pj = join(dir, 'package.json')
    if (isFile(pj)) {
      try {
        return (JSON.parse(readFileSync(pj, 'utf8')) as { type?: unknown })?.type === 'module'
      } catch {
        return false
      }
    }
    if (dir === appRoot || !dir.startsWith(appRoot) || dirname(dir) === dir) return false
  }
}

async function loadModule (appRoot: string, name: HandlerName): Promise<Record<string, unknown>> {
  const base = resolve(appRoot, name.moduleRoot, name.moduleName)
  const require = createRequire(join(appRoot, 'index.js'))
  const importFile = async (file: string): Promise<Record<string, unknown>> => await import(pathToFileURL(file).href) as Record<string, unknown>
  try {
    if (isFile(base)) return require(base)
    const esm = hasTypeModule(dirname(base), appRoot)
    if (!esm && isFile(`${base}.js`)) return require(`${base}.js`)
    if (esm && isFile(`${base}.js`)) return await importFile(`${base}.js`)
    if (isFile(`${base}.mjs`)) return await importFile(`${base}.mjs`)
    if (isFile(`${base}.cjs`)) return require(`${base}.cjs`)
  } catch (err: any) {
    if (err instanceof SyntaxError) throw userCodeSyntaxError(err)
    // The handler's module exists; one it imports does not.
    if (err?.code === 'MODULE_NOT_FOUND' || err?.code === 'ERR_MODULE_NOT_FOUND') throw importModuleError(err, 'FNMESH_ERR_FUNCTION_INIT')
    throw err
  }
  // A package in the bundle's node_modules, e.g. handler "mypkg.handler".
  let path: string
  try {
    path = require.resolve(name.moduleName, { paths: [appRoot, resolve(appRoot, name.moduleRoot)] })
  } catch (err: any) {
    throw importModuleError(err, 'FNMESH_ERR_HANDLER_NOT_FOUND')
  }
  try {
    return require(path)
  } catch (err: any) {
    if (err instanceof SyntaxError) throw userCodeSyntaxError(err)
    if (err?.code === 'MODULE_NOT_FOUND' || err?.code === 'ERR_MODULE_NOT_FOUND') throw importModuleError(err, 'FNMESH_ERR_FUNCTION_INIT')
    throw err
  }
}

export type Handler = (event: unknown, context: object, callback: (err?: unknown, result?: unknown) => void) => unknown

/** Loads the handler function; throws Lambda's Runtime.* errors, or what the module threw at init */
export async function loadHandler (appRoot: string, handler: string): Promise<Handler> {
  const name = parseHandler(handler)
  const mod = await loadModule(appRoot, name)
  const fn = name.handlerPath.split('.').reduce<unknown>((obj, key) => (obj as Record<string, unknown> | undefined)?.[key], mod)
  if (fn == null || fn === false || fn === '' || fn === 0) throw handlerNotFound(`${handler} is undefined or not exported`)
  if (typeof fn !== 'function') throw handlerNotFound(`${handler} is not a function`)
  return fn as Handler
}
