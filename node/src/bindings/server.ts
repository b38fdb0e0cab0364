/**
 * The agent's half of bindings (issue 17): serves the binding calls a sandboxed function sends
 * over its IPC channel, against NATS KV buckets and object stores, *only* within the scope its
 * stored spec declares. The child's message is a claim: the (name, kind, target) it names must be
 * one of the spec's bindings, the op must exist for that kind, and a write through a read-only
 * binding is refused; everything else is FNMESH_ERR_FORBIDDEN. Each call is bounded by the
 * invocation's deadline.
 *
 * Agents never create buckets (the deployer does); they open them with stream info and read with
 * direct gets, never with a consumer (an agent allowed to create consumers could deliver into
 * the registry: README, Security). Their NATS rights cover the buckets deployed functions declare
 * (node/src/dev/nats-auth-config.ts, option `bindingBuckets`).
 */
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import type { KV } from '@nats-io/kv'
import { Objm, type ObjectStore } from '@nats-io/obj'
import type { NatsConnection } from '@nats-io/transport-node'
import { parseBindings, type Binding } from '../../../core/bindings.js'
import type { StoredSpec } from '../../../core/registry.js'
import { openBucket } from '../../../core/kv-follow.js'
import { isPermissionError } from '../../../core/nats.js'
import { FnmeshError, fnmeshError, type ErrorCode } from '../../../proto/errors.js'
import type { BindCall } from '../sandbox/protocol.js'
import type { Logger } from '../logger.js'

export interface BindingServerComponents {
  nc: NatsConnection
  logger: Logger
}

export interface BindingServerInit {
  /** Largest KV value written or read, bytes. @default 1 MiB */
  maxValueBytes?: number
  /** Largest object written or read in one call, bytes (the buffered form). @default 16 MiB */
  maxObjectBytes?: number
  /** Most keys or objects one keys()/list() answers. @default 10000 */
  maxListed?: number
}

/** Calls and bytes (in and out) of one invocation's binding calls, for its meter record */
export interface BindingUsage { calls: number, bytes: number }

const KV_KEY = /^[-/=.\w]+$/
const MAX_NAME = 1024
const KV_OPS = new Set(['get', 'put', 'delete', 'keys'])
const OBJECT_OPS = new Set(['get', 'put', 'delete', 'list'])
const WRITES = new Set(['put', 'delete'])

const fail = (code: ErrorCode, message: string): never => { throw fnmeshError(code, message) }

export class BindingServer {
  private readonly maxValue: number
  private readonly maxObject: number
  private readonly maxListed: number
  private readonly declared = new WeakMap<StoredSpec, Binding[]>()
  private readonly kvs = new Map<string, Promise<KV>>()
  private readonly objects = new Map<string, Promise<ObjectStore>>()
  private jsm: Promise<JetStreamManager> | undefined

  constructor (private readonly c: BindingServerComponents, init: BindingServerInit = {}) {
    this.maxValue = init.maxValueBytes ?? 1024 * 1024
    this.maxObject = init.maxObjectBytes ?? 16 * 1024 * 1024
    this.maxListed = init.maxListed ?? 10_000
  }

  /** The binding `call` names, if `spec` declares it and allows `call.op` through it */
  scope (spec: StoredSpec, call: BindCall): Binding {
    let list = this.declared.get(spec)
    if (list == null) {
      list = parseBindings(spec.name, spec.bindings ?? [])
      this.declared.set(spec, list)
    }
    const b = list.find(x => x.name === call?.name)
    const label = `${String(call?.kind).slice(0, 20)}:${String(call?.target).slice(0, 80)}`
    if (b == null || b.kind !== call.kind || b.target !== call.target) {
      return fail('FNMESH_ERR_FORBIDDEN', `Binding call refused: "${spec.name}" declares no binding "${String(call?.name).slice(0, 64)}" to ${label}`)
    }
    if (!(b.kind === 'kv' ? KV_OPS : OBJECT_OPS).has(call.op)) return fail('FNMESH_ERR_FORBIDDEN', `Binding call refused: "${String(call.op).slice(0, 20)}" is not an operation of ${b.kind} binding "${b.name}"`)
    if (b.readOnly && WRITES.has(call.op)) return fail('FNMESH_ERR_FORBIDDEN', `Binding call refused: "${b.name}" is read-only (${b.raw}), ${call.op} is a write`)
    return b
  }

