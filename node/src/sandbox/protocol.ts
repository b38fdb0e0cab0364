/**
 * Messages between the agent and a sandboxed child: a discriminated union over the fork IPC
 * channel (json mode, fd 3), every request with an id that the child's answer repeats; and log
 * records, one JSON object per line, on a pipe of their own (fd 4) that the child writes
 * synchronously (runtime/console.ts, LOG_FD), so nothing logged before a crash or `process.exit`
 * is lost.
 *
 * Type-only module: the runtime inside the sandbox imports nothing from outside its folder.
 */

/** The Lambda error shape plus the fnmesh code */
export interface WireError {
  code: string
  errorType: string
  errorMessage: string
  trace: string[]
}

export interface InitRequest {
  t: 'init'
  id: number
  /** the function's code as the child sees it (/var/task inside a mount namespace) */
  taskRoot: string
  handler: string
  functionName: string
  functionVersion: string
  memoryMb: number
  env: Record<string, string>
  /** largest result accepted, in bytes of JSON */
  resultLimit: number
  /** bytes of log records the child writes per invocation before it stops and says so */
  logLimit: number
  logGroupName: string
  logStreamName: string
  invokedFunctionArn: string
  /** declared bindings (issue 17): the clients `context.bindings` holds */
  bindings?: BindingDecl[]
}

/** One declared binding as the runtime needs it to build `context.bindings.NAME` */
export interface BindingDecl {
  name: string
  kind: 'kv' | 'object' | 'publish' | 'invoke'
  target: string
  readOnly: boolean
}

export interface InvokeRequest {
  t: 'invoke'
  id: number
  requestId: string
  /** the event, JSON text */
  payload: string
  /** epoch ms at which the agent kills the invocation */
  deadlineMs: number
  /** CloudEvent attributes of an async event (context.cloudEvent) */
  cloudEvent?: Record<string, string>
}

/** The agent's answer to a binding call: `value` is op-specific JSON (bytes as base64 in `data`) */
export interface BindReply {
  t: 'bind-result'
  /** the id of the child's BindCall */
  id: number
  ok: boolean
  value?: unknown
  error?: WireError
}

/**
 * The agent's answer to a chunk of a streamed response: taken (the next may come), or refused
 * with the error that ends the stream (over the streamed limit, the receiver went away).
 */
export interface ChunkAck {
  t: 'chunk-ack'
  /** the chunk's `n` */
  n: number
  error?: WireError
}

export type ParentMessage = InitRequest | InvokeRequest | BindReply | ChunkAck

export interface BootMessage { t: 'boot' }
export interface InitOk { t: 'init-ok', id: number }
export interface InitFailed { t: 'init-error', id: number, error: WireError }
/** `streamed`: the handler streamed its response (chunks before this); payload is then empty */
export interface InvokeOk { t: 'result', id: number, ok: true, payload: string, streamed?: boolean }
/** `fatal`: the child exits right after sending this (uncaught exception, unhandled rejection) */
export interface InvokeFailed { t: 'result', id: number, ok: false, error: WireError, fatal?: boolean }

/**
 * A binding call (child -> agent), only during an invocation; ids are the child's own sequence.
 * The agent serves it only if (`name`, `kind`, `target`) is one of the spec's declared bindings
 * and `op` is allowed there (no writes through a read-only one): else FNMESH_ERR_FORBIDDEN.
 * kv ops: get {key}, put {key, data, revision?}, delete {key}, keys {prefix?};
 * object ops: get {key}, put {key, data}, delete {key}, list {prefix?}, and for objects of any
 * size, a chunk (at most 1 MiB) per call: stat {key} -> {size, nuid}, read {nuid, seq},
 * write-open {key} -> {handle}, write {handle, data}, write-close {handle}, write-abort {handle};
 * publish ops: publish {key: subject, data: JSON, eventId?};
 * invoke ops: invoke {data: the event JSON}. `data` is base64.
 */
export interface BindCall {
  t: 'bind'
  id: number
  name: string
  kind: string
  target: string
  op: string
  key?: string
  data?: string
  revision?: number
  prefix?: string
  /** publish: the event id (JetStream deduplicates on it) */
  eventId?: string
  /** object reads: the object's chunk id and the stream sequence to read from */
  nuid?: string
  seq?: number
  /** object writes: the handle write-open gave */
  handle?: number
}

/**
 * A piece of a streaming handler's response (child -> agent), only during that invocation
 * (`id` is its request id); `n` is the child's own sequence, `data` base64, `ct` the stream's
 * content type. The child sends the next once this one is acknowledged (ChunkAck).
 */
export interface StreamChunkMessage {
  t: 'chunk'
  id: number
  n: number
  ct: string
  data: string
}

export type ChildMessage = BootMessage | InitOk | InitFailed | InvokeOk | InvokeFailed | BindCall | StreamChunkMessage

/**
 * One console call, as a line of JSON on the log pipe. `r` is the request id the child believes
 * is current: the agent accepts it only if it is one of this worker's own invocations.
 */
export interface LogRecord {
  /** epoch ms */
  t: number
  /** INFO, WARN, ERROR, DEBUG, TRACE, FATAL */
  l: string
  /** the formatted message */
  m: string
  r?: string
  /** set on the record the child writes instead of what it dropped: bytes not written */
  cut?: number
}
