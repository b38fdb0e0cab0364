/**
 * `--watch`: a command's view redrawn every interval until Ctrl-C. On a terminal it takes the
 * alternate screen (as `watch` and `top` do), hides the cursor and redraws in place; both are
 * restored on exit. Piped, each refresh is printed in turn under a `--- <time>` line, so a log or
 * `grep` sees every one; with --json, one JSON document per line per refresh (NDJSON). A refresh
 * that fails (NATS away, a timeout) shows its error and the watch goes on.
 */
import { formatErrorLine } from '../../../proto/errors.js'

export interface WatchInit<T> {
  /** reads the current value */
  read: (signal: AbortSignal) => Promise<T>
  /** the value as text (a table) */
  render: (value: T) => string
  /** what the header line names, e.g. "fnmesh nodes" */
  title: string
  intervalMs: number
  json: boolean
  /** ends the watch (the CLI aborts it on SIGINT/SIGTERM) */
  signal: AbortSignal
  out?: NodeJS.WriteStream
  err?: NodeJS.WriteStream
}

const ALT_ON = '\x1b[?1049h'
const ALT_OFF = '\x1b[?1049l'
const HIDE = '\x1b[?25l'
const SHOW = '\x1b[?25h'
const HOME_CLEAR = '\x1b[H\x1b[2J'

export async function watch<T> (w: WatchInit<T>): Promise<void> {
  const out = w.out ?? process.stdout
  const err = w.err ?? process.stderr
  const tty = out.isTTY === true && !w.json
  const write = async (text: string): Promise<void> => {
    if (!out.write(text)) await new Promise<void>(resolve => out.once('drain', () => { resolve() }))
  }
  if (tty) out.write(ALT_ON + HIDE)
  try {
    while (!w.signal.aborted) {
      const at = new Date()
      let body: string
      let value: T | undefined
      try {
        value = await w.read(w.signal)
        body = w.render(value)
      } catch (e) {
        if (w.signal.aborted) break
        body = `error ${formatErrorLine(e)}`
        if (w.json) err.write(`${body}\n`)
      }
      if (w.json) {
        if (value !== undefined) await write(JSON.stringify(value) + '\n')
      } else if (tty) {
        const header = `${w.title}, every ${w.intervalMs / 1000}s: ${at.toLocaleTimeString('en-GB', { hour12: false })}    (Ctrl-C to quit)`
        await write(`${HOME_CLEAR}${header}\n\n${body}\n`)
      } else {
        await write(`--- ${at.toISOString()} ${w.title}\n${body}\n`)
      }
      await sleep(w.intervalMs, w.signal)
    }
  } finally {
    if (tty) out.write(SHOW + ALT_OFF)
  }
}

async function sleep (ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return
  await new Promise<void>(resolve => {
    const done = (): void => { clearTimeout(timer); signal.removeEventListener('abort', done); resolve() }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done)
  })
}
