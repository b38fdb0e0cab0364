/**
 * The node agent: composes its parts and owns their lifecycle. Start order is
 * isolation probe -> metering (ledger) -> NATS -> registry -> log shipper -> sandbox pool ->
 * function cache -> gossip -> metering.connect (replication, anti-entropy) -> executor -> control API ->
 * router -> triggers -> gateway -> discovery -> admin listener; stopping runs in reverse.
 *
 *   router ──picks──> peer table <──adverts── gossip (libp2p + gossipsub)
 *     │ local                  remote: NATS fnmesh.exec.<id>
 *     v                                  v
 *   executor ──> function cache (KV specs, object-store bundles) ──> sandbox pool ──> child
 *     └──> metering: signed record, LevelDB (synced) + pushed to peers, before the result goes out
 *            └──libp2p streams──> peers' metering (push, anti-entropy)
 *   triggers (JetStream pull consumers, schedules) ──> executor (this node's, when it has room)
 *   gateway (HTTP, --http) ──> router.route() like any invocation
 *   admin (HTTP, --admin) <── metrics sink (the executor counts into it; gauges read the parts)
 *   tracer (--otlp-endpoint): gateway, router and executor spans, exported over OTLP/HTTP
 */
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { NatsConnection } from '@nats-io/transport-node'
import type { MeterBundle } from '../../proto/codec.js'
import { fnmeshError } from '../../proto/errors.js'
import { RATELIMITS_BUCKET, RECOMMENDED_MAX_PAYLOAD } from '../../proto/subjects.js'
import { connectNats } from '../../core/nats.js'
import { DLQ_STREAM, backlog, dlqSubject } from '../../core/events.js'
import { jetstreamManager } from '@nats-io/jetstream'
import { Registry } from '../../core/registry.js'
import { advertLabels, eligible, preferred } from '../../core/placement.js'
import { layersToMask } from '../../core/layers.js'
import { ControlApi } from './api/api.js'
import { resolveConfig, type AgentConfig, type AgentOptions } from './config.js'
import { BindingServer } from './bindings/server.js'
import { Executor } from './executor/executor.js'
import { Gateway } from './gateway/gateway.js'
import { NatsDiscovery } from './gossip/discovery.js'
import { Swim } from './gossip/swim.js'
import { Gossip } from './gossip/gossip.js'
import { loadOrCreateKey } from './gossip/identity.js'
import { PeerTable, type PeerEntry } from './gossip/peer-table.js'
import { createLogger, type Logger } from './logger.js'
import { LogShipper } from './logs/shipper.js'
import { Metering } from './metering/metering.js'
import { FunctionCache } from './registry/cache.js'
import { TrustList } from './registry/trust.js'
import { TrustedVersions } from './registry/versions.js'
import { Router, type LocalNode } from './router/router.js'
import { detectIsolation, strictMissing, type IsolationPlan } from './sandbox/layers/detect.js'
import { SandboxPool } from './sandbox/pool.js'
import { Provisioner } from './sandbox/provisioner.js'
import { ReservedConcurrency } from './executor/reserved.js'
import { openBucket } from '../../core/kv-follow.js'
import { TriggerManager, type LocalCapacity, type TriggerPlacement } from './triggers/manager.js'
import { waitForInit } from './registry/initialized.js'
import { AdminServer } from './metrics/admin.js'
import { PromMetrics } from './metrics/prom.js'
import { noMetrics } from './metrics/sink.js'
import { noTracing, type Tracer } from './tracing/tracer.js'
import { DashboardData } from './metrics/dashboard/data.js'
import { rawRecords } from './metering/queries/usage.js'

const DLQ_PREFIX = dlqSubject('')

export type AgentState = 'starting' | 'running' | 'draining' | 'stopped' | 'failed'

