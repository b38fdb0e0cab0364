/**
 * The function registry in JetStream: specs in the KV bucket `fnmesh_functions` (key = name,
 * a new version per deploy) and code in the object store `fnmesh_bundles`, content-addressed
 * by SHA-256. Used by the SDK to deploy and list, and by agents to resolve and fetch.
 */
import { createHash } from 'node:crypto'
import type { NatsConnection } from '@nats-io/transport-node'
import { Kvm, type KV } from '@nats-io/kv'
import { Objm, type ObjectStore } from '@nats-io/obj'
import { jetstreamManager } from '@nats-io/jetstream'
import { decode, encode, type DeploySignature, type Encodable, type FunctionSpec, type HttpRoute } from '../../proto/codec.js'
import { AuthError, InputError, NotFoundError, TransportError, FnmeshError } from '../../proto/errors.js'
import { isPermissionError } from './nats.js'
import { BUNDLES_BUCKET, FUNCTIONS_BUCKET, FUNCTION_NAME_PATTERN } from '../../proto/subjects.js'
import { signSpecBytes, type DeployerKey } from './signing.js'
import { followKv, kvKeys, notInitialized, openBucket, type FollowKvInit } from './kv-follow.js'

/**
 * A spec as read from the registry. `raw` is the KV value it was decoded from: signed deploys
 * are verified over those exact bytes (sdk/src/signing.ts).
 */
export type StoredSpec = Omit<FunctionSpec, 'routes' | 'signature'> & {
  routes?: HttpRoute[]
  signature?: DeploySignature | null
  raw?: Uint8Array
}

export interface DeploySpecOptions {
  /** sign the spec with this deployer key */
  signer?: DeployerKey
}

export class Registry {
  private constructor (private readonly nc: NatsConnection, readonly kv: KV, readonly bundles: ObjectStore) {}

  /**
   * Opens the registry buckets on this NATS server. Agents open only (FNMESH_ERR_NOT_INITIALIZED
   * when `fnmesh init` has not made them); with `create`, a missing bucket is created (the SDK
   * does that, which works only with admin rights).
   */
  static async open (nc: NatsConnection, options: { create?: boolean } = {}): Promise<Registry> {
    try {
      let kv: KV
      try {
        kv = await openBucket(nc, FUNCTIONS_BUCKET)
      } catch (err) {
        if (options.create !== true || !(err instanceof FnmeshError && err.code === 'FNMESH_ERR_NOT_INITIALIZED')) throw err
        kv = await new Kvm(nc).create(FUNCTIONS_BUCKET, { history: 16 })
      }
      const bundles = options.create === true ? await new Objm(nc).create(BUNDLES_BUCKET) : await openObjects(nc)
      return new Registry(nc, kv, bundles)
    } catch (err) {
      throw jetstreamError(err, 'open the function registry')
    }
  }

  /** The latest spec of `name`, or null if none is deployed */
  async get (name: string): Promise<StoredSpec | null> {
    if (!FUNCTION_NAME_PATTERN.test(name)) return null
    let entry
    try {
      entry = await this.kv.get(name)
    } catch (err) {
      throw jetstreamError(err, `read function "${name}"`)
    }
    if (entry == null || entry.operation !== 'PUT' || entry.value.byteLength === 0) return null
    return toStored(decode('FunctionSpec', entry.value), entry.value)
  }

  async require (name: string): Promise<StoredSpec> {
    const spec = await this.get(name)
    if (spec == null) throw new NotFoundError('FNMESH_ERR_NOT_FOUND', `Function "${name}" is not deployed`)
    return spec
  }

  async list (): Promise<StoredSpec[]> {
    const out: StoredSpec[] = []
    try {
      // Keys from the stream's info, not kv.keys(): that would need a consumer (sdk/src/kv-follow.ts).
      for (const key of await kvKeys(this.nc, FUNCTIONS_BUCKET)) {
        const spec = await this.get(key)
        if (spec != null) out.push(spec)
      }
    } catch (err) {
      throw jetstreamError(err, 'list functions')
    }
    return out.sort((a, b) => a.name.localeCompare(b.name))
  }

