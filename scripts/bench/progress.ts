/**
 * Progress on stderr (stdout is kept for the table or the JSON): one line per step, with its
 * duration when it ends, and a counter for long loops.
 */

const started = performance.now()
const elapsed = (): string => `${((performance.now() - started) / 1000).toFixed(1).padStart(5)} s`

export function note (text: string): void {
  process.stderr.write(`[${elapsed()}] ${text}\n`)
}

/** Logs the start and end of a step and returns its result */
export async function step<T> (what: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now()
  note(`${what}...`)
  const out = await fn()
  note(`${what}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  return out
}

/** A ticker for loops: prints "what: i/n" at most every `everyMs` */
export function ticker (what: string, total: number, everyMs = 2000): (done: number) => void {
  let last = performance.now()
  return (done: number) => {
    const now = performance.now()
    if (now - last < everyMs) return
    last = now
    note(`  ${what}: ${done}/${total}`)
  }
}
