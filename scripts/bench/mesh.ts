/**
 * The mesh under test, shared by the figures that need it: a real nats-server and 3 agent
 * processes from startDevCluster (default slots), an SDK client, an echo function, and the raw
 * baseline on the same nats-server: a plain echo responder in its own process plus a separate
 * NATS connection in this process to call it.
 */
import { spawn } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { NatsConnection } from '@nats-io/transport-node'
import { startDevCluster, type DevCluster } from '../../node/src/dev/cluster.js'
import { distPath } from '../../node/src/paths.js'
import { connect, type Mesh } from '../../sdk/src/client.js'
import { connectNats } from '../../core/nats.js'
import type { Cleanup } from './cleanup.js'
import { descendantsOf, type CpuGroups } from './cpu.js'
import { note, step } from './progress.js'

export const AGENTS = 3
export const ECHO_FUNCTION = 'bench-echo'
export const RAW_SUBJECT = 'bench.raw.echo'
export const PAYLOAD_BYTES = 1024

export interface MeshEnv {
  cluster: DevCluster
  /** SDK client (its own NATS connection) */
  client: Mesh
  /** a second connection, for the raw baseline and for taps */
  raw: NatsConnection
  /** the 1 KB event, and the same bytes for the raw baseline */
  event: { pad: string }
  eventBytes: Uint8Array
  /** agent name of a node id */
  agentName: (nodeId: string) => string
  /** total slots of the agents */
  slots: number
  /** folder to write function code into */
  workDir: string
  /** processes to account CPU to: this one (the client), nats-server, agents, sandboxes, raw responder */
  cpuGroups: CpuGroups
  /** deploys a function whose handler module is `source` (index.mjs) */
  deployCode: (name: string, source: string) => Promise<void>
}

/** `{"pad":"xxx..."}` of exactly `bytes` bytes of JSON */
export function paddedEvent (bytes: number): { pad: string } {
  return { pad: 'x'.repeat(bytes - '{"pad":""}'.length) }
}

export async function startMeshEnv (cleanup: Cleanup): Promise<MeshEnv> {
  const workDir = await cleanup.tempDir('fn')
  // FNMESH_BENCH_AGENT_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") are Node flags
  // for the agents only: a CPU profile of each agent under the bench's load, written when it stops.
  const nodeArgs = (process.env.FNMESH_BENCH_AGENT_NODE_ARGS ?? '').split(/\s+/).filter(Boolean)
  const starting = startDevCluster({ nodes: AGENTS, nodeArgs })
  // Registered before the cluster is up: an interrupt during start-up still stops it.
  cleanup.defer('stop the dev cluster', async () => { await (await starting.catch(() => undefined))?.stop() }, 60_000)
  const cluster = await step(`starting nats-server and ${AGENTS} agents`, async () => await starting)
  const client = await connect({ servers: cluster.nats.url })
  cleanup.defer('close the SDK client', async () => { await client.close() })
  const raw = await connectNats({ servers: cluster.nats.url, name: 'fnmesh-bench-raw' })
  cleanup.defer('close the raw NATS connection', async () => { await raw.close() })

  await step('waiting for every agent to see the others', async () => {
    const deadline = Date.now() + 20_000
    for (;;) {
      let seen = 0
      // Each request is answered by one agent of the queue group: ask several times.
      for (let i = 0; i < 6; i++) if ((await client.nodes({ timeoutMs: 2000 })).length === AGENTS) seen++
      if (seen === 6) return
      if (Date.now() > deadline) throw new Error(`agents did not all see ${AGENTS} nodes within 20 s`)
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  })

  const responderPid = await startResponder(cleanup, cluster.nats.url)

  const deployCode = async (name: string, source: string): Promise<void> => {
    const dir = join(workDir, name)
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, 'index.mjs'), source)
    await client.deploy({ name, path: dir, timeoutMs: 10_000 })
  }
  await deployCode(ECHO_FUNCTION, 'export const handler = async (event) => event\n')

  const names = new Map(cluster.agents.map(a => [a.nodeId, a.name]))
  const event = paddedEvent(PAYLOAD_BYTES)
  const slots = (await client.nodes()).reduce((n, x) => n + x.slots, 0)
  return {
    cluster,
    client,
    raw,
    event,
    eventBytes: Buffer.from(JSON.stringify(event)),
    agentName: (id) => names.get(id) ?? id,
    slots,
    workDir,
    deployCode,
    cpuGroups: {
      client: () => [process.pid],
      'nats-server': () => [cluster.nats.pid],
      agents: () => cluster.agents.map(a => a.pid),
      // Descendants, not children: a sandbox under bwrap or unshare is the monitor's child.
      sandboxes: (procs) => descendantsOf(procs, cluster.agents.map(a => a.pid)),
      'raw responder': () => [responderPid]
    }
  }
}

/** The raw baseline's responder process; resolves once it is subscribed */
async function startResponder (cleanup: Cleanup, url: string): Promise<number | undefined> {
  const child = spawn(process.execPath, [distPath('scripts/bench/echo-responder.js'), url, RAW_SUBJECT], { stdio: ['pipe', 'pipe', 'inherit'] })
  const exited = new Promise(resolve => child.once('exit', resolve))
  cleanup.defer('stop the raw echo responder', async () => {
    if (child.exitCode != null || child.signalCode != null) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  })
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error('the raw echo responder did not start within 15 s')) }, 15_000)
    child.stdout.setEncoding('utf8').on('data', (text: string) => { if (text.includes('ready')) { clearTimeout(timer); resolve() } })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`the raw echo responder exited with status ${String(code)}`)) })
  })
  note(`raw echo responder ready (pid ${String(child.pid)}, subject ${RAW_SUBJECT})`)
  return child.pid
}
