/**
 * Publish and invoke binding calls (part of the BindingServer): a function publishes durable
 * events on subjects its declared pattern covers, and calls a declared function synchronously
 * through the mesh's router. Both carry the chain's hop count, so functions that trigger or call
 * each other in a loop stop at MAX_HOPS with FNMESH_ERR_LOOP_DETECTED.
 */
import { randomUUID } from 'node:crypto'
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream'
import { binaryHeaders } from '../../../core/cloudevents.js'
import { HOPS_HEADER, MAX_HOPS, type Binding } from '../../../core/bindings.js'
import { EVENTS_STREAM, subjectCovers } from '../../../core/events.js'
import { jsRetry } from '../../../core/js-retry.js'
import type { Encodable, InvokeResult } from '../../../proto/codec.js'
import { fnmeshError, isErrorCode, type ErrorCode } from '../../../proto/errors.js'
import { MAX_ID_BYTES } from '../../../proto/subjects.js'
import type { StoredSpec } from '../../../core/registry.js'
import type { BindCall } from '../sandbox/protocol.js'

/** Largest event a function publishes through a binding (the SDK's publish limit) */
export const PUBLISH_LIMIT = 1024 * 1024
const SUBJECT_TOKEN = /^[A-Za-z0-9_\-:=@+~]+$/

const fail = (code: ErrorCode, message: string): never => { throw fnmeshError(code, message) }

/** A sync invocation through this agent's router (agent.ts wires Router.route) */
export type InvokeThroughMesh = (req: { function: string, payload: Uint8Array, timeoutMs: number, trigger: string, hops: number }, options: { signal: AbortSignal }) => Promise<Encodable<InvokeResult>>

/** What the running invocation is, for calls that start more of the chain */
export interface CallContext {
  invocationId: string
  /** functions before this invocation in its chain (0: called from outside the mesh) */
  hops: number
}

/** The next hop of the chain, or FNMESH_ERR_LOOP_DETECTED */
export function nextHop (b: Binding, call: BindCall, ctx: CallContext): number {
  const hops = ctx.hops + 1
  if (hops > MAX_HOPS) fail('FNMESH_ERR_LOOP_DETECTED', `Binding "${b.name}" ${call.op}: the chain of functions is already ${ctx.hops} hops long (the limit is ${MAX_HOPS}); a function triggering or calling itself loops`)
  return hops
}

function json (b: Binding, call: BindCall, bytes: Uint8Array): string {
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
    JSON.parse(text)
  } catch {
    return fail('FNMESH_ERR_INVALID_JSON', `Binding "${b.name}" ${call.op}: the event is not JSON`)
  }
  return text
}

/** Publishes one event on a subject the binding's pattern covers; resolves with JetStream's ack */
export async function publishCall (js: JetStreamClient, jsm: () => Promise<JetStreamManager>, spec: StoredSpec, b: Binding, call: BindCall, data: Uint8Array, ctx: CallContext, deadlineMs: number): Promise<unknown> {
  const subject = call.key
  if (typeof subject !== 'string' || subject.length === 0 || subject.length > 256 || !subject.split('.').every(t => SUBJECT_TOKEN.test(t))) {
    return fail('FNMESH_ERR_INVALID_ARGUMENT', `Binding "${b.name}" publish: subject "${String(subject).slice(0, 100)}" is invalid (dot-separated tokens of letters, digits and -_:=@+~, no wildcards)`)
  }
  if (!subjectCovers(b.target, subject)) return fail('FNMESH_ERR_FORBIDDEN', `Binding call refused: "${subject.slice(0, 100)}" is outside the subjects of publish binding "${b.name}" (${b.target})`)
  const hops = nextHop(b, call, ctx)
  const body = json(b, call, data)
  const id = call.eventId ?? randomUUID()
  if (typeof id !== 'string' || id === '' || Buffer.byteLength(id) > MAX_ID_BYTES) return fail('FNMESH_ERR_INVALID_ARGUMENT', `Binding "${b.name}" publish: the event id must be 1-${MAX_ID_BYTES} bytes of text`)
  const h = binaryHeaders({ specversion: '1.0', id, source: `fnmesh/${spec.name}`, type: 'fnmesh.event', time: new Date().toISOString(), datacontenttype: 'application/json' })
  h.set(HOPS_HEADER, String(hops))
  // JetStream deduplicates per stream, on ids the mesh also uses (retries, schedule ticks,
  // destinations): a function's ids live in a namespace of their own, so it cannot suppress them.
  const msgID = `bind:${spec.name}:${id}`
  // Safe to send again (same Nats-Msg-Id) across a leader election, within the function's time.
  const ack = await jsRetry(async () => {
    try {
      return await js.publish(subject, Buffer.from(body, 'utf8'), { msgID, headers: h, timeout: Math.max(1, deadlineMs - Date.now()) })
    } catch (err: any) {
      // No stream captures it (the events stream lost the pattern): not worth waiting for.
      if (/no responders|503/i.test(`${String(err?.message)} ${String(err?.cause?.message)}`) && !await captured(jsm, subject)) {
        fail('FNMESH_ERR_NOT_FOUND', `Binding "${b.name}" publish to "${subject.slice(0, 100)}": no JetStream stream captures it (deploy adds the binding's pattern to the events stream, and fnmesh init puts it back)`)
      }
      throw err
    }
  }, { budgetMs: Math.max(0, deadlineMs - Date.now() - 50) })
  return { id, stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate }
}

/** Whether the events stream captures `subject` (true when it cannot tell) */
async function captured (jsm: () => Promise<JetStreamManager>, subject: string): Promise<boolean> {
  try {
    const info = await (await jsm()).streams.info(EVENTS_STREAM)
    return (info.config.subjects ?? []).some(p => subjectCovers(p, subject))
  } catch {
    return true
  }
}

/** Invokes the binding's function with the event; its result, or its error with its code */
export async function invokeCall (invoke: InvokeThroughMesh | undefined, b: Binding, call: BindCall, data: Uint8Array, ctx: CallContext, deadlineMs: number, signal: AbortSignal): Promise<{ json: string, bytes: number }> {
  if (invoke == null) return fail('FNMESH_ERR_UNSUPPORTED', 'This agent routes no invocations for bindings')
  const hops = nextHop(b, call, ctx)
  const body = json(b, call, data)
  const res = await invoke({ function: b.target, payload: Buffer.from(body, 'utf8'), timeoutMs: Math.max(1, deadlineMs - Date.now()), trigger: 'invoke', hops }, { signal })
  if (res.ok !== true) {
    const e = res.error
    const code = isErrorCode(e?.code) ? e.code : 'FNMESH_ERR_INTERNAL'
    throw fnmeshError(code, String(e?.errorMessage ?? 'The invocation failed'), { errorType: e?.errorType ?? undefined })
  }
  const out = Buffer.from(res.payload ?? new Uint8Array(0)).toString('utf8')
  return { json: out === '' ? 'null' : out, bytes: res.payload?.byteLength ?? 0 }
}
