/**
 * Agents as real child processes (`fnmesh agent`), and a local mesh of them on one NATS server:
 * `fnmesh dev`, the demo, the integration tests and the benchmarks all start agents this way.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createWriteStream, readFileSync, type WriteStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { InternalError } from '../../../proto/errors.js'
import { distPath } from '../paths.js'
import { startNatsServer, type NatsServer, type NatsServerOptions } from './nats-server.js'
import { startNatsCluster } from './nats-cluster.js'
import { initMesh, type InitOptions, type InitResult } from '../../../core/init.js'
import { connectNats } from '../../../core/nats.js'
import { natsAuthFromEnv, type NatsAuth } from '../../../core/nats-auth.js'

/** The compiled CLI entry */
export const CLI_PATH = distPath('node/src/cli/main.js')

export interface AgentProcessOptions {
  nats: string
  name: string
  dataDir: string
  slots?: number
  bootstrap?: string[]
  /** @default ["/ip4/127.0.0.1/tcp/0"] */
  listen?: string[]
  /** more `fnmesh agent` flags */
  args?: string[]
  /** environment additions (FNMESH_LOG_LEVEL, ...) */
  env?: Record<string, string>
  /** Node flags before the CLI entry (e.g. `--cpu-prof`, which NODE_OPTIONS may not carry) */
  nodeArgs?: string[]
  /** Agent log level; "info" or lower is needed to see it become ready. @default "info" */
  logLevel?: 'trace' | 'debug' | 'info'
  /** a file to append the agent's log lines to */
  logFile?: string
  /** @default 30000 */
  readyTimeoutMs?: number
  /** Command prefix the agent runs under, e.g. ["ip", "netns", "exec", "h1"] (it must exec, keeping the pid) */
  wrap?: string[]
}

export class AgentProcess {
  nodeId = ''
  addrs: string[] = []
  /** the agent's "agent ready" log line (node id, addresses, sandbox layers...) */
  ready: Record<string, unknown> = {}
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  private tail = ''
  private readonly log: WriteStream | undefined
  private readonly listeners = new Set<(line: Record<string, unknown>) => void>()

  constructor (readonly options: AgentProcessOptions, readonly child: ChildProcess) {
    this.log = options.logFile != null ? createWriteStream(options.logFile, { flags: 'a' }) : undefined
    this.exited = new Promise(resolve => { child.once('exit', (code, signal) => { this.log?.end(); resolve({ code, signal }) }) })
    let buf = ''
    child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      this.log?.write(text)
      this.tail = (this.tail + text).slice(-8192)
      buf += text
      let nl
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        if (!line.startsWith('{')) continue
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>
          for (const l of this.listeners) l(parsed)
        } catch {}
      }
    })
  }

  get name (): string { return this.options.name }
  get pid (): number | undefined { return this.child.pid }
  get running (): boolean { return this.child.exitCode == null && this.child.signalCode == null }
  /** the last 8 KB the agent logged */
  get logTail (): string { return this.tail }

  /** Resolves on the first log line that `match` accepts */
  async waitForLog (match: (line: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { done(); reject(new InternalError('FNMESH_ERR_INTERNAL', `Agent ${this.name} did not log the expected line within ${timeoutMs} ms; last output: ${this.tail.slice(-2000)}`)) }, timeoutMs)
      const onExit = (): void => { done(); reject(new InternalError('FNMESH_ERR_INTERNAL', `Agent ${this.name} exited: ${this.tail.slice(-2000)}`)) }
      const listener = (line: Record<string, unknown>): void => { if (match(line)) { done(); resolve(line) } }
      const done = (): void => { clearTimeout(timer); this.listeners.delete(listener); this.child.off('exit', onExit) }
      this.listeners.add(listener)
      this.child.once('exit', onExit)
    })
  }

  /** Sends a signal (SIGKILL to crash it, SIGTERM to drain it) */
  kill (signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.running) this.child.kill(signal)
  }

  /** SIGTERM and wait for the exit; SIGKILL after `timeoutMs` */
  async stop (timeoutMs = 20_000): Promise<{ code: number | null, signal: NodeJS.Signals | null }> {
    if (!this.running) return await this.exited
    this.child.kill('SIGTERM')
    const timer = setTimeout(() => { this.kill('SIGKILL') }, timeoutMs)
    try { return await this.exited } finally { clearTimeout(timer) }
  }
}

let wrapperCache: string[] | undefined
function parentDeathWrapper (): string[] {
  wrapperCache ??= spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true']).status === 0 ? ['setpriv', '--pdeathsig', 'KILL', '--'] : []
  return wrapperCache
}

