#!/usr/bin/env node
/**
 * The `fnmesh` command line. The only place that touches process signals and process.exit.
 * Errors print one line `error CODE: message` on stderr; exit status 1, or 2 for bad usage.
 */
import '../polyfill.js'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Command, CommanderError, Option } from 'commander'
import { FnmeshError, UnsupportedError, UsageError, formatErrorLine, toErrorInfo } from '../../../proto/errors.js'
import { connect, type FunctionInfo, type Mesh, type NodeInfo } from '../../../sdk/src/client.js'
import { parsePrice } from '../../../sdk/src/usage.js'
import { DEFAULT_NATS_URL } from '../../../core/nats.js'
import { PACKAGE_ROOT } from '../paths.js'
import { MEMBERSHIPS, resolveConfig, type AgentOptions } from '../config.js'
import { ROUTING_POLICIES } from '../router/policies.js'
import { SANDBOX_MODES } from '../sandbox/layers/detect.js'
import { LIMITS } from '../../../core/deploy-options.js'
import { AUTO_LABELS } from '../../../core/placement.js'
import { formatAgo, invokeFailure, parseEnv, progress, readData, table } from './format.js'
import { asUsage, duration, int, otlpOptions, readable, seconds } from './options.js'
import { usageTables, writeExport } from './usage-format.js'
import { addKeyCommands } from './keys.js'
import { addAliasCommands } from './aliases.js'
import { watch } from './watch.js'
import { addNatsAuthOptions, deployHttpOptions, httpDeployFields, natsAuthOf } from './http-options.js'

const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }

const natsOption = (): Option => new Option('--nats <urls>', 'NATS server URL, or a comma-separated list of the servers of a cluster to fail over between (env FNMESH_NATS)').default(process.env.FNMESH_NATS ?? DEFAULT_NATS_URL)
const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

/** The program, for its global NATS credential options (valid before or after the command) */
let root: Command | undefined

async function withMesh<T> (opts: { nats: string }, fn: (mesh: Mesh) => Promise<T>): Promise<T> {
  const mesh = await connect({ servers: opts.nats, auth: natsAuthOf(root?.opts() ?? {}) })
  try {
    return await fn(mesh)
  } finally {
    await mesh.close().catch(() => {})
  }
}

/** `fnmesh functions`' BINDINGS column: "counter=kv:c,out=publish:orders.>", destinations as "on-success=publish:S" */
function bindingsColumn (f: { bindings: string[], onSuccess?: string, onFailure?: string }): string {
  const all = [...f.bindings, ...(f.onSuccess != null && f.onSuccess !== '' ? [`on-success=${f.onSuccess}`] : []), ...(f.onFailure != null && f.onFailure !== '' ? [`on-failure=${f.onFailure}`] : [])]
  return all.join(',') || '-'
}

function json (value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n')
}

function unsupported (what: string): never {
  throw new UnsupportedError('FNMESH_ERR_UNSUPPORTED', `${what} is not available in this version of fnmesh`)
}

