/**
 * The function's console, as on Lambda: console.log/info -> INFO, warn -> WARN, error -> ERROR,
 * debug -> DEBUG, trace -> TRACE, fatal -> FATAL, each call one record with the time and the
 * request id, formatted with util.format. Records go to the log pipe (LOG_FD) with synchronous
 * writes, so they survive a crash right after them; past `limit` bytes in one invocation the
 * runtime stops writing and reports how much it dropped. The agent enforces the same limit on
 * its side: a function that writes to the pipe itself gains nothing.
 */
import { writeSync } from 'node:fs'
import { format } from 'node:util'
import type { LogRecord } from '../protocol.js'

/** File descriptor of the log pipe in the child (stdio slot 4 of the spawn) */
export const LOG_FD = 4

const LEVELS = { log: 'INFO', info: 'INFO', warn: 'WARN', error: 'ERROR', debug: 'DEBUG', trace: 'TRACE', fatal: 'FATAL' } as const

let requestId: string | undefined
let limit = 64 * 1024
let written = 0
let dropped = 0
let broken = false

function write (line: string): void {
  if (broken) return
  const bytes = Buffer.from(line)
  for (let off = 0; off < bytes.length;) {
    try {
      off += writeSync(LOG_FD, bytes, off)
    } catch (err: any) {
      // EAGAIN cannot happen on the blocking pipe the agent gives; anything else means it is gone.
      if (err?.code === 'EAGAIN') continue
      broken = true
      return
    }
  }
}

function record (level: string, message: string): void {
  const size = Buffer.byteLength(message)
  if (written + size > limit) {
    dropped += size
    return
  }
  written += size
  const rec: LogRecord = { t: Date.now(), l: level, m: message, r: requestId }
  write(JSON.stringify(rec) + '\n')
}

/** Replaces the console methods; records carry the request id set by beginInvocation() */
export function patchConsole (bytesPerInvocation: number): void {
  limit = bytesPerInvocation
  const con = console as unknown as Record<string, (...args: unknown[]) => void>
  for (const [method, level] of Object.entries(LEVELS)) {
    con[method] = method === 'trace'
      ? (...args: unknown[]) => { record(level, `Trace: ${format(...args)}\n${String(new Error().stack).split('\n').slice(2).join('\n')}`) }
      : (...args: unknown[]) => { record(level, format(...args)) }
  }
}

/** Starts counting a new invocation's bytes; reports what the previous one dropped */
export function beginInvocation (id: string | undefined): void {
  flushDropped()
  requestId = id
  written = 0
}

/** Writes the "cut" record for bytes dropped since the last one */
export function flushDropped (): void {
  if (dropped === 0) return
  const rec: LogRecord = { t: Date.now(), l: 'WARN', m: '', r: requestId, cut: dropped }
  dropped = 0
  write(JSON.stringify(rec) + '\n')
}
