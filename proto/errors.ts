/**
 * The one catalogue of fnmesh error codes, and the error classes built from it.
 *
 * Codes are stable strings: match on `code` across process and package boundaries, never on
 * message text. On the wire an error travels as `ErrorInfo` (the Lambda error shape plus `code`)
 * and is rebuilt into the right class on the other side by `fromErrorInfo`.
 */

export type ErrorFamily = 'usage' | 'input' | 'not-found' | 'capacity' | 'transport' | 'function' | 'unsupported' | 'internal' | 'auth'

/** Every code fnmesh produces, with its family and a one-line meaning (shown in the README). */
export const CATALOGUE = {
  FNMESH_ERR_BAD_USAGE: { family: 'usage', summary: 'The command line could not be parsed (exit status 2)' },
  FNMESH_ERR_INVALID_ARGUMENT: { family: 'usage', summary: 'An option or argument has a value outside what is allowed' },
  FNMESH_ERR_INVALID_TRIGGER: { family: 'usage', summary: 'A trigger is malformed, of an unknown kind, or names a bucket that does not exist' },
  FNMESH_ERR_INVALID_BINDING: { family: 'usage', summary: 'A binding is malformed, of an unknown kind, or names a bucket that cannot exist (a bad or reserved name)' },
  FNMESH_ERR_INVALID_EVENT: { family: 'input', summary: 'An event is not a valid CloudEvent (empty id, bad time, both data and data_base64, ...)' },
  FNMESH_ERR_INVALID_JSON: { family: 'input', summary: 'An event or --data value is not valid JSON' },
  FNMESH_ERR_PAYLOAD_TOO_LARGE: { family: 'input', summary: 'A payload or message exceeds its size limit' },
  FNMESH_ERR_DECODE: { family: 'input', summary: 'Bytes from the wire are not a valid message of the expected type' },
  FNMESH_ERR_BUNDLE_INVALID: { family: 'input', summary: 'The function code to deploy is missing, unreadable or escapes its folder' },
  FNMESH_ERR_BUNDLE_TOO_LARGE: { family: 'input', summary: 'The function code exceeds the bundle size limit' },
  FNMESH_ERR_NOT_FOUND: { family: 'not-found', summary: 'No function is deployed under that name' },
  FNMESH_ERR_NOT_INITIALIZED: { family: 'not-found', summary: 'A JetStream stream, bucket or consumer of the mesh does not exist: run "fnmesh init" with admin credentials' },
  FNMESH_ERR_NO_CAPACITY: { family: 'capacity', summary: 'No peer can give the invocation a slot within its deadline, or every queue is full' },
  FNMESH_ERR_NO_MATCHING_NODE: { family: 'capacity', summary: 'No live node\'s labels satisfy the function\'s placement constraints (deploy --constraint; agent --label)' },
  FNMESH_ERR_NO_AGENTS: { family: 'capacity', summary: 'No agent is listening on the NATS server' },
  FNMESH_ERR_BUSY: { family: 'capacity', summary: 'The chosen peer was full or draining; the router tries another' },
  FNMESH_ERR_DISK_FULL: { family: 'capacity', summary: 'The chosen peer\'s disk is too full to meter invocations, so it takes no new work; the router tries another' },
  FNMESH_ERR_PEER_UNAVAILABLE: { family: 'transport', summary: 'The chosen peers failed or did not answer, after one retry' },
  FNMESH_ERR_NATS_UNAVAILABLE: { family: 'transport', summary: 'The NATS server cannot be reached or the connection was lost' },
  FNMESH_ERR_CLIENT_TIMEOUT: { family: 'transport', summary: 'The caller stopped waiting before an answer came' },
  FNMESH_ERR_ABORTED: { family: 'transport', summary: 'The caller aborted the operation with its AbortSignal' },
  FNMESH_ERR_FUNCTION_ERROR: { family: 'function', summary: 'The handler threw, rejected or called back with an error' },
  FNMESH_ERR_TIMEOUT: { family: 'function', summary: 'The function ran past its timeout and was killed' },
  FNMESH_ERR_FUNCTION_EXITED: { family: 'function', summary: 'The function\'s process exited or crashed during the invocation' },
  FNMESH_ERR_OUT_OF_MEMORY: { family: 'function', summary: 'The function exceeded its memory limit and was killed' },
  FNMESH_ERR_HANDLER_NOT_FOUND: { family: 'function', summary: 'The handler module or its export does not exist, or the handler name is malformed' },
  FNMESH_ERR_FUNCTION_INIT: { family: 'function', summary: 'The function\'s module failed to load (syntax error, import failure, throw at init)' },
  FNMESH_ERR_RESULT_INVALID: { family: 'function', summary: 'The result cannot be serialised to JSON or exceeds the result size limit' },
  FNMESH_ERR_STREAM_TOO_LARGE: { family: 'function', summary: 'A streamed response passed the streamed size limit (20 MiB): the stream ends with this error' },
  FNMESH_ERR_STREAM_STALLED: { family: 'transport', summary: 'The receiver of a streamed response stopped taking chunks for longer than the stream idle timeout' },
  FNMESH_ERR_METER_UNAVAILABLE: { family: 'internal', summary: 'The node could not write its meter record, so it did not acknowledge the invocation' },
  FNMESH_ERR_UNSUPPORTED: { family: 'unsupported', summary: 'The feature is not available in this version of fnmesh' },
  FNMESH_ERR_SANDBOX_UNAVAILABLE: { family: 'unsupported', summary: 'The sandbox mode asked for needs isolation layers this machine lacks, or a sandbox could not boot with them' },
  FNMESH_ERR_INTERNAL: { family: 'internal', summary: 'A bug or unexpected condition inside fnmesh' },
  FNMESH_ERR_ROUTE_NOT_FOUND: { family: 'not-found', summary: 'No HTTP route matches the request\'s path (HTTP 404)' },
  FNMESH_ERR_METHOD_NOT_ALLOWED: { family: 'not-found', summary: 'HTTP routes match the path but not the method (HTTP 405, with Allow)' },
  FNMESH_ERR_ROUTE_CONFLICT: { family: 'usage', summary: 'A route of the deploy is already served by another function' },
  FNMESH_ERR_VALIDATION_FAILED: { family: 'input', summary: 'The request body does not match the route\'s JSON Schema (HTTP 400, with the list of problems)' },
  FNMESH_ERR_RESPONSE_INVALID: { family: 'function', summary: 'The function\'s result cannot be mapped to an HTTP response (HTTP 502)' },
  FNMESH_ERR_UNAUTHORIZED: { family: 'auth', summary: 'The route needs credentials and none, or invalid or expired ones, came with the request (HTTP 401)' },
  FNMESH_ERR_FORBIDDEN: { family: 'auth', summary: 'The API key is unknown or revoked, NATS refused the operation to this user (HTTP 403), or a function reached past its declared bindings' },
  FNMESH_ERR_LOOP_DETECTED: { family: 'usage', summary: 'A chain of functions calling or triggering each other through bindings and destinations passed 16 hops: the call is refused, the event dead-lettered' },
  FNMESH_ERR_CONFLICT: { family: 'input', summary: 'A compare-and-set write through a binding lost: the key is not at the revision given (0: it exists)' },
  FNMESH_ERR_RATE_LIMITED: { family: 'capacity', summary: 'The key\'s or route\'s mesh-wide rate limit is exhausted (HTTP 429, with Retry-After)' },
  FNMESH_ERR_UNSIGNED_DEPLOY: { family: 'auth', summary: 'The function\'s deploy is unsigned, or signed by a key this agent does not trust' },
  FNMESH_ERR_SIGNATURE_INVALID: { family: 'auth', summary: 'The deploy signature does not match the function\'s spec and code digest' },
  FNMESH_ERR_INVALID_SPEC: { family: 'input', summary: 'The function\'s stored spec breaks a deploy rule (limits, name, handler, env, triggers, routes, bundle fields, version) or does not decode: agents skip it' },
  FNMESH_ERR_SPEC_ROLLBACK: { family: 'auth', summary: 'The function\'s signed spec is older than a trusted version this agent has already seen (a replayed deploy)' },
  FNMESH_ERR_THROTTLED: { family: 'capacity', summary: 'The function already runs its reserved concurrency (--reserved) across the mesh (HTTP 429); events wait and run later' },
  FNMESH_ERR_ALIAS_NOT_FOUND: { family: 'not-found', summary: 'The function has no alias of that name' },
  FNMESH_ERR_VERSION_NOT_FOUND: { family: 'not-found', summary: 'The function has no such version in the registry (it keeps the last 16 versions of each function)' },
  FNMESH_ERR_INVALID_ALIAS: { family: 'input', summary: 'A stored alias breaks the alias rules, does not decode, is unsigned or replayed where deploys must be signed: agents skip it' },
  FNMESH_ERR_VERSION_LIMIT: { family: 'usage', summary: 'The function\'s next version would pass the highest allowed version (1000000000): the deploy is refused instead of wrapping' }
} as const satisfies Record<string, { family: ErrorFamily, summary: string }>