  /** Serves one call of an invocation of `spec` that ends at `deadlineMs` */
  async serve (spec: StoredSpec, call: BindCall, deadlineMs: number, usage?: BindingUsage): Promise<unknown> {
    const b = this.scope(spec, call)
    if (usage != null) usage.calls++
    const remaining = deadlineMs - Date.now()
    if (remaining <= 0) fail('FNMESH_ERR_TIMEOUT', `Binding "${b.name}" ${call.op}: the invocation has no time left`)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((resolve, reject) => {
      timer = setTimeout(() => { reject(fnmeshError('FNMESH_ERR_TIMEOUT', `Binding "${b.name}" ${call.op} did not finish before the invocation's deadline`)) }, remaining)
    })
    try {
      return await Promise.race([b.kind === 'kv' ? this.kv(b, call, usage) : this.object(b, call, usage), timeout])
    } catch (err) {
      throw this.coded(err, b, call)
    } finally {
      clearTimeout(timer)
    }
  }

  private coded (err: any, b: Binding, call: BindCall): FnmeshError {
    if (err instanceof FnmeshError) return err
    const text = String(err?.message ?? err)
    const what = `Binding "${b.name}" ${String(call.op)}`
    if (err?.api_error?.err_code === 10071 || /wrong last sequence|key exists/i.test(text)) {
      return fnmeshError('FNMESH_ERR_CONFLICT', `${what} of "${String(call.key)}" lost a compare-and-set: the key is not at revision ${String(call.revision)}`)
    }
    if (isPermissionError(err)) return fnmeshError('FNMESH_ERR_FORBIDDEN', `${what}: NATS refused it to this agent (its rights do not cover "${b.target}": ${text})`)
    if (/stream not found|bucket not found|not found/i.test(text)) return fnmeshError('FNMESH_ERR_NOT_INITIALIZED', `${what}: ${b.kind === 'kv' ? 'KV bucket' : 'object store'} "${b.target}" does not exist (deploy makes it: redeploy the function)`)
    return fnmeshError('FNMESH_ERR_NATS_UNAVAILABLE', `${what}: ${text}`)
  }

  private manager (): Promise<JetStreamManager> {
    this.jsm ??= jetstreamManager(this.c.nc, { checkAPI: false })
    return this.jsm
  }

  private open<T> (cache: Map<string, Promise<T>>, name: string, opening: () => Promise<T>): Promise<T> {
    let p = cache.get(name)
    if (p == null) {
      p = opening()
      cache.set(name, p)
      p.catch(() => { cache.delete(name) })
    }
    return p
  }

  private data (call: BindCall, limit: number): Uint8Array {
    if (typeof call.data !== 'string') return fail('FNMESH_ERR_INVALID_ARGUMENT', `Binding "${call.name}" ${call.op}: no data`)
    if (call.data.length > Math.ceil(limit / 3) * 4 + 4) return fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${call.name}" ${call.op}: data over ${limit} bytes`)
    return Buffer.from(call.data, 'base64')
  }

  private async kv (b: Binding, call: BindCall, usage?: BindingUsage): Promise<unknown> {
    const kv = await this.open(this.kvs, b.target, async () => await openBucket(this.c.nc, b.target))
    if (call.op === 'keys') return await this.keys(b, String(call.prefix ?? ''))
    const key = call.key
    if (typeof key !== 'string' || key.length > MAX_NAME || !KV_KEY.test(key) || key.startsWith('.') || key.endsWith('.')) {
      return fail('FNMESH_ERR_INVALID_ARGUMENT', `Binding "${b.name}" ${call.op}: key "${String(key).slice(0, 100)}" is invalid (letters, digits, "-/_=." not at either end)`)
    }
    if (call.op === 'get') {
      const e = await kv.get(key)
      if (e == null || e.operation !== 'PUT') return null
      if (usage != null) usage.bytes += e.value.byteLength
      return { data: Buffer.from(e.value).toString('base64'), revision: e.revision }
    }
    if (call.op === 'delete') { await kv.delete(key); return null }
    const value = this.data(call, this.maxValue)
    if (value.byteLength > this.maxValue) fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${b.name}" put "${key}": ${value.byteLength} bytes, the limit is ${this.maxValue}`)
    if (usage != null) usage.bytes += value.byteLength
    const revision = call.revision
    if (revision == null) return await kv.put(key, value)
    if (!Number.isSafeInteger(revision) || revision < 0) fail('FNMESH_ERR_INVALID_ARGUMENT', `Binding "${b.name}" put "${key}": revision ${String(revision)} is invalid`)
    return revision === 0 ? await kv.create(key, value) : await kv.update(key, value, revision)
  }

