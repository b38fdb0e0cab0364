/**
 * Agent options in stages: user input (all optional) -> defaults applied and validated ->
 * a frozen AgentConfig. Durations are milliseconds.
 */
import { arch, availableParallelism, hostname, platform, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { UsageError } from '../../proto/errors.js'
import { SYNC_PAYLOAD_LIMIT } from '../../proto/subjects.js'
import { natsServers, type NatsConnectOptions } from '../../core/nats.js'
import { nodeLabels } from '../../core/placement.js'
import type { Logger } from './logger.js'
import { ROUTING_POLICIES, type RoutingPolicy } from './router/policies.js'

/** How agents know each other (AgentOptions.membership) */
export const MEMBERSHIPS = ['gossip', 'swim'] as const
export type Membership = typeof MEMBERSHIPS[number]
import { ROUTER_DEFAULTS } from './router/router.js'
import { defaultSlots } from './executor/executor.js'
import { DEFAULT_MAX_QUEUE } from './executor/admit.js'
import { PEER_TIMEOUT_MS } from './gossip/peer-table.js'
import { OPTIONAL_LAYERS, SANDBOX_MODES, type LayerId, type SandboxMode } from './sandbox/layers/detect.js'


export interface OtlpOptions {
  /**
   * The collector: a base URL, to which `/v1/traces` is added (as OTEL_EXPORTER_OTLP_ENDPOINT),
   * or the traces URL itself when its path already ends in `/v1/traces`
   */
  endpoint: string
  /** HTTP headers on every export (an API key, a tenant) */
  headers?: Record<string, string>
  /** resource `service.name`. @default "fnmesh-agent" */
  serviceName?: string
  /** how long finished spans wait to be sent in one batch. @default 1000 */
  exportDelayMs?: number
}

export interface AgentOptions {
  /** NATS servers. @default env FNMESH_NATS, else nats://127.0.0.1:4222 */
  nats?: string | string[]
  /** Extra NATS connection options (credentials, TLS) */
  natsOptions?: Omit<NatsConnectOptions, 'servers'>
  /** libp2p listen multiaddrs. @default ["/ip4/0.0.0.0/tcp/0"] */
  listen?: string[]
  /** Multiaddrs of peers to dial at start (optional: agents also find each other over NATS) */
  bootstrap?: string[]
  /** Data folder: node key, ledger, bundle cache. @default a folder under the OS temp dir named after the node */
  dataDir?: string
  /** Max concurrent invocations on this node. @default 4 x available CPUs */
  slots?: number
  /** Human name shown in `fnmesh nodes`. @default the host name */
  name?: string
  /** Placement labels "key=value" (over the automatic arch, os, cpus and memory in GiB). @default none */
  labels?: string[]
  /** Serve the HTTP gateway: a port, or "HOST:PORT" (port 0: any free port). @default off */
  http?: number | string
  /** Serve /metrics, /healthz and /readyz: a port, or "HOST:PORT" (port 0: any free port; host 127.0.0.1 unless given). @default off */
  admin?: number | string
  /** File holding the bearer token the admin listener asks for; required when it binds other than loopback. @default none */
  adminToken?: string
  /** Export OpenTelemetry traces over OTLP/HTTP (protobuf). @default off: no span is made and no SDK loaded */
  otlp?: OtlpOptions
  /** Private swarm: a libp2p pre-shared key file (/key/swarm/psk/1.0.0/); hosts without it cannot connect. @default none */
  swarmKey?: string
  /** Deployer public keys (files or folders): when given, only deploys signed by one of them run here. @default none */
  trust?: string[]
  /** Keepalive: how often an idle node re-sends its capacity advert. @default keepaliveFor(mesh size): 50 ms per node, 1-10 s */
  advertIntervalMs?: number
  /** Least gap between adverts sent because load changed. @default 100 */
  advertMinGapMs?: number
  /** A peer whose adverts stop is dropped after this long, or after 3 of its keepalives if longer. @default 2000 */
  peerTimeoutMs?: number
  /** Interval of NATS discovery announces. @default 5000 */
  announceIntervalMs?: number
  /** Baseline routing policies: how long an invocation may wait at the router for a free slot (least-loaded waits in executor queues as long as the caller's deadline allows). @default 500 */
  queueWaitMs?: number
  /** Most invocations waiting for a slot in this node's executor queue; more are refused at once. @default 10000 */
  maxQueue?: number
  /** Max invocations waiting at the router for a slot. @default 1000 */
  maxQueued?: number
  /** Extra time the router waits for a peer beyond the function's timeout (covers cold start). @default 12000 */
  dispatchGraceMs?: number
  /** A warm sandbox idle this long is stopped (scale to zero). @default 300000 */
  idleTtlMs?: number
  /** Generic sandboxes kept booted ahead of need. @default 2 */
  prewarm?: number
  /** Time a function's module may take to load. @default 10000 */
  initTimeoutMs?: number
  /** Largest event or result of a sync invocation. @default 6 MiB */
  payloadLimit?: number
  /** Billing granularity: durations round up to a multiple of this. @default 1 */
  billingGranularityMs?: number
  /** Routing policy: "least-loaded" (gossiped load) or "probe" (load asked of executors per invocation, router/probe.ts); the others are baselines for benchmarks. @default "least-loaded" */
  routing?: RoutingPolicy
  /**
   * How agents know each other: "gossip" (every agent's signed adverts over libp2p gossipsub, heard
   * by every agent) or "swim" (SWIM over NATS, gossip/swim.ts: each agent pings one member a
   * second, changes piggybacked; per-agent cost flat in the mesh size). "swim" carries no load, so
   * it routes by "probe" (the default with it; another policy is an error). @default "gossip"
   */
  membership?: Membership
  /** Membership "swim": how often this node pings one member (failure detection scales with it; so does its cost). @default 1000 */
  swimPeriodMs?: number
  /** Take invocations from NATS and route them (false: only run what other routers send). @default true */
  router?: boolean
  /**
   * Isolation of functions: "auto" uses every layer this machine offers, "strict" refuses to
   * start unless the OS layers (mount, network and pid namespaces, cgroup memory and pids, a
   * separate uid when root) are all there, "none" only keeps each function in its own process.
   * @default "auto"
   */
  sandbox?: SandboxMode
  /** Bytes of log messages kept per invocation; the rest is dropped with a note. @default 65536 */
  logLimit?: number
  /** How long an invocation waits for a sandbox of a function at its concurrency cap before FNMESH_ERR_BUSY. @default 1000 */
  capWaitMs?: number
  /** Processes and threads per sandbox (cgroup pids.max). @default 64 */
  sandboxPids?: number
  /** First uid of the sandboxes when the agent runs as root (one uid per live sandbox). @default 1900000 */
  sandboxUidBase?: number
  /** Isolation layers to leave off even where available (a layer that misbehaves on a host; tests). @default [] */
  sandboxDisable?: LayerId[]
  /** Peers each meter record must reach (R). @default 2 */
  replicas?: number
  /**
   * Peers that must hold a record (written to their OS) before its invocation is answered; when
   * the router is another node, its copy from the result counts. 0 answers after the local write
   * alone. @default 1
   */
  ackReplicas?: number
  /** Longest time a meter ledger write waits for its fsync (group fsync in the background), on every node. @default 50 */
  fsyncWindowMs?: number
  /** Peers no answer waits for get a meter batch within this long, coalesced (tests stretch it: FNMESH_METER_PUSH_DELAY_MS). @default 50 */
  meterPushDelayMs?: number
  /** Longest wait for those peers; past it, with replicaAcks 2 or more the invocation fails with FNMESH_ERR_METER_UNAVAILABLE (and is run again elsewhere), with 1 it is answered and the push goes on. @default 500 */
  replicaAckTimeoutMs?: number
  /** Interval of anti-entropy sessions with a random peer. @default 5000 */
  syncIntervalMs?: number
  /** A meter range this node no longer owns is dropped no sooner than this after membership last changed (its owners confirmed it). @default 30000 */
  meterHandoffDelayMs?: number
  /** Raw meter records older than this are compacted into rollups. @default 30 days */
  retentionMs?: number
  /** About one purge of settled events (FNMESH_EVENTS) this often mesh-wide (triggers/janitor.ts). @default 10000 */
  eventsPurgeMs?: number
  /** Interval of compaction runs. @default 1 hour */
  compactIntervalMs?: number
  /** Below this much free space in the data folder the node takes no new work. @default 64 */
  minFreeMb?: number
  /**
   * Size of each sandbox's /tmp in MB: a tmpfs of this size, counted in the function's memory
   * (see the README's sandbox section for each sandbox mode). @default 512
   */
  tmpMb?: number
  /** Minutes are sealed (signed summaries) this long after they end. @default 20 minutes */
  sealAfterMs?: number
  /** Logger; @default pino JSON on stderr */
  logger?: Logger
}

export interface AgentConfig {
  readonly nats: string[]
  readonly natsOptions: Omit<NatsConnectOptions, 'servers'>
  readonly listen: string[]
  readonly bootstrap: string[]
  readonly dataDir: string
  readonly slots: number
  readonly name: string
  /** placement labels: the automatic ones with --label over them (core/placement.ts) */
  readonly labels: Readonly<Record<string, string>>
  readonly advertIntervalMs: number | undefined
  readonly advertMinGapMs: number | undefined
  readonly peerTimeoutMs: number
  readonly announceIntervalMs: number
  readonly queueWaitMs: number
  readonly maxQueued: number
  readonly maxQueue: number
  readonly dispatchGraceMs: number
  readonly idleTtlMs: number
  readonly prewarm: number
  readonly initTimeoutMs: number
  readonly payloadLimit: number
  readonly billingGranularityMs: number
  readonly routing: RoutingPolicy
  readonly membership: Membership
  readonly swimPeriodMs: number
  readonly router: boolean
  readonly sandbox: SandboxMode
  readonly logLimit: number
  readonly capWaitMs: number
  readonly sandboxPids: number
  readonly sandboxUidBase: number
  readonly sandboxDisable: readonly LayerId[]
  readonly replicas: number
  readonly ackReplicas: number
  readonly replicaAckTimeoutMs: number
  readonly fsyncWindowMs: number
  readonly meterPushDelayMs: number
  readonly syncIntervalMs: number
  readonly meterHandoffDelayMs: number
  readonly retentionMs: number
  readonly eventsPurgeMs: number
  readonly compactIntervalMs: number
  readonly minFreeMb: number
  readonly tmpMb: number
  readonly sealAfterMs: number
  /** gateway address; undefined = no gateway */
  readonly http: { host: string, port: number } | undefined
  /** admin listener (/metrics, /healthz, /readyz); undefined = none */
  readonly admin: { host: string, port: number } | undefined
  /** file holding the admin listener's bearer token */
  readonly adminToken: string | undefined
  /** OTLP trace export; undefined = tracing off */
  readonly otlp: Readonly<{ url: string, headers: Readonly<Record<string, string>>, serviceName: string, exportDelayMs: number }> | undefined
  readonly swarmKey: string | undefined
  readonly trust: readonly string[]
}

export function resolveConfig (options: AgentOptions = {}): AgentConfig {
  const name = options.name ?? hostname()
  if (!/^[\w.-]{1,64}$/.test(name)) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Node name "${name}" is invalid: use 1-64 letters, digits, ".", "-" or "_"`)
  }
  const int = (key: string, value: number | undefined, fallback: number, min: number, max: number): number => {
    const v = value ?? fallback
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Option ${key} is ${String(value)}: expected a whole number from ${min} to ${max}`)
    }
    return v
  }
  const config: AgentConfig = {
    nats: natsServers(options.nats),
    natsOptions: options.natsOptions ?? {},
    listen: options.listen != null && options.listen.length > 0 ? [...options.listen] : ['/ip4/0.0.0.0/tcp/0'],
    bootstrap: [...(options.bootstrap ?? [])],
    dataDir: options.dataDir ?? join(tmpdir(), `fnmesh-${name}`),
    slots: int('slots', options.slots, defaultSlots(), 1, 10_000),
    name,
    labels: Object.freeze(nodeLabels(options.labels ?? [], autoLabels())),
    // unset: the keepalive adapts to the mesh size (gossip.ts keepaliveFor)
    advertIntervalMs: options.advertIntervalMs == null ? undefined : int('advertIntervalMs', options.advertIntervalMs, 1000, 20, 60_000),
    // unset: adapts to the mesh size (gossip.ts advertGapFor)
    advertMinGapMs: options.advertMinGapMs == null ? undefined : int('advertMinGapMs', options.advertMinGapMs, 100, 0, 1000),
    peerTimeoutMs: int('peerTimeoutMs', options.peerTimeoutMs, PEER_TIMEOUT_MS, 100, 60_000),
    announceIntervalMs: int('announceIntervalMs', options.announceIntervalMs, 5000, 100, 600_000),
    queueWaitMs: int('queueWaitMs', options.queueWaitMs, ROUTER_DEFAULTS.queueWaitMs, 0, 60_000),
    maxQueued: int('maxQueued', options.maxQueued, ROUTER_DEFAULTS.maxQueued, 0, 1_000_000),
    maxQueue: int('maxQueue', options.maxQueue, DEFAULT_MAX_QUEUE, 0, 1_000_000),
    dispatchGraceMs: int('dispatchGraceMs', options.dispatchGraceMs, ROUTER_DEFAULTS.dispatchGraceMs, 100, 600_000),
    idleTtlMs: int('idleTtlMs', options.idleTtlMs, 300_000, 100, 86_400_000),
    prewarm: int('prewarm', options.prewarm, 2, 0, 1000),
    initTimeoutMs: int('initTimeoutMs', options.initTimeoutMs, 10_000, 100, 600_000),
    payloadLimit: int('payloadLimit', options.payloadLimit, SYNC_PAYLOAD_LIMIT, 1024, 64 * 1024 * 1024),
    billingGranularityMs: int('billingGranularityMs', options.billingGranularityMs, 1, 1, 60_000),
    routing: options.routing ?? (options.membership === 'swim' ? 'probe' : 'least-loaded'),
    membership: options.membership ?? 'gossip',
    swimPeriodMs: int('swimPeriodMs', options.swimPeriodMs, 1000, 50, 60_000),
    router: options.router ?? true,
    sandbox: options.sandbox ?? 'auto',
    logLimit: int('logLimit', options.logLimit, 65536, 1024, 16 * 1024 * 1024),
    capWaitMs: int('capWaitMs', options.capWaitMs, 1000, 0, 60_000),
    sandboxPids: int('sandboxPids', options.sandboxPids, 64, 16, 100_000),
    sandboxUidBase: int('sandboxUidBase', options.sandboxUidBase, 1_900_000, 1000, 4_000_000_000),
    sandboxDisable: Object.freeze([...(options.sandboxDisable ?? [])]),
    replicas: int('replicas', options.replicas, 2, 0, 64),
    ackReplicas: int('ackReplicas', options.ackReplicas, 1, 0, 64),
    replicaAckTimeoutMs: int('replicaAckTimeoutMs', options.replicaAckTimeoutMs, 500, 10, 60_000),
    fsyncWindowMs: int('fsyncWindowMs', options.fsyncWindowMs, 50, 0, 10_000),
    meterPushDelayMs: int('meterPushDelayMs', options.meterPushDelayMs, 50, 0, 3_600_000),
    syncIntervalMs: int('syncIntervalMs', options.syncIntervalMs, 5000, 100, 3_600_000),
    meterHandoffDelayMs: int('meterHandoffDelayMs', options.meterHandoffDelayMs, 30_000, 0, 86_400_000),
    retentionMs: int('retentionMs', options.retentionMs, 30 * 86_400_000, 60_000, 3650 * 86_400_000),
    eventsPurgeMs: int('eventsPurgeMs', options.eventsPurgeMs, 10_000, 100, 86_400_000),
    compactIntervalMs: int('compactIntervalMs', options.compactIntervalMs, 3_600_000, 1000, 86_400_000),
    minFreeMb: int('minFreeMb', options.minFreeMb, 64, 0, 1_048_576),
    tmpMb: int('tmpMb', options.tmpMb, 512, 1, 1_048_576),
    sealAfterMs: int('sealAfterMs', options.sealAfterMs, 1_200_000, 0, 86_400_000),
    http: parseAddress('http', options.http, '0.0.0.0'),
    admin: parseAddress('admin', options.admin, '127.0.0.1'),
    adminToken: options.adminToken,
    otlp: resolveOtlp(options.otlp, int),
    swarmKey: options.swarmKey,
    trust: Object.freeze([...(options.trust ?? [])])
  }
  if (!MEMBERSHIPS.includes(config.membership)) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Membership "${String(config.membership)}" is unknown: use ${MEMBERSHIPS.join(', ')}`)
  }
  if (config.membership === 'swim' && config.routing !== 'probe') {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Membership "swim" carries no load, so it routes by "probe", not "${String(config.routing)}": leave --routing out or use --routing probe`)
  }
  if (!ROUTING_POLICIES.includes(config.routing)) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Routing policy "${String(config.routing)}" is unknown: use ${ROUTING_POLICIES.join(', ')}`)
  }
  const layers: readonly string[] = OPTIONAL_LAYERS
  const unknown = config.sandboxDisable.filter(l => !layers.includes(l))
  if (unknown.length > 0) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot turn off sandbox layer "${unknown.join('", "')}": the layers are ${layers.join(', ')}`)
  }
  if (!(SANDBOX_MODES as readonly string[]).includes(config.sandbox)) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Option sandbox is "${String(config.sandbox)}": expected "auto", "strict" or "none"`)
  }
  if (config.ackReplicas > config.replicas) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Option ackReplicas (${config.ackReplicas}) cannot exceed replicas (${config.replicas})`)
  }
  if (config.admin != null && !isLoopback(config.admin.host) && config.adminToken == null) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Option admin binds "${config.admin.host}", which other machines reach: give --admin-token FILE, or bind 127.0.0.1`)
  }
  return Object.freeze(config)
}

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/
const SERVICE_NAME = /^[\w.:/@-]{1,128}$/

/** --otlp-endpoint and friends -> the traces URL, headers and resource name */
function resolveOtlp (o: OtlpOptions | undefined, int: (key: string, value: number | undefined, fallback: number, min: number, max: number) => number): AgentConfig['otlp'] {
  if (o == null) return undefined
  let url: URL | undefined
  try { url = new URL(o.endpoint) } catch {}
  if (url == null || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '') {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Option otlp.endpoint "${String(o.endpoint).slice(0, 200)}" is not an http:// or https:// URL (without credentials: give them with --otlp-header)`)
  }
  if (!url.pathname.endsWith('/v1/traces')) url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/traces`
  const headers: Record<string, string> = {}
  for (const [k, v] of Object.entries(o.headers ?? {})) {
    if (!HEADER_NAME.test(k) || typeof v !== 'string' || /[\r\n\0]/.test(v) || v.length > 4096) {
      throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Option otlp.headers "${k.slice(0, 128)}" is invalid: expected NAME=VALUE with an HTTP token name and a one-line value`)
    }
    headers[k] = v
  }
  const serviceName = o.serviceName ?? 'fnmesh-agent'
  if (!SERVICE_NAME.test(serviceName)) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Option otlp.serviceName "${serviceName.slice(0, 200)}" is invalid: use 1-128 letters, digits or . _ - : / @`)
  }
  return Object.freeze({ url: url.toString(), headers: Object.freeze(headers), serviceName, exportDelayMs: int('otlp exportDelayMs', o.exportDelayMs, 1000, 10, 60_000) })
}

/** The labels every agent carries: CPU architecture, OS, usable CPUs and memory in whole GiB */
export function autoLabels (): Record<string, string> {
  return { arch: arch(), os: platform(), cpus: String(availableParallelism()), memory: String(Math.floor(totalmem() / 2 ** 30)) }
}

/** "8080", 8080 or "127.0.0.1:8080" -> host and port */
function parseAddress (key: string, value: number | string | undefined, defaultHost: string): { host: string, port: number } | undefined {
  if (value == null) return undefined
  const text = String(value)
  const m = /^(?:\[?([^\]]*?)\]?:)?(\d{1,5})$/.exec(text)
  const port = m != null ? Number(m[2]) : NaN
  if (m == null || port > 65535) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Option ${key} is "${text}": expected a port or HOST:PORT`)
  return { host: m[1] != null && m[1] !== '' ? m[1] : defaultHost, port }
}

/** True for an address only this machine reaches */
export function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)
}