export type ErrorCode = keyof typeof CATALOGUE

export function isErrorCode (code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(CATALOGUE, code)
}

export interface FnmeshErrorOptions {
  cause?: unknown
  /** Lambda `errorType` (e.g. "Runtime.ExitError"); defaults to the class name */
  errorType?: string
  /** Lambda `trace`: stack lines of the function's error */
  trace?: string[]
}

/** Base class of every error fnmesh throws on purpose. */
export class FnmeshError extends Error {
  readonly code: ErrorCode
  readonly errorType: string
  readonly trace: string[]

  constructor (code: ErrorCode, message: string, options: FnmeshErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = new.target.name
    this.code = code
    this.errorType = options.errorType ?? this.name
    this.trace = options.trace ?? []
  }

  get family (): ErrorFamily {
    return CATALOGUE[this.code].family
  }

  /** The Lambda error shape with the fnmesh code, as callers and the CLI see it */
  toJSON (): { errorType: string, errorMessage: string, trace: string[], code: ErrorCode } {
    return { errorType: this.errorType, errorMessage: this.message, trace: this.trace, code: this.code }
  }
}

export class UsageError extends FnmeshError {}
export class InputError extends FnmeshError {}
export class NotFoundError extends FnmeshError {}
export class CapacityError extends FnmeshError {}
export class TransportError extends FnmeshError {}
/** The function itself failed: carries the Lambda `errorType`/`trace` of the function's error */
export class FunctionError extends FnmeshError {}
export class UnsupportedError extends FnmeshError {}
export class InternalError extends FnmeshError {}
/** Credentials missing or refused, or code not signed by a trusted deployer */
export class AuthError extends FnmeshError {}

