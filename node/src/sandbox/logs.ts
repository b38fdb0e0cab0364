/**
 * A sandbox's output as log lines of its invocations: the runtime's console records (log pipe)
 * and anything else written to stdout/stderr, each line stamped with the invocation id the agent
 * knows (a record's own id is taken only if it is one of this worker's invocations), and capped
 * per invocation: past the limit the rest is dropped and one line says so.
 */
import type { LogRecord } from './protocol.js'

export interface FunctionLogLine {
  invocationId: string
  function: string
  version: number
  /** epoch ms */
  timeMs: number
  /** INFO, WARN, ERROR, DEBUG, TRACE, FATAL; STDOUT/STDERR for raw output */
  level: string
  message: string
}

export type LogSink = (line: FunctionLogLine) => void

/** Splits a stream into lines; a line longer than `max` is cut at `max` */
export class LineSplitter {
  private buf = ''
  private skipping = false

  constructor (private readonly max: number, private readonly onLine: (line: string, cut: boolean) => void) {}

  push (text: string): void {
    let start = 0
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
      this.take(text.slice(start, nl), true)
      start = nl + 1
    }
    if (start < text.length) this.take(text.slice(start), false)
  }

  /** the unterminated rest, when the stream ends */
  end (): void {
    if (this.buf !== '' && !this.skipping) this.onLine(this.buf, false)
    this.buf = ''
    this.skipping = false
  }

  private take (part: string, complete: boolean): void {
    if (!this.skipping) {
      this.buf += part
      if (this.buf.length > this.max) {
        this.onLine(this.buf.slice(0, this.max), true)
        this.buf = ''
        this.skipping = true
      }
    }
    if (complete) {
      if (!this.skipping) this.onLine(this.buf, false)
      this.buf = ''
      this.skipping = false
    }
  }
}

export interface InvocationLogsInit {
  function: string
  version: number
  /** bytes of messages per invocation */
  limit: number
  sink: LogSink
}

/** Attribution and the per-invocation cap, for one specialised worker */
export class InvocationLogs {
  private current = ''
  private previous = ''
  private bytes = 0
  private cut = false

  constructor (private readonly init: InvocationLogsInit) {}

  /** Lines from now on belong to `invocationId` (the same id again changes nothing) */
  begin (invocationId: string): void {
    if (invocationId === this.current) return
    this.previous = this.current
    this.current = invocationId
    this.bytes = 0
    this.cut = false
  }

  /** A console record from the runtime (one JSON line of the log pipe) */
  record (line: string, truncated: boolean): void {
    let rec: Partial<LogRecord>
    try { rec = JSON.parse(line) as Partial<LogRecord> } catch { rec = { l: 'INFO', m: line } }
    if (truncated) rec = { l: 'WARN', m: '' , cut: line.length }
    const id = rec.r != null && rec.r !== '' && (rec.r === this.current || rec.r === this.previous) ? rec.r : this.current
    const time = typeof rec.t === 'number' && Number.isFinite(rec.t) ? rec.t : Date.now()
    if (typeof rec.cut === 'number') {
      this.noteCut(id, time)
      return
    }
    this.emit(id, time, typeof rec.l === 'string' ? rec.l.slice(0, 8) : 'INFO', typeof rec.m === 'string' ? rec.m : String(rec.m))
  }

  /** A line the function wrote to stdout or stderr itself */
  raw (stream: 'stdout' | 'stderr', line: string, truncated: boolean): void {
    this.emit(this.current, Date.now(), stream === 'stdout' ? 'STDOUT' : 'STDERR', truncated ? `${line} [line cut]` : line)
  }

  /** A line of the agent's own about this invocation (timeouts, crashes) */
  note (invocationId: string, level: string, message: string): void {
    this.init.sink(this.line(invocationId, Date.now(), level, message))
  }

  private emit (id: string, time: number, level: string, message: string): void {
    if (id === '') return
    if (id !== this.current) {
      // A late line of the previous invocation: not counted against the current one.
      this.init.sink(this.line(id, time, level, message))
      return
    }
    if (this.cut) return
    const size = Buffer.byteLength(message)
    if (this.bytes + size > this.init.limit) {
      this.noteCut(id, time)
      return
    }
    this.bytes += size
    this.init.sink(this.line(id, time, level, message))
  }

  private noteCut (id: string, time: number): void {
    if (id === this.current) {
      if (this.cut) return
      this.cut = true
    }
    this.init.sink(this.line(id, time, 'WARN', `[fnmesh] log output cut: this invocation logged more than ${this.init.limit} bytes; the rest is dropped`))
  }

  private line (invocationId: string, timeMs: number, level: string, message: string): FunctionLogLine {
    return { invocationId, function: this.init.function, version: this.init.version, timeMs, level, message }
  }
}
