/**
 * The two load shapes every figure uses: sequential calls (latency) and a closed loop with a
 * fixed number in flight (throughput). Both count failures by error code instead of stopping,
 * and both are bounded: by a count, or by a duration.
 */
import { ticker } from './progress.js'

export type Call = (i: number) => Promise<unknown>

export interface Sampled {
  /** ms per successful call */
  samples: number[]
  /** failures by error code */
  errors: Record<string, number>
}

export function errorCode (err: unknown): string {
  const e = err as { code?: unknown, name?: unknown } | undefined
  return typeof e?.code === 'string' && e.code !== '' ? e.code : typeof e?.name === 'string' ? e.name : 'Error'
}

/** Called around each block of one variant (e.g. to account CPU per variant) */
export interface BlockHooks { before?: (variant: string) => void, after?: (variant: string) => void }

/**
 * Runs the calls of several variants sequentially, `n` each, alternating in blocks of
 * `block` (A block, B block, A block...), so that drift on a shared machine hits every
 * variant alike instead of whichever ran last.
 */
export async function interleaved (variants: Record<string, Call>, n: number, block: number, opts: { label?: string, signal?: AbortSignal, hooks?: BlockHooks } = {}): Promise<Record<string, Sampled>> {
  const { label = 'calls', signal, hooks = {} } = opts
  const names = Object.keys(variants)
  const out: Record<string, Sampled> = Object.fromEntries(names.map(k => [k, { samples: [], errors: {} }]))
  const tick = ticker(label, n * names.length)
  let done = 0
  for (let start = 0; start < n; start += block) {
    for (const name of names) {
      const r = out[name]
      const call = variants[name]
      hooks.before?.(name)
      for (let i = start; i < Math.min(n, start + block); i++) {
        signal?.throwIfAborted()
        const t0 = performance.now()
        try {
          await call(i)
          r.samples.push(performance.now() - t0)
        } catch (err) {
          const code = errorCode(err)
          r.errors[code] = (r.errors[code] ?? 0) + 1
        }
        tick(++done)
      }
      hooks.after?.(name)
    }
  }
  return out
}

export interface ClosedLoopResult extends Sampled {
  concurrency: number
  /** successful calls per second in the measured window */
  perSecond: number
  /** length of the measured window, ms */
  windowMs: number
  /** calls that finished in the window, successful or not */
  completed: number
}

/**
 * Keeps `concurrency` calls in flight for `warmupMs + durationMs`; counts what completes in
 * the last `durationMs` (warm-up lets pools fill and JITs settle first). Waits for the calls still in flight at the end (each is bounded by
 * its own timeout).
 */
export async function closedLoop (call: Call, opts: { concurrency: number, warmupMs: number, durationMs: number, onWindow?: (edge: 'start' | 'end') => void, signal?: AbortSignal }): Promise<ClosedLoopResult> {
  const t0 = performance.now()
  const edges = new Set<'start' | 'end'>()
  const edge = (e: 'start' | 'end'): void => { if (!edges.has(e)) { edges.add(e); opts.onWindow?.(e) } }
  const timers = opts.onWindow == null ? [] : [setTimeout(() => { edge('start') }, opts.warmupMs), setTimeout(() => { edge('end') }, opts.warmupMs + opts.durationMs)]
  const windowStart = t0 + opts.warmupMs
  const end = windowStart + opts.durationMs
  const samples: number[] = []
  const errors: Record<string, number> = {}
  let completed = 0
  let next = 0
  const worker = async (): Promise<void> => {
    while (performance.now() < end && opts.signal?.aborted !== true) {
      const i = next++
      const started = performance.now()
      let failed: string | undefined
      try {
        await call(i)
      } catch (err) {
        failed = errorCode(err)
      }
      const finished = performance.now()
      if (finished < windowStart || finished > end) continue
      completed++
      if (failed == null) samples.push(finished - started)
      else errors[failed] = (errors[failed] ?? 0) + 1
    }
  }
  try {
    await Promise.all(Array.from({ length: opts.concurrency }, worker))
  } finally {
    for (const t of timers) clearTimeout(t)
    if (opts.onWindow != null) { edge('start'); edge('end') }
  }
  opts.signal?.throwIfAborted()
  // Throughput counts completions inside the window (steady state, whatever their start).
  return { concurrency: opts.concurrency, samples, errors, completed, windowMs: opts.durationMs, perSecond: samples.length / (opts.durationMs / 1000) }
}