const FAMILY_CLASS: Record<ErrorFamily, new (code: ErrorCode, message: string, options?: FnmeshErrorOptions) => FnmeshError> = {
  usage: UsageError,
  input: InputError,
  'not-found': NotFoundError,
  capacity: CapacityError,
  transport: TransportError,
  function: FunctionError,
  unsupported: UnsupportedError,
  internal: InternalError,
  auth: AuthError
}

/** Builds the error class of `code`'s family */
export function fnmeshError (code: ErrorCode, message: string, options?: FnmeshErrorOptions): FnmeshError {
  return new FAMILY_CLASS[CATALOGUE[code].family](code, message, options)
}

/** Wire form of an error: the proto `ErrorInfo` */
export interface ErrorInfoLike {
  code?: string | null
  errorType?: string | null
  errorMessage?: string | null
  trace?: string[] | null
}

/** Any thrown value to the wire shape; unknown errors become FNMESH_ERR_INTERNAL */
export function toErrorInfo (err: unknown): { code: ErrorCode, errorType: string, errorMessage: string, trace: string[] } {
  if (err instanceof FnmeshError) {
    return { code: err.code, errorType: err.errorType, errorMessage: err.message, trace: err.trace }
  }
  const e = err instanceof Error ? err : new Error(String(err))
  return { code: 'FNMESH_ERR_INTERNAL', errorType: e.name, errorMessage: e.message, trace: (e.stack ?? '').split('\n') }
}

/** Rebuilds an error from its wire shape; an unknown code keeps its text under FNMESH_ERR_INTERNAL */
export function fromErrorInfo (info: ErrorInfoLike | null | undefined): FnmeshError {
  const code: ErrorCode = isErrorCode(info?.code) ? info.code : 'FNMESH_ERR_INTERNAL'
  const message = info?.errorMessage != null && info.errorMessage !== '' ? info.errorMessage : CATALOGUE[code].summary
  return fnmeshError(code, message, { errorType: info?.errorType ?? undefined, trace: info?.trace ?? undefined })
}

/** One line for humans: `CODE: message` (the CLI prefixes `error `) */
export function formatErrorLine (err: unknown): string {
  const info = toErrorInfo(err)
  return `${info.code}: ${info.errorMessage.replace(/\s*\n\s*/g, ' ')}`
}
