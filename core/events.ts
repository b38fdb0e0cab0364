/**
 * Where events live in JetStream, shared by the SDK (deploy, publish, dlq) and the agent:
 * - stream FNMESH_EVENTS (limits retention, file storage, 10 min dedupe window) captures every
 *   subject a function is triggered by, plus fnmesh.fn.<function>.<what> for events aimed at one
 *   function (schedule ticks, retries, replays); the agents purge what every consumer has settled
 *   (purgeSettled). Not interest retention: on nats-server 2.9 each ack then deletes its message
 *   on every replica, and a replica that applies a delete of a message it does not hold resets
 *   the stream's replicated state ("stream store EOF" / "Resetting stream cluster state"), which
 *   lost acknowledged events across server restarts in the multi-host test (fixed in 2.12,
 *   nats-server PR 7348). Streams made before keep their retention (JetStream cannot change it);
 * - stream FNMESH_DLQ keeps dead letters on fnmesh.dlq.<function>;
 * - one durable pull consumer per (function, trigger): on FNMESH_EVENTS for subjects, on the
 *   bucket's own stream (OBJ_<bucket>, KV_<bucket>) for object and kv triggers. Every agent pulls
 *   from the same consumers, each only as many events as it has free slots.
 */
import { createHash } from 'node:crypto'
import { jetstreamManager, AckPolicy, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType, type JetStreamManager, type MsgRequest } from '@nats-io/jetstream'
import { nanos, type NatsConnection } from '@nats-io/transport-node'
import { AuthError, FnmeshError, TransportError, UsageError } from '../proto/errors.js'
import { isPermissionError } from './nats.js'
import { isTransientJsError, jsRetry } from './js-retry.js'
import type { StoredSpec } from './registry.js'
import { parseTrigger, triggerId, type Trigger } from './triggers.js'

export const EVENTS_STREAM = 'FNMESH_EVENTS'
export const DLQ_STREAM = 'FNMESH_DLQ'
export const SCHEDULES_BUCKET = 'fnmesh_schedules'
/** JetStream drops a publish whose Nats-Msg-Id it saw within this window */
export const DEDUPE_WINDOW_MS = 10 * 60_000
/** Events nobody consumed are dropped after this long */
export const EVENTS_MAX_AGE_MS = 7 * 86_400_000
export const DLQ_MAX_AGE_MS = 14 * 86_400_000
/** FNMESH_EVENTS's retention (see the top of this file): what is settled is purged by the agents */
export const EVENTS_RETENTION = RetentionPolicy.Limits

/**
 * The highest sequence of FNMESH_EVENTS that no consumer needs any more. A consumer with nothing
 * pending and nothing unacknowledged needs nothing up to the stream's last sequence (read before
 * the consumers); another needs everything from the first message of its subjects past its ack
 * floor: one lookup. Nothing (0) unless every consumer the stream has was listed, each with a
 * leader. Conservative: one consumer behind holds back the purge of every subject.
 */
export async function settledFloor (jsm: JetStreamManager): Promise<{ floor: number, first: number, last: number, limits: boolean }> {
  const info = await jsm.streams.info(EVENTS_STREAM)
  const last = info.state.last_seq
  const none = { floor: 0, first: info.state.first_seq, last, limits: info.config.retention === RetentionPolicy.Limits }
  const consumers = []
  for await (const c of jsm.consumers.list(EVENTS_STREAM)) consumers.push(c)
  // A clustered server leaves out of its list a consumer whose leader did not answer in time
  // (a partition, an election): purge only on every consumer's word, from its leader.
  if (consumers.length < info.state.consumer_count || consumers.some(c => c.cluster != null && (c.cluster.leader ?? '') === '')) return none
  let floor = last
  for (const c of consumers) {
    if (c.num_pending === 0 && c.num_ack_pending === 0) continue
    // Only the ack floor: a message handed back (nak) waits for redelivery behind what was delivered.
    const done = c.ack_floor.stream_seq
    if (done >= floor) continue
    // STREAM.MSG.GET takes next_by_subj on nats-server 2.9 (the client's type has it for direct gets only)
    const next = await jsm.streams.getMessage(EVENTS_STREAM, { next_by_subj: c.config.filter_subject ?? '>', seq: done + 1 } as unknown as MsgRequest).catch((err) => { if (notFound(err) || /no message found/i.test(String(err?.message))) return null; throw err })
    floor = Math.min(floor, next != null ? next.seq - 1 : done)
  }
  return { floor, first: info.state.first_seq, last, limits: info.config.retention === RetentionPolicy.Limits }
}

/**
 * Purges the settled prefix of FNMESH_EVENTS (limits retention only: interest retention deletes
 * on ack by itself). One replicated purge instead of a delete per ack. Resolves to the messages purged.
 */
export async function purgeSettled (jsm: JetStreamManager): Promise<number> {
  const { floor, first, limits } = await settledFloor(jsm)
  if (!limits || floor < first) return 0
  const r = await jsm.streams.purge(EVENTS_STREAM, { seq: floor + 1 })
  return r.purged
}

