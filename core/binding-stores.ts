/**
 * The deployer's half of bindings: every bucket a deploy declares exists before its spec is
 * stored, made now when missing with the replicas `fnmesh init` chose for the registry (the
 * replica count of KV_fnmesh_functions). Agents never create them; they only open them.
 */
import { Kvm } from '@nats-io/kv'
import { Objm } from '@nats-io/obj'
import type { JetStreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { UsageError } from '../proto/errors.js'
import { FUNCTIONS_BUCKET } from '../proto/subjects.js'
import type { Binding } from './bindings.js'
import { initError } from './init.js'
import { jsRetry } from './js-retry.js'
import { ensureStreams } from './events.js'

/** The JetStream stream behind a binding's store */
export function bindingStream (b: Pick<Binding, 'kind' | 'target'>): string {
  return `${b.kind === 'kv' ? 'KV' : 'OBJ'}_${b.target}`
}

function notFound (err: any): boolean {
  return err?.code === 10059 || err?.api_error?.err_code === 10059 || /stream not found/i.test(String(err?.message))
}

async function streamInfo (jsm: JetStreamManager, stream: string): Promise<{ config: { num_replicas?: number, subjects?: string[] } } | null> {
  try {
    return await jsRetry(async () => await jsm.streams.info(stream))
  } catch (err) {
    if (notFound(err)) return null
    throw initError(err, `look up JetStream stream "${stream}"`)
  }
}

/** Makes every store `bindings` name that does not exist yet; returns the streams made now */
export async function ensureBindingStores (nc: NatsConnection, jsm: JetStreamManager, bindings: readonly Binding[]): Promise<string[]> {
  const made: string[] = []
  const done = new Set<string>()
  let replicas: number | undefined
  for (const b of bindings) {
    if (b.kind !== 'kv' && b.kind !== 'object') continue
    const stream = bindingStream(b)
    if (done.has(stream)) continue
    done.add(stream)
    const current = await streamInfo(jsm, stream)
    if (current != null) continue
    // The other kind under the same name is a bucket this binding can never use.
    const other = await streamInfo(jsm, bindingStream({ kind: b.kind === 'kv' ? 'object' : 'kv', target: b.target }))
    if (other != null) throw new UsageError('FNMESH_ERR_INVALID_BINDING', `Binding "${b.raw}" is invalid: "${b.target}" is a ${b.kind === 'kv' ? 'object store' : 'KV bucket'}, not a ${b.kind === 'kv' ? 'KV bucket' : 'object store'}`)
    replicas ??= (await streamInfo(jsm, `KV_${FUNCTIONS_BUCKET}`))?.config.num_replicas ?? 1
    try {
      await jsRetry(async () => {
        if (b.kind === 'kv') await new Kvm(nc).create(b.target, { history: 1, replicas })
        else await new Objm(nc).create(b.target, { replicas })
      })
      made.push(stream)
    } catch (err: any) {
      // Another deploy at the same moment made it.
      if (/already in use|exists/i.test(String(err?.message)) && await streamInfo(jsm, stream) != null) continue
      throw initError(err, `create the ${b.kind === 'kv' ? 'KV bucket' : 'object store'} "${b.target}" of binding "${b.name}"`)
    }
  }
  return made
}

/**
 * Subjects functions publish on (publish bindings' patterns, destinations' subjects) are captured
 * by the events stream before the spec is stored: a publish through the binding is durable the
 * moment the function can make one, whether or not a function is triggered by it yet. A pattern
 * another stream already captures cannot be: FNMESH_ERR_INVALID_BINDING.
 */
export async function ensurePublishSubjects (jsm: JetStreamManager, subjects: readonly string[]): Promise<void> {
  if (subjects.length === 0) return
  try {
    await jsRetry(async () => { await ensureStreams(jsm, [...subjects]) }, { budgetMs: 20_000 })
  } catch (err: any) {
    if (err?.code === 'FNMESH_ERR_INVALID_TRIGGER') {
      throw new UsageError('FNMESH_ERR_INVALID_BINDING', `Cannot publish on ${subjects.map(s => `"${s}"`).join(', ')}: ${String(err.message).replace(/^Cannot [^:]*: /, '')}`)
    }
    throw err
  }
}
