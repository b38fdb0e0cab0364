/**
 * `fnmesh init`: the admin step that creates every JetStream asset of the mesh, so that agents
 * need no right to create, update or delete streams, buckets or consumers (a holder of those
 * rights can write into any stream of the account: a stream that republishes, mirrors or
 * sources into the registry, or a push consumer delivering into it). Agents only open what
 * this step made and say FNMESH_ERR_NOT_INITIALIZED when something is missing.
 *
 * Streams and buckets (created with `replicas`, min(3, servers in the cluster) by default; one
 * that exists with fewer is scaled up in place by a stream update, its data and consumers kept):
 * - KV fnmesh_functions (history 16) and object store fnmesh_bundles: the registry;
 * - KV fnmesh_apikeys (history 1): gateway API keys; KV fnmesh_ratelimits (memory, 1 h TTL);
 * - KV fnmesh_schedules (history 1): last schedule tick fired;
 * - streams FNMESH_EVENTS, FNMESH_DLQ (core/events.ts) and fnmesh_logs (function log lines);
 * - and the durable consumers of every function deployed now (a consumer deleted by hand is
 *   made again here; deploys make their own).
 */
import { DiscardPolicy, RetentionPolicy, StorageType, type JetStreamManager, type StreamInfo } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { Objm } from '@nats-io/obj'
import { nanos, type NatsConnection } from '@nats-io/transport-node'
import { AuthError, FnmeshError, TransportError, UsageError } from '../proto/errors.js'
import { APIKEYS_BUCKET, BUNDLES_BUCKET, FUNCTIONS_BUCKET, LOGS_STREAM, LOGS_WILDCARD, RATELIMITS_BUCKET } from '../proto/subjects.js'
import { DLQ_MAX_AGE_MS, DLQ_STREAM, DEDUPE_WINDOW_MS, ensureBindings, ensureStreams, EVENTS_MAX_AGE_MS, EVENTS_RETENTION, EVENTS_STREAM, manager, SCHEDULES_BUCKET } from './events.js'
import { publishedSubjects } from './bindings.js'
import { isPermissionError } from './nats.js'
import { jsRetry } from './js-retry.js'
import { Registry } from './registry.js'
import { notInitialized } from './kv-follow.js'

export interface InitOptions {
  /** JetStream replicas of what is created. @default min(3, servers in the cluster) */
  replicas?: number
  /** Retention of the log stream. @default 24 h */
  logsMaxAgeMs?: number
  /** Size cap of the log stream. @default 256 MiB */
  logsMaxBytes?: number
}

export interface InitResult {
  replicas: number
  /** assets made now */
  created: string[]
  /** assets that were there already (left as they are, or scaled: see `scaled`) */
  existing: string[]
  /** existing assets whose replicas changed now (stream update in place: data kept) */
  scaled: Array<{ stream: string, from: number, to: number }>
  /** functions whose consumers were checked */
  functions: number
}

/** The assets agents open, by JetStream stream name */
export const MESH_STREAMS = [
  `KV_${FUNCTIONS_BUCKET}`, `OBJ_${BUNDLES_BUCKET}`, `KV_${APIKEYS_BUCKET}`, `KV_${RATELIMITS_BUCKET}`,
  `KV_${SCHEDULES_BUCKET}`, EVENTS_STREAM, DLQ_STREAM, LOGS_STREAM
] as const

/**
 * Servers in the cluster of the server `nc` is connected to, as its INFO tells: the client URLs
 * of every server of the cluster, its own included (a server listening on 0.0.0.0 lists one URL
 * per interface, so this can over-count: initMesh() steps down when JetStream says so).
 */
export function clusterSize (nc: NatsConnection): number {
  const info = nc.info
  if (info?.cluster == null || info.cluster === '') return 1
  return Math.max(1, new Set(info.connect_urls ?? []).size)
}

function notFound (err: any): boolean {
  return err?.code === 10059 || err?.api_error?.err_code === 10059 || /stream not found/i.test(String(err?.message))
}

