/**
 * `context.bindings`: one client per declared binding, each call a `bind` message to the agent
 * over the IPC channel (the sandbox has no network), answered by `bind-result`. The agent checks
 * every call against the function's spec: this side only shapes calls and answers. Every call is
 * bounded by the invocation's remaining time. Node built-ins only.
 */
import { Readable } from 'node:stream'
import type { BindCall, BindingDecl, BindReply } from '../protocol.js'

/** Bytes per object chunk call (the agent takes at most 1 MiB a call) */
const CHUNK = 1024 * 1024

interface Pending { resolve: (v: unknown) => void, reject: (e: Error) => void, timer: NodeJS.Timeout }

const pending = new Map<number, Pending>()
let nextId = 1
/** While a call is in flight something must keep the loop alive: the channel is unref'd during an invocation */
let keepAlive: NodeJS.Timeout | undefined

/** An error of a binding call, with its FNMESH_ERR_* code */
export class BindingError extends Error {
  constructor (readonly code: string, message: string, readonly errorType = 'BindingError') {
    super(message)
    this.name = 'BindingError'
  }
}

function settle (id: number): Pending | undefined {
  const p = pending.get(id)
  if (p == null) return undefined
  pending.delete(id)
  clearTimeout(p.timer)
  if (pending.size === 0 && keepAlive != null) { clearInterval(keepAlive); keepAlive = undefined }
  return p
}

/** An answer from the agent (main.ts routes `bind-result` here); unknown ids are late answers */
export function onBindResult (msg: BindReply): void {
  const p = settle(msg.id)
  if (p == null) return
  if (msg.ok) p.resolve(msg.value)
  else p.reject(new BindingError(String(msg.error?.code ?? 'FNMESH_ERR_INTERNAL'), String(msg.error?.errorMessage ?? 'Binding call failed'), msg.error?.errorType))
}

async function call (decl: BindingDecl, deadlineMs: number, fields: Omit<BindCall, 't' | 'id' | 'name' | 'kind' | 'target'>): Promise<any> {
  const remaining = deadlineMs - Date.now()
  if (remaining <= 0) throw new BindingError('FNMESH_ERR_TIMEOUT', `Binding "${decl.name}" ${fields.op}: the function has no time left`)
  if (process.send == null || !process.connected) throw new BindingError('FNMESH_ERR_INTERNAL', 'Binding calls need the agent\'s IPC channel')
  const id = nextId++
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      settle(id)
      reject(new BindingError('FNMESH_ERR_TIMEOUT', `Binding "${decl.name}" ${fields.op} did not finish within the function's remaining ${remaining} ms`))
    }, remaining)
    pending.set(id, { resolve, reject, timer })
    keepAlive ??= setInterval(() => {}, 1 << 30)
    const msg: BindCall = { t: 'bind', id, name: decl.name, kind: decl.kind, target: decl.target, ...fields }
    process.send?.(msg)
  })
}

function toBase64 (data: unknown, what: string): string {
  if (typeof data === 'string') return Buffer.from(data, 'utf8').toString('base64')
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64')
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('base64')
  throw new BindingError('FNMESH_ERR_INVALID_ARGUMENT', `${what}: data must be a string, a Buffer, a typed array or an ArrayBuffer`)
}

const text = (v: unknown, what: string): string => {
  if (typeof v !== 'string' || v === '') throw new BindingError('FNMESH_ERR_INVALID_ARGUMENT', `${what} must be a non-empty string`)
  return v
}

function kvClient (d: BindingDecl, deadlineMs: number): object {
  return Object.freeze({
    async get (key: string) {
      const v = await call(d, deadlineMs, { op: 'get', key: text(key, 'key') }) as { data: string, revision: number } | null
      if (v == null) return null
      const bytes = new Uint8Array(Buffer.from(v.data, 'base64'))
      return { value: Buffer.from(bytes).toString('utf8'), bytes, revision: v.revision }
    },
    async put (key: string, value: unknown, options: { revision?: number } = {}) {
      const revision = options?.revision
      if (revision != null && (!Number.isSafeInteger(revision) || revision < 0)) throw new BindingError('FNMESH_ERR_INVALID_ARGUMENT', 'revision must be a whole number, 0 meaning "must not exist"')
      return await call(d, deadlineMs, { op: 'put', key: text(key, 'key'), data: toBase64(value, `put "${key}"`), revision }) as number
    },
    async delete (key: string) { await call(d, deadlineMs, { op: 'delete', key: text(key, 'key') }) },
    async keys (prefix = '') { return await call(d, deadlineMs, { op: 'keys', prefix: String(prefix) }) as string[] }
  })
}

function toBytes (data: unknown, what: string): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8')
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  if (data instanceof ArrayBuffer) return Buffer.from(data)
  throw new BindingError('FNMESH_ERR_INVALID_ARGUMENT', `${what}: data must be a string, a Buffer, a typed array, an ArrayBuffer or a stream of them`)
}

