/**
 * Errors inside the sandbox, in Lambda's shape: the runtime's own `Runtime.*` errors, and the
 * conversion of anything a function throws into `{ errorType, errorMessage, trace }` as Lambda's
 * runtime interface client does it (an Error by its name, anything else by its `typeof`).
 */
import { types } from 'node:util'
import type { WireError } from '../protocol.js'

/** An error the runtime raises itself, with its Lambda errorType and the fnmesh code */
export class RuntimeError extends Error {
  constructor (readonly errorType: string, message: string, readonly code: string, options?: { stack?: string }) {
    super(message)
    this.name = errorType
    if (options?.stack != null) this.stack = options.stack
  }
}

export const malformedHandler = (message: string): RuntimeError =>
  new RuntimeError('Runtime.MalformedHandlerName', message, 'FNMESH_ERR_HANDLER_NOT_FOUND')

export const handlerNotFound = (message: string): RuntimeError =>
  new RuntimeError('Runtime.HandlerNotFound', message, 'FNMESH_ERR_HANDLER_NOT_FOUND')

/**
 * The module (or a module it imports) does not exist: Lambda's message is the original error as
 * text. The code says which: the handler's own module (HANDLER_NOT_FOUND) or a dependency (FUNCTION_INIT).
 */
export const importModuleError = (cause: Error, code: 'FNMESH_ERR_HANDLER_NOT_FOUND' | 'FNMESH_ERR_FUNCTION_INIT'): RuntimeError =>
  new RuntimeError('Runtime.ImportModuleError', String(cause), code, { stack: cause.stack })

export const userCodeSyntaxError = (cause: Error): RuntimeError =>
  new RuntimeError('Runtime.UserCodeSyntaxError', String(cause), 'FNMESH_ERR_FUNCTION_INIT', { stack: cause.stack })

function looksLikeError (v: unknown): v is Error {
  const e = v as Record<string, unknown>
  return v != null && typeof e.name === 'string' && typeof e.message === 'string' && typeof e.stack === 'string'
}

/**
 * Anything thrown, rejected or passed to a callback, as the wire error. `code` is the fnmesh
 * code unless the value is a RuntimeError (which carries its own).
 */
export function toWireError (err: unknown, code: string): WireError {
  try {
    if (err instanceof RuntimeError) {
      return { code: err.code, errorType: err.errorType, errorMessage: err.message, trace: (err.stack ?? '').split('\n') }
    }
    if (types.isNativeError(err) || looksLikeError(err)) {
      const e = err as Error
      // A Buffer or ArrayBuffer allocation refused by RLIMIT_DATA: the memory bound of hosts without cgroups.
      if (e instanceof RangeError && /Array buffer allocation failed/.test(e.message)) {
        return { code: 'FNMESH_ERR_OUT_OF_MEMORY', errorType: 'Runtime.OutOfMemory', errorMessage: e.message, trace: String(e.stack).split('\n') }
      }
      return { code, errorType: String(e.name), errorMessage: String(e.message), trace: String(e.stack).split('\n') }
    }
    // Lambda reports a thrown non-Error by its type and its text: `throw "boom"` -> string / boom.
    return { code, errorType: typeof err, errorMessage: String(err), trace: [] }
  } catch {
    return { code, errorType: 'handled', errorMessage: 'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack', trace: [] }
  }
}

/** Lambda's error for a handler whose promise never settles while nothing else is left to run */
export const nodeJsExit = (): RuntimeError =>
  new RuntimeError('Runtime.NodeJsExit', 'Error: Runtime exited without providing a reason', 'FNMESH_ERR_FUNCTION_ERROR')

/** An unhandled rejection, as Lambda names it: the reason as text */
export function unhandledRejection (reason: unknown): RuntimeError {
  let text: string
  try { text = String(reason) } catch { text = 'unknown reason' }
  const err = new RuntimeError('Runtime.UnhandledPromiseRejection', text, 'FNMESH_ERR_FUNCTION_ERROR')
  if (reason instanceof Error && reason.stack != null) err.stack = `Runtime.UnhandledPromiseRejection: ${text}\n${reason.stack.split('\n').slice(1).join('\n')}`
  return err
}
