/**
 * Destinations of async invocations (deploy --on-success / --on-failure publish:SUBJECT), as
 * Lambda has them: after an event's run succeeds, or after its final failure (when it is
 * dead-lettered), a CloudEvent describing it is published on the subject, durably, before the
 * event is acked. Its id (and Nats-Msg-Id) is derived from the function and the event, so a
 * redelivered event does not publish it twice within JetStream's dedupe window.
 */
import type { JetStreamClient } from '@nats-io/jetstream'
import { headers as natsHeaders } from '@nats-io/transport-node'
import { HOPS_HEADER, MAX_HOPS, parseDestination } from '../../../core/bindings.js'
import { STRUCTURED_CONTENT_TYPE } from '../../../core/cloudevents.js'
import { eventInvocationId } from '../../../core/events.js'
import { jsRetry } from '../../../core/js-retry.js'
import type { StoredSpec } from '../../../core/registry.js'
import type { ErrorInfo } from '../../../proto/codec.js'
import type { PreparedEvent } from './prepare.js'

/** Payloads larger than this (JSON bytes) are left out of the record, as Lambda caps them at 256 KB */
export const DESTINATION_PAYLOAD_LIMIT = 256 * 1024

export type Condition = 'Success' | 'RetriesExhausted' | 'EventAgeExceeded' | 'DeliveriesExhausted' | 'CannotBeMetered' | 'LoopDetected'

/** The Lambda-like condition of a dead letter's reason */
export function conditionOf (reason: string): Condition {
  if (reason === 'retries exhausted') return 'RetriesExhausted'
  if (reason === 'event too old') return 'EventAgeExceeded'
  if (reason === 'cannot be metered') return 'CannotBeMetered'
  if (reason === 'loop detected') return 'LoopDetected'
  return 'DeliveriesExhausted'
}

export interface Outcome {
  condition: Condition
  attempts: number
  /** the result (JSON text) of a success */
  result?: string
  /** the error of a failure */
  error?: ErrorInfo | null
}

function jsonOrTruncated (text: string): { value: unknown, truncated: boolean } {
  if (Buffer.byteLength(text) > DESTINATION_PAYLOAD_LIMIT) return { value: null, truncated: true }
  try { return { value: JSON.parse(text), truncated: false } } catch { return { value: text, truncated: false } }
}

/** The CloudEvent (structured JSON) of one outcome */
export function destinationEvent (spec: StoredSpec, ev: PreparedEvent, out: Outcome, now = Date.now()): { id: string, body: string } {
  const success = out.condition === 'Success'
  const invocationId = eventInvocationId(spec.name, ev.eventId)
  const request = jsonOrTruncated(ev.json)
  const response = success
    ? jsonOrTruncated(out.result ?? 'null')
    : { value: { errorType: out.error?.errorType ?? '', errorMessage: out.error?.errorMessage ?? '', trace: out.error?.trace ?? [] }, truncated: false }
  const id = `dest-${success ? 'success' : 'failure'}-${invocationId}`
  const ce = {
    specversion: '1.0',
    id,
    source: `fnmesh/${spec.name}`,
    type: success ? 'fnmesh.invocation.success' : 'fnmesh.invocation.failure',
    subject: spec.name,
    time: new Date(now).toISOString(),
    datacontenttype: 'application/json',
    data: {
      condition: out.condition,
      function: spec.name,
      version: spec.version,
      invocationId,
      eventId: ev.eventId,
      attempts: out.attempts,
      ...(request.truncated ? { requestTruncated: true } : { requestPayload: request.value }),
      ...(response.truncated ? { responseTruncated: true } : { responsePayload: response.value }),
      ...(success ? {} : { error: { code: out.error?.code ?? '', message: out.error?.errorMessage ?? '', errorType: out.error?.errorType ?? '' } })
    }
  }
  return { id, body: JSON.stringify(ce) }
}

/**
 * Publishes the outcome on the spec's destination, if it has one; resolves true when done (or
 * nothing to do), false when it could not be stored (the caller hands the event back). A chain
 * already at MAX_HOPS publishes nothing: a destination that triggers its own function stops there.
 */
export async function publishDestination (js: JetStreamClient, spec: StoredSpec, ev: PreparedEvent, out: Outcome, onSkip: (why: string) => void): Promise<boolean> {
  const dest = parseDestination(out.condition === 'Success' ? 'on-success' : 'on-failure', out.condition === 'Success' ? spec.onSuccess : spec.onFailure)
  if (dest == null) return true
  if (ev.hops + 1 > MAX_HOPS) {
    onSkip(`the chain is already ${ev.hops} hops long (limit ${MAX_HOPS})`)
    return true
  }
  const { id, body } = destinationEvent(spec, ev, out)
  const h = natsHeaders()
  h.set('content-type', STRUCTURED_CONTENT_TYPE)
  h.set(HOPS_HEADER, String(ev.hops + 1))
  try {
    await jsRetry(async () => await js.publish(dest.subject, Buffer.from(body, 'utf8'), { msgID: id, headers: h }), { budgetMs: 10_000 })
    return true
  } catch (err: any) {
    onSkip(`publishing on "${dest.subject}" failed: ${String(err?.message ?? err)}`)
    return false
  }
}
