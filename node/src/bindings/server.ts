/**
 * The agent's half of bindings (issue 17): serves the binding calls a sandboxed function sends
 * over its IPC channel, against NATS KV buckets and object stores (objects.ts), event subjects
 * and other functions (messaging.ts), *only* within the scope its stored spec declares. The child's message is a claim: the (name, kind, target) it names must be
 * one of the spec's bindings, the op must exist for that kind, and a write through a read-only
 * binding is refused; everything else is FNMESH_ERR_FORBIDDEN. Each call is bounded by the
 * invocation's deadline.
 *
 * Agents never create buckets (the deployer does); they open them with stream info and read with
 * direct gets, never with a consumer (an agent allowed to create consumers could deliver into
 * the registry: README, Security). Their NATS rights cover the buckets deployed functions declare
 * (node/src/dev/nats-auth-config.ts, option `bindingBuckets`).
 */
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream'
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
import { mapLimit, ObjectCalls } from './objects.js'
import { invokeCall, publishCall, PUBLISH_LIMIT, type CallContext, type InvokeThroughMesh } from './messaging.js'

export type { CallContext, InvokeThroughMesh }

export interface BindingServerComponents {
  nc: NatsConnection
  logger: Logger
  /** sync invocations for invoke bindings: this agent's router (absent: invoke bindings answer UNSUPPORTED) */
  invoke?: InvokeThroughMesh
}

export interface BindingServerInit {
  /** Largest KV value written or read, bytes. @default 1 MiB */
  maxValueBytes?: number
  /** Largest object written or read whole in one call, bytes (larger ones go a chunk per call). @default 16 MiB */
  maxObjectBytes?: number
  /** Largest object written a chunk per call, bytes. @default 1 GiB */
  maxStreamedObjectBytes?: number
  /** Most keys or objects one keys()/list() answers. @default 10000 */
  maxListed?: number
}

/** Calls and bytes (in and out) of one invocation's binding calls, for its meter record */
export interface BindingUsage { calls: number, bytes: number }

const KV_KEY = /^[-/=.\w]+$/
const MAX_NAME = 1024
const KV_OPS = new Set(['get', 'put', 'delete', 'keys'])
const OBJECT_OPS = new Set(['get', 'put', 'delete', 'list', 'stat', 'read', 'write-open', 'write', 'write-close', 'write-abort'])
const OPS: Record<Binding['kind'], ReadonlySet<string>> = { kv: KV_OPS, object: OBJECT_OPS, publish: new Set(['publish']), invoke: new Set(['invoke']) }
const WRITES = new Set(['put', 'delete', 'write-open', 'write', 'write-close'])

const fail = (code: ErrorCode, message: string): never => { throw fnmeshError(code, message) }

export class BindingServer {
  private readonly maxValue: number
  private readonly maxObject: number
  private readonly maxListed: number
  private readonly declared = new WeakMap<StoredSpec, Binding[]>()
  private readonly kvs = new Map<string, Promise<KV>>()
  private readonly objects = new Map<string, Promise<ObjectStore>>()
  private readonly objectCalls: ObjectCalls
  private jsm: Promise<JetStreamManager> | undefined
  private js: JetStreamClient | undefined

  constructor (private readonly c: BindingServerComponents, init: BindingServerInit = {}) {
    this.maxValue = init.maxValueBytes ?? 1024 * 1024
    this.maxObject = init.maxObjectBytes ?? 16 * 1024 * 1024
    this.maxListed = init.maxListed ?? 10_000
    this.objectCalls = new ObjectCalls({ maxObject: this.maxObject, maxStreamed: init.maxStreamedObjectBytes ?? 1024 ** 3, maxListed: this.maxListed }, async () => await this.manager())
  }

  /** The invocation ended: writes it left open are aborted */
  end (invocationId: string): void {
    this.objectCalls.end(invocationId)
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
    if (!OPS[b.kind].has(call.op)) return fail('FNMESH_ERR_FORBIDDEN', `Binding call refused: "${String(call.op).slice(0, 20)}" is not an operation of ${b.kind} binding "${b.name}"`)
    if (b.readOnly && WRITES.has(call.op)) return fail('FNMESH_ERR_FORBIDDEN', `Binding call refused: "${b.name}" is read-only (${b.raw}), ${call.op} is a write`)
    return b
  }

  /** Serves one call of an invocation of `spec` that ends at `deadlineMs` */
  async serve (spec: StoredSpec, call: BindCall, deadlineMs: number, usage?: BindingUsage, ctx: CallContext = { invocationId: '', hops: 0 }): Promise<unknown> {
    const b = this.scope(spec, call)
    if (usage != null) usage.calls++
    const remaining = deadlineMs - Date.now()
    if (remaining <= 0) fail('FNMESH_ERR_TIMEOUT', `Binding "${b.name}" ${call.op}: the invocation has no time left`)
    let timer: NodeJS.Timeout | undefined
    const abort = new AbortController()
    const timeout = new Promise<never>((resolve, reject) => {
      timer = setTimeout(() => {
        abort.abort()
        reject(fnmeshError('FNMESH_ERR_TIMEOUT', `Binding "${b.name}" ${call.op} did not finish before the invocation's deadline`))
      }, remaining)
    })
    try {
      return await Promise.race([this.dispatch(spec, b, call, deadlineMs, usage, ctx, abort.signal), timeout])
    } catch (err) {
      throw this.coded(err, b, call)
    } finally {
      clearTimeout(timer)
    }
  }

  private async dispatch (spec: StoredSpec, b: Binding, call: BindCall, deadlineMs: number, usage: BindingUsage | undefined, ctx: CallContext, signal: AbortSignal): Promise<unknown> {
    switch (b.kind) {
      case 'kv': return await this.kv(b, call, usage)
      case 'object': {
        const store = await this.open(this.objects, b.target, async () => await new Objm(this.c.nc).open(b.target))
        return await this.objectCalls.serve(b, store, call, (limit) => this.data(call, limit), ctx.invocationId, usage)
      }
      case 'publish': {
        const data = this.data(call, PUBLISH_LIMIT)
        if (data.byteLength > PUBLISH_LIMIT) fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${b.name}" publish: the event is ${data.byteLength} bytes, over the limit of ${PUBLISH_LIMIT}`)
        if (usage != null) usage.bytes += data.byteLength
        this.js ??= jetstream(this.c.nc)
        return await publishCall(this.js, async () => await this.manager(), spec, b, call, data, ctx, deadlineMs)
      }
      case 'invoke': {
        const data = this.data(call, this.maxValue * 6)
        if (usage != null) usage.bytes += data.byteLength
        const out = await invokeCall(this.c.invoke, b, call, data, ctx, deadlineMs, signal)
        if (usage != null) usage.bytes += out.bytes
        return { json: out.json }
      }
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
    if (b.kind === 'publish' && /no responders|503|jetstream is not enabled/i.test(text)) return fnmeshError('FNMESH_ERR_NOT_FOUND', `${what} to "${String(call.key).slice(0, 100)}": no JetStream stream captures it (deploy adds the binding's pattern to the events stream: redeploy the function)`)
    if (b.kind === 'publish' || b.kind === 'invoke') return fnmeshError('FNMESH_ERR_NATS_UNAVAILABLE', `${what}: ${text}`)
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
}
