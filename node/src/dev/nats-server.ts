/**
 * Runs a real nats-server with JetStream in a temp folder, on a free port: for `fnmesh dev`,
 * the demo, the tests and the benchmarks.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { appendFileSync, existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { TransportError } from '../../../proto/errors.js'
import { RECOMMENDED_MAX_PAYLOAD } from '../../../proto/subjects.js'

export interface NatsServerOptions {
  /** @default a free port */
  port?: number
  /** JetStream store folder. @default a new temp folder, removed on stop */
  storeDir?: string
  /** @default 8 MiB */
  maxPayload?: number
  /** extra lines for the config file */
  extraConfig?: string
  /** Client listen address. @default 127.0.0.1 */
  host?: string
  /** `server_name` (needed in a cluster) */
  serverName?: string
  /** Cluster membership: routes to every server of the cluster (this one's included is fine) */
  cluster?: { name: string, port: number, routes: string[], host?: string }
  /** Command prefix the server runs under, e.g. ["ip", "netns", "exec", "h1"] */
  wrap?: string[]
}

export interface NatsServer {
  url: string
  port: number
  storeDir: string
  readonly pid: number | undefined
  /** SIGKILL (crash) or SIGTERM; does not remove the store */
  kill: (signal?: NodeJS.Signals) => Promise<void>
  /** Starts the server again on the same port and store (after kill) */
  restart: () => Promise<void>
  /** Starts it again if it is not running (after kill, e.g. a SIGTERM of a rolling restart) */
  start: () => Promise<void>
  /** Stops the server and removes what it created */
  stop: () => Promise<void>
}

/** Path of the nats-server binary, or an error saying how to install it */
export function findNatsServer (): string {
  const found = spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' }).stdout.trim()
  if (found !== '') return found
  for (const p of ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']) if (existsSync(p)) return p
  throw new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', 'nats-server is not installed: run "sudo apt-get install -y nats-server" (Debian/Ubuntu) or put the binary from https://github.com/nats-io/nats-server/releases on your PATH')
}

let setprivCache: boolean | undefined
function hasSetpriv (): boolean {
  setprivCache ??= spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true']).status === 0
  return setprivCache
}

export async function startNatsServer (options: NatsServerOptions = {}): Promise<NatsServer> {
  const binary = findNatsServer()
  const dir = await mkdtemp(join(tmpdir(), 'fnmesh-nats-'))
  const storeDir = options.storeDir ?? join(dir, 'jetstream')
  const conf = join(dir, 'nats.conf')
  let port = options.port ?? -1
  const host = options.host ?? '127.0.0.1'
  const writeConf = async (): Promise<void> => {
    const c = options.cluster
    await writeFile(conf, [
      `listen: "${host}:${port}"`,
      ...(options.serverName != null ? [`server_name: ${JSON.stringify(options.serverName)}`] : []),
      ...(c != null ? [`cluster { name: ${JSON.stringify(c.name)}, listen: "${c.host ?? host}:${c.port}", routes: [${c.routes.map(r => JSON.stringify(r)).join(', ')}] }`] : []),
      `max_payload: ${options.maxPayload ?? RECOMMENDED_MAX_PAYLOAD}`,
      `jetstream { store_dir: ${JSON.stringify(storeDir)} }`,
      options.extraConfig ?? ''
    ].join('\n'))
  }
  await writeConf()
  let child: ChildProcess | undefined
  // FNMESH_NATS_LOG_DIR: keep each server's log there (<server name>.log), to diagnose a failed run.
  const logDir = process.env.FNMESH_NATS_LOG_DIR
  const logTo = logDir != null && logDir !== '' ? join(logDir, `${options.serverName ?? basename(dir)}.log`) : undefined
  const launch = async (): Promise<void> => {
    // setpriv: the kernel kills the server if whoever started it dies (it execs: same pid).
    const wrap = [...(hasSetpriv() ? ['setpriv', '--pdeathsig', 'KILL', '--'] : []), ...(options.wrap ?? [])]
    const proc = spawn(wrap.length > 0 ? wrap[0] : binary, [...wrap.slice(1), ...(wrap.length > 0 ? [binary] : []), '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
    child = proc
    let log = ''
    let started = false
    port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `nats-server did not start within 10 s: ${log.slice(-500)}`)) }, 10_000)
      proc.stderr?.setEncoding('utf8').on('data', (text: string) => {
        if (logTo != null) appendFileSync(logTo, text)
        if (started) return
        log += text
        const m = /Listening for client connections on [^\s]*:(\d+)/.exec(log)
        if (m != null) { clearTimeout(timer); started = true; log = ''; resolve(Number(m[1])) }
      })
      proc.on('exit', (code) => { clearTimeout(timer); reject(new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', `nats-server exited with status ${String(code)}: ${log.slice(-500)}`)) })
    })
    // Fix the port so a restart comes back on the same one.
    await writeConf()
  }
  await launch()
  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const proc = child
    if (proc == null || proc.exitCode != null || proc.signalCode != null) return
    const exited = new Promise(resolve => proc.once('exit', resolve))
    proc.kill(signal)
    await exited
  }
  return {
    get url () { return `nats://${host}:${port}` },
    get port () { return port },
    storeDir,
    get pid () { return child?.pid },
    kill,
    restart: async () => { await kill('SIGKILL'); await launch() },
    start: async () => { if (child == null || child.exitCode != null || child.signalCode != null) await launch() },
    stop: async () => {
      await kill('SIGTERM')
      await rm(dir, { recursive: true, force: true })
    }
  }
}
