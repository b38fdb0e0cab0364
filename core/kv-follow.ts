/**
 * Following a KV bucket without a JetStream consumer. `kv.watch()` creates an ordered consumer,
 * and whoever may create consumers on a stream may also point a push consumer's deliver subject
 * at another stream's subjects, writing into it (see the NATS permissions section of the README).
 * So agents follow buckets with what only reads:
 * - a core subscription on `$KV.<bucket>.>`: each message there is a hint that the key changed
 *   (the stream may have refused it, so the value is never taken from the hint);
 * - a direct get of the key's last value (`$JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<key>`);
 * - a relist of every key (`$JS.API.STREAM.INFO.KV_<bucket>` with a subjects filter) at start
 *   and every `relistMs`, which also catches changes missed while disconnected.
 */
import { jetstreamManager } from '@nats-io/jetstream'
import type { KV, KvEntry } from '@nats-io/kv'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { AuthError, FnmeshError, NotFoundError, TransportError } from '../proto/errors.js'
import { isPermissionError } from './nats.js'
import { jsRetry } from './js-retry.js'

export interface FollowKvInit {
  /** How often every key is read again. @default 30000 */
  relistMs?: number
  /**
   * Hand a hint's value on at once (then the stored one, read back): a reader sees a put as
   * soon as with a watch, one round trip before the direct get answers. Only for buckets whose
   * writers are trusted anyway (a put the stream refused is corrected by the read back). @default false
   */
  hints?: boolean
  /** Told about a failed read or relist (the follower keeps going) */
  onError?: (err: unknown) => void
}

/** `onEntry(key, entry)`: entry is the latest PUT, or null once the key is deleted or purged */
/**
 * `entry` is the live value, or null for a delete. `meta.revision` is the value's KV revision
 * (for a delete, the delete's; 0 when unknown: a hint, or a key gone from the stream);
 * `meta.hint` marks a put seen on the subject and not yet read back.
 */
export type KvFollowHandler = (key: string, entry: KvEntry | null, meta: { revision: number, hint: boolean }) => void

/**
 * Opens KV `bucket` without creating it: FNMESH_ERR_NOT_INITIALIZED when it does not exist.
 * Direct gets are used when the stream allows them (buckets made by `fnmesh init` do).
 */
export async function openBucket (nc: NatsConnection, bucket: string): Promise<KV> {
  const stream = `KV_${bucket}`
  let allowDirect = false
  try {
    const jsm = await jetstreamManager(nc, { checkAPI: false })
    allowDirect = (await jsRetry(async () => await jsm.streams.info(stream))).config.allow_direct === true
  } catch (err: any) {
    if (err?.code === 10059 || err?.api_error?.err_code === 10059 || /stream not found/i.test(String(err?.message))) {
      throw notInitialized(stream, err)
    }
    if (isPermissionError(err)) throw new AuthError('FNMESH_ERR_FORBIDDEN', `Cannot open KV bucket "${bucket}": NATS refused it to this user (${String(err?.message)})`, { cause: err })
    throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot open KV bucket "${bucket}": ${String(err?.message ?? err)}`, { cause: err })
  }
  const { Kvm } = await import('@nats-io/kv')
  return await new Kvm(nc).open(bucket, { allow_direct: allowDirect })
}

/** The error an agent reports when `fnmesh init` has not made `stream` */
export function notInitialized (stream: string, cause?: unknown): NotFoundError {
  return new NotFoundError('FNMESH_ERR_NOT_INITIALIZED', `JetStream stream "${stream}" does not exist: run "fnmesh init" with admin credentials`, { cause })
}

/** Every key with a message in KV `bucket` (deleted ones included), read from the stream's info: no consumer */
export async function kvKeys (nc: NatsConnection, bucket: string): Promise<string[]> {
  const prefix = `$KV.${bucket}.`
  const jsm = await jetstreamManager(nc, { checkAPI: false })
  const info = await jsRetry(async () => await jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}>` }), { budgetMs: 10_000 })
  return Object.keys(info.state.subjects ?? {}).filter(s => s.startsWith(prefix)).map(s => s.slice(prefix.length)).sort()
}

