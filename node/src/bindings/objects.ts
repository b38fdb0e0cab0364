/**
 * Object-store binding calls (part of the BindingServer). Small objects travel whole in one IPC
 * message (get/put); objects of any size a chunk per call, so neither the sandbox channel nor the
 * agent ever holds more than about a chunk of one: reads by direct gets of the object's chunk
 * subject (no consumer), writes through the object store's own put fed from a stream that takes
 * one chunk per call (backpressure: a write call resolves when the store has taken its chunk).
 */
import type { JetStreamManager } from '@nats-io/jetstream'
import type { ObjectInfo, ObjectStore } from '@nats-io/obj'
import { fnmeshError, type ErrorCode } from '../../../proto/errors.js'
import type { Binding } from '../../../core/bindings.js'
import type { BindCall } from '../sandbox/protocol.js'
import type { BindingUsage } from './server.js'

/** Largest chunk one read or write call carries, bytes */
export const OBJECT_CHUNK_BYTES = 1024 * 1024
/** Chunk size of objects written a chunk per call */
const STORE_CHUNK_BYTES = 512 * 1024
/** Writes one invocation may have open at once */
const MAX_OPEN_WRITES = 4
const MAX_NAME = 1024
const NUID = /^[A-Za-z0-9]{1,64}$/

const fail = (code: ErrorCode, message: string): never => { throw fnmeshError(code, message) }

export interface ObjectLimits {
  /** largest object written or read whole in one call */
  maxObject: number
  /** largest object written a chunk at a time */
  maxStreamed: number
  maxListed: number
}

/** One object being written a chunk per call */
class ObjectWriter {
  readonly done: Promise<ObjectInfo>
  size = 0
  private controller!: ReadableStreamDefaultController<Uint8Array>
  /** resolves when the store asks for the next chunk (it has published what came before) */
  private asked: Promise<void>
  private onAsked!: () => void
  /** hands the store what it asked for (a chunk, or null: the end) */
  private give: ((item: Uint8Array | null) => void) | undefined

  constructor (store: ObjectStore, readonly name: string, readonly binding: string) {
    this.asked = new Promise((resolve) => { this.onAsked = resolve })
    // highWaterMark 0: pull() runs only when the store reads, so nothing queues up here.
    const stream = new ReadableStream<Uint8Array>({
      start: (c) => { this.controller = c },
      pull: async (c) => await new Promise<void>((resolve) => {
        this.give = (item) => { if (item == null) c.close(); else c.enqueue(item); resolve() }
        this.onAsked()
      })
    }, { highWaterMark: 0 })
    // Chunks of 512 KiB rather than the store's default 128: a quarter of the acks and direct gets,
    // and still within a NATS server's default max_payload (1 MB; the client caps it there anyway).
    this.done = store.put({ name, options: { max_chunk_size: STORE_CHUNK_BYTES } }, stream)
    this.done.catch(() => {})
  }

  private async next (item: Uint8Array | null): Promise<void> {
    const early = this.done.then(() => fail('FNMESH_ERR_INTERNAL', `Object "${this.name}" was stored before all its data came`))
    early.catch(() => {})
    await Promise.race([this.asked, early])
    const give = this.give
    this.give = undefined
    this.asked = new Promise((resolve) => { this.onAsked = resolve })
    give?.(item)
  }

  /** Resolves once the store took the chunk */
  async write (chunk: Uint8Array): Promise<void> {
    this.size += chunk.byteLength
    await this.next(chunk)
  }

  async close (): Promise<ObjectInfo> {
    await this.next(null)
    return await this.done
  }

  /** Stops the write: the store purges the chunks already sent */
  abort (why: string): void {
    try { this.controller.error(fnmeshError('FNMESH_ERR_ABORTED', why)) } catch {}
  }
}

export class ObjectCalls {
  private readonly writers = new Map<string, Map<number, ObjectWriter>>()
  private nextHandle = 1

  constructor (private readonly limits: ObjectLimits, private readonly manager: () => Promise<JetStreamManager>) {}

  /** Aborts the writes an invocation left open */
  end (invocationId: string): void {
    const open = this.writers.get(invocationId)
    if (open == null) return
    this.writers.delete(invocationId)
    for (const w of open.values()) w.abort('the invocation ended before the object was closed')
  }

