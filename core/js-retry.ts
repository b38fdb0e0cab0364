/**
 * Bounded retries of JetStream API calls across a NATS server's loss. On a replicated cluster a
 * server that goes away (crash, rolling restart) takes the leaders it held with it: for a few
 * seconds the JetStream API answers "no responders" (503, reported by the client as "JetStream
 * is not enabled"), "JetStream system temporarily unavailable" (10008) or nothing (a timeout),
 * while the client reconnects to another server of its list and the meta and stream groups
 * elect new leaders (measured on nats-server 2.9.10, 3 servers: 3-10 s). Those answers are
 * retried here with a doubling pause until a budget runs out; anything else (not found,
 * permissions, a wrong revision, a closed connection) is the caller's at once.
 */
import { FnmeshError } from '../proto/errors.js'
import { isPermissionError } from './nats.js'

export interface JsRetryInit {
  /** Stop retrying after this long (the last error is thrown). @default 20000 */
  budgetMs?: number
  /** First pause; doubles up to 1 s. @default 100 */
  firstPauseMs?: number
  signal?: AbortSignal
}

/** True for the answers JetStream gives while a leader is being elected or the client reconnects */
export function isTransientJsError (err: any): boolean {
  if (err == null || isPermissionError(err)) return false
  if (err instanceof FnmeshError) return (err as { transient?: boolean }).transient === true
  const code = err?.api_error?.err_code ?? err?.code
  if (code === 10008 || code === 503 || code === '503' || code === 'TIMEOUT' || code === 'DISCONNECT') return true
  const text = `${String(err?.name ?? '')} ${String(err?.message ?? err)} ${String(err?.cause?.name ?? '')} ${String(err?.cause?.message ?? '')}`
  if (/connection (closed|draining)|closed connection/i.test(text)) return false
  return /timeout|timed out|no responders|503|jetstream is not enabled|jetstream not enabled|temporarily unavailable|no suitable peers|leader|disconnect|reconnect|stale connection/i.test(text)
}

/** Runs `fn`, again after transient JetStream errors, within the budget */
export async function jsRetry<T> (fn: () => Promise<T>, init: JsRetryInit = {}): Promise<T> {
  const deadline = Date.now() + (init.budgetMs ?? 20_000)
  let pause = init.firstPauseMs ?? 100
  for (;;) {
    try {
      return await fn()
    } catch (err) {
      if (!isTransientJsError(err) || init.signal?.aborted === true || Date.now() + pause > deadline) throw err
    }
    await new Promise(resolve => setTimeout(resolve, pause))
    pause = Math.min(1000, pause * 2)
  }
}
