/**
 * API keys of the HTTP gateway, in the JetStream KV bucket `fnmesh_apikeys`. A key is 32 random
 * bytes shown once at creation; only its SHA-256 is stored (a key has 256 bits of entropy, so a
 * fast hash is enough: there is nothing to brute-force). Agents watch the bucket, so a revoke
 * takes effect on every gateway within milliseconds.
 */
import { createHash, randomBytes } from 'node:crypto'
import { Kvm, type KV } from '@nats-io/kv'
import type { NatsConnection } from '@nats-io/transport-node'
import { decode, encode, type ApiKey } from '../proto/codec.js'
import { AuthError, FnmeshError, NotFoundError, TransportError, UsageError } from '../proto/errors.js'
import { APIKEYS_BUCKET, FUNCTION_NAME_PATTERN } from '../proto/subjects.js'
import { bounded, DEFAULT_CALL_TIMEOUT_MS, type Bounds } from './call.js'
import { isPermissionError } from './nats.js'
import { kvKeys } from './kv-follow.js'
import { jsRetry } from './js-retry.js'

export const API_KEY_PREFIX = 'fnm_'

export interface ApiKeyInfo {
  name: string
  /** the key's first characters */
  prefix: string
  /** mesh-wide requests per second; 0 = no limit */
  ratePerSecond: number
  burst: number
  createdAt: string
}

/** Each call rejects at once on abort (FNMESH_ERR_ABORTED) or after timeoutMs (FNMESH_ERR_CLIENT_TIMEOUT). @default timeoutMs 10000 */
export interface CreateKeyOptions extends Bounds {
  /** mesh-wide requests per second with this key. @default no limit */
  ratePerSecond?: number
  /** @default ratePerSecond */
  burst?: number
}

/** The stored hash of a presented key */
export function hashApiKey (key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex')
}

export async function openKeysBucket (nc: NatsConnection): Promise<KV> {
  try {
    return await new Kvm(nc).create(APIKEYS_BUCKET, { history: 1 })
  } catch (err: any) {
    if (isPermissionError(err)) throw new AuthError('FNMESH_ERR_FORBIDDEN', `Cannot open the API key bucket: NATS refused it to this user (${String(err?.message)})`, { cause: err })
    throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot open the API key bucket: ${String(err?.message ?? err)}`, { cause: err })
  }
}

export class ApiKeys {
  private kvPromise: Promise<KV> | undefined
  constructor (private readonly nc: NatsConnection) {}

  /** Creates key `name` and returns it: the only time the key is ever shown */
  async create (name: string, options: CreateKeyOptions = {}): Promise<{ key: string, info: ApiKeyInfo }> {
    if (typeof name !== 'string' || !FUNCTION_NAME_PATTERN.test(name)) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Key name "${String(name)}" is invalid: use 1-64 letters, digits, "-" or "_"`)
    }
    const count = (what: string, n: number | undefined): number => {
      if (n == null) return 0
      if (!Number.isInteger(n) || n < 1 || n > 1_000_000) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `The ${what} of key "${name}" is ${String(n)}: expected a whole number from 1 to 1000000`)
      return n
    }
    const key = API_KEY_PREFIX + randomBytes(32).toString('base64url')
    const record: ApiKey = {
      name,
      sha256: hashApiKey(key),
      prefix: key.slice(0, API_KEY_PREFIX.length + 6),
      ratePerS: count('rate', options.ratePerSecond),
      burst: count('burst', options.burst),
      createdAtMs: Date.now()
    }
    return await bounded(`create key "${name}"`, options, DEFAULT_CALL_TIMEOUT_MS, async (signal) => {
      const kv = await this.kv()
      signal.throwIfAborted()
      await this.store(kv, name, record)
      return { key, info: toInfo(record) }
    })
  }

  private async store (kv: KV, name: string, record: ApiKey): Promise<void> {
    try {
      await kv.create(name, encode('ApiKey', record))
    } catch (err: any) {
      if (/wrong last sequence|key exists/i.test(String(err?.message))) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Key "${name}" already exists: revoke it first`)
      if (isPermissionError(err)) throw new AuthError('FNMESH_ERR_FORBIDDEN', `Cannot store key "${name}": NATS refused it to this user (${String(err?.message)})`, { cause: err })
      throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot store key "${name}": ${String(err?.message ?? err)}`, { cause: err })
    }
  }

  async list (options: Bounds = {}): Promise<ApiKeyInfo[]> {
    return await bounded('list keys', options, DEFAULT_CALL_TIMEOUT_MS, async (signal) => {
      const kv = await this.kv()
      const out: ApiKeyInfo[] = []
      try {
        for (const name of await kvKeys(this.nc, APIKEYS_BUCKET)) {
          signal.throwIfAborted()
          const entry = await jsRetry(async () => await kv.get(name), { budgetMs: 10_000, signal })
          if (entry == null || entry.operation !== 'PUT' || entry.value.byteLength === 0) continue
          try { out.push(toInfo(decode('ApiKey', entry.value))) } catch {}
        }
      } catch (err: any) {
        if (err instanceof FnmeshError) throw err
        if (signal.aborted) throw err
        if (isPermissionError(err)) throw new AuthError('FNMESH_ERR_FORBIDDEN', `Cannot list API keys: NATS refused it to this user (${String(err?.message)})`, { cause: err })
        throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot list API keys: ${String(err?.message ?? err)}`, { cause: err })
      }
      return out.sort((a, b) => a.name.localeCompare(b.name))
    })
  }

  /** Deletes key `name`: every gateway refuses it from then on */
  async revoke (name: string, options: Bounds = {}): Promise<void> {
    await bounded(`revoke key "${name}"`, options, DEFAULT_CALL_TIMEOUT_MS, async (signal) => {
      const kv = await this.kv()
      const entry = await kv.get(name)
      if (entry == null || entry.operation !== 'PUT') throw new NotFoundError('FNMESH_ERR_NOT_FOUND', `Key "${name}" does not exist`)
      signal.throwIfAborted()
      await kv.delete(name)
    })
  }

  private async kv (): Promise<KV> {
    this.kvPromise ??= openKeysBucket(this.nc)
    try {
      return await this.kvPromise
    } catch (err) {
      this.kvPromise = undefined
      throw err
    }
  }
}

function toInfo (k: ApiKey): ApiKeyInfo {
  return { name: k.name, prefix: k.prefix, ratePerSecond: k.ratePerS, burst: k.burst || k.ratePerS, createdAt: new Date(k.createdAtMs).toISOString() }
}