export function initError (err: any, what: string): FnmeshError {
  if (err instanceof FnmeshError) return err
  if (isPermissionError(err)) return new AuthError('FNMESH_ERR_FORBIDDEN', `Cannot ${what}: NATS refused it to this user; run "fnmesh init" with admin credentials (${String(err?.message)})`, { cause: err })
  return new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot ${what}: ${String(err?.message ?? err)}`, { cause: err })
}

/** Throws FNMESH_ERR_NOT_INITIALIZED naming the first of `streams` that does not exist */
export async function requireStreams (jsm: JetStreamManager, streams: readonly string[]): Promise<void> {
  for (const s of streams) {
    try {
      await jsm.streams.info(s)
    } catch (err) {
      if (notFound(err)) throw notInitialized(s, err)
      throw initError(err, `check JetStream stream "${s}"`)
    }
  }
}

/** Creates (or leaves alone) every stream, bucket and object store of the mesh */
export async function initMesh (nc: NatsConnection, options: InitOptions = {}): Promise<InitResult> {
  let replicas = options.replicas ?? Math.min(3, clusterSize(nc))
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `JetStream replicas "${String(options.replicas)}" is invalid: expected a whole number from 1 to 5`)
  }
  const jsm = await manager(nc)
  const result: InitResult = { replicas, created: [], existing: [], scaled: [], functions: 0 }
  // Every call is retried across a leader election (a server of the cluster restarting).
  const info = async (stream: string): Promise<StreamInfo | null> => {
    try {
      return await jsRetry(async () => await jsm.streams.info(stream))
    } catch (err) {
      if (notFound(err)) return null
      throw initError(err, `check JetStream stream "${stream}"`)
    }
  }
  /**
   * Moves an existing stream to `replicas` by a stream update (nats-server 2.9 scales a stream
   * in place, both ways, in clustered mode: its messages and its consumers, which inherit the
   * stream's replicas, move with it). Only up, unless --js-replicas asked for fewer.
   */
  const scale = async (stream: string, current: StreamInfo): Promise<void> => {
    const from = current.config.num_replicas ?? 1
    if (from === replicas || (from > replicas && options.replicas == null)) return
    try {
      await jsRetry(async () => await jsm.streams.update(stream, { ...current.config, num_replicas: replicas }))
      result.scaled.push({ stream, from, to: replicas })
    } catch (err) {
      throw initError(err, `change the replicas of JetStream stream "${stream}" from ${from} to ${replicas}`)
    }
  }
  const make = async (stream: string, create: (replicas: number) => Promise<unknown>): Promise<void> => {
    const current = await info(stream)
    if (current != null) { result.existing.push(stream); await scale(stream, current); return }
    for (;;) {
      try {
        await jsRetry(async () => await create(replicas))
        result.created.push(stream)
        return
      } catch (err: any) {
        const text = String(err?.message)
        // Another init at the same moment made it.
        if (/already in use|exists/i.test(text)) {
          const now = await info(stream)
          if (now != null) { result.existing.push(stream); await scale(stream, now); return }
        }
        // Fewer servers than the INFO suggested (one listed per interface): step down, unless asked.
        if (options.replicas == null && replicas > 1 && /insufficient resources|replicas > 1 not supported|no suitable peers/i.test(text)) {
          replicas--
          result.replicas = replicas
          continue
        }
        throw initError(err, `create JetStream stream "${stream}"`)
      }
    }
  }
  const kvm = new Kvm(nc)
  await make(`KV_${FUNCTIONS_BUCKET}`, async (replicas) => await kvm.create(FUNCTIONS_BUCKET, { history: 16, replicas }))
  await make(`OBJ_${BUNDLES_BUCKET}`, async (replicas) => await new Objm(nc).create(BUNDLES_BUCKET, { replicas }))
  await make(`KV_${APIKEYS_BUCKET}`, async (replicas) => await kvm.create(APIKEYS_BUCKET, { history: 1, replicas }))
  await make(`KV_${RATELIMITS_BUCKET}`, async (replicas) => await kvm.create(RATELIMITS_BUCKET, { history: 1, storage: 'memory', ttl: 3_600_000, replicas }))
  await make(`KV_${SCHEDULES_BUCKET}`, async (replicas) => await kvm.create(SCHEDULES_BUCKET, { history: 1, replicas }))
  await make(EVENTS_STREAM, async (replicas) => await jsm.streams.add({
    name: EVENTS_STREAM,
    subjects: ['fnmesh.fn.>'],
    retention: EVENTS_RETENTION,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(EVENTS_MAX_AGE_MS),
    duplicate_window: nanos(DEDUPE_WINDOW_MS),
    num_replicas: replicas
  }))
  await make(DLQ_STREAM, async (replicas) => await jsm.streams.add({ name: DLQ_STREAM, subjects: ['fnmesh.dlq.>'], storage: StorageType.File, max_age: nanos(DLQ_MAX_AGE_MS), num_replicas: replicas }))
  await make(LOGS_STREAM, async (replicas) => await jsm.streams.add({
    name: LOGS_STREAM,
    subjects: [LOGS_WILDCARD],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(options.logsMaxAgeMs ?? 24 * 3600_000),
    max_bytes: options.logsMaxBytes ?? 256 * 1024 * 1024,
    num_replicas: replicas
  }))
  // The consumers of the functions deployed now (deploys make their own; this repairs).
  const registry = await Registry.open(nc)
  for (const spec of await registry.list()) {
    try {
      await ensureBindings(jsm, spec)
      // what its publish bindings and destinations publish on stays captured
      const published = publishedSubjects(spec)
      if (published.length > 0) await ensureStreams(jsm, published)
      result.functions++
    } catch (err) {
      // A trigger on a bucket deleted since: the deploy said so then; init goes on.
      if (!(err instanceof FnmeshError && (err.code === 'FNMESH_ERR_INVALID_TRIGGER' || err.code === 'FNMESH_ERR_INVALID_BINDING'))) throw err
    }
  }
  return result
}
