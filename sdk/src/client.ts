/**
 * The fnmesh client: deploy, invoke, publish, and read the mesh's state over NATS.
 *
 *   const mesh = await connect({ servers: 'nats://127.0.0.1:4222' })
 *   await mesh.deploy({ name: 'hello', path: './hello' })
 *   const out = await mesh.invoke('hello', { n: 1 })
 */
import { headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node'
import { TRACEPARENT, TRACESTATE, traceContextOf } from '../../core/trace-context.js'
import { decode, encode, type MeterStatus, type NodeView } from '../../proto/codec.js'
import { FnmeshError, InputError, TransportError, UnsupportedError, UsageError, fromErrorInfo } from '../../proto/errors.js'
import { API_EXPORT_SUBJECT, API_METER_SUBJECT, API_NODES_SUBJECT, API_USAGE_SUBJECT, FUNCTION_NAME_PATTERN, Headers, KEEPALIVE_TIMEOUT_MS, MAX_ID_BYTES, SYNC_PAYLOAD_LIMIT, invokeSubject, nodeSubject } from '../../proto/subjects.js'
import { bundleHasHandlerModule, packBundle } from '../../core/bundle.js'
import { validateDeploy, type DeployOptions } from '../../core/deploy-options.js'
import { readLogs, type LogEntry, type LogsOptions } from './logs.js'
import { connectNats, request, requestLive, type NatsConnectOptions } from '../../core/nats.js'
import { Registry, type StoredSpec } from '../../core/registry.js'
import { validateStoredSpec } from '../../core/spec-rules.js'
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import { backlog, ensureBindings, manager } from '../../core/events.js'
import { ensureBindingStores, ensurePublishSubjects } from '../../core/binding-stores.js'
import { parseBindings, publishedSubjects } from '../../core/bindings.js'
import { advertLabels } from '../../core/placement.js'
import { initMesh, type InitOptions, type InitResult } from '../../core/init.js'
import { listDeadLetters, publishEvent, purgeDeadLetters, replayDeadLetters, type DeadLetterInfo, type PublishOptions, type PublishResult } from './publish.js'
import { bounded, DEFAULT_CALL_TIMEOUT_MS, DEFAULT_LONG_CALL_TIMEOUT_MS } from '../../core/call.js'
import { readManifest } from './manifest.js'
import { invokeStream, type InvokeStream } from './stream.js'

export type { InvokeStream, StreamEnd } from './stream.js'
import { BUCKET_WIRE, exportedRecord, usageReport, type Bucket, type ExportedRecord, type PriceTable, type UsageReport } from './usage.js'

export type { Bucket, ExportedRecord, PriceTable, UsageReport, FunctionUsageTotals, NodeUsageTotals, BucketUsage, UsageTotals } from './usage.js'
import { parseRouteKey, routeShape } from '../../core/http-routes.js'
import { checkSpecSignature, loadDeployerKey, publicKeyFromRaw } from '../../core/signing.js'
import { ApiKeys } from '../../core/apikeys.js'
import { parseTarget } from '../../core/aliases.js'
import { deleteAlias, listAliases, setAlias, usageByVersion, type AliasInfo, type AliasSetOptions, type VersionUsage } from './aliases.js'
import { maskToLayers } from '../../core/layers.js'

export interface CallOptions {
  /** Aborting rejects the call at once with FNMESH_ERR_ABORTED; it then starts no further step */
  signal?: AbortSignal
  /**
   * How long to wait before FNMESH_ERR_CLIENT_TIMEOUT. @default 300000 for deploy; 60000 for
   * invoke, functions, dlqList, dlqReplay and init; 10000 otherwise (exportRecords: per page)
   */
  timeoutMs?: number
}

export interface InvokeOptions extends CallOptions {
  /**
   * The caller's idempotency/correlation key (up to MAX_ID_BYTES): carried to the function's log
   * lines' invocation and to its meter record (`idempotencyKey`). It is not the invocation id,
   * which the mesh mints (see Invocation.invocationId): calls sharing a key are billed each.
   */
  idempotencyKey?: string
  /** @deprecated The mesh mints invocation ids: this is taken as `idempotencyKey` */
  invocationId?: string
  /**
   * W3C trace context to continue (`00-<trace id>-<span id>-<flags>`): the mesh's spans and the
   * function's `context.traceparent` join this trace. Sent as a NATS header; an invalid value is
   * not sent (the mesh starts a new trace), never an error.
   */
  traceparent?: string
  /** W3C `tracestate` sent with a valid `traceparent` */
  tracestate?: string
}

export interface ConnectOptions extends NatsConnectOptions {
  /** Largest event or result accepted. @default 6 MiB */
  payloadLimit?: number
}

export interface Invocation<T = unknown> {
  result: T
  invocationId: string
  /** id of the node that ran it */
  nodeId: string
  version: number
  durationMs: number
  cold: boolean
  attempts: number
}

export interface DeployResult {
  name: string
  version: number
  sha256: string
  sizeBytes: number
  files: number
  /** the HTTP routes, "METHOD /path" */
  routes: string[]
  /** the deployer public key that signed it */
  signedBy?: string
}

export interface FunctionInfo {
  name: string
  version: number
  handler: string
  /** "nodejs" or "provided" (a Lambda custom runtime) */
  runtime: string
  memoryMb: number
  timeoutMs: number
  concurrency: number
  triggers: string[]
  /** declared bindings, "NAME=KIND:TARGET[:ro]" */
  bindings: string[]
  /** placement: terms every node running it satisfies, and terms preferred */
  constraints: string[]
  prefer: string[]
  /** what routes and triggers run: an alias or version, "" = the latest */
  target: string
  /** destinations of async results, "publish:SUBJECT" or "" */
  onSuccess: string
  onFailure: string
  egress: boolean
  sizeBytes: number
  sha256: string
  deployedAt: string
  retries: number
  retryBackoffMs: number
  maxEventAgeMs: number
  /** async events waiting to run (queued or being run) */
  backlog: number
  /** HTTP routes with their auth, e.g. "GET /orders/{id} (apikey)" */
  routes: string[]
  /** public key of the deployer that signed it, "" if unsigned */
  signedBy: string
  /** the stored signature: none, valid for the bytes stored (by signedBy), or not matching them */
  signature: 'unsigned' | 'signed' | 'invalid'
  /** "invalid": agents refuse this spec (see code and reason) and run, bind and serve nothing of it */
  status: 'ok' | 'invalid'
  /** why it is invalid (FNMESH_ERR_INVALID_SPEC), "" when ok */
  code: string
  reason: string
}

function functionInfo (key: string, s: StoredSpec | null, invalid: FnmeshError | null): FunctionInfo {
  const signedBy = s?.signature != null && s.signature.publicKey.byteLength === 32 ? publicKeyFromRaw(s.signature.publicKey) : ''
  const signature = s == null || s.signature == null || s.signature.publicKey.byteLength === 0
    ? 'unsigned'
    : checkSpecSignature(s.raw, s.signature, new Set([signedBy])).ok ? 'signed' : 'invalid'
  const created = s != null && Number.isFinite(s.createdAtMs) && Math.abs(s.createdAtMs) < 8.64e15 ? new Date(s.createdAtMs).toISOString() : ''
  return {
    name: key,
    version: s?.version ?? 0,
    handler: s?.handler ?? '',
    runtime: s?.runtime === 'provided' ? 'provided' : 'nodejs',
    memoryMb: s?.memoryMb ?? 0,
    timeoutMs: s?.timeoutMs ?? 0,
    concurrency: s?.concurrency ?? 0,
    triggers: s?.triggers ?? [],
    bindings: s?.bindings ?? [],
    constraints: s?.constraints ?? [],
    prefer: s?.prefer ?? [],
    target: s?.target ?? '',
    onSuccess: s?.onSuccess ?? '',
    onFailure: s?.onFailure ?? '',
    egress: s?.egress ?? false,
    sizeBytes: s?.bundleSize ?? 0,
    sha256: s?.bundleSha256 ?? '',
    deployedAt: created,
    retries: s?.maxRetries ?? 0,
    retryBackoffMs: s?.retryBackoffMs ?? 0,
    maxEventAgeMs: s?.maxEventAgeMs ?? 0,
    backlog: 0,
    routes: (s?.routes ?? []).map(r => `${r.method} ${r.path}${r.auth !== 'none' && r.auth !== '' ? ` (${r.auth})` : ''}`),
    signedBy,
    signature,
    status: invalid == null ? 'ok' : 'invalid',
    code: invalid?.code ?? '',
    reason: invalid?.message ?? ''
  }
}

export interface NodeInfo {
  id: string
  name: string
  slots: number
  inFlight: number
  /** inFlight / slots */
  load: number
  freeMemMb: number
  warm: string[]
  /** "function@version" once per idle provisioned sandbox (--provisioned) */
  provisioned: string[]
  draining: boolean
  lastSeenMs: number
  startedAt: string
  invocations: number
  coldStarts: number
  warmStarts: number
  /** true for the agent that answered */
  self: boolean
  /** why the node takes no new work (e.g. its disk is too full to meter), or '' */
  refusing: string
  /** placement labels (agent --label, and the automatic arch, os, cpus, memory in GiB); {} when the node's do not validate */
  labels: Record<string, string>
  /** sandbox isolation layers active on the node (process, permission, mount, net, pid, uid, cgroup-*, rlimit) */
  layers: string[]
}

export interface UsageOptions extends CallOptions {
  fn?: string
  /** Only invocations that started within this many ms before now */
  sinceMs?: number
  /** Only invocations that started at or after this epoch ms (overrides sinceMs) */
  fromMs?: number
  /** Only invocations that started before this epoch ms */
  toMs?: number
  /** Also total per minute, hour or day bucket (UTC) */
  bucket?: Bucket
  /** Turns GB-seconds and requests into cost */
  price?: PriceTable
  /** Ask this agent (node id) instead of any one of them */
  via?: string
}

export interface ExportOptions extends Omit<UsageOptions, 'bucket' | 'price'> {
  /** records per page asked of the agent. @default 5000 */
  pageSize?: number
  /**
   * Only the records the `via` agent holds in its own ledger (an audit of one agent's share), not
   * the whole mesh's. @default false
   */
  local?: boolean
  /**
   * Told the live members that did not answer their part of a page: records only they hold are
   * not in it (with R >= 1 every record has other holders, so one member missing loses none)
   */
  onMissing?: (nodeIds: string[]) => void
}

/** The state of one agent's metering (replication, anti-entropy, disk) */
export type MeterStatusInfo = Omit<MeterStatus, 'error'>

const DEFAULT_INVOKE_TIMEOUT_MS = DEFAULT_LONG_CALL_TIMEOUT_MS
const DEFAULT_TIMEOUT_MS = DEFAULT_CALL_TIMEOUT_MS
const DEFAULT_LONG_TIMEOUT_MS = DEFAULT_LONG_CALL_TIMEOUT_MS
/** a deploy uploads up to BUNDLE_LIMIT (50 MiB) of code, maybe over a slow link */
const DEFAULT_DEPLOY_TIMEOUT_MS = 300_000

export class Mesh {
  private registryPromise: Promise<Registry> | undefined
  private jsmPromise: Promise<JetStreamManager> | undefined
  private closing: Promise<void> | undefined
  private apiKeys: ApiKeys | undefined
  private readonly payloadLimit: number

  constructor (readonly nc: NatsConnection, options: ConnectOptions = {}) {
    this.payloadLimit = options.payloadLimit ?? SYNC_PAYLOAD_LIMIT
  }

  /** Packs `path` and stores a new version of the function in the registry */
  async deploy (input: DeployOptions, options: CallOptions = {}): Promise<DeployResult> {
    const name = typeof input?.name === 'string' ? ` "${input.name.slice(0, 80)}"` : ''
    return await bounded(`deploy${name}`, options, DEFAULT_DEPLOY_TIMEOUT_MS, async (signal) => await this.deployWith(input, signal))
  }

  private async deployWith (input: DeployOptions, signal: AbortSignal): Promise<DeployResult> {
    // fnmesh.yaml beside the code fills in what the caller left out.
    const manifest = typeof input?.path === 'string' ? await readManifest(input.path) : {}
    const given = Object.fromEntries(Object.entries(input ?? {}).filter(([, v]) => v !== undefined)) as unknown as DeployOptions
    const opts = validateDeploy({ ...manifest, ...given, env: { ...manifest.env, ...given.env } })
    const packed = await packBundle(opts.path, { singleFileAsIndex: opts.handler == null && opts.runtime === '' })
    const handler = opts.handler ?? packed.defaultHandler
    const files = decode('Bundle', packed.bytes, { maxBytes: Infinity }).files
    const paths = files.map(f => f.path)
    if (opts.runtime === 'provided') {
      // A custom runtime's entry point is its bootstrap; the handler is only a setting it reads (_HANDLER).
      const bootstrap = files.find(f => f.path === 'bootstrap')
      if (bootstrap == null || (bootstrap.mode & 0o111) === 0) {
        throw new InputError('FNMESH_ERR_HANDLER_NOT_FOUND', `Cannot deploy "${opts.name}" with runtime provided: ${bootstrap == null ? 'no file named bootstrap' : 'its bootstrap is not executable (chmod +x)'} at the top of ${opts.path}`)
      }
    } else if (!bundleHasHandlerModule(paths, handler)) {
      const base = handler.slice(handler.lastIndexOf('/') + 1)
      const mod = handler.slice(0, handler.length - base.length) + base.split('.')[0]
      throw new InputError('FNMESH_ERR_HANDLER_NOT_FOUND', `Cannot deploy "${opts.name}": handler "${handler}" needs a module ${mod}.js, .mjs or .cjs in ${opts.path}`)
    }
    const signer = input.signingKey != null ? await loadDeployerKey(input.signingKey) : undefined
    const registry = await this.registry()
    signal.throwIfAborted()
    if (opts.routes.length > 0) await checkRouteConflicts(registry, opts.name, opts.routes)
    // Triggers are bound before the spec is stored: a bad trigger fails the deploy, and events
    // published once deploy returns are already captured.
    // The current value may be anything a registry writer stored: only a usable spec is previous.
    const current = await registry.entry(opts.name)
    const previous = current?.spec != null && validateStoredSpec(current.spec, opts.name) == null ? current.spec : null
    signal.throwIfAborted()
    await ensureBindings(await this.jsm(), { name: opts.name, triggers: opts.triggers, timeoutMs: opts.timeoutMs }, previous)
    // Declared stores exist before any version that names them can run.
    const declared = parseBindings(opts.name, opts.bindings)
    if (declared.length > 0) await ensureBindingStores(this.nc, await this.jsm(), declared)
    // What the function publishes on (bindings, destinations) is captured before it can publish.
    await ensurePublishSubjects(await this.jsm(), publishedSubjects({ name: opts.name, bindings: opts.bindings, onSuccess: opts.onSuccess, onFailure: opts.onFailure }))
    const spec = await registry.deploy({
      name: opts.name,
      handler,
      memoryMb: opts.memoryMb,
      timeoutMs: opts.timeoutMs,
      concurrency: opts.concurrency,
      env: opts.env,
      triggers: opts.triggers,
      egress: opts.egress,
      maxRetries: opts.retries,
      retryBackoffMs: opts.retryBackoffMs,
      maxEventAgeMs: opts.maxEventAgeMs,
      routes: opts.routes,
      bindings: opts.bindings,
      constraints: opts.constraints,
      prefer: opts.prefer,
      reserved: opts.reserved,
      provisioned: opts.provisioned,
      target: opts.target,
      onSuccess: opts.onSuccess,
      onFailure: opts.onFailure,
      ...(opts.runtime !== '' ? { runtime: opts.runtime } : {})
    }, packed.bytes, { signer, signal })
    return { name: spec.name, version: spec.version, sha256: spec.bundleSha256, sizeBytes: spec.bundleSize, files: packed.files, routes: opts.routes.map(r => `${r.method} ${r.path}`), signedBy: signer?.publicKey }
  }

  /** Runs `name` synchronously on the least-loaded node and returns its result */
  async invoke<T = unknown> (name: string, event?: unknown, options: InvokeOptions = {}): Promise<T> {
    return (await this.invokeDetailed<T>(name, event, options)).result
  }

  /** As invoke(), with where and how it ran */
  /** `name` may be "NAME", "NAME:ALIAS", "NAME:VERSION" or "NAME:$LATEST" */
  async invokeDetailed<T = unknown> (name: string, event?: unknown, options: InvokeOptions = {}): Promise<Invocation<T>> {
    parseTarget(name)
    const payload = encodeEvent(event, this.payloadLimit, `invoke "${name}"`)
    return await this.invokeRaw<T>(name, payload, options)
  }

  /**
   * As invokeDetailed(), with the event already encoded as UTF-8 JSON (it is not checked here).
   * If the agent routing the call goes silent (it died), the call is re-sent once (with the same
   * idempotency key), so another agent takes it over: if the first had already run it, both runs
   * are billed, as each run is.
   */
  async invokeRaw<T = unknown> (name: string, payload: Uint8Array, options: InvokeOptions = {}): Promise<Invocation<T>> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_INVOKE_TIMEOUT_MS
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot invoke "${name}": timeoutMs is ${String(timeoutMs)}, expected a number of milliseconds above 0`)
    }
    const deadline = Date.now() + timeoutMs
    const idempotencyKey = options.idempotencyKey ?? options.invocationId ?? ''
    if (options.idempotencyKey != null && options.invocationId != null && options.idempotencyKey !== options.invocationId) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', 'Options idempotencyKey and invocationId (its deprecated name) differ: give one')
    }
    if (Buffer.byteLength(idempotencyKey) > MAX_ID_BYTES) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Idempotency key of ${Buffer.byteLength(idempotencyKey)} bytes is invalid: use at most ${MAX_ID_BYTES} bytes`)
    }
    const what = `invoke "${name}"`
    const trace = traceContextOf(options.traceparent, options.tracestate)
    let traceHeaders: MsgHdrs | undefined
    if (trace != null) {
      traceHeaders = natsHeaders()
      traceHeaders.set(TRACEPARENT, trace.traceparent)
      if (trace.tracestate != null) traceHeaders.set(TRACESTATE, trace.tracestate)
    }
    const target = parseTarget(name)
    let msg: Msg | undefined
    for (let attempt = 1; msg == null; attempt++) {
      const reply = await requestLive(this.nc, invokeSubject(target.function), encode('InvokeRequest', {
        function: target.function,
        qualifier: target.qualifier,
        payload,
        idempotencyKey,
        timeoutMs: Math.max(1, deadline - Date.now())
      }), { deadline, livenessMs: KEEPALIVE_TIMEOUT_MS, signal: options.signal, what, interim: { header: Headers.status, value: 'working' }, headers: traceHeaders })
      if (reply !== 'silent') msg = reply
      else if (attempt >= 2) {
        throw new TransportError('FNMESH_ERR_PEER_UNAVAILABLE', `Cannot ${what}${idempotencyKey !== '' ? ` (key ${JSON.stringify(idempotencyKey)})` : ''}: the agents routing it stopped answering, twice`)
      }
    }
    const res = decode('InvokeResult', msg.data)
    if (!res.ok) {
      const err = fromErrorInfo(res.error)
      Object.assign(err, { invocationId: res.invocationId, nodeId: res.nodeId })
      throw err
    }
    const text = Buffer.from(res.payload).toString('utf8')
    let result: T
    try {
      result = (text === '' ? null : JSON.parse(text)) as T
    } catch (err) {
      throw new InputError('FNMESH_ERR_DECODE', `Result of "${name}" is not valid JSON`, { cause: err })
    }
    return { result, invocationId: res.invocationId, nodeId: res.nodeId, version: res.version, durationMs: res.durationMs, cold: res.cold, attempts: res.attempts }
  }

  /**
   * Invokes `name` and reads its response as it is written (a handler wrapped in
   * `awslambda.streamifyResponse`): resolves once the first chunk arrived, with an async iterable
   * of Uint8Array chunks, the invocation id, the node and the content type. A handler that does
   * not stream gives its result (JSON) as one chunk. Streamed bodies may reach the agents'
   * streamed limit (20 MiB by default), over the buffered 6 MiB. An error before the first chunk
   * rejects here; one after it is thrown by the iterator (and `done` rejects with it). Once a
   * chunk arrived the invocation is never re-sent.
   */
  async invokeStream (name: string, event?: unknown, options: InvokeOptions = {}): Promise<InvokeStream> {
    if (typeof name !== 'string' || !FUNCTION_NAME_PATTERN.test(name)) {
      const text = String(name)
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Function name "${text.length > 80 ? `${text.slice(0, 80)}... (${text.length} characters)` : text}" is invalid: expected 1 to 64 letters, digits, "-" or "_", starting with a letter or digit`)
    }
    const payload = encodeEvent(event, this.payloadLimit, `invoke "${name}"`)
    const timeoutMs = options.timeoutMs ?? DEFAULT_INVOKE_TIMEOUT_MS
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot invoke "${name}": timeoutMs is ${String(timeoutMs)}, expected a number of milliseconds above 0`)
    }
    const idempotencyKey = options.idempotencyKey ?? options.invocationId ?? ''
    if (Buffer.byteLength(idempotencyKey) > MAX_ID_BYTES) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Idempotency key of ${Buffer.byteLength(idempotencyKey)} bytes is invalid: use at most ${MAX_ID_BYTES} bytes`)
    }
    return await invokeStream(this.nc, name, payload, { deadline: Date.now() + timeoutMs, idempotencyKey, signal: options.signal, what: `invoke "${name}"` })
  }

  /**
   * Publishes an asynchronous event and resolves once JetStream stored it. `data` that is a
   * CloudEvent (has specversion) goes in structured mode; anything else is the data of a new
   * CloudEvent in binary mode. The same `id` within the dedupe window is accepted once.
   */
  async publish (subject: string, data?: unknown, options: PublishOptions = {}): Promise<PublishResult> {
    return await publishEvent(this.nc, subject, data, options)
  }

  /** Dead-lettered events, oldest first */
  async dlqList (options: CallOptions & { fn?: string } = {}): Promise<DeadLetterInfo[]> {
    return await bounded('list dead letters', options, DEFAULT_LONG_TIMEOUT_MS, async (signal) => await listDeadLetters(this.nc, await this.jsm(), options.fn, signal))
  }

  /**
   * Runs dead-lettered events again (fresh retries) and removes them from the dead-letter stream;
   * once aborted or timed out it moves no more of them (those moved stay moved)
   */
  async dlqReplay (options: CallOptions & { fn?: string } = {}): Promise<{ replayed: number }> {
    return await bounded('replay dead letters', options, DEFAULT_LONG_TIMEOUT_MS, async (signal) => await replayDeadLetters(this.nc, await this.jsm(), options.fn, signal))
  }

  /** Deletes dead-lettered events */
  async dlqPurge (options: CallOptions & { fn?: string } = {}): Promise<{ purged: number }> {
    return await bounded('purge dead letters', options, DEFAULT_TIMEOUT_MS, async (signal) => await purgeDeadLetters(await this.jsm(), options.fn, signal))
  }

  /**
   * Every function in the registry, checked with the rules agents apply (spec-rules.ts): one an
   * agent refuses is listed with status "invalid" and the reason, one that does not even decode
   * too (by its key). `signature` says whether the stored signature holds, whoever the signer;
   * which signers an agent trusts is the agent's own --trust list.
   */
  async functions (options: CallOptions = {}): Promise<FunctionInfo[]> {
    return await bounded('list functions', options, DEFAULT_LONG_TIMEOUT_MS, async (signal) => {
      const entries = await (await this.registry()).entries()
      const out: FunctionInfo[] = entries.map(e => functionInfo(e.key, e.spec, e.error ?? validateStoredSpec(e.spec as StoredSpec, e.key)))
      signal.throwIfAborted()
      // Events waiting in each function's consumers (JetStream may be unreachable: then 0 stays).
      // In parallel, 2 s each: a consumer electing a leader (a NATS server lost) must not hold the list.
      const jsm = await jetstreamManager(this.nc, { checkAPI: false, timeout: 2000 })
      await Promise.all(entries.map(async (e, i) => {
        if (e.spec != null && out[i].status === 'ok') out[i].backlog = await backlog(jsm, e.spec).catch(() => 0)
      }))
      return out
    })
  }

  /**
   * Points alias `alias` of `fn` at `version` (and, with `weight`, a share of invocations at a
   * second version): `fnmesh alias set`. Invoke it as "fn:alias"; rollback is setting it again.
   */
  async aliasSet (fn: string, alias: string, version: number, options: AliasSetOptions & CallOptions = {}): Promise<AliasInfo> {
    return await bounded(`set alias "${fn}:${alias}"`, options, DEFAULT_TIMEOUT_MS, async (signal) => await setAlias(await this.registry(), fn, alias, version, options, signal))
  }

  /** Aliases of `fn` (every function's without it), with status and signature */
  async aliasList (fn?: string, options: CallOptions = {}): Promise<AliasInfo[]> {
    return await bounded('list aliases', options, DEFAULT_LONG_TIMEOUT_MS, async () => await listAliases(await this.registry(), fn))
  }

  /** Deletes an alias; false when there was none */
  async aliasDelete (fn: string, alias: string, options: CallOptions = {}): Promise<boolean> {
    return await bounded(`delete alias "${fn}:${alias}"`, options, DEFAULT_TIMEOUT_MS, async () => await deleteAlias(await this.registry(), fn, alias))
  }

  /** Versions of `fn` still in the registry (the last 16 deploys) that agents would run */
  async versions (fn: string, options: CallOptions = {}): Promise<number[]> {
    return await bounded(`list versions of "${fn}"`, options, DEFAULT_TIMEOUT_MS, async () => await (await this.registry()).versions(fn))
  }

  /** Usage per (function, version), from the raw meter records (within their 30-day retention) */
  async usageByVersion (options: ExportOptions = {}): Promise<VersionUsage[]> {
    return await usageByVersion(this.exportRecords(options))
  }

  /** Live nodes as one agent's gossip table sees them */
  /**
   * Creates every JetStream stream, bucket and object store of the mesh (or leaves existing ones
   * alone) and the consumers of the functions deployed: `fnmesh init`. Needs admin rights.
   */
  async init (options: InitOptions & CallOptions = {}): Promise<InitResult> {
    const { signal, timeoutMs, ...init } = options
    return await bounded('initialise the mesh', { signal, timeoutMs }, DEFAULT_LONG_TIMEOUT_MS, async () => await initMesh(this.nc, init))
  }

  async nodes (options: CallOptions = {}): Promise<NodeInfo[]> {
    const msg = await request(this.nc, API_NODES_SUBJECT, new Uint8Array(0), {
      timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS, signal: options.signal, what: 'list nodes'
    })
    const reply = decode('NodesReply', msg.data)
    if (reply.error != null && reply.error.code !== '') throw fromErrorInfo(reply.error)
    return reply.nodes.map(toNodeInfo).sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id))
  }

  /** Metering totals from one agent's replica of every node's records (gone nodes' included) */
  async usage (options: UsageOptions = {}): Promise<UsageReport> {
    const subject = options.via != null ? nodeSubject(API_USAGE_SUBJECT, options.via) : API_USAGE_SUBJECT
    const msg = await request(this.nc, subject, encode('UsageQuery', {
      function: options.fn ?? '',
      ...range(options),
      bucket: options.bucket != null ? BUCKET_WIRE[options.bucket] : 0
    }), { timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS, signal: options.signal, what: 'read usage' })
    const reply = decode('UsageReply', msg.data)
    if (reply.error != null && reply.error.code !== '') throw fromErrorInfo(reply.error)
    return usageReport(reply, options.price, options.bucket != null)
  }

  /**
   * The raw meter records (one per run), page by page, oldest minute first: every record of the
   * mesh once, whichever agent answers (it merges every live member's records by record key).
   */
  async * exportRecords (options: ExportOptions = {}): AsyncGenerator<ExportedRecord> {
    let subject = options.via != null ? nodeSubject(API_EXPORT_SUBJECT, options.via) : API_EXPORT_SUBJECT
    let afterKey = ''
    for (;;) {
      const msg = await request(this.nc, subject, encode('ExportQuery', { function: options.fn ?? '', ...range(options), afterKey, limit: options.pageSize ?? 5000, local: options.local === true }),
        { timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS, signal: options.signal, what: 'export meter records' })
      const page = decode('ExportPage', msg.data, { maxBytes: 16 * 1024 * 1024 })
      if (page.error != null && page.error.code !== '') throw fromErrorInfo(page.error)
      if (page.missing.length > 0) options.onMissing?.([...page.missing])
      for (const r of page.records) yield exportedRecord(r)
      if (page.nextKey === '') return
      // The cursor is only meaningful to the agent that issued it.
      subject = nodeSubject(API_EXPORT_SUBJECT, page.nodeId)
      afterKey = page.nextKey
    }
  }

  /** Metering state of one agent (by node id), or of every agent that answers within the timeout */
  async meterStatus (options: CallOptions & { nodeId?: string, resetLag?: boolean } = {}): Promise<MeterStatusInfo[]> {
    const body = encode('MeterStatusQuery', { resetLag: options.resetLag === true })
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    const parse = (data: Uint8Array): MeterStatusInfo => {
      const s = decode('MeterStatus', data)
      if (s.error != null && s.error.code !== '') throw fromErrorInfo(s.error)
      // A decoded message reads its defaults from its prototype: copy the fields one by one.
      return {
        nodeId: s.nodeId, replicas: s.replicas, records: s.records, ownRecords: s.ownRecords, underReplicated: s.underReplicated,
        lagSamples: s.lagSamples, lagP50Ms: s.lagP50Ms, lagP99Ms: s.lagP99Ms, lagMaxMs: s.lagMaxMs, received: s.received, rejected: s.rejected,
        syncRounds: s.syncRounds, syncPulled: s.syncPulled, syncPushed: s.syncPushed, syncedWith: [...s.syncedWith], refusing: s.refusing,
        freeBytes: s.freeBytes, diskBytes: s.diskBytes, recovered: s.recovered,
        fsyncWindowMs: s.fsyncWindowMs, fsyncs: s.fsyncs, fsyncLagMaxMs: s.fsyncLagMaxMs,
        members: s.members, ownedRanges: s.ownedRanges, foreignRanges: s.foreignRanges, underReplicatedRanges: s.underReplicatedRanges, droppedRanges: s.droppedRanges,
        ranges: s.ranges.map(r => ({ nodeId: r.nodeId, hourMs: r.hourMs, count: r.count, owners: [...r.owners], unconfirmed: [...r.unconfirmed], owned: r.owned }))
      }
    }
    if (options.nodeId != null) {
      return [parse((await request(this.nc, nodeSubject(API_METER_SUBJECT, options.nodeId), body, { timeoutMs, signal: options.signal, what: 'read meter status' })).data)]
    }
    const expected = (await this.nodes({ timeoutMs, signal: options.signal })).length
    // Gathering answers takes up to 3 s: an abort ends the wait at once.
    return await bounded('read meter status', { signal: options.signal }, timeoutMs + 3000, async () => {
      const out: MeterStatusInfo[] = []
      const replies = await this.nc.requestMany(API_METER_SUBJECT, body, { strategy: 'count', maxMessages: expected, maxWait: Math.min(timeoutMs, 3000) })
      for await (const r of replies) out.push(parse(r.data))
      return out.sort((a, b) => a.nodeId.localeCompare(b.nodeId))
    })
  }

  /**
   * A function's log lines, oldest first, each with its invocation id: what the mesh kept (24 h by
   * default), then, with `follow`, new lines as they are logged until `signal` aborts.
   *
   *   for await (const line of mesh.logs('resize', { follow: true, signal })) console.log(formatLogLine(line))
   */
  logs (name: string, options: LogsOptions = {}): AsyncIterable<LogEntry> {
    return readLogs(this.nc, name, options)
  }

  /** API keys of the HTTP gateway: create (the key is returned once), list, revoke */
  get keys (): ApiKeys {
    this.apiKeys ??= new ApiKeys(this.nc)
    return this.apiKeys
  }

  /** Closes the NATS connection; idempotent */
  async close (): Promise<void> {
    this.closing ??= this.nc.isClosed() ? Promise.resolve() : this.nc.close()
    await this.closing
  }

  private async jsm (): Promise<JetStreamManager> {
    this.jsmPromise ??= manager(this.nc)
    try {
      return await this.jsmPromise
    } catch (err) {
      this.jsmPromise = undefined
      throw err
    }
  }

  private async registry (): Promise<Registry> {
    this.registryPromise ??= Registry.open(this.nc, { create: true })
    try {
      return await this.registryPromise
    } catch (err) {
      this.registryPromise = undefined
      throw err
    }
  }
}

/** The absolute [since, until) of usage options, in epoch ms (0 = open) */
function range (o: { sinceMs?: number, fromMs?: number, toMs?: number }): { sinceMs: number, untilMs: number } {
  const sinceMs = o.fromMs ?? (o.sinceMs != null ? Date.now() - o.sinceMs : 0)
  return { sinceMs: Math.max(0, sinceMs), untilMs: o.toMs ?? 0 }
}

/** Refuses a deploy whose routes another function already serves (same method and path shape) */
async function checkRouteConflicts (registry: Registry, name: string, routes: Array<{ method: string, path: string }>): Promise<void> {
  const mine = new Map(routes.map(r => [routeShape(parseRouteKey(`${r.method} ${r.path}`)), `${r.method} ${r.path}`]))
  for (const entry of await registry.entries()) {
    const other = entry.spec
    // A spec agents refuse serves no route (and one stored by hand must not block every deploy).
    if (entry.key === name || other == null || validateStoredSpec(other, entry.key) != null) continue
    for (const r of other.routes ?? []) {
      const clash = mine.get(routeShape(parseRouteKey(`${r.method} ${r.path}`)))
      if (clash != null) throw new UsageError('FNMESH_ERR_ROUTE_CONFLICT', `Cannot deploy "${name}": route "${clash}" is already served by "${other.name}" ("${r.method} ${r.path}")`)
    }
  }
}

/** Encodes an event as UTF-8 JSON within the payload limit */
export function encodeEvent (event: unknown, limit: number, what: string): Uint8Array {
  let text: string | undefined
  try {
    text = JSON.stringify(event === undefined ? null : event)
  } catch (err: any) {
    throw new InputError('FNMESH_ERR_INVALID_JSON', `Cannot ${what}: the event cannot be serialised to JSON (${String(err?.message ?? err)})`, { cause: err })
  }
  const bytes = Buffer.from(text ?? 'null', 'utf8')
  if (bytes.byteLength > limit) {
    throw new InputError('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Cannot ${what}: the event is ${bytes.byteLength} bytes, over the limit of ${limit}`)
  }
  return bytes
}

function toNodeInfo (view: NodeView): NodeInfo {
  const a = view.advert
  return {
    id: a.nodeId,
    name: a.name,
    slots: a.slots,
    inFlight: a.inFlight,
    load: a.slots > 0 ? a.inFlight / a.slots : 1,
    freeMemMb: a.freeMemMb,
    warm: [...a.warm],
    provisioned: [...a.provisioned],
    draining: a.draining,
    lastSeenMs: view.lastSeenMs,
    startedAt: new Date(a.startedAtMs).toISOString(),
    invocations: a.invocations,
    coldStarts: a.coldStarts,
    warmStarts: a.warmStarts,
    self: view.self,
    refusing: a.refusing,
    labels: { ...(advertLabels(a.labels) ?? {}) },
    layers: maskToLayers(a.layers)
  }
}

/** Connects to NATS and returns a Mesh client */
export async function connect (options: ConnectOptions = {}): Promise<Mesh> {
  const nc = await connectNats({ name: 'fnmesh-sdk', ...options })
  return new Mesh(nc, options)
}

export { FnmeshError }
