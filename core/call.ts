/**
 * One public SDK call bounded by the caller's AbortSignal and a timeout: the call rejects at once
 * with FNMESH_ERR_ABORTED or FNMESH_ERR_CLIENT_TIMEOUT, and the work it started is told through
 * the signal it was given, so it starts no further step (a deploy stores no spec, a replay moves
 * no more dead letters) and cleans up after itself.
 */
import { TransportError, UsageError, type FnmeshError } from '../proto/errors.js'

/** A call of one request or a few */
export const DEFAULT_CALL_TIMEOUT_MS = 10_000
/** A call of many steps: an invoke, packing and uploading code, reading every dead letter */
export const DEFAULT_LONG_CALL_TIMEOUT_MS = 60_000

export interface Bounds {
  signal?: AbortSignal
  timeoutMs?: number
}

/** Runs `work` until it settles, the caller aborts or `timeoutMs` (else `defaultMs`) passes */
export async function bounded<T> (what: string, bounds: Bounds, defaultMs: number, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const timeoutMs = bounds.timeoutMs ?? defaultMs
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot ${what}: timeoutMs is ${String(timeoutMs)}, expected a number of milliseconds above 0`)
  }
  const { signal } = bounds
  const aborted = (): FnmeshError => new TransportError('FNMESH_ERR_ABORTED', `Cannot ${what}: aborted by the caller`, { cause: signal?.reason })
  if (signal?.aborted === true) throw aborted()
  const inner = new AbortController()
  let timer: NodeJS.Timeout | undefined
  let onAbort: (() => void) | undefined
  const stopped = new Promise<never>((resolve, reject) => {
    const stop = (err: FnmeshError): void => { inner.abort(err); reject(err) }
    onAbort = () => { stop(aborted()) }
    signal?.addEventListener('abort', onAbort, { once: true })
    timer = setTimeout(() => { stop(new TransportError('FNMESH_ERR_CLIENT_TIMEOUT', `Cannot ${what}: not done within ${timeoutMs} ms`)) }, timeoutMs)
  })
  const running = work(inner.signal)
  try {
    return await Promise.race([running, stopped])
  } finally {
    clearTimeout(timer)
    if (onAbort != null) signal?.removeEventListener('abort', onAbort)
    // What the work does after the caller stopped waiting is its own (it was told through the signal).
    running.catch(() => {})
    stopped.catch(() => {})
  }
}
