/** Polls `fn` until it returns a truthy value; fails with `message` after `timeoutMs` */
export async function waitFor<T> (fn: () => T | Promise<T>, opts: { timeoutMs?: number, intervalMs?: number, message?: string } = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000)
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v) return v as NonNullable<T>
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) {
      throw new Error(`${opts.message ?? 'condition not met'} within ${opts.timeoutMs ?? 10_000} ms${last != null ? `; last error: ${String((last as Error)?.message ?? last)}` : ''}`)
    }
    await sleep(opts.intervalMs ?? 50)
  }
}

export const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** Rejects if `p` does not settle within `ms`: a hang becomes a test failure with a message */
export async function within<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${what} did not settle within ${ms} ms`)) }, ms) })])
  } finally {
    clearTimeout(timer)
  }
}