  async serve (b: Binding, store: ObjectStore, call: BindCall, data: (limit: number) => Uint8Array, invocationId: string, usage?: BindingUsage): Promise<unknown> {
    const count = (n: number): void => { if (usage != null) usage.bytes += n }
    switch (call.op) {
      case 'list': return await this.list(b, String(call.prefix ?? ''))
      case 'read': return await this.read(b, call, count)
      case 'write': {
        const w = this.writer(b, call, invocationId)
        const chunk = data(OBJECT_CHUNK_BYTES)
        if (chunk.byteLength > OBJECT_CHUNK_BYTES) fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${b.name}" write: a chunk is at most ${OBJECT_CHUNK_BYTES} bytes`)
        if (w.size + chunk.byteLength > this.limits.maxStreamed) {
          this.drop(invocationId, call.handle as number)?.abort('too large')
          fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${b.name}" write "${w.name.slice(0, 100)}": over the limit of ${this.limits.maxStreamed} bytes`)
        }
        count(chunk.byteLength)
        await w.write(chunk)
        return null
      }
      case 'write-close': {
        const w = this.writer(b, call, invocationId)
        this.drop(invocationId, call.handle as number)
        const info = await w.close()
        return { name: info.name, size: info.size }
      }
      case 'write-abort': {
        this.drop(invocationId, Number(call.handle))?.abort('aborted by the function')
        return null
      }
    }
    const name = call.key
    if (typeof name !== 'string' || name === '' || name.length > MAX_NAME) return fail('FNMESH_ERR_INVALID_ARGUMENT', `Binding "${b.name}" ${call.op}: object name must be 1-${MAX_NAME} characters`)
    if (call.op === 'write-open') {
      let open = this.writers.get(invocationId)
      if (open == null) { open = new Map(); this.writers.set(invocationId, open) }
      if (open.size >= MAX_OPEN_WRITES) fail('FNMESH_ERR_BUSY', `Binding "${b.name}" write-open: ${MAX_OPEN_WRITES} writes of this invocation are already open`)
      const handle = this.nextHandle++
      open.set(handle, new ObjectWriter(store, name, b.name))
      return { handle }
    }
    if (call.op === 'stat') {
      const info = await store.info(name)
      return info == null || info.deleted ? null : { name: info.name, size: info.size, nuid: info.nuid, digest: info.digest }
    }
    if (call.op === 'get') {
      const bytes = await this.readWhole(b, store, name)
      if (bytes != null) count(bytes.byteLength)
      return bytes == null ? null : { data: Buffer.from(bytes).toString('base64') }
    }
    if (call.op === 'delete') {
      const info = await store.info(name)
      if (info != null && !info.deleted) await store.delete(name)
      return null
    }
    // put: a whole (small) object in one call
    const bytes = data(this.limits.maxObject)
    if (bytes.byteLength > this.limits.maxObject) fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${b.name}" put "${name.slice(0, 100)}": ${bytes.byteLength} bytes, the limit is ${this.limits.maxObject}`)
    count(bytes.byteLength)
    const info = await store.putBlob({ name }, bytes)
    return { name: info.name, size: info.size }
  }

  private writer (b: Binding, call: BindCall, invocationId: string): ObjectWriter {
    const w = this.writers.get(invocationId)?.get(Number(call.handle))
    // A handle of another binding (or invocation) is not this call's to use.
    if (w == null || w.binding !== b.name) return fail('FNMESH_ERR_FORBIDDEN', `Binding "${b.name}" ${call.op}: no open write ${String(call.handle).slice(0, 20)} of this invocation through it`)
    return w
  }

  private drop (invocationId: string, handle: number): ObjectWriter | undefined {
    const open = this.writers.get(invocationId)
    const w = open?.get(handle)
    open?.delete(handle)
    if (open?.size === 0) this.writers.delete(invocationId)
    return w
  }

  /** Up to OBJECT_CHUNK_BYTES of an object's chunks from stream sequence `seq` on */
  private async read (b: Binding, call: BindCall, count: (n: number) => void): Promise<unknown> {
    const nuid = call.nuid
    if (typeof nuid !== 'string' || !NUID.test(nuid)) return fail('FNMESH_ERR_INVALID_ARGUMENT', `Binding "${b.name}" read: the object id is invalid`)
    let seq = call.seq ?? 0
    if (!Number.isSafeInteger(seq) || seq < 0) return fail('FNMESH_ERR_INVALID_ARGUMENT', `Binding "${b.name}" read: sequence ${String(seq)} is invalid`)
    const jsm = await this.manager()
    const parts: Uint8Array[] = []
    let bytes = 0
    let end = false
    // The chunks of one object live on its own subject of the bucket's stream: nothing else is reachable.
    while (bytes < OBJECT_CHUNK_BYTES) {
      const m = await jsm.direct.getMessage(`OBJ_${b.target}`, { seq, next_by_subj: `$O.${b.target}.C.${nuid}` })
      if (m == null) { end = true; break }
      parts.push(m.data)
      bytes += m.data.byteLength
      seq = m.seq + 1
    }
    count(bytes)
    return { data: Buffer.concat(parts).toString('base64'), seq, end }
  }

  /** An object's bytes by direct gets, chunk after chunk (ObjectStore.get() would create a consumer) */
  private async readWhole (b: Binding, store: ObjectStore, name: string): Promise<Uint8Array | null> {
    const info = await store.info(name)
    if (info == null || info.deleted) return null
    if (info.size > this.limits.maxObject) fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${b.name}" get "${name.slice(0, 100)}": ${info.size} bytes, the limit is ${this.limits.maxObject} (read it as a stream)`)
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
    if (subjects.length > this.limits.maxListed) fail('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Binding "${b.name}" list: more than ${this.limits.maxListed} objects`)
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

export async function mapLimit<T, R> (items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
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