export function buildProgram (): Command {
  const program = new Command('fnmesh')
    .description('Serverless functions on machines you own: a peer-to-peer mesh of agents over NATS and libp2p')
    .version(pkg.version)
    .showHelpAfterError(false)
  root = program
  addNatsAuthOptions(program)

  program.command('agent')
    .description('Run a node agent in the foreground until SIGINT/SIGTERM, then drain and exit 0')
    .addOption(natsOption())
    .option('--listen <multiaddr>', 'libp2p listen address (repeatable)', collect)
    .option('--bootstrap <multiaddr>', 'a peer to dial at start (repeatable; optional, agents also meet over NATS)', collect)
    .option('--data <dir>', 'data folder: node key, meter ledger, code cache')
    .option('--slots <n>', 'max concurrent invocations on this node (default: 4 x CPUs)', int('--slots', 1))
    .option('--keepalive <ms>', 'how often an idle node re-sends its capacity advert (default: 200 ms per node of the mesh, 1-10 s)', int('--keepalive', 20))
    .option('--max-queue <n>', 'most invocations waiting for a slot on this node; each waits as long as its caller\'s deadline allows, and one that would not fit is refused at once (default 10000)', int('--max-queue', 0))
    .option('--name <name>', 'node name shown in `fnmesh nodes` (default: host name)')
    .option('--label <key=value>', 'placement label functions can require (--constraint) or prefer (--prefer), e.g. zone=a (repeatable; arch, os, cpus and memory in GiB are set automatically)', collect)
    .option('--http <[host:]port>', 'serve the HTTP gateway on this port (every deployed route; 0 = a free port)')
    .option('--admin <[host:]port>', 'serve /metrics (Prometheus), /healthz and /readyz on this port (host 127.0.0.1 unless given; 0 = a free port)')
    .option('--admin-token <file>', 'bearer token the admin listener asks for (a file, at least 16 characters); required when --admin binds other than loopback', readable('--admin-token'))
    .option('--otlp-endpoint <url>', 'export OpenTelemetry traces over OTLP/HTTP (protobuf) to this collector (base URL; /v1/traces is added unless present). Default: env OTEL_EXPORTER_OTLP_ENDPOINT, else off')
    .option('--otlp-header <name=value>', 'an HTTP header on every trace export, e.g. an API key (repeatable; env OTEL_EXPORTER_OTLP_HEADERS is added too)', collect)
    .option('--otlp-service-name <name>', 'the traces\' service.name (default: env OTEL_SERVICE_NAME, else fnmesh-agent)')
    .option('--swarm-key <file>', 'private swarm: only hosts with this pre-shared key can connect (make one with "fnmesh keys swarm")', readable('--swarm-key'))
    .option('--trust <file|dir>', 'deployer public keys: run only deploys signed by one of them (repeatable)', (v: string, prev?: string[]) => collect(readable('--trust', true)(v), prev))
    .addOption(new Option('--routing <policy>', 'routing policy: least-loaded (load from gossiped adverts), probe (load asked of 2 executors per invocation; adverts at the keepalive only: for large meshes, docs/SCALING.md); the others are baselines for benchmarks (default: least-loaded; probe with --membership swim)').choices([...ROUTING_POLICIES]))
    .addOption(new Option('--membership <mode>', 'how agents know each other: gossip (signed adverts every agent hears, over libp2p) or swim (SWIM over NATS: each agent pings one member a second; flat cost per agent for large meshes; routes by probe; docs/SCALING.md)').choices([...MEMBERSHIPS]).default('gossip'))
    .option('--swim-period <ms>', 'membership swim: how often this agent pings one member; failure detection and membership cost scale with it (default 1000)', int('--swim-period', 50))
    .option('--no-router', 'take no invocations from NATS: only run what other agents route here')
    .addOption(new Option('--sandbox <mode>', 'isolation of functions: auto (every layer this machine offers), strict (refuse to start without the OS layers), none (own process only)').choices([...SANDBOX_MODES]).default('auto'))
    .option('--meter-replicas <n>', 'R: each meter record is held by its node and the R owners of its range, rendezvous-hashed over the live members; R >= N-1 means every node (default 2)', int('--meter-replicas'))
    .option('--replicas <n>', 'the same as --meter-replicas (older name)', int('--replicas'))
    .option('--ack-replicas <n>', 'copies of a meter record besides the executor\'s that exist before its invocation is answered (the router\'s carried copy counts as one; default 1)', int('--ack-replicas'))
    .option('--ack-timeout <ms>', 'longest wait for those copies (default 500); past it, with --ack-replicas 2 or more the invocation fails with FNMESH_ERR_METER_UNAVAILABLE and is run again on another node, and with 1 it is answered and the record is pushed on', int('--ack-timeout', 10, 60_000))
    .option('--fsync-window <ms>', 'longest time a meter ledger write waits for its background fsync (default 50)', int('--fsync-window'))
    .option('--retention <duration>', 'keep raw meter records this long, then only rollups, e.g. 30d (default 30d)', duration('--retention'))
    .option('--billing-granularity <ms>', 'bill durations rounded up to a multiple of this (default 1)', int('--billing-granularity', 1))
    .option('--min-free-mb <mb>', 'take no new work when the data folder has less free space than this (default 64)', int('--min-free-mb'))
    .option('--sync-interval <duration>', 'interval of anti-entropy rounds with a random peer, e.g. 5s (default 5s)', duration('--sync-interval'))
    .option('--tmp-mb <mb>', 'size of each sandbox\'s /tmp in MB (default 512)', int('--tmp-mb', 1))
    .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'silent']).default(process.env.FNMESH_LOG_LEVEL ?? 'info'))
    .action(async (opts) => {
      await import('../polyfill.js')
      const { startAgent } = await import('../agent.js')
      const { createLogger } = await import('../logger.js')
      const logger = createLogger({ level: opts.logLevel, base: { node: opts.name } })
      // Last resort. Every promise on the spec, trigger and gateway paths handles its own
      // errors; one that is still missed is a bug, and Node's default (exit 1) would then let
      // anything that triggers it (a registry value, a request) take down an agent serving every
      // other function, again on each restart. It is logged as FNMESH_ERR_INTERNAL instead.
      process.on('unhandledRejection', (reason: any) => {
        logger.error({ code: 'FNMESH_ERR_INTERNAL', err: String(reason?.message ?? reason), stack: typeof reason?.stack === 'string' ? reason.stack : undefined }, 'unhandled promise rejection (a bug): the agent keeps running')
      })
      const options: AgentOptions = {
        nats: opts.nats,
        natsOptions: { auth: natsAuthOf(program.opts()) },
        swarmKey: opts.swarmKey,
        trust: opts.trust,
        listen: opts.listen,
        bootstrap: opts.bootstrap,
        dataDir: opts.data,
        slots: opts.slots,
        advertIntervalMs: opts.keepalive,
        maxQueue: opts.maxQueue,
        name: opts.name,
        labels: opts.label,
        http: opts.http,
        admin: opts.admin,
        adminToken: opts.adminToken,
        otlp: asUsage('', () => otlpOptions(opts, process.env)),
        routing: opts.routing,
        membership: opts.membership,
        swimPeriodMs: opts.swimPeriod,
        router: opts.router,
        sandbox: opts.sandbox,
        // Layers to leave off, e.g. FNMESH_SANDBOX_DISABLE=mount where bubblewrap misbehaves.
        sandboxDisable: (process.env.FNMESH_SANDBOX_DISABLE ?? '').split(',').map(s => s.trim()).filter(Boolean) as never,
        replicas: opts.meterReplicas ?? opts.replicas,
        ackReplicas: opts.ackReplicas,
        replicaAckTimeoutMs: opts.ackTimeout,
        // Tests shorten how long a node keeps a meter range it no longer owns after membership changed.
        meterHandoffDelayMs: process.env.FNMESH_METER_HANDOFF_DELAY_MS != null ? Number(process.env.FNMESH_METER_HANDOFF_DELAY_MS) : undefined,
        fsyncWindowMs: opts.fsyncWindow,
        // Tests stretch the coalesced meter push to show what the result's copy alone does.
        meterPushDelayMs: process.env.FNMESH_METER_PUSH_DELAY_MS != null ? Number(process.env.FNMESH_METER_PUSH_DELAY_MS) : undefined,
        retentionMs: opts.retention,
        // Tests purge settled events sooner.
        eventsPurgeMs: process.env.FNMESH_EVENTS_PURGE_MS != null ? Number(process.env.FNMESH_EVENTS_PURGE_MS) : undefined,
        billingGranularityMs: opts.billingGranularity,
        minFreeMb: opts.minFreeMb,
        syncIntervalMs: opts.syncInterval,
        tmpMb: opts.tmpMb,
        logger
      }
      // Values out of range are the command line's fault: exit 2 before anything starts.
      asUsage('', () => resolveConfig(options))
      const agent = await startAgent(options)
      await new Promise<void>((resolve) => {
        let signals = 0
        const onSignal = (signal: string): void => {
          if (++signals > 1) {
            logger.warn({ signal }, 'second signal: stopping now')
            void agent.destroy().finally(() => process.exit(1))
            return
          }
          logger.info({ signal }, 'signal received: draining')
          agent.drain().then(resolve, (err) => { logger.error({ err: String(err) }, 'drain failed'); process.exit(1) })
        }
        process.on('SIGINT', onSignal)
        process.on('SIGTERM', onSignal)
      })
    })

  program.command('dev')
    .description('Start a local nats-server (JetStream, temp folder) and N agents; stop everything on Ctrl-C')
    .option('--nodes <n>', 'number of agents', int('--nodes', 1, 32), 3)
    .option('--slots <n>', 'slots per agent', int('--slots', 1))
    .option('--port <port>', 'NATS port (default: a free port)', int('--port', 0, 65535))
    .option('--nats-servers <n>', 'run a NATS cluster of N servers (free ports) instead of one; init makes every asset with min(3, N) replicas', int('--nats-servers', 1, 5), 1)
    .option('--http <port>', 'HTTP gateways on 127.0.0.1: agent i listens on port + i', int('--http', 0, 65535))
    .addOption(new Option('--membership <mode>', 'the agents\' membership: gossip or swim (see fnmesh agent --help)').choices([...MEMBERSHIPS]).default('gossip'))
    .action(async (opts) => {
      const { startDevCluster } = await import('../dev/cluster.js')
      progress(`starting nats-server and ${String(opts.nodes)} agents...`)
      if (opts.natsServers > 1 && opts.port != null) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', 'Options --port and --nats-servers cannot be combined: a cluster takes free ports')
      const cluster = await startDevCluster({ nodes: opts.nodes, slots: opts.slots, nats: { port: opts.port }, natsServers: opts.natsServers, args: opts.membership !== 'gossip' ? ['--membership', String(opts.membership)] : undefined, argsOf: opts.http != null ? (i) => ['--http', `127.0.0.1:${Number(opts.http) + i}`] : undefined })
      process.stdout.write(`NATS   ${cluster.natsUrls}\n`)
      process.stdout.write(table(['AGENT', 'NODE ID', 'HTTP', 'LOG'], cluster.agents.map(a => [a.name, a.nodeId, a.ready.httpPort != null ? `http://127.0.0.1:${String(a.ready.httpPort)}` : '-', `${cluster.dir}/${a.name}.log`])) + '\n')
      process.stdout.write(`\nTry:  export FNMESH_NATS=${cluster.natsUrls}\n      fnmesh deploy ./examples/hello --name hello && fnmesh invoke hello --data '{"name":"mesh"}'\nCtrl-C stops everything.\n`)
      await new Promise<void>((resolve) => {
        const onSignal = (): void => { progress('stopping...'); cluster.stop().then(resolve, resolve) }
        process.once('SIGINT', onSignal)
        process.once('SIGTERM', onSignal)
      })
    })

  program.command('deploy')
    .description('Deploy the function in PATH (a file or a folder) as a new version of NAME')
    .argument('<path>', 'file or folder with the function code')
    .requiredOption('--name <name>', 'function name')
    .option('--handler <file.export>', 'handler (default: index.handler)')
    .option('--runtime <runtime>', 'nodejs (default) or provided: a Lambda custom runtime, the bundle\'s executable bootstrap served the Runtime API')
    .option('--memory <mb>', 'memory limit in MB (default 128)', int('--memory', LIMITS.memoryMb[0], LIMITS.memoryMb[1]))
    .option('--timeout <seconds>', 'timeout per invocation in seconds (default 3)', seconds('--timeout', LIMITS.timeoutMs[1] / 1000))
    .option('--concurrency <n>', 'max concurrent sandboxes of this function per node', int('--concurrency', LIMITS.concurrency[0], LIMITS.concurrency[1]))
    .option('--env <KEY=VALUE>', 'environment variable (repeatable)', (v: string, prev?: string[]) => { asUsage('', () => parseEnv([v])); return collect(v, prev) })
    .option('--on <trigger>', 'event trigger: subject pattern, cron:EXPR, rate:5m, object:BUCKET, kv:BUCKET (repeatable)', collect)
    .option('--egress', 'allow outbound network')
    .option('--bind <NAME=KIND:TARGET[:ro]>', 'binding the function reaches as context.bindings.NAME: kv:BUCKET or object:BUCKET (":ro" read-only), publish:SUBJECT_PATTERN, invoke:FUNCTION (repeatable)', collect)
    .option('--target <ALIAS|VERSION>', 'what the HTTP routes and triggers run: an alias (e.g. live), a version, or $LATEST (default: the latest version)')
    .option('--on-success <publish:SUBJECT>', 'async events: after a run succeeds, publish a CloudEvent with its result on SUBJECT')
    .option('--on-failure <publish:SUBJECT>', 'async events: after the final failure (dead-lettered), publish a CloudEvent with the error and the event on SUBJECT')
    .option('--constraint <key=value>', 'placement: run only on nodes whose labels match ("key!=value" excludes; repeatable; same-key values are alternatives)', collect)
    .option('--prefer <key=value>', 'placement: prefer nodes whose labels match while they have room (repeatable)', collect)
    .option('--retries <n>', 'async events: retries after a failed run (default 2)', int('--retries', LIMITS.retries[0], LIMITS.retries[1]))
    .option('--retry-backoff <duration>', 'async events: delay before the first retry, doubling after each (default 1s)', duration('--retry-backoff'))
    .option('--max-event-age <duration>', 'async events: older events are dead-lettered instead of run (default 6h)', duration('--max-event-age'))
    .option('--reserved <n>', 'at most N runs at once across the whole mesh; calls over it are throttled (FNMESH_ERR_THROTTLED), events wait (default: no cap)', int('--reserved', LIMITS.reserved[0], LIMITS.reserved[1]))
    .option('--provisioned <n>', 'keep N sandboxes warm across the mesh, on distinct nodes, so the first N concurrent calls never start cold (default 0)', int('--provisioned', LIMITS.provisioned[0], LIMITS.provisioned[1]))
    .option('--json', 'print the result as JSON')
    .addOption(natsOption())
  deployHttpOptions(program.commands[program.commands.length - 1])
    .action(async (path: string, opts) => {
      const http = await httpDeployFields(opts)
      await withMesh(opts, async (mesh) => {
        progress(`deploying ${String(opts.name)} from ${path}...`)
        const res = await mesh.deploy({
          ...http,
          name: opts.name,
          path,
          handler: opts.handler,
          runtime: opts.runtime,
          memoryMb: opts.memory,
          timeoutMs: opts.timeout,
          concurrency: opts.concurrency,
          env: parseEnv(opts.env ?? []),
          triggers: opts.on,
          bindings: opts.bind,
          constraints: opts.constraint,
          prefer: opts.prefer,
          target: opts.target,
          onSuccess: opts.onSuccess,
          onFailure: opts.onFailure,
          egress: opts.egress === true ? true : undefined,
          retries: opts.retries,
          retryBackoffMs: opts.retryBackoff,
          maxEventAgeMs: opts.maxEventAge,
          reserved: opts.reserved,
          provisioned: opts.provisioned
        })
        if (opts.json === true) json(res)
        else process.stdout.write(`deployed ${res.name} version ${res.version} (${res.files} files, ${res.sizeBytes} bytes, sha256 ${res.sha256.slice(0, 12)}${res.signedBy != null ? `, signed by ${res.signedBy}` : ''})${res.routes.length > 0 ? `; routes: ${res.routes.join(', ')}` : ''}\n`)
      })
    })

  program.command('invoke')
    .description('Invoke NAME synchronously and print its result as JSON')
    .argument('<name>', 'function name; NAME:ALIAS or NAME:VERSION runs that alias or version')
    .option('--data <json|@file>', 'the event: JSON text, or @FILE to read it from a file (default {})')
    .option('--timeout <seconds>', 'how long to wait for the result (default 60)', seconds('--timeout', 86_400))
    .option('--json', 'on failure also print the whole error payload (errorType, errorMessage, trace, code) as JSON on stdout')
    .option('--stream', 'write the response to stdout as it comes, byte for byte (a streaming handler\'s body; a buffered result as its JSON)')
    .addOption(natsOption())
    .action(async (name: string, opts) => {
      const event = await readData(opts.data)
      await withMesh(opts, async (mesh) => {
        let out: unknown
        try {
          if (opts.stream === true) {
            const s = await mesh.invokeStream(name, event, { timeoutMs: opts.timeout })
            for await (const chunk of s) {
              if (!process.stdout.write(chunk)) await new Promise(resolve => process.stdout.once('drain', resolve))
            }
            return
          }
          out = await mesh.invoke(name, event, { timeoutMs: opts.timeout })
        } catch (err) {
          // (a stream already written to stdout gets no JSON after it)
          throw invokeFailure(err, opts.json === true && opts.stream !== true)
        }
        process.stdout.write(JSON.stringify(out) + '\n')
      })
    })

  program.command('publish')
    .description('Publish an asynchronous event; returns once it is durably accepted')
    .argument('<subject>', 'NATS subject')
    .option('--data <json|@file>', 'the event: JSON text, or @FILE; a CloudEvent (with specversion) is sent as is (default {})')
    .option('--id <id>', 'event id: the same id within 10 minutes is accepted once (default: a new UUID)')
    .option('--type <type>', 'CloudEvent type (default fnmesh.event)')
    .option('--source <source>', 'CloudEvent source (default fnmesh://sdk)')
    .option('--json', 'print the result as JSON')
    .addOption(natsOption())
    .action(async (subject: string, opts) => {
      const data = await readData(opts.data)
      await withMesh(opts, async (mesh) => {
        const res = await mesh.publish(subject, data, { id: opts.id, type: opts.type, source: opts.source })
        if (opts.json === true) json(res)
        else process.stdout.write(`accepted ${res.id} (stream ${res.stream}, seq ${res.seq}${res.duplicate ? ', duplicate: already accepted' : ''})\n`)
      })
    })

  program.command('functions')
    .description('List deployed functions with status (invalid ones with the reason agents refuse them), version, memory, timeout, triggers, bindings and destinations, routes and signature')
    .option('--json', 'print JSON (with --watch: one JSON document per line per refresh)')
    .option('--watch', 'redraw every --interval until Ctrl-C (piped: each refresh printed in turn)')
    .option('--interval <seconds>', 'refresh interval of --watch (default 2)', interval)
    .addOption(natsOption())
    .action(async (opts) => {
      await withMesh(opts, async (mesh) => {
        if (opts.watch === true) { await watchView('fnmesh functions', opts, async (signal) => await mesh.functions({ signal }), functionsTable); return }
        if (opts.interval != null) throw new UsageError('FNMESH_ERR_BAD_USAGE', 'Option --interval needs --watch')
        const fns = await mesh.functions()
        if (opts.json === true) { json(fns); return }
        process.stdout.write(functionsTable(fns) + '\n')
      })
    })

  program.command('init')
    .description('Create every JetStream stream, bucket and object store of the mesh (existing ones kept, scaled up in place to the replicas), and the consumers of deployed functions: run once with admin credentials before agents start, and again after growing the NATS cluster')
    .option('--js-replicas <n>', 'JetStream replicas of every asset (default: min(3, servers in the NATS cluster)); existing assets with fewer are scaled up in place', int('--js-replicas'))
    .option('--json', 'print JSON')
    .addOption(natsOption())
    .action(async (opts) => {
      await withMesh(opts, async (mesh) => {
        const res = await mesh.init({ replicas: opts.jsReplicas })
        if (opts.json === true) { json(res); return }
        process.stdout.write(`initialised with ${res.replicas} replica(s): created ${res.created.join(', ') || 'nothing'}; already there: ${res.existing.join(', ') || 'nothing'}; scaled: ${res.scaled.map(x => `${x.stream} ${x.from}->${x.to}`).join(', ') || 'nothing'}; consumers checked for ${res.functions} function(s)\n`)
      })
    })

  program.command('nodes')
    .description('List live nodes: id, name, slots, in-flight, load, warm functions, last seen')
    .option('--json', 'print JSON (with --watch: one JSON document per line per refresh)')
    .option('--watch', 'redraw every --interval until Ctrl-C (piped: each refresh printed in turn)')
    .option('--interval <seconds>', 'refresh interval of --watch (default 2)', interval)
    .addOption(natsOption())
    .action(async (opts) => {
      await withMesh(opts, async (mesh) => {
        if (opts.watch === true) { await watchView('fnmesh nodes', opts, async (signal) => await mesh.nodes({ signal }), nodesTable); return }
        if (opts.interval != null) throw new UsageError('FNMESH_ERR_BAD_USAGE', 'Option --interval needs --watch')
        const nodes = await mesh.nodes()
        if (opts.json === true) { json(nodes); return }
        process.stdout.write(nodesTable(nodes) + '\n')
      })
    })

  program.command('usage')
    .description('Metering totals per function, per node and per time bucket: invocations, errors, cold starts, billed ms, GB-seconds, cost')
    .option('--fn <name>', 'only this function')
    .option('--since <duration>', 'only invocations that started within this duration, e.g. 15m, 2h, 7d', duration('--since'))
    .option('--until <duration>', 'only invocations that started more than this long ago', duration('--until'))
    .addOption(new Option('--bucket <size>', 'also total per time bucket (UTC)').choices(['minute', 'hour', 'day']))
    .option('--price <prices>', 'turn usage into cost: gbs=PRICE_PER_GB_SECOND,req=PRICE_PER_REQUEST', (v: string) => asUsage('--price', () => parsePrice(v)))
    .addOption(new Option('--export <format>', 'print the raw records (one per invocation id) instead of totals').choices(['csv', 'json']))
    .addOption(new Option('--by <dimension>', 'totals per function version (from the raw records, within their retention)').choices(['version']))
    .option('--via <node-id>', 'ask this agent instead of any one of them')
    .option('--json', 'print JSON')
    .addOption(natsOption())
    .action(async (opts) => {
      const now = Date.now()
      const fromMs = opts.since != null ? now - (opts.since as number) : undefined
      const toMs = opts.until != null ? now - (opts.until as number) : undefined
      const price = opts.price
      await withMesh(opts, async (mesh) => {
        if (opts.export != null) {
          const missing = new Set<string>()
          await writeExport(mesh.exportRecords({ fn: opts.fn, fromMs, toMs, via: opts.via, timeoutMs: 30_000, onMissing: (ids) => { for (const id of ids) missing.add(id) } }), opts.export)
          if (missing.size > 0) process.stderr.write(`warning: ${[...missing].sort().join(', ')} did not answer part of the export: records only they hold may be missing\n`)
          return
        }
        if (opts.by === 'version') {
          const rows = await mesh.usageByVersion({ fn: opts.fn, fromMs, toMs, via: opts.via, timeoutMs: 30_000 })
          if (opts.json === true) { json({ versions: rows }); return }
          process.stdout.write(table(['FUNCTION', 'VERSION', 'INVOCATIONS', 'ERRORS', 'COLD', 'BILLED MS', 'GB-SECONDS'], rows.map(r => [r.function, r.version, r.invocations, r.errors, r.coldStarts, r.billedMs, r.gbSeconds.toFixed(6)])) + '\n')
          return
        }
        const usage = await mesh.usage({ fn: opts.fn, fromMs, toMs, bucket: opts.bucket, price, via: opts.via })
        if (opts.json === true) { json(usage); return }
        process.stdout.write(usageTables(usage) + '\n')
        if (usage.missing.length > 0) process.stderr.write(`warning: ${usage.answered.join(', ')} has not finished an anti-entropy round with ${usage.missing.join(', ')} yet: their newest records may be missing\n`)
      })
    })

  program.command('logs')
    .description("Print a function's log lines, each with its invocation id (time, id, level, message)")
    .argument('<name>', 'function name')
    .option('--follow', 'keep streaming new lines until Ctrl-C')
    .option('--since <duration>', 'only lines logged within this duration, e.g. 15m, 2h', duration('--since'))
    .addOption(natsOption())
    .action(async (name: string, opts) => {
      const sinceMs = opts.since as number | undefined
      const { formatLogLine } = await import('../../../sdk/src/logs.js')
      await withMesh(opts, async (mesh) => {
        const stop = new AbortController()
        const onSignal = (): void => { stop.abort() }
        process.once('SIGINT', onSignal)
        process.once('SIGTERM', onSignal)
        try {
          for await (const line of mesh.logs(name, { follow: opts.follow === true, sinceMs, signal: stop.signal })) {
            if (!process.stdout.write(formatLogLine(line) + '\n')) await new Promise(resolve => process.stdout.once('drain', resolve))
          }
        } finally {
          process.off('SIGINT', onSignal)
          process.off('SIGTERM', onSignal)
        }
      })
    })

  const meter = program.command('meter').description('The meter ledger of each agent: placement, replication, disk')
  meter.command('status')
    .description('Per agent: records held, live members, ranges (one node\'s records of one hour) it owns, holds without owning, has not seen confirmed by every owner, and dropped after handoff; then those ranges')
    .option('--node <id>', 'only this agent')
    .option('--json', 'print JSON')
    .addOption(natsOption())
    .action(async (opts) => {
      await withMesh(opts, async (mesh) => {
        const list = (await mesh.meterStatus({ nodeId: opts.node })).sort((a, b) => a.nodeId.localeCompare(b.nodeId))
        if (opts.json === true) { json(list); return }
        process.stdout.write(table(['NODE', 'RECORDS', 'OWN', 'MEMBERS', 'R', 'OWNED', 'FOREIGN', 'UNDER-REPLICATED', 'DROPPED', 'UNACKED RECORDS', 'LAG P99', 'DISK', 'STATUS'],
          list.map(s => [s.nodeId, s.records, s.ownRecords, s.members, s.replicas, s.ownedRanges, s.foreignRanges, s.underReplicatedRanges, s.droppedRanges, s.underReplicated, `${Math.round(s.lagP99Ms)} ms`, `${(s.diskBytes / 1048576).toFixed(1)} MiB`, s.refusing !== '' ? `refusing work: ${s.refusing}` : 'ok'])) + '\n')
        const ranges = list.flatMap(s => s.ranges.map(r => [s.nodeId, r.nodeId, new Date(r.hourMs).toISOString().slice(0, 13) + ':00Z', r.count, r.owned ? 'owned' : 'foreign', r.owners.join(','), r.unconfirmed.join(',') || '-']))
        if (ranges.length > 0) process.stdout.write('\nRanges not settled (up to 50 per agent):\n' + table(['HELD BY', 'RECORDS OF', 'HOUR', 'COUNT', 'HERE', 'OWNERS', 'UNCONFIRMED'], ranges) + '\n')
      })
    })

  const dlq = program.command('dlq').description('Manage events that exhausted their retries (or were too old, or invalid)')
  dlq.command('list').description('list dead-lettered events with why').option('--fn <name>', 'only this function').option('--json', 'print JSON').addOption(natsOption())
    .action(async (opts) => {
      await withMesh(opts, async (mesh) => {
        const list = await mesh.dlqList({ fn: opts.fn })
        if (opts.json === true) { json(list); return }
        process.stdout.write(table(['SEQ', 'FUNCTION', 'EVENT ID', 'TRIGGER', 'ATTEMPTS', 'REASON', 'ERROR', 'LAST ATTEMPT'],
          list.map(d => [d.seq, d.function, d.eventId, d.trigger || '-', d.attempts, d.reason, d.error != null ? `${d.error.code}: ${d.error.errorMessage}`.slice(0, 80) : '-', d.lastAttemptAt || '-'])) + '\n')
      })
    })
  dlq.command('replay').description('run dead-lettered events again (with fresh retries) and remove them from the queue').option('--fn <name>', 'only this function').option('--json', 'print JSON').addOption(natsOption())
    .action(async (opts) => {
      await withMesh(opts, async (mesh) => {
        const res = await mesh.dlqReplay({ fn: opts.fn })
        if (opts.json === true) json(res)
        else process.stdout.write(`replayed ${res.replayed} events\n`)
      })
    })
  dlq.command('purge').description('delete dead-lettered events').option('--fn <name>', 'only this function').option('--json', 'print JSON').addOption(natsOption())
    .action(async (opts) => {
      await withMesh(opts, async (mesh) => {
        const res = await mesh.dlqPurge({ fn: opts.fn })
        if (opts.json === true) json(res)
        else process.stdout.write(`purged ${res.purged} events\n`)
      })
    })

  addKeyCommands(program, withMesh, natsOption, int)
  addAliasCommands(program, withMesh, natsOption)

  return program
}

