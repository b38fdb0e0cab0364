import type { Mesh } from '../../sdk/src/client.js'
import { FnmeshError } from '../../proto/errors.js'
import { within } from './wait.js'

/** One invocation made by a load run: when it started and settled, and how */
export interface CallRecord {
  i: number
  startedAt: number
  settledAt: number
  ok: boolean
  /** node that ran it (on success, or as the error says) */
  nodeId: string
  /** the invocation id (on success, or as the error says) */
  invocationId: string
  attempts: number
  /** FNMESH_ERR_* on failure; "HANG" if it did not settle within its deadline */
  code: string
  message: string
}

export interface LoadOptions {
  /** invocations kept in flight at once */
  concurrency: number
  /** stop after this many invocations (default: run until stop()) */
  total?: number
  /** the event of invocation i */
  event?: (i: number) => unknown
  /** caller timeout passed to the SDK. @default 15000 */
  timeoutMs?: number
  /** extra time beyond timeoutMs before a call counts as hung. @default 5000 */
  settleMs?: number
}

export interface Load {
  records: CallRecord[]
  /** calls started and not settled yet */
  readonly inFlight: number
  /** stop starting new calls */
  stop: () => void
  /** resolves when every started call has settled (or was declared hung) */
  done: Promise<void>
}

/** Keeps `concurrency` invocations of `fn` in flight; every call is bounded by within() */
export function startLoad (mesh: Mesh, fn: string, options: LoadOptions): Load {
  const timeoutMs = options.timeoutMs ?? 15_000
  const settleMs = options.settleMs ?? 5000
  const records: CallRecord[] = []
  let next = 0
  let stopped = false
  let inFlight = 0
  const one = async (i: number): Promise<CallRecord> => {
    const startedAt = Date.now()
    inFlight++
    try {
      const out = await within(mesh.invokeDetailed(fn, options.event?.(i) ?? {}, { timeoutMs }), timeoutMs + settleMs, `invocation ${i} of "${fn}"`)
      return { i, startedAt, settledAt: Date.now(), ok: true, nodeId: out.nodeId, invocationId: out.invocationId, attempts: out.attempts, code: '', message: '' }
    } catch (err: any) {
      const hung = !(err instanceof FnmeshError) && /did not settle/.test(String(err?.message))
      return {
        i,
        startedAt,
        settledAt: Date.now(),
        ok: false,
        nodeId: String(err?.nodeId ?? ''),
        invocationId: String(err?.invocationId ?? ''),
        attempts: 0,
        code: hung ? 'HANG' : String(err?.code ?? `NOT_AN_FNMESH_ERROR ${String(err?.name)}`),
        message: String(err?.message ?? err)
      }
    } finally {
      inFlight--
    }
  }
  const worker = async (): Promise<void> => {
    while (!stopped && (options.total == null || next < options.total)) {
      records.push(await one(next++))
    }
  }
  const done = Promise.all(Array.from({ length: options.concurrency }, worker)).then(() => {})
  return {
    records,
    get inFlight () { return inFlight },
    stop: () => { stopped = true },
    done
  }
}

/** Counts of `key` over records, as a plain object for printing and comparing */
export function countBy<T> (items: T[], key: (t: T) => string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const t of items) out[key(t)] = (out[key(t)] ?? 0) + 1
  return out
}