/** Calls `onEntry` for every key of the bucket now, then for every change. Returns a stop function */
export async function followKv (nc: NatsConnection, kv: KV, bucket: string, onEntry: KvFollowHandler, init: FollowKvInit = {}): Promise<() => void> {
  const prefix = `$KV.${bucket}.`
  const stream = `KV_${bucket}`
  const jsm = await jetstreamManager(nc, { checkAPI: false })
  /** last revision seen per key; 0 = deleted */
  const known = new Map<string, number>()
  const chains = new Map<string, Promise<void>>()
  /** keys handed on from a hint, whose stored value must be handed on even if unchanged */
  const provisional = new Set<string>()
  /** the bytes each hint handed on, and how often the read back disagreed */
  const hinted = new Map<string, { bytes: Uint8Array, misses: number }>()
  let stopped = false
  const report = (err: unknown): void => { if (!stopped) init.onError?.(err) }

  const check = async (key: string): Promise<void> => {
    const entry = await jsRetry(async () => await kv.get(key), { budgetMs: 10_000 })
    if (stopped) return
    const live = entry != null && entry.operation === 'PUT' && entry.value.byteLength > 0 ? entry : null
    const rev = live?.revision ?? 0
    const revision = entry?.revision ?? 0
    const was = known.get(key)
    // Direct gets are answered by any replica, and one that lags (a server back from a partition)
    // answers an older value than the hint's: ask again a few times before taking the read back
    // (which stays right when the stream refused the hinted put, e.g. a lost compare-and-set).
    const hint = hinted.get(key)
    if (provisional.has(key) && hint != null && (live == null || Buffer.compare(Buffer.from(live.value), Buffer.from(hint.bytes)) !== 0) && hint.misses < 5) {
      hint.misses++
      setTimeout(() => { if (!stopped) void queue(key) }, 200 * hint.misses).unref()
      return
    }
    hinted.delete(key)
    if (!provisional.delete(key)) {
      if (was === rev || (was == null && rev === 0)) return
      // A hint and a relist may race: never go back to an older revision.
      if (was != null && rev !== 0 && rev < was) return
    }
    known.set(key, rev)
    onEntry(key, live, { revision, hint: false })
  }
  const queue = (key: string): Promise<void> => {
    const next = (chains.get(key) ?? Promise.resolve()).then(async () => { await check(key) }).catch(report)
    chains.set(key, next)
    void next.finally(() => { if (chains.get(key) === next) chains.delete(key) })
    return next
  }
  const relist = async (): Promise<void> => {
    const keys = await kvKeys(nc, bucket)
    const present = new Set(keys)
    await Promise.all(keys.map(queue))
    for (const [key, rev] of known) {
      if (present.has(key) || rev === 0 || stopped) continue
      known.set(key, 0)
      onEntry(key, null, { revision: 0, hint: false })
    }
  }

  let sub: Subscription | undefined
  try {
    sub = nc.subscribe(`${prefix}>`, {
      callback: (err, msg) => {
        if (err != null) { report(err); return }
        const key = msg.subject.slice(prefix.length)
        if (init.hints === true && msg.data.byteLength > 0 && (msg.headers?.get('KV-Operation') ?? '') === '') {
          provisional.add(key)
          hinted.set(key, { bytes: new Uint8Array(msg.data), misses: 0 })
          try {
            onEntry(key, { bucket, key, value: msg.data, revision: 0, created: new Date(), delta: 0, operation: 'PUT', length: msg.data.byteLength, string: () => msg.string(), json: () => msg.json(), rawKey: key } as unknown as KvEntry, { revision: 0, hint: true })
          } catch (e) { report(e) }
        }
        void queue(key)
      }
    })
    await nc.flush()
    await relist()
  } catch (err) {
    stopped = true
    sub?.unsubscribe()
    if (err instanceof FnmeshError) throw err
    if (isPermissionError(err)) throw new AuthError('FNMESH_ERR_FORBIDDEN', `Cannot follow KV bucket "${bucket}": NATS refused it to this user (${String((err as Error)?.message)})`, { cause: err })
    throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot follow KV bucket "${bucket}": ${String((err as Error)?.message ?? err)}`, { cause: err })
  }
  const timer = setInterval(() => { void relist().catch(report) }, init.relistMs ?? 30_000)
  timer.unref()
  // The core subscription comes back with the connection, but what changed while it was away
  // (another server of the cluster took the puts) is only in the stream: relist at once.
  void (async () => {
    for await (const s of nc.status()) {
      if (stopped) break
      if (s.type === 'reconnect') void relist().catch(report)
    }
  })().catch(() => {})
  return () => {
    stopped = true
    clearInterval(timer)
    sub?.unsubscribe()
  }
}
