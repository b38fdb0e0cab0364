/**
 * `context.bindings`: one client per declared binding, each call a `bind` message to the agent
 * over the IPC channel (the sandbox has no network), answered by `bind-result`. The agent checks
 * every call against the function's spec: this side only shapes calls and answers. Every call is
 * bounded by the invocation's remaining time. Node built-ins only.
 */
import type { BindCall, BindingDecl, BindReply } from '../protocol.js'

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

function objectClient (d: BindingDecl, deadlineMs: number): object {
  return Object.freeze({
    async get (name: string) {
      const v = await call(d, deadlineMs, { op: 'get', key: text(name, 'name') }) as { data: string } | null
      return v == null ? null : Buffer.from(v.data, 'base64')
    },
    async put (name: string, data: unknown) {
      return await call(d, deadlineMs, { op: 'put', key: text(name, 'name'), data: toBase64(data, `put "${name}"`) }) as { name: string, size: number }
    },
    async delete (name: string) { await call(d, deadlineMs, { op: 'delete', key: text(name, 'name') }) },
    async list (prefix = '') { return await call(d, deadlineMs, { op: 'list', prefix: String(prefix) }) as Array<{ name: string, size: number }> }
  })
}

/** `context.bindings` of one invocation */
export function makeBindings (decls: readonly BindingDecl[] | undefined, deadlineMs: number): Readonly<Record<string, object>> {
  const out: Record<string, object> = Object.create(null)
  for (const d of decls ?? []) out[d.name] = d.kind === 'kv' ? kvClient(d, deadlineMs) : objectClient(d, deadlineMs)
  return Object.freeze(out)
}