  /** Live keys from stream info (subjects) and direct gets: listing with a consumer is not an agent's right */
  private async keys (b: Binding, prefix: string): Promise<string[]> {
    const jsm = await this.manager()
    const base = `$KV.${b.target}.`
    const info = await jsm.streams.info(`KV_${b.target}`, { subjects_filter: `${base}>` })
    const candidates = Object.keys(info.state.subjects ?? {}).map(s => s.slice(base.length)).filter(k => k.startsWith(prefix))
    if (candidates.length > this.maxListed) fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${b.name}" keys: more than ${this.maxListed} keys start with "${prefix.slice(0, 100)}"`)
    const kv = await this.open(this.kvs, b.target, async () => await openBucket(this.c.nc, b.target))
    const live = await mapLimit(candidates, 16, async (k) => { const e = await kv.get(k); return e != null && e.operation === 'PUT' })
    return candidates.filter((_, i) => live[i]).sort()
  }

  private async object (b: Binding, call: BindCall, usage?: BindingUsage): Promise<unknown> {
    const store = await this.open(this.objects, b.target, async () => await new Objm(this.c.nc).open(b.target))
    if (call.op === 'list') return await this.list(b, String(call.prefix ?? ''))
    const name = call.key
    if (typeof name !== 'string' || name === '' || name.length > MAX_NAME) return fail('FNMESH_ERR_INVALID_ARGUMENT', `Binding "${b.name}" ${call.op}: object name must be 1-${MAX_NAME} characters`)
    if (call.op === 'get') {
      const bytes = await this.readObject(b, store, name)
      if (bytes != null && usage != null) usage.bytes += bytes.byteLength
      return bytes == null ? null : { data: Buffer.from(bytes).toString('base64') }
    }
    if (call.op === 'delete') {
      const info = await store.info(name)
      if (info != null && !info.deleted) await store.delete(name)
      return null
    }
    const data = this.data(call, this.maxObject)
    if (data.byteLength > this.maxObject) fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${b.name}" put "${name.slice(0, 100)}": ${data.byteLength} bytes, the limit is ${this.maxObject}`)
    if (usage != null) usage.bytes += data.byteLength
    const info = await store.putBlob({ name }, data)
    return { name: info.name, size: info.size }
  }

  /** An object's bytes by direct gets, chunk after chunk (ObjectStore.get() would create a consumer) */
  private async readObject (b: Binding, store: ObjectStore, name: string): Promise<Uint8Array | null> {
    const info = await store.info(name)
    if (info == null || info.deleted) return null
    if (info.size > this.maxObject) fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${b.name}" get "${name.slice(0, 100)}": ${info.size} bytes, the limit is ${this.maxObject}`)
    const out = new Uint8Array(info.size)
    const jsm = await this.manager()
    const subject = `$O.${b.target}.C.${info.nuid}`
    let seq = 0
    let at = 0
    while (at < info.size) {
      const m = await jsm.direct.getMessage(`OBJ_${b.target}`, { seq, next_by_subj: subject })
      if (m == null) fail('FNMESH_ERR_NOT_FOUND', `Object "${name.slice(0, 100)}" lost its data after ${at} of ${info.size} bytes`)
      if (at + m!.data.byteLength > info.size) fail('FNMESH_ERR_INTERNAL', `Object "${name.slice(0, 100)}" holds more than its ${info.size} bytes`)
      out.set(m!.data, at)
      at += m!.data.byteLength
      seq = m!.seq + 1
    }
    return out
  }

  /** Objects by their metadata subjects (stream info) and the last metadata message of each (direct get) */
  private async list (b: Binding, prefix: string): Promise<Array<{ name: string, size: number }>> {
    const jsm = await this.manager()
    const stream = `OBJ_${b.target}`
    const info = await jsm.streams.info(stream, { subjects_filter: `$O.${b.target}.M.>` })
    const subjects = Object.keys(info.state.subjects ?? {})
    if (subjects.length > this.maxListed) fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${b.name}" list: more than ${this.maxListed} objects`)
    const metas = await mapLimit(subjects, 16, async (s) => {
      const m = await jsm.direct.getMessage(stream, { last_by_subj: s })
      if (m == null) return null
      try { return JSON.parse(Buffer.from(m.data).toString('utf8')) as { name?: string, size?: number, deleted?: boolean } } catch { return null }
    })
    return metas
      .filter((m): m is { name: string, size: number } => m != null && typeof m.name === 'string' && m.deleted !== true && m.name.startsWith(prefix))
      .map(m => ({ name: m.name, size: Number(m.size ?? 0) }))
      .sort((x, y) => x.name < y.name ? -1 : x.name > y.name ? 1 : 0)
  }
}

async function mapLimit<T, R> (items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i])
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return out
}
