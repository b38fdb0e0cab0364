/**
 * Errors inside the sandbox, in Lambda's shape: the runtime's own `Runtime.*` errors, and the
 * conversion of anything a function throws into `{ errorType, errorMessage, trace }` as Lambda's
 * runtime interface client does it (an Error by its name, anything else by its `typeof`).
 */
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

/** Lambda's runtime client writes the DEL character (\x7F) of an error as "%7F" */
const del = (text: string): string => text.replaceAll('\x7F', '%7F')

/**
 * Anything thrown, rejected or passed to a callback, as the wire error, as Lambda's runtime
 * client words it: an Error (by `instanceof`, with or without a stack) by its name, message and
 * stack lines; anything else by its `typeof` and its text. `code` is the fnmesh code unless the
 * value is a RuntimeError (which carries its own).
 */
export function toWireError (err: unknown, code: string): WireError {
  try {
    if (err instanceof RuntimeError) {
      return { code: err.code, errorType: err.errorType, errorMessage: err.message, trace: (err.stack ?? '').split('\n') }
    }
    if (err instanceof Error) {
      // A Buffer or ArrayBuffer allocation refused by RLIMIT_DATA: the memory bound of hosts without cgroups.
      if (err instanceof RangeError && /Array buffer allocation failed/.test(err.message)) {
        return { code: 'FNMESH_ERR_OUT_OF_MEMORY', errorType: 'Runtime.OutOfMemory', errorMessage: err.message, trace: String(err.stack).split('\n') }
      }
      const stack = err.stack
      return { code, errorType: del(String(err.name)), errorMessage: del(String(err.message)), trace: typeof stack === 'string' ? del(stack).split('\n') : [] }
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