/** The `fnmesh functions` table, and below it the reason of each invalid function */
function functionsTable (fns: FunctionInfo[]): string {
  const signed = (f: FunctionInfo): string => f.signature === 'unsigned' ? 'no' : f.signature === 'invalid' ? 'INVALID' : f.signedBy
  const lines = [table(['NAME', 'STATUS', 'VERSION', 'HANDLER', 'MEMORY', 'TIMEOUT', 'TRIGGERS', 'BINDINGS', 'ROUTES', 'BACKLOG', 'RETRIES', 'SIZE', 'SIGNED', 'DEPLOYED'],
    fns.map(f => [f.name, f.status, f.version, f.handler || '-', `${f.memoryMb}MB`, `${f.timeoutMs / 1000}s`, f.triggers.join(' ') || '-', bindingsColumn(f), f.routes.join(', ') || '-', f.backlog, f.retries, f.sizeBytes, signed(f), f.deployedAt || '-'].map(safe)))]
  // Reasons below the table: one line each, too long for a column.
  for (const f of fns) if (f.status !== 'ok') lines.push(`invalid ${f.name}: ${f.code}: ${String(safe(f.reason.replace(/\s*\n\s*/g, ' ').slice(0, 500)))}`)
  return lines.join('\n')
}

/** The `fnmesh nodes` table */
function nodesTable (nodes: NodeInfo[]): string {
  // Labels a node was given (--label); the automatic ones are in --json.
  const given = (n: NodeInfo): string => Object.entries(n.labels).filter(([k]) => !(AUTO_LABELS as readonly string[]).includes(k)).map(([k, v]) => `${k}=${v}`).join(',') || '-'
  return table(['ID', 'NAME', 'SLOTS', 'IN-FLIGHT', 'LOAD', 'INVOCATIONS', 'COLD', 'WARM', 'WARM FUNCTIONS', 'LABELS', 'LAST SEEN', 'STATUS'],
    nodes.map(n => [n.id, n.name, n.slots, n.inFlight, `${Math.round(n.load * 100)}%`, n.invocations, n.coldStarts, n.warmStarts, [...n.warm, ...n.provisioned.map(k => `${k}(provisioned)`)].join(',') || '-', given(n), n.self ? 'self' : formatAgo(n.lastSeenMs), n.refusing !== '' ? `refusing work: ${n.refusing}` : n.draining ? 'draining' : 'ok'].map(safe)))
}

