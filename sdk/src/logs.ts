/**
 * Reading a function's log lines: what the JetStream stream `fnmesh_logs` kept of
 * `fnmesh.logs.<function>` (every agent publishes there), in order, then (with `follow`) new
 * lines as agents publish them, until the caller aborts. Without the stream (no agent has run
 * yet, or JetStream is off), `follow` still streams live lines.
 */
import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { decode, type LogLine } from '../../proto/codec.js'
import { TransportError, UsageError } from '../../proto/errors.js'
import { FUNCTION_NAME_PATTERN, LOGS_STREAM, logSubject } from '../../proto/subjects.js'

export interface LogEntry {
  invocationId: string
  function: string
  version: number
  /** node that ran the invocation */
  nodeId: string
  /** epoch ms */
  timeMs: number
  /** INFO, WARN, ERROR, DEBUG, TRACE, FATAL; STDOUT/STDERR for raw output */
  level: string
  message: string
}

export interface LogsOptions {
  /** Keep streaming new lines until the signal aborts */
  follow?: boolean
  /** Only lines logged within this many ms before now */
  sinceMs?: number
  signal?: AbortSignal
  /** Without follow: how long reading the stored lines may take. @default 10000 */
  timeoutMs?: number
}

// C0 controls, DEL, C1 controls (ESC sequences can rewrite a terminal's lines) and the Unicode line
// and paragraph separators.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g
const CONTROL_BUT_TAB = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029]/g
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' }
const escapeChar = (c: string): string => NAMED[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`

/**
 * `s` with its control characters escaped (\n, \r, \t, \uXXXX), so that what a caller or a
 * function wrote cannot start a line of its own or rewrite the terminal. Tabs are kept when
 * `keepTabs` (the message is the last field, so a tab in it splits nothing).
 */
export function escapeControl (s: string, keepTabs = false): string {
  return s.replace(keepTabs ? CONTROL_BUT_TAB : CONTROL, escapeChar)
}

/**
 * Lambda's text format: time, invocation id, level, message, tab-separated, one line per entry:
 * control characters in the fields are escaped (a multi-line message prints as one line with \n).
 */
export function formatLogLine (e: LogEntry): string {
  return `${new Date(e.timeMs).toISOString()}\t${escapeControl(e.invocationId)}\t${escapeControl(e.level)}\t${escapeControl(e.message, true)}`
}

function entries (data: Uint8Array, since: number): LogEntry[] {
  let lines: LogLine[]
  try { lines = decode('LogBatch', data).lines } catch { return [] }
  return lines.filter(l => l.timeMs >= since).map(l => ({
    invocationId: l.invocationId, function: l.function, version: l.version, nodeId: l.nodeId, timeMs: l.timeMs, level: l.level, message: l.message
  }))
}

/** The sequence and time of the last stored batch of `subject`, seq 0 if none, undefined without the stream */
async function lastStored (nc: NatsConnection, subject: string): Promise<{ seq: number, timeMs: number } | undefined> {
  const jsm = await jetstreamManager(nc)
  try {
    await jsm.streams.info(LOGS_STREAM)
  } catch {
    return undefined
  }
  try {
    const msg = await jsm.streams.getMessage(LOGS_STREAM, { last_by_subj: subject })
    return { seq: msg?.seq ?? 0, timeMs: msg?.time.getTime() ?? 0 }
  } catch {
    return { seq: 0, timeMs: 0 }
  }
}

async function * live (nc: NatsConnection, subject: string, since: number, signal?: AbortSignal): AsyncGenerator<LogEntry> {
  const sub = nc.subscribe(subject)
  const stop = (): void => { sub.unsubscribe() }
  signal?.addEventListener('abort', stop, { once: true })
  try {
    for await (const msg of sub) yield * entries(msg.data, since)
  } finally {
    signal?.removeEventListener('abort', stop)
    sub.unsubscribe()
  }
}

const aborted = (signal?: AbortSignal): boolean => signal?.aborted === true

/** The log lines of `name`, oldest first */
export async function * readLogs (nc: NatsConnection, name: string, options: LogsOptions = {}): AsyncGenerator<LogEntry> {
  if (typeof name !== 'string' || !FUNCTION_NAME_PATTERN.test(name)) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Function name "${String(name)}" is invalid`)
  }
  const subject = logSubject(name)
  const since = options.sinceMs != null ? Date.now() - options.sinceMs : 0
  const { signal } = options
  if (signal?.aborted === true) return
  let stored: { seq: number, timeMs: number } | undefined
  try {
    stored = await lastStored(nc, subject)
  } catch (err: any) {
    throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot read the logs of "${name}": ${String(err?.message ?? err)}`, { cause: err })
  }
  if (stored === undefined) {
    if (options.follow === true) yield * live(nc, subject, since, signal)
    return
  }
  // The last stored batch (at the time of asking): without follow, reading stops there.
  const last = stored.seq
  if ((last === 0 || stored.timeMs < since) && options.follow !== true) return
  const consumer = await jetstream(nc).consumers.get(LOGS_STREAM, {
    // one subject as a string: filter_subject, which nats-server 2.9 has (filter_subjects needs 2.10)
    filter_subjects: subject,
    ...(options.sinceMs != null ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(since).toISOString() } : { deliver_policy: DeliverPolicy.All })
  })
  const messages = await consumer.consume()
  const stop = (): void => { void messages.close() }
  signal?.addEventListener('abort', stop, { once: true })
  const follow = options.follow === true
  const timer = follow ? undefined : setTimeout(stop, options.timeoutMs ?? 10_000)
  let reachedEnd = false
  try {
    for await (const msg of messages) {
      yield * entries(msg.data, since)
      if (!follow && msg.seq >= last) { reachedEnd = true; break }
    }
  } finally {
    clearTimeout(timer)
    signal?.removeEventListener('abort', stop)
    await messages.close().catch(() => {})
  }
  if (!follow && !reachedEnd && !aborted(signal)) {
    throw new TransportError('FNMESH_ERR_CLIENT_TIMEOUT', `Cannot read the logs of "${name}": not all stored lines arrived within ${options.timeoutMs ?? 10_000} ms`)
  }
}