export interface Agent {
  readonly nodeId: string
  readonly name: string
  readonly config: AgentConfig
  readonly state: AgentState
  multiaddrs: () => string[]
  /** the HTTP gateway's port, when it runs */
  readonly httpPort: number | undefined
  /** the admin listener's port (/metrics, /healthz, /readyz), when it runs */
  readonly adminPort: number | undefined
  /** the peer table, this node included */
  peers: () => PeerEntry[]
  /** invocations this node's router sent to each node id */
  routed: () => Map<string, number>
  /**
   * Graceful stop: leaves the gossip mesh (peers stop routing here at once), stops taking
   * invocations, finishes those in flight, then stops every part. Idempotent.
   */
  drain: () => Promise<void>
  /** Forced stop: kills sandboxes and closes everything without waiting. Idempotent. */
  destroy: (err?: Error) => Promise<void>
}

interface Parts {
  plan?: IsolationPlan
  metering?: Metering
  nc?: NatsConnection
  shipper?: LogShipper
  pool?: SandboxPool
  functions?: FunctionCache
  gossip?: Gossip
  executor?: Executor
  reserved?: ReservedConcurrency
  provisioner?: Provisioner
  api?: ControlApi
  router?: Router
  triggers?: TriggerManager
  gateway?: Gateway
  discovery?: NatsDiscovery
  swim?: Swim
  admin?: AdminServer
  tracer?: Tracer
}

/** Starts an agent and resolves once it serves invocations */
export async function startAgent (options: AgentOptions = {}): Promise<Agent> {
  const config = resolveConfig(options)
  const logger = options.logger ?? createLogger({ base: { node: config.name } })
  const parts: Parts = {}
  try {
    return await start(config, logger, parts)
  } catch (err) {
    await stopParts(parts, logger, false)
    throw err
  }
}