/** What a registry writer or a peer's advert stored reaches the terminal: no control characters */
function safe (v: string | number): string | number {
  return typeof v === 'string' ? v.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?') : v
}

/** --interval: seconds from 0.2 to 3600, as ms */
function interval (value: string): number {
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || n < 0.2 || n > 3600) throw new UsageError('FNMESH_ERR_BAD_USAGE', `Option --interval expects seconds from 0.2 to 3600, got "${value}"`)
  return Math.round(n * 1000)
}

/** `--watch`: the view redrawn until SIGINT or SIGTERM, then exit 0 */
async function watchView<T> (title: string, opts: { json?: boolean, interval?: number }, read: (signal: AbortSignal) => Promise<T>, render: (value: T) => string): Promise<void> {
  const stop = new AbortController()
  const onSignal = (): void => { stop.abort() }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    await watch({ title, read, render, intervalMs: opts.interval ?? 2000, json: opts.json === true, signal: stop.signal })
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

function fail (err: unknown): never {
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0)
    process.exit(err.exitCode === 0 ? 0 : 2)
  }
  process.stderr.write(`error ${formatErrorLine(err)}\n`)
  if (process.env.FNMESH_DEBUG === '1' && err instanceof Error) process.stderr.write(`${err.stack ?? ''}\n`)
  const usage = err instanceof FnmeshError && toErrorInfo(err).code === 'FNMESH_ERR_BAD_USAGE'
  process.exit(usage ? 2 : 1)
}

async function main (): Promise<void> {
  const program = buildProgram()
  const setup = (cmd: Command): void => {
    cmd.exitOverride()
    cmd.configureOutput({
      outputError: (text, write) => { write(`error FNMESH_ERR_BAD_USAGE: ${text.replace(/^error:\s*/i, '').trim().replace(/\s*\n\s*/g, ' ')}\n`) }
    })
    for (const c of cmd.commands) setup(c)
  }
  setup(program)
  try {
    await program.parseAsync(process.argv)
  } catch (err) {
    fail(err)
  }
  // Flush what was printed, then exit even if a library left a handle open.
  await new Promise<void>(resolve => { process.stdout.write('', () => { resolve() }) })
  process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0)
}

void main()