/** Redelivery delay of an event whose agent went silent; agents signal "working" every ACK_WAIT_MS / 3 */
export const ACK_WAIT_MS = 10_000

/** Subjects aimed at one function: fnmesh.fn.<name>.schedule|retry|replay */
export const functionSubject = (fn: string, what: 'schedule' | 'retry' | 'replay'): string => `fnmesh.fn.${fn}.${what}`
export const dlqSubject = (fn: string): string => `fnmesh.dlq.${fn}`

/** One consumer that delivers events to one function */
export interface Binding {
  fn: string
  /** the trigger, or null for the function's own subjects (schedules, retries, replays) */
  trigger: Trigger | null
  stream: string
  filter: string
  consumer: string
}

export function bindingsOf (spec: Pick<StoredSpec, 'name' | 'triggers'>): Binding[] {
  const direct: Binding = { fn: spec.name, trigger: null, stream: EVENTS_STREAM, filter: `fnmesh.fn.${spec.name}.>`, consumer: `fnmesh_${spec.name}_direct` }
  const out = [direct]
  for (const raw of spec.triggers) {
    const t = parseTrigger(raw)
    const consumer = `fnmesh_${spec.name}_${triggerId(t)}`
    if (t.kind === 'subject') out.push({ fn: spec.name, trigger: t, stream: EVENTS_STREAM, filter: t.pattern, consumer })
    else if (t.kind === 'object') out.push({ fn: spec.name, trigger: t, stream: `OBJ_${t.bucket}`, filter: `$O.${t.bucket}.M.>`, consumer })
    else if (t.kind === 'kv') out.push({ fn: spec.name, trigger: t, stream: `KV_${t.bucket}`, filter: `$KV.${t.bucket}.>`, consumer })
    // schedules arrive on the function's own subjects, through the direct consumer
  }
  return out
}

/** True if subject pattern `a` matches every subject `b` matches */
export function subjectCovers (a: string, b: string): boolean {
  const ta = a.split('.')
  const tb = b.split('.')
  for (let i = 0; i < ta.length; i++) {
    if (ta[i] === '>') return i < tb.length
    if (i >= tb.length || tb[i] === '>') return false
    if (ta[i] !== '*' && (tb[i] === '*' || ta[i] !== tb[i])) return false
  }
  return ta.length === tb.length
}

/** The patterns of `list` that no other one covers, deduplicated */
export function minimalSubjects (list: string[]): string[] {
  const uniq = [...new Set(list)]
  return uniq.filter(s => !uniq.some(o => o !== s && subjectCovers(o, s))).sort()
}

function notFound (err: any): boolean {
  return err?.code === 10059 || err?.code === 10014 || /not found/i.test(String(err?.message))
}

function jsError (err: any, what: string): FnmeshError {
  if (err instanceof FnmeshError) return err
  // Kept retriable for jsRetry() around it: wrapped with the cause, and marked as transient.
  if (isTransientJsError(err)) return Object.assign(new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot ${what}: ${String(err?.message ?? err)}`, { cause: err }), { transient: true })
  if (isPermissionError(err)) return new AuthError('FNMESH_ERR_FORBIDDEN', `Cannot ${what}: NATS refused it to this user (${String(err?.message)})`, { cause: err })
  const text = String(err?.message ?? err)
  if (/overlap/i.test(text)) return new UsageError('FNMESH_ERR_INVALID_TRIGGER', `Cannot ${what}: a subject is already captured by another JetStream stream (${text})`)
  return new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot ${what}: ${/jetstream not enabled|503/i.test(text) ? 'JetStream is not enabled on this NATS server' : text}`, { cause: err })
}

export async function manager (nc: NatsConnection): Promise<JetStreamManager> {
  try {
    return await jsRetry(async () => await jetstreamManager(nc))
  } catch (err) {
    throw jsError(err, 'reach JetStream')
  }
}

/** Creates the events and dead-letter streams if missing, and makes the events stream capture `patterns` */
export async function ensureStreams (jsm: JetStreamManager, patterns: string[] = []): Promise<void> {
  try {
    const want = minimalSubjects(['fnmesh.fn.>', ...patterns])
    const info = await jsm.streams.info(EVENTS_STREAM).catch((err) => { if (notFound(err)) return null; throw err })
    if (info == null) {
      await jsm.streams.add({
        name: EVENTS_STREAM,
        subjects: want,
        retention: EVENTS_RETENTION,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        max_age: nanos(EVENTS_MAX_AGE_MS),
        duplicate_window: nanos(DEDUPE_WINDOW_MS)
      })
    } else {
      const merged = minimalSubjects([...(info.config.subjects ?? []), ...want])
      if (merged.join(' ') !== [...(info.config.subjects ?? [])].sort().join(' ')) {
        await jsm.streams.update(EVENTS_STREAM, { ...info.config, subjects: merged })
      }
    }
    const dlq = await jsm.streams.info(DLQ_STREAM).catch((err) => { if (notFound(err)) return null; throw err })
    if (dlq == null) {
      await jsm.streams.add({ name: DLQ_STREAM, subjects: ['fnmesh.dlq.>'], storage: StorageType.File, max_age: nanos(DLQ_MAX_AGE_MS) })
    }
  } catch (err) {
    throw jsError(err, 'set up the event streams')
  }
}