/** Starts `fnmesh agent` as a child process and waits until it serves */
export async function spawnAgent (options: AgentProcessOptions): Promise<AgentProcess> {
  const args = [
    CLI_PATH, 'agent',
    '--nats', options.nats,
    '--name', options.name,
    '--data', options.dataDir,
    ...(options.listen ?? ['/ip4/127.0.0.1/tcp/0']).flatMap(l => ['--listen', l]),
    ...(options.bootstrap ?? []).flatMap(b => ['--bootstrap', b]),
    ...(options.slots != null ? ['--slots', String(options.slots)] : []),
    '--log-level', options.logLevel ?? 'info',
    ...(options.args ?? [])
  ]
  // With setpriv, the kernel kills the agent if whoever started it dies (a test run, `fnmesh dev`).
  const wrapper = [...parentDeathWrapper(), ...(options.wrap ?? [])]
  const node = [...(options.nodeArgs ?? []), ...args]
  const child = spawn(wrapper.length > 0 ? wrapper[0] : process.execPath, [...wrapper.slice(1), ...(wrapper.length > 0 ? [process.execPath] : []), ...node], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...options.env }
  })
  const agent = new AgentProcess(options, child)
  let ready
  try {
    ready = await agent.waitForLog(l => l.msg === 'agent ready', options.readyTimeoutMs ?? 30_000)
  } catch (err) {
    agent.kill('SIGKILL')
    throw err
  }
  agent.ready = ready
  agent.nodeId = String(ready.nodeId)
  agent.addrs = (ready.addrs as string[]) ?? []
  return agent
}

export interface DevClusterOptions {
  /** @default 3 */
  nodes?: number
  /** slots per agent, or one value per agent */
  slots?: number | number[]
  nats?: NatsServerOptions
  /** NATS servers, clustered (127.0.0.1, free ports) when more than 1. @default 1 */
  natsServers?: number
  /** environment additions for every agent */
  env?: Record<string, string>
  /** Node flags for every agent (e.g. `--cpu-prof --cpu-prof-dir=DIR`) */
  nodeArgs?: string[]
  /** more `fnmesh agent` flags for every agent */
  args?: string[]
  /** how long each agent may take to become ready (a loaded machine, many agents) @default 30000 */
  readyTimeoutMs?: number
  /** more flags for agent i (0-based), after `args` */
  argsOf?: (i: number) => string[]
  /**
   * Credentials of the `fnmesh init` step run before agents start (agents never create
   * JetStream assets); what it leaves out comes from `env`, then the process environment.
   * @default the agents' FNMESH_NATS_* variables
   */
  initAuth?: NatsAuth
}

/** `fnmesh init` against `url`: every stream, bucket and object store of the mesh */
export async function initNats (url: string, auth?: NatsAuth, options: InitOptions = {}): Promise<InitResult> {
  const nc = await connectNats({ servers: url, name: 'fnmesh-init', auth })
  try {
    return await initMesh(nc, options)
  } finally {
    await nc.close().catch(() => {})
  }
}

export interface DevCluster {
  /** the (first) NATS server */
  nats: NatsServer
  /** every NATS server (one unless natsServers was given) */
  natsServers: NatsServer[]
  /** their URLs, comma-separated: what agents get as --nats */
  natsUrls: string
  agents: AgentProcess[]
  /** folder with agent data and logs (agent-N.log) */
  dir: string
  /** Starts one more agent, named agent-<n> */
  addAgent: (slots?: number, args?: string[]) => Promise<AgentProcess>
  /** Stops every agent (drain) and the NATS server, and removes the folder */
  stop: () => Promise<void>
}

export async function startDevCluster (options: DevClusterOptions = {}): Promise<DevCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'fnmesh-dev-'))
  const natsServers = (options.natsServers ?? 1) > 1
    ? (await startNatsCluster(options.natsServers ?? 1, options.nats)).servers
    : [await startNatsServer(options.nats)]
  const nats = natsServers[0]
  const natsUrls = natsServers.map(s => s.url).join(',')
  const agents: AgentProcess[] = []
  let n = 0
  const addAgent = async (slots?: number, extra: string[] = []): Promise<AgentProcess> => {
    const i = ++n
    const name = `agent-${i}`
    const agent = await spawnAgent({
      nats: natsUrls,
      name,
      dataDir: join(dir, name),
      slots,
      env: options.env,
      nodeArgs: options.nodeArgs,
      args: [...(options.args ?? []), ...extra],
      logFile: join(dir, `${name}.log`),
      readyTimeoutMs: options.readyTimeoutMs
    })
    agents.push(agent)
    return agent
  }
  const stop = async (): Promise<void> => {
    await Promise.all(agents.map(async a => await a.stop()))
    await Promise.all(natsServers.map(async s => await s.stop()))
    // An agent killed with SIGKILL leaves its slots' tmpfs mounted (its next start would unmount them).
    unmountUnder(dir)
    await rm(dir, { recursive: true, force: true })
  }
  try {
    // As the agents would connect (TLS files, credentials in `env`), unless told otherwise.
    await initNats(natsUrls, natsAuthFromEnv(options.initAuth ?? {}, { ...process.env, ...options.env }))
    const count = options.nodes ?? 3
    const slotsOf = (i: number): number | undefined => Array.isArray(options.slots) ? options.slots[i] : options.slots
    // Started together: each finds the others over NATS discovery.
    await Promise.all(Array.from({ length: count }, async (_, i) => await addAgent(slotsOf(i), options.argsOf?.(i))))
    agents.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }))
  } catch (err) {
    await stop()
    throw err
  }
  return { nats, natsServers, natsUrls, agents, dir, addAgent, stop }
}

/** Lazily unmounts every mount point under `dir` (deepest first) */
function unmountUnder (dir: string): void {
  let lines: string[]
  try { lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n') } catch { return }
  const prefix = dir.endsWith('/') ? dir : `${dir}/`
  const points = lines.map(l => l.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p): p is string => p?.startsWith(prefix) === true)
    .sort((a, b) => b.length - a.length)
  for (const p of points) spawnSync('umount', ['-l', p], { stdio: 'ignore' })
}
