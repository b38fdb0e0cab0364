/**
 * Which isolation layers this machine offers, probed at start (never assumed), and the plan the
 * pool spawns every sandbox with. Each probe runs the real tool once; a layer that fails its
 * probe is missing with the reason. `--sandbox strict` refuses to start when an OS layer is
 * missing; `auto` uses what there is; `none` only keeps sandboxes in their own processes.
 */
import { spawnSync } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { join } from 'node:path'
import { probeCgroups, type CgroupHost } from './cgroup.js'

/** Isolation modes of `--sandbox` */
export const SANDBOX_MODES = ['auto', 'strict', 'none'] as const
export type SandboxMode = typeof SANDBOX_MODES[number]

/** The operating system's layers (namespaces, a uid per sandbox, cgroups) */
export const OS_LAYERS = ['mount', 'net', 'pid', 'uid', 'cgroup-memory', 'cgroup-pids', 'cgroup-cpu'] as const
/** Every layer that can be turned off (the own process, 'process', always stays) */
export const OPTIONAL_LAYERS = ['permission', ...OS_LAYERS, 'rlimit'] as const
export type LayerId = 'process' | typeof OPTIONAL_LAYERS[number]

export interface Layer {
  id: LayerId
  active: boolean
  /** how the layer is applied, or why it is missing */
  detail: string
}

export interface Tools { sh: string, bwrap?: string, unshare?: string, setpriv?: string, prlimit?: string }

export interface IsolationPlan {
  readonly mode: SandboxMode
  readonly layers: Layer[]
  readonly tools: Tools
  /** Node's permission model in the child */
  readonly permission: boolean
  /** who makes the namespaces: bwrap (mount + net + pid + ipc + uts) or unshare (net + pid + ipc + uts) */
  readonly namespaces: 'bwrap' | 'unshare' | undefined
  /** functions without egress get no network */
  readonly net: boolean
  /** the function sees only the runtime, its code, its tmp and the system's /usr */
  readonly mount: boolean
  /** own pid, ipc and uts namespaces */
  readonly pid: boolean
  /** each worker runs as uid `uidBase + slot` (the agent runs as root) */
  readonly uidBase: number | undefined
  readonly cgroup: CgroupHost | undefined
  /** RLIMIT_DATA (and RLIMIT_NPROC under a separate uid) where cgroups are missing */
  readonly rlimit: boolean
  /** the kernel kills sandboxes whose agent dies (setpriv --pdeathsig) */
  readonly parentDeathSignal: boolean
}

export interface DetectOptions {
  mode?: SandboxMode
  /** First uid of the sandboxes when running as root. @default 1900000 */
  uidBase?: number
  /** Layers to leave off even where available (benchmarks, tests) */
  disable?: LayerId[]
}

const SEARCH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']

export function which (name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), ...SEARCH]
  for (const dir of dirs) {
    const file = join(dir, name)
    try { accessSync(file, constants.X_OK); return file } catch {}
  }
  return undefined
}

const CLEAN_ENV = { PATH: '/usr/local/bin:/usr/bin:/bin' }

function runs (file: string | undefined, args: string[]): string | true {
  if (file == null) return 'not installed'
  const res = spawnSync(file, args, { env: CLEAN_ENV, stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000, encoding: 'utf8' })
  if (res.status === 0) return true
  return (res.error?.message ?? res.stderr?.trim().split('\n').pop() ?? `exit status ${String(res.status)}`) || `exit status ${String(res.status)}`
}

const isRoot = (): boolean => process.getuid?.() === 0