async function start (config: AgentConfig, logger: Logger, parts: Parts): Promise<Agent> {
  // Probed first: --sandbox strict on a machine without the OS layers fails before anything starts.
  const plan = parts.plan = detectIsolation({ mode: config.sandbox, uidBase: config.sandboxUidBase, disable: [...config.sandboxDisable] })
  const missing = strictMissing(plan)
  if (config.sandbox === 'strict' && missing.length > 0) {
    throw fnmeshError('FNMESH_ERR_SANDBOX_UNAVAILABLE', `Cannot start with --sandbox strict: missing isolation layers: ${missing.join('; ')}`)
  }
  await mkdir(config.dataDir, { recursive: true })
  const privateKey = await loadOrCreateKey(config.dataDir)
  const trust = config.trust.length > 0 ? await TrustList.load([...config.trust]) : undefined
  const swarmKey = config.swarmKey != null ? await readSwarmKey(config.swarmKey) : undefined
  const adminToken = config.adminToken != null ? await readAdminToken(config.adminToken) : undefined
  /** dead letters per function, mesh-wide (the metrics and the dashboard read it) */
  const dlqCounts = async (): Promise<Record<string, number>> => {
    if (parts.nc == null) return {}
    const jsm = dlqJsm ??= await jetstreamManager(parts.nc)
    const info = await jsm.streams.info(DLQ_STREAM, { subjects_filter: `${DLQ_PREFIX}>` })
    const out: Record<string, number> = {}
    for (const [subject, n] of Object.entries(info.state.subjects ?? {})) out[subject.slice(DLQ_PREFIX.length)] = n
    return out
  }
  // Metrics exist only with the admin listener: without it the parts count into nothing.
  // The gauges read the parts at scrape time, so they reach them through `parts`.
  const metrics = config.admin == null
    ? undefined
    : new PromMetrics({
      slots: () => config.slots,
      inFlight: () => parts.executor?.inFlight ?? 0,
      queueLength: () => (parts.executor?.load ?? 0) - (parts.executor?.inFlight ?? 0),
      sandboxesWarm: () => parts.pool?.warmCount ?? 0,
      sandboxes: () => parts.pool?.size ?? 0,
      adverts: () => parts.gossip?.stats ?? { sent: 0, received: 0, rejected: 0 },
      layersActive: () => plan.layers.filter(l => l.active).length,
      diskFreeBytes: () => parts.metering?.gauges().freeBytes ?? 0,
      replicationLagMs: () => parts.metering?.gauges().lagP99Ms ?? 0,
      underReplicated: () => parts.metering?.gauges().underReplicated ?? 0,
      gossipPeers: () => table.routable().filter(e => !e.self).length,
      libp2pBytes: () => parts.gossip?.bytes.snapshot() ?? {},
      ...(config.membership === 'swim' ? { swim: () => parts.swim?.stats ?? { health: 0, sent: 0, received: 0, rejected: 0, bytesIn: 0, bytesOut: 0, pingFailures: 0, suspected: 0, dead: 0, refuted: 0 } } : {}),
      ...(config.routing === 'probe' ? { probes: () => parts.router?.probeStats ?? { own: 0, free: 0, queue: 0, fallback: 0, answered: 0, unanswered: 0 } } : {}),
      natsConnected: () => parts.nc != null && !parts.nc.isClosed() && natsUp,
      dlqMessages: dlqCounts
    })
  let natsUp = true
  let dlqJsm: Awaited<ReturnType<typeof jetstreamManager>> | undefined
  const metering = parts.metering = new Metering({
    dir: join(config.dataDir, 'ledger'),
    logger: logger.child({ part: 'agent:metering' }),
    replicas: config.replicas,
    ackReplicas: config.ackReplicas,
    ackTimeoutMs: config.replicaAckTimeoutMs,
    syncIntervalMs: config.syncIntervalMs,
    retentionMs: config.retentionMs,
    compactIntervalMs: config.compactIntervalMs,
    minFreeBytes: config.minFreeMb * 1024 * 1024,
    sealAfterMs: config.sealAfterMs,
    fsyncWindowMs: config.fsyncWindowMs,
    pushDelayMs: config.meterPushDelayMs,
    handoffDropAfterMs: config.meterHandoffDelayMs,
    // Peers must stop routing here at once: publish an advert with the reason.
    onRefusingChange: () => { parts.gossip?.loadChanged() }
  })
  // The ledger opens (and a damaged one is repaired) before anything runs.
  await metering.start()
  const nc = parts.nc = await connectNats({ name: `fnmesh-agent-${config.name}`, maxReconnectAttempts: -1, ...config.natsOptions, servers: config.nats })
  if ((nc.info?.max_payload ?? 0) < RECOMMENDED_MAX_PAYLOAD) {
    logger.warn({ maxPayload: nc.info?.max_payload }, `NATS max_payload is below ${RECOMMENDED_MAX_PAYLOAD} bytes: events and results near the 6 MB limit will be refused by the server`)
  }
  watchNats(nc, logger, (up) => { natsUp = up }).catch(() => {})
  // Agents open what `fnmesh init` made and never create it (see node/src/registry/initialized.ts).
  await waitForInit(nc, logger)
  const registry = await Registry.open(nc)
  const table = new PeerTable({ peerTimeoutMs: config.peerTimeoutMs })
  // The node id is known once gossip starts; the log shipper needs it for every line, so it
  // takes it from this holder.
  const identity = { nodeId: '' }
  const shipper = parts.shipper = new LogShipper({ nc, get nodeId () { return identity.nodeId }, logger: logger.child({ part: 'agent:logs' }) })
  await shipper.start()
  const pool = parts.pool = new SandboxPool({
    workDir: join(config.dataDir, 'sandbox'),
    plan,
    protectDir: config.dataDir,
    idleTtlMs: config.idleTtlMs,
    prewarm: config.prewarm,
    maxWorkers: config.slots * 2 + config.prewarm,
    initTimeoutMs: config.initTimeoutMs,
    resultLimit: config.payloadLimit,
    logLimit: config.logLimit,
    capWaitMs: config.capWaitMs,
    pidsMax: config.sandboxPids,
    tmpMb: config.tmpMb,
    logs: (line) => { shipper.add(line) },
    logger: logger.child({ part: 'agent:sandbox' })
  })
  await pool.start()
  const functions = parts.functions = new FunctionCache({
    registry,
    bundlesDir: join(config.dataDir, 'bundles'),
    logger: logger.child({ part: 'agent:registry' }),
    trust,
    // With a trust list: the newest trusted version of each function, so a replayed older
    // signed spec is refused after a restart too.
    versions: trust != null ? new TrustedVersions({ path: join(config.dataDir, 'trusted-versions.json'), logger: logger.child({ part: 'agent:registry' }) }) : undefined,
    // Only specs that passed the trust list and the deploy rules come here (null: deleted or refused).
    onChange: (name, spec, previous) => {
      // Warm children are kept per name@version. A version that does not go up (a redeploy after
      // a delete, a first signed deploy after unsigned ones) may name other code: retire them all.
      // Versions aliases name stay warm too (a weighted alias runs two at once).
      const keep = spec != null && (previous == null || spec.version > previous.version) ? spec.version : 0
      pool.retire(name, keep, keep > 0 ? functions.aliasVersions(name) : [])
      parts.provisioner?.check()
      parts.triggers?.onSpec(name, spec).catch((err: any) => {
        logger.error({ fn: name, code: 'FNMESH_ERR_INTERNAL', err: String(err?.message ?? err) }, 'applying a spec change to the triggers failed')
      })
      parts.gateway?.onSpec(name, spec)
    }
  })
  await functions.start()
  const activeLayers = layersToMask(plan.layers.filter(l => l.active).map(l => l.id))
  const gossip = parts.gossip = new Gossip({
    privateKey,
    name: config.name,
    labels: config.labels,
    listen: config.listen,
    bootstrap: config.bootstrap,
    swarmKey,
    advertIntervalMs: config.advertIntervalMs,
    advertMinGapMs: config.advertMinGapMs,
    table,
    snapshot: () => ({
      slots: config.slots,
      // running and queued: peers weigh queued work like running work
      inFlight: parts.executor?.load ?? 0,
      warm: pool.warmKeys(),
      provisioned: pool.provisionedKeys(),
      invocations: parts.executor?.invocations ?? 0,
      coldStarts: pool.coldStarts,
      warmStarts: pool.warmStarts,
      refusing: metering.refusing(),
      layers: activeLayers
    }),
    membership: config.membership,
    logger: logger.child({ part: 'agent:gossip' })
  })
  await gossip.start()
  const nodeId = identity.nodeId = gossip.nodeId
  await metering.connect({ privateKey, nodeId, libp2p: gossip.libp2p, table })
  // The OpenTelemetry SDK is loaded only with --otlp-endpoint; otherwise the parts hold a tracer
  // whose `enabled` is false. Made once the node id (the resource's service.instance.id) is known.
  const tracer: Tracer = parts.tracer = config.otlp == null
    ? noTracing
    : new (await import('./tracing/otel.js')).OtelTracer({ ...config.otlp, nodeId, nodeName: config.name, logger: logger.child({ part: 'agent:tracing' }) })
  // Mesh-wide caps of functions deployed with --reserved: leases in the bucket the gateway's rate limits use.
  const reserved = parts.reserved = new ReservedConcurrency({ kv: await openBucket(nc, RATELIMITS_BUCKET), nodeId, logger: logger.child({ part: 'agent:reserved' }) })
  reserved.start()
  const executor = parts.executor = new Executor({
    nc,
    nodeId,
    functions,
    pool,
    meter: metering,
    logger: logger.child({ part: 'agent:executor' }),
    // Routing "probe" asks executors for their load: adverts go at the keepalive only (membership).
    onLoadChange: () => { if (config.routing !== 'probe') gossip.loadChanged(); parts.router?.wake(); parts.triggers?.wake() },
    logs: (line) => { shipper.add(line) },
    // invoke bindings go through this agent's router, started after the executor
    bindings: new BindingServer({
      nc,
      logger: logger.child({ part: 'agent:bindings' }),
      invoke: async (req, options) => {
        if (parts.router == null) throw fnmeshError('FNMESH_ERR_BUSY', 'The agent is starting: its router is not up yet')
        return await parts.router.route(req, options)
      }
    }),
    reserved,
    metrics: metrics ?? noMetrics,
    tracer,
    labels: config.labels
  }, { slots: config.slots, billingGranularityMs: config.billingGranularityMs, payloadLimit: config.payloadLimit, maxQueue: config.maxQueue })
  executor.start()
  // Sandboxes of functions deployed with --provisioned, placed by rendezvous hashing over live nodes.
  const provisioner = parts.provisioner = new Provisioner({
    nodeId: () => nodeId,
    // Only nodes whose labels satisfy the function's constraints hold its provisioned sandboxes.
    nodes: (spec) => table.routable().filter(e => eligible(advertLabels(e.advert.labels), spec)).map(e => e.advert.nodeId),
    eligible: (spec) => eligible(config.labels, spec),
    specs: () => functions.all(),
    taskRoot: async (spec) => await functions.taskRoot(spec),
    pool,
    refusing: () => executor.state !== 'running' || metering.refusing() !== '',
    logger: logger.child({ part: 'agent:provisioner' })
  })
  provisioner.start()
  table.on('added', () => { provisioner.check() })
  table.on('removed', () => { provisioner.check() })
  const api = parts.api = new ControlApi({ nc, nodeId, name: config.name, table, metering, logger: logger.child({ part: 'agent:api' }) })
  api.start()
  // The parts meet through these interfaces only: the router sees this node's executor as a
  // LocalNode, the triggers see its free slots and the pool's running count as LocalCapacity.
  const local: LocalNode = executor
  const capacity: LocalCapacity = {
    free: () => executor.state === 'running' ? executor.free : 0,
    running: (key) => pool.busyCount(key)
  }
  // A peer's record comes back with its result; this node keeps the second copy (Metering.keepCopy).
  const meterCopies = { keep: async (bundle: MeterBundle, from: string) => await metering.keepCopy(bundle, from) }
  const router = parts.router = new Router({ nc, nodeId, table, functions, local, meterCopies, tracer, logger: logger.child({ part: 'agent:router' }) }, {
    queueWaitMs: config.queueWaitMs,
    maxQueued: config.maxQueued,
    dispatchGraceMs: config.dispatchGraceMs,
    payloadLimit: config.payloadLimit,
    policy: config.routing
  })
  if (config.router) router.start()
  const placement: TriggerPlacement = {
    eligible: (spec) => eligible(config.labels, spec),
    preferredElsewhere: (spec) => !preferred(config.labels, spec) && table.routable().some(e =>
      !e.self && e.advert.inFlight < e.advert.slots && eligible(advertLabels(e.advert.labels), spec) && preferred(advertLabels(e.advert.labels), spec))
  }
  const triggers = parts.triggers = new TriggerManager({ nc, registry, functions, executor, capacity, metrics, placement, logger: logger.child({ part: 'agent:triggers' }) }, { eventsPurgeMs: config.eventsPurgeMs, meshSize: () => table.routable().length })
  await triggers.start()
  if (config.http != null) {
    const gateway = parts.gateway = new Gateway({
      nc,
      route: async (req, options) => await router.route(req, options),
      specs: () => functions.all(),
      trusted: trust != null ? (spec) => trust.trusts(spec) : undefined,
      agents: () => table.routable().length,
      tracer,
      logger: logger.child({ part: 'agent:gateway' })
    }, { port: config.http.port, host: config.http.host, bodyLimit: config.payloadLimit })
    await gateway.start()
  }
  if (config.membership === 'swim') {
    // Membership "swim" (gossip/swim.ts): joins once this node serves, so nobody routes here before.
    const swim = parts.swim = new Swim({
      nc,
      nodeId,
      privateKey,
      table,
      periodMs: config.swimPeriodMs,
      advert: () => gossip.advert(),
      onMember: (a) => { void gossip.addPeerAddrs(a.nodeId, a.addrs ?? []) },
      onJoined: (id) => { parts.router?.remember(id) },
      logger: logger.child({ part: 'agent:membership' })
    })
    await swim.start()
  } else {
    const discovery = parts.discovery = new NatsDiscovery({ nc, gossip, name: config.name, intervalMs: config.announceIntervalMs, logger: logger.child({ part: 'agent:discovery' }) })
    discovery.start()
  }
  await nc.flush()

  let state: AgentState = 'running'
  let closing: Promise<void> | undefined
  if (config.admin != null && metrics != null) {
    const admin = parts.admin = new AdminServer({
      metrics: async () => ({ contentType: metrics.contentType, text: await metrics.text() }),
      notReady: () => state !== 'running' ? `agent is ${state}` : nc.isClosed() || !natsUp ? 'NATS is not connected' : '',
      dashboard: new DashboardData({
        nc,
        nodeId,
        name: config.name,
        peers: () => table.all(),
        specs: () => functions.all(),
        usage: async (q) => await metering.usage(q),
        records: (fromMs, toMs) => rawRecords(metering.store, fromMs, toMs),
        backlog: async (spec) => await backlog(dlqJsm ??= await jetstreamManager(nc), spec),
        dlq: dlqCounts,
        logger: logger.child({ part: 'agent:dashboard' })
      }),
      logger: logger.child({ part: 'agent:admin' })
    }, { host: config.admin.host, port: config.admin.port, token: adminToken })
    await admin.start()
  }
  logger.info({ nodeId, name: config.name, slots: config.slots, natsServer: nc.getServer(), membership: config.membership, routing: config.routing, addrs: gossip.multiaddrs(), httpPort: parts.gateway?.port, adminPort: parts.admin?.port, otlp: config.otlp?.url, privateSwarm: swarmKey != null, trustedDeployers: trust?.keys.size, nats: config.nats, replicas: config.replicas, meterRecords: metering.store.tree.count, ownMeterRecords: metering.store.tree.perNode().find(d => d.nodeId === nodeId)?.count ?? 0, dataDir: config.dataDir, sandbox: config.sandbox, layers: plan.layers.filter(l => l.active).map(l => l.id), missingLayers: Object.fromEntries(plan.layers.filter(l => !l.active).map(l => [l.id, l.detail])) }, 'agent ready')

  const agent: Agent = {
    nodeId,
    name: config.name,
    config,
    get state () { return state },
    multiaddrs: () => gossip.multiaddrs(),
    httpPort: parts.gateway?.port,
    adminPort: parts.admin?.port,
    peers: () => table.all(),
    routed: () => router.routedTo,
    drain: async () => {
      closing ??= (async () => {
        state = 'draining'
        logger.info({ inFlight: executor.inFlight }, 'draining')
        await gossip.leave()
        await parts.swim?.leave()
        // Pulled events that cannot run any more are handed back to JetStream for other agents.
        await Promise.all([parts.gateway?.drain(), router.drain(), executor.drain(), triggers.stop()])
        await stopParts(parts, logger, true)
        state = 'stopped'
        logger.info('agent stopped')
      })().catch(async (err) => {
        state = 'failed'
        logger.error({ err: String(err?.message ?? err) }, 'drain failed')
        await stopParts(parts, logger, false)
        throw err
      })
      await closing
    },
    destroy: async (err?: Error) => {
      closing ??= (async () => {
        state = err != null ? 'failed' : 'stopped'
        if (err != null) logger.error({ err: err.message }, 'agent destroyed')
        await stopParts(parts, logger, false)
      })()
      await closing
    }
  }
  return agent
}