  /**
   * Stores the bundle (if not already there) and a new version of the spec. The version is
   * the previous one plus one, claimed with a compare-and-set on the KV revision.
   */
  async deploy (spec: Omit<StoredSpec, 'version' | 'bundleObject' | 'bundleSha256' | 'bundleSize' | 'createdAtMs' | 'signature' | 'raw'>, bundle: Uint8Array, options: DeploySpecOptions = {}): Promise<StoredSpec> {
    const sha256 = createHash('sha256').update(bundle).digest('hex')
    const object = `sha256-${sha256}`
    try {
      const existing = await this.bundles.info(object)
      if (existing == null || existing.size !== bundle.byteLength) {
        await this.bundles.putBlob({ name: object }, bundle)
      }
    } catch (err) {
      throw jetstreamError(err, `store the code of "${spec.name}"`)
    }
    for (let attempt = 0; attempt < 10; attempt++) {
      let previous
      try {
        previous = await this.kv.get(spec.name)
      } catch (err) {
        throw jetstreamError(err, `deploy "${spec.name}"`)
      }
      const prevVersion = previous?.operation === 'PUT' && previous.value.byteLength > 0 ? decode('FunctionSpec', previous.value).version : 0
      const next: Encodable<FunctionSpec> = {
        ...spec,
        version: prevVersion + 1,
        bundleObject: object,
        bundleSha256: sha256,
        bundleSize: bundle.byteLength,
        createdAtMs: Date.now()
      }
      const unsigned = encode('FunctionSpec', next)
      const bytes = options.signer != null ? signSpecBytes(options.signer, unsigned) : unsigned
      try {
        if (previous == null) await this.kv.create(spec.name, bytes)
        else await this.kv.update(spec.name, bytes, previous.revision)
        return toStored(decode('FunctionSpec', bytes), bytes)
      } catch (err: any) {
        // Another deploy of the same name won the race: take the next version.
        if (/wrong last sequence|key exists/i.test(String(err?.message))) continue
        throw jetstreamError(err, `deploy "${spec.name}"`)
      }
    }
    throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot deploy "${spec.name}": too many concurrent deploys of the same name`)
  }

  /** Fetches a bundle and checks its digest */
  async fetchBundle (spec: Pick<StoredSpec, 'name' | 'bundleObject' | 'bundleSha256'>): Promise<Uint8Array> {
    let bytes
    try {
      bytes = await readObject(this.nc, this.bundles, spec.bundleObject)
    } catch (err) {
      throw jetstreamError(err, `fetch the code of "${spec.name}"`)
    }
    if (bytes == null) throw new NotFoundError('FNMESH_ERR_NOT_FOUND', `Code of function "${spec.name}" (${spec.bundleObject}) is missing from the registry`)
    const digest = createHash('sha256').update(bytes).digest('hex')
    if (digest !== spec.bundleSha256) {
      throw new InputError('FNMESH_ERR_BUNDLE_INVALID', `Code of function "${spec.name}" does not match its digest (want ${spec.bundleSha256}, got ${digest})`)
    }
    return bytes
  }

  /**
   * Calls `onChange` for every spec put or delete, starting with the current ones. Returns a
   * stop function. Follows the bucket without a JetStream consumer (sdk/src/kv-follow.ts).
   */
  async watch (onChange: (name: string, spec: StoredSpec | null) => void, init: FollowKvInit = {}): Promise<() => void> {
    return await followKv(this.nc, this.kv, FUNCTIONS_BUCKET, (key, entry) => {
      try {
        onChange(key, entry != null ? toStored(decode('FunctionSpec', entry.value), entry.value) : null)
      } catch {
        // A spec that does not decode is skipped here; get() reports it to whoever asks for it.
      }
    }, { hints: true, ...init })
  }
}

/** Opens the bundle store without creating it */
async function openObjects (nc: NatsConnection): Promise<ObjectStore> {
  try {
    return await new Objm(nc).open(BUNDLES_BUCKET)
  } catch (err: any) {
    if (/not found/i.test(String(err?.message))) throw notInitialized(`OBJ_${BUNDLES_BUCKET}`, err)
    throw err
  }
}

/**
 * An object's bytes read with direct gets, chunk after chunk: ObjectStore.get() would create a
 * consumer, which agents may not (see sdk/src/kv-follow.ts). Null if there is no such object.
 */
async function readObject (nc: NatsConnection, store: ObjectStore, name: string): Promise<Uint8Array | null> {
  const info = await store.info(name)
  if (info == null || info.deleted) return null
  const out = new Uint8Array(info.size)
  if (info.size === 0) return out
  const jsm = await jetstreamManager(nc, { checkAPI: false })
  const stream = `OBJ_${BUNDLES_BUCKET}`
  const subject = `$O.${BUNDLES_BUCKET}.C.${info.nuid}`
  let seq = 0
  let at = 0
  while (at < info.size) {
    const m = await jsm.direct.getMessage(stream, { seq, next_by_subj: subject })
    if (m == null) throw new NotFoundError('FNMESH_ERR_NOT_FOUND', `Object "${name}" lost its data after ${at} of ${info.size} bytes`)
    if (at + m.data.byteLength > info.size) throw new InputError('FNMESH_ERR_BUNDLE_INVALID', `Object "${name}" holds more than its ${info.size} bytes`)
    out.set(m.data, at)
    at += m.data.byteLength
    seq = m.seq + 1
  }
  return out
}

/** A plain copy: decoded messages keep defaults on their prototype, which spreading would drop */
function toStored (spec: FunctionSpec, raw?: Uint8Array): StoredSpec {
  return {
    name: spec.name,
    version: spec.version,
    handler: spec.handler,
    memoryMb: spec.memoryMb,
    timeoutMs: spec.timeoutMs,
    concurrency: spec.concurrency,
    env: { ...spec.env },
    triggers: [...spec.triggers],
    egress: spec.egress,
    bundleObject: spec.bundleObject,
    bundleSha256: spec.bundleSha256,
    bundleSize: spec.bundleSize,
    createdAtMs: spec.createdAtMs,
    maxRetries: spec.maxRetries,
    retryBackoffMs: spec.retryBackoffMs,
    maxEventAgeMs: spec.maxEventAgeMs,
    routes: spec.routes.map(copyRoute),
    signature: spec.signature != null ? { publicKey: spec.signature.publicKey, signature: spec.signature.signature } : null,
    raw
  }
}

function copyRoute (r: HttpRoute): HttpRoute {
  return {
    method: r.method,
    path: r.path,
    auth: r.auth,
    jwt: r.jwt != null ? { secret: r.jwt.secret, jwks: r.jwt.jwks, audience: [...r.jwt.audience], issuer: r.jwt.issuer, algorithms: [...r.jwt.algorithms] } : null as never,
    schema: r.schema,
    cors: r.cors != null ? { allowOrigins: [...r.cors.allowOrigins], allowMethods: [...r.cors.allowMethods], allowHeaders: [...r.cors.allowHeaders], exposeHeaders: [...r.cors.exposeHeaders], maxAgeS: r.cors.maxAgeS, allowCredentials: r.cors.allowCredentials } : null as never,
    ratePerS: r.ratePerS,
    burst: r.burst
  }
}

function jetstreamError (err: any, what: string): FnmeshError {
  if (err instanceof FnmeshError) return err
  if (isPermissionError(err)) return new AuthError('FNMESH_ERR_FORBIDDEN', `Cannot ${what}: NATS refused it to this user (${String(err?.message ?? err)})`, { cause: err })
  const text = String(err?.message ?? err)
  const hint = /jetstream not enabled|503|no responders/i.test(text)
    ? 'JetStream is not enabled on this NATS server (start nats-server with -js)'
    : text
  return new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `Cannot ${what}: ${hint}`, { cause: err })
}