/** Probes every layer and returns the plan for `mode` */
export function detectIsolation (options: DetectOptions = {}): IsolationPlan {
  const mode = options.mode ?? 'auto'
  const off = new Set<LayerId>(options.disable ?? [])
  if (mode === 'none') for (const id of OPTIONAL_LAYERS) off.add(id)
  const tools: Tools = { sh: which('sh') ?? '/bin/sh', bwrap: which('bwrap'), unshare: which('unshare'), setpriv: which('setpriv'), prlimit: which('prlimit') }
  const layers: Layer[] = []
  const add = (id: LayerId, result: string | true, how: string): boolean => {
    if (off.has(id)) { layers.push({ id, active: false, detail: mode === 'none' ? 'off (--sandbox none)' : 'turned off' }); return false }
    layers.push({ id, active: result === true, detail: result === true ? how : result })
    return result === true
  }
  const root = isRoot()
  const pdeath = runs(tools.setpriv, ['--pdeathsig', 'KILL', '--', 'true']) === true
  layers.push({ id: 'process', active: true, detail: `own process group, minimal environment, SIGKILL of the group on timeout${pdeath ? ', killed with the agent (setpriv --pdeathsig)' : ''}` })

  const permission = add('permission', off.has('permission') ? 'off' : runs(process.execPath, ['--experimental-permission', '--allow-fs-read=*', '-e', '']),
    'Node permission model: reads only the runtime and the function\'s code, writes only its tmp; no child processes, workers or addons')

  const wantNs = !off.has('mount') || !off.has('net') || !off.has('pid')
  const userns = root ? [] : ['--unshare-user']
  const bwrapOk = wantNs && !off.has('mount') ? runs(tools.bwrap, [...userns, '--ro-bind', '/', '/', '--unshare-net', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--die-with-parent', '--', 'true']) : 'off'
  const unshareOk = wantNs && bwrapOk !== true
    ? runs(tools.unshare, [...(root ? [] : ['--user', '--map-root-user']), '--net', '--ipc', '--uts', '--pid', '--fork', '--kill-child', '--mount-proc', '--', 'true'])
    : 'off'
  const namespaces = bwrapOk === true ? 'bwrap' : unshareOk === true ? 'unshare' : undefined
  const nsWhy = `no namespaces: bubblewrap ${tools.bwrap == null ? 'is not installed' : `failed (${String(bwrapOk)})`}; unshare ${String(unshareOk)}`
  const mount = add('mount', bwrapOk === true ? true : `needs bubblewrap: ${tools.bwrap == null ? 'not installed (apt-get install bubblewrap)' : String(bwrapOk)}`,
    'bubblewrap mount namespace: / is a tmpfs with /usr, the runtime, the code (read-only) and a private /tmp')
  const net = add('net', namespaces != null ? true : nsWhy, `${namespaces ?? ''} network namespace: no network unless the function has egress`)
  const pid = add('pid', namespaces != null ? true : nsWhy, `${namespaces ?? ''} pid, ipc and uts namespaces: no other process is visible or reachable`)

  const uidBase = options.uidBase ?? 1_900_000
  const uid = add('uid', !root ? 'the agent is not root: sandboxes run as its user' : runs(tools.setpriv, ['--reuid', String(uidBase), '--regid', String(uidBase), '--clear-groups', '--', 'true']),
    `a separate unprivileged uid per sandbox (${uidBase} + slot), no capabilities, no new privileges`)

  const wanted = (['memory', 'pids', 'cpu'] as const).filter(c => !off.has(`cgroup-${c}`))
  const probe = probeCgroups([...wanted])
  const has = (c: 'memory' | 'pids' | 'cpu'): boolean => probe.host?.controllers.includes(c) === true
  const cg = probe.host != null ? `cgroup ${probe.host.version}` : ''
  const cgMemory = add('cgroup-memory', has('memory') ? true : probe.missing.memory ?? 'unavailable', `${cg} memory limit = the function's memory (Buffers and all), OOM kill reported`)
  const cgPids = add('cgroup-pids', has('pids') ? true : probe.missing.pids ?? 'unavailable', `${cg} pids limit: no fork bombs`)
  const cgCpu = add('cgroup-cpu', has('cpu') ? true : probe.missing.cpu ?? 'unavailable', `${cg} CPU quota per sandbox`)
  const cgroup = cgMemory || cgPids || cgCpu ? probe.host : undefined
  if (cgroup == null) probe.host?.close()

  const rlimit = add('rlimit', cgMemory ? 'not needed: the memory cgroup bounds memory' : runs(tools.prlimit, ['--data=1073741824', '--', 'true']),
    'RLIMIT_DATA = the function\'s memory (Buffers included)' + (uid ? ', RLIMIT_NPROC per sandbox uid' : ''))

  return Object.freeze({
    mode,
    layers,
    tools,
    permission,
    namespaces: mount || net || pid ? namespaces : undefined,
    net,
    mount,
    pid,
    uidBase: uid ? uidBase : undefined,
    cgroup,
    rlimit,
    parentDeathSignal: pdeath
  })
}

/** The OS layers `--sandbox strict` needs that this plan lacks, with why */
export function strictMissing (plan: IsolationPlan): string[] {
  const need: LayerId[] = ['mount', 'net', 'pid', 'cgroup-memory', 'cgroup-pids', ...(isRoot() ? ['uid' as const] : [])]
  return plan.layers.filter(l => need.includes(l.id) && !l.active).map(l => `${l.id} (${l.detail})`)
}

/** One line per layer, for the start-up log and test reports */
export function describeLayers (plan: IsolationPlan): { active: string[], missing: Record<string, string> } {
  return {
    active: plan.layers.filter(l => l.active).map(l => l.id),
    missing: Object.fromEntries(plan.layers.filter(l => !l.active).map(l => [l.id, l.detail]))
  }
}