/** Stops whatever started, in reverse order; `graceful` lets NATS flush */
async function stopParts (parts: Parts, logger: Logger, graceful: boolean): Promise<void> {
  const step = async (what: string, fn: () => unknown): Promise<void> => {
    try { await fn() } catch (err: any) { logger.warn({ part: what, err: String(err?.message ?? err) }, 'error while stopping') }
  }
  await step('admin', async () => await parts.admin?.stop())
  await step('discovery', () => parts.discovery?.stop())
  await step('membership', async () => await parts.swim?.stop())
  await step('triggers', () => { if (!graceful) parts.triggers?.stop().catch((err: any) => { logger.warn({ part: 'triggers', err: String(err?.message ?? err) }, 'error while stopping') }) })
  await step('gateway', () => parts.gateway?.stop())
  await step('router', () => parts.router?.stop())
  await step('api', () => parts.api?.stop())
  await step('provisioner', () => parts.provisioner?.stop())
  await step('executor', () => parts.executor?.stop())
  await step('reserved', () => parts.reserved?.stop())
  await step('sandbox', async () => {
    parts.pool?.stop()
    await parts.pool?.settled(3000)
    parts.plan?.cgroup?.close()
  })
  await step('logs', () => parts.shipper?.stop())
  await step('registry', () => parts.functions?.stop())
  // Every span is ended by now (gateway, router, executor stopped): send what is queued, bounded.
  await step('tracing', async () => await parts.tracer?.shutdown())
  await step('metering', async () => await parts.metering?.stop(graceful))
  await step('gossip', async () => await parts.gossip?.stop())
  await step('nats', async () => {
    if (parts.nc == null || parts.nc.isClosed()) return
    if (graceful) await parts.nc.drain()
    else await parts.nc.close()
  })
}