/**
 * Makes the consumers of `spec` exist (and its subjects captured), and deletes the consumers of
 * triggers `previous` had and `spec` has not. Object and kv buckets must exist.
 */
export async function ensureBindings (jsm: JetStreamManager, spec: Pick<StoredSpec, 'name' | 'triggers' | 'timeoutMs'>, previous?: Pick<StoredSpec, 'name' | 'triggers'> | null): Promise<Binding[]> {
  // Every step is idempotent: across a leader election the whole is tried again.
  return await jsRetry(async () => await ensureBindingsOnce(jsm, spec, previous), { budgetMs: 20_000 })
}

async function ensureBindingsOnce (jsm: JetStreamManager, spec: Pick<StoredSpec, 'name' | 'triggers' | 'timeoutMs'>, previous?: Pick<StoredSpec, 'name' | 'triggers'> | null): Promise<Binding[]> {
  const bindings = bindingsOf(spec)
  await ensureStreams(jsm, bindings.filter(b => b.stream === EVENTS_STREAM && b.trigger != null).map(b => b.filter))
  for (const b of bindings) {
    if (b.stream === EVENTS_STREAM) continue
    const exists = await jsm.streams.info(b.stream).then(() => true, (err) => { if (notFound(err)) return false; throw jsError(err, `check bucket of trigger "${b.trigger?.raw ?? ''}"`) })
    if (!exists) {
      const kind = b.trigger?.kind === 'object' ? 'an object store' : 'a KV'
      throw new UsageError('FNMESH_ERR_INVALID_TRIGGER', `Trigger "${b.trigger?.raw ?? ''}" of "${spec.name}" names ${kind} bucket that does not exist: create it first`)
    }
  }
  // The consumer gives an event to another agent when this long passes without an ack or a
  // "working" signal (agents send one every few seconds while an event waits or runs), so the
  // events of an agent that died are redelivered within ACK_WAIT_MS.
  const ackWait = nanos(ACK_WAIT_MS)
  for (const b of bindings) {
    try {
      const info = await jsm.consumers.info(b.stream, b.consumer).catch((err) => { if (notFound(err)) return null; throw err })
      if (info == null) {
        await jsm.consumers.add(b.stream, {
          durable_name: b.consumer,
          filter_subject: b.filter,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.New,
          ack_wait: ackWait,
          max_deliver: -1,
          max_ack_pending: 10_000
        })
      } else if (info.config.ack_wait !== ackWait) {
        await jsm.consumers.update(b.stream, b.consumer, { ack_wait: ackWait })
      }
    } catch (err) {
      throw jsError(err, `bind trigger "${b.trigger?.raw ?? 'direct'}" of "${spec.name}"`)
    }
  }
  if (previous != null) {
    const keep = new Set(bindings.map(b => `${b.stream}/${b.consumer}`))
    for (const old of bindingsOfLenient(previous)) {
      if (keep.has(`${old.stream}/${old.consumer}`)) continue
      await jsm.consumers.delete(old.stream, old.consumer).catch(() => {})
    }
  }
  return bindings
}

/** bindingsOf() that skips triggers it cannot parse (a spec stored by another version) */
function bindingsOfLenient (spec: Pick<StoredSpec, 'name' | 'triggers'>): Binding[] {
  return bindingsOf({ name: spec.name, triggers: spec.triggers.filter(t => { try { parseTrigger(t); return true } catch { return false } }) })
}

/** Events waiting for `spec` (not yet delivered, or delivered and not yet acknowledged) */
export async function backlog (jsm: JetStreamManager, spec: Pick<StoredSpec, 'name' | 'triggers'>): Promise<number> {
  let n = 0
  for (const b of bindingsOfLenient(spec)) {
    const info = await jsm.consumers.info(b.stream, b.consumer).catch(() => null)
    if (info != null) n += info.num_pending + info.num_ack_pending
  }
  return n
}

/** Headers of an event aimed at one function (retries, replays, schedule ticks) */
export const EventHeaders = {
  /** attempt number of the run this message asks for (1 = first) */
  attempt: 'Fnmesh-Attempt',
  /** epoch ms before which the run must not start (retry backoff) */
  notBefore: 'Fnmesh-Not-Before',
  eventId: 'Fnmesh-Event-Id',
  /** epoch ms the event happened (its age counts from here) */
  eventTime: 'Fnmesh-Event-Time',
  /** epoch ms of the first run */
  firstAttempt: 'Fnmesh-First-Attempt',
  /** the trigger the event first came through */
  trigger: 'Fnmesh-Trigger',
  /** JSON object of the event's CloudEvent attributes; the body is the event the function gets */
  attributes: 'Fnmesh-Attributes'
} as const

/** A stable invocation id for (function, event): the same across retries and replays */
export function eventInvocationId (fn: string, eventId: string): string {
  const h = createHash('sha256').update(`${fn}\n${eventId}`).digest('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`
}