function objectClient (d: BindingDecl, deadlineMs: number): object {
  /** The object's chunks, a call (up to 1 MiB) at a time; null when there is no such object */
  async function * chunks (name: string, stat: { size: number, nuid: string }): AsyncGenerator<Buffer> {
    let seq = 0
    let got = 0
    while (got < stat.size) {
      const r = await call(d, deadlineMs, { op: 'read', key: name, nuid: stat.nuid, seq }) as { data: string, seq: number, end: boolean }
      const bytes = Buffer.from(r.data, 'base64')
      got += bytes.byteLength
      seq = r.seq
      if (bytes.byteLength > 0) yield bytes
      if (r.end && got < stat.size) throw new BindingError('FNMESH_ERR_CONFLICT', `Object "${name}" changed while it was read (${got} of ${stat.size} bytes)`)
    }
  }
  const stat = async (name: string): Promise<{ name: string, size: number, nuid: string } | null> =>
    await call(d, deadlineMs, { op: 'stat', key: text(name, 'name') }) as { name: string, size: number, nuid: string } | null
  /** Writes chunks from any source; the agent streams them into the object store */
  async function putChunks (name: string, source: AsyncIterable<unknown> | Iterable<unknown>): Promise<{ name: string, size: number }> {
    const { handle } = await call(d, deadlineMs, { op: 'write-open', key: name }) as { handle: number }
    try {
      for await (const part of source) {
        const bytes = toBytes(part, `put "${name}"`)
        for (let at = 0; at < bytes.byteLength; at += CHUNK) {
          await call(d, deadlineMs, { op: 'write', handle, data: bytes.subarray(at, at + CHUNK).toString('base64') })
        }
      }
    } catch (err) {
      await call(d, deadlineMs, { op: 'write-abort', handle }).catch(() => {})
      throw err
    }
    return await call(d, deadlineMs, { op: 'write-close', handle }) as { name: string, size: number }
  }
  return Object.freeze({
    /** The whole object as a Buffer, or null */
    async get (name: string) {
      const s = await stat(name)
      if (s == null) return null
      const parts: Buffer[] = []
      for await (const c of chunks(name, s)) parts.push(c)
      return Buffer.concat(parts)
    },
    /** The object as a Readable stream of Buffers (a chunk read per pull), or null */
    async getStream (name: string) {
      const s = await stat(name)
      return s == null ? null : Readable.from(chunks(name, s), { objectMode: false })
    },
    /** Information on the object ({ name, size }), or null */
    async info (name: string) {
      const s = await stat(name)
      return s == null ? null : { name: s.name, size: s.size }
    },
    /** `data`: a string, Buffer, typed array or ArrayBuffer, or a stream / async iterable of them */
    async put (name: string, data: unknown) {
      text(name, 'name')
      if (data != null && typeof data === 'object' && !ArrayBuffer.isView(data) && !(data instanceof ArrayBuffer) && (Symbol.asyncIterator in data || Symbol.iterator in data)) {
        return await putChunks(name, data as AsyncIterable<unknown>)
      }
      const bytes = toBytes(data, `put "${name}"`)
      if (bytes.byteLength <= CHUNK) return await call(d, deadlineMs, { op: 'put', key: name, data: bytes.toString('base64') }) as { name: string, size: number }
      return await putChunks(name, [bytes])
    },
    async delete (name: string) { await call(d, deadlineMs, { op: 'delete', key: text(name, 'name') }) },
    async list (prefix = '') { return await call(d, deadlineMs, { op: 'list', prefix: String(prefix) }) as Array<{ name: string, size: number }> }
  })
}

function json (data: unknown, what: string): string {
  let out: string | undefined
  try {
    out = JSON.stringify(data === undefined ? null : data)
  } catch (err: any) {
    throw new BindingError('FNMESH_ERR_INVALID_JSON', `${what}: the event cannot be serialised to JSON (${String(err?.message)})`)
  }
  return Buffer.from(out ?? 'null', 'utf8').toString('base64')
}

function publishClient (d: BindingDecl, deadlineMs: number): object {
  return Object.freeze({
    /** Publishes `data` (JSON) on `subject`; resolves with { id, stream, seq, duplicate } once JetStream stored it */
    async publish (subject: string, data: unknown, options: { id?: string } = {}) {
      const eventId = options?.id
      if (eventId !== undefined && (typeof eventId !== 'string' || eventId === '')) throw new BindingError('FNMESH_ERR_INVALID_ARGUMENT', 'id must be a non-empty string')
      return await call(d, deadlineMs, { op: 'publish', key: text(subject, 'subject'), data: json(data, `publish to "${subject}"`), eventId })
    }
  })
}

function invokeClient (d: BindingDecl, deadlineMs: number): object {
  return Object.freeze({
    /** Runs the bound function with `event`; its result, or a BindingError with its code (the callee's error type and message) */
    async invoke (event: unknown) {
      const out = await call(d, deadlineMs, { op: 'invoke', data: json(event, `invoke "${d.target}"`) }) as { json: string }
      return JSON.parse(out.json)
    }
  })
}

const CLIENTS: Record<BindingDecl['kind'], (d: BindingDecl, deadlineMs: number) => object> = { kv: kvClient, object: objectClient, publish: publishClient, invoke: invokeClient }

/** `context.bindings` of one invocation */
export function makeBindings (decls: readonly BindingDecl[] | undefined, deadlineMs: number): Readonly<Record<string, object>> {
  const out: Record<string, object> = Object.create(null)
  for (const d of decls ?? []) { const make = CLIENTS[d.kind]; if (make != null) out[d.name] = make(d, deadlineMs) }
  return Object.freeze(out)
}