async function watchNats (nc: NatsConnection, logger: Logger, onState: (up: boolean) => void): Promise<void> {
  for await (const s of nc.status()) {
    if (s.type === 'disconnect' || s.type === 'reconnect') onState(s.type === 'reconnect')
    if (s.type === 'disconnect') logger.warn({ server: (s as { server?: string }).server }, 'NATS connection lost; reconnecting')
    else if (s.type === 'reconnect') logger.info({ server: (s as { server?: string }).server }, 'NATS reconnected')
  }
}

/** Reads a libp2p pre-shared key file ("/key/swarm/psk/1.0.0/", "/base16/", 64 hex digits) */
async function readSwarmKey (path: string): Promise<Uint8Array> {
  let bytes: Buffer
  try { bytes = await readFile(path) } catch (err: any) { throw fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot read the swarm key "${path}": ${String(err?.code ?? err?.message)}`) }
  const lines = bytes.toString('utf8').split(/\r?\n/).map(l => l.trim())
  if (lines[0] !== '/key/swarm/psk/1.0.0/' || lines[1] !== '/base16/' || !/^[0-9a-f]{64}$/i.test(lines[2] ?? '')) {
    throw fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `The swarm key "${path}" is not a libp2p pre-shared key (make one with "fnmesh keys swarm --out FILE")`)
  }
  return Buffer.from(`${lines[0]}\n${lines[1]}\n${lines[2].toLowerCase()}`, 'utf8')
}

/** The admin listener's bearer token: the file's content, trimmed */
async function readAdminToken (path: string): Promise<string> {
  let text: string
  try { text = (await readFile(path, 'utf8')).trim() } catch (err: any) { throw fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot read the admin token "${path}": ${String(err?.code ?? err?.message)}`) }
  if (text.length < 16) throw fnmeshError('FNMESH_ERR_INVALID_ARGUMENT', `The admin token "${path}" is too short: use at least 16 characters`)
  return text
}
