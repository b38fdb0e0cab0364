/**
 * Control groups for sandboxes: memory (counts Buffers and every other allocation, not only the
 * V8 heap), pids (fork bombs) and CPU. Uses cgroup v2 where this agent's own group can delegate
 * the controllers, else the v1 hierarchies; only under this process's own groups, in a folder
 * `fnmesh-<pid>` with one child group per worker. Detect, never assume: `probeCgroups()` says
 * what is writable here and why the rest is not.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export type Controller = 'memory' | 'pids' | 'cpu'

export interface CgroupLimits {
  memoryBytes: number
  pidsMax: number
  /** CPU time per wall time: 1 = one full core */
  cpus: number
}

/** One worker's group (one directory per v1 hierarchy, one in v2) */
export interface WorkerCgroup {
  /** `cgroup.procs` files a process writes its pid into to join (before it execs the sandbox) */
  readonly procsFiles: string[]
  /** Pids in the group now */
  pids: () => number[]
  /** Times the kernel's OOM killer killed a process of this group */
  oomKills: () => number
  /** Removes the group's directories; false while processes remain */
  remove: () => boolean
}

export interface CgroupHost {
  readonly version: 'v1' | 'v2'
  readonly controllers: Controller[]
  /** Creates a worker's group with these limits; throws if the kernel refuses */
  create: (name: string, limits: CgroupLimits) => WorkerCgroup
  /** Removes the agent's folder(s) (after every worker group is gone) */
  close: () => void
}

export interface CgroupProbe {
  host: CgroupHost | undefined
  /** why each missing controller is missing */
  missing: Partial<Record<Controller, string>>
}

const CONTROLLERS: Controller[] = ['memory', 'pids', 'cpu']

interface Mount { path: string, fstype: string, superOptions: string[] }

function mounts (): Mount[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).map((line) => {
    const [pre, post] = line.split(' - ')
    const [fstype, , superOptions] = (post ?? '').split(' ')
    return { path: pre.split(' ')[4], fstype, superOptions: (superOptions ?? '').split(',') }
  })
}

/** This process's group path per hierarchy: "" is v2, else the v1 controller list */
function ownGroups (): Map<string, string> {
  const out = new Map<string, string>()
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n').filter(Boolean)) {
    const [, controllers, path] = line.split(':')
    out.set(controllers, path)
  }
  return out
}

function write (file: string, value: string): void {
  writeFileSync(file, value)
}

function rmdirQuiet (dir: string): boolean {
  try { rmdirSync(dir); return true } catch (err: any) { return err?.code === 'ENOENT' }
}

function readPids (file: string): number[] {
  try { return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number) } catch { return [] }
}

function counter (file: string, key: string): number {
  try {
    const line = readFileSync(file, 'utf8').split('\n').find(l => l.startsWith(`${key} `))
    return line != null ? Number(line.split(' ')[1]) : 0
  } catch { return 0 }
}

/** Removes leftovers of agents that died without cleaning up (their pid is gone) */
function sweepStale (parent: string): void {
  let entries: string[] = []
  try { entries = readdirSync(parent) } catch { return }
  for (const name of entries) {
    const pid = /^fnmesh-(\d+)$/.exec(name)?.[1]
    if (pid == null || existsSync(`/proc/${pid}`)) continue
    const dir = join(parent, name)
    try { for (const child of readdirSync(dir, { withFileTypes: true })) if (child.isDirectory()) rmdirQuiet(join(dir, child.name)) } catch {}
    rmdirQuiet(dir)
  }
}

function probeV2 (missing: CgroupProbe['missing'], wanted: Controller[]): CgroupHost | undefined {
  const mount = mounts().find(m => m.fstype === 'cgroup2')
  const own = ownGroups().get('')
  if (mount == null || own == null) return undefined
  const base = join(mount.path, own)
  let available: string[] = []
  try { available = readFileSync(join(base, 'cgroup.controllers'), 'utf8').trim().split(/\s+/) } catch {}
  const controllers = wanted.filter(c => available.includes(c))
  if (controllers.length === 0) return undefined
  const root = join(base, `fnmesh-${process.pid}`)
  try {
    sweepStale(base)
    // Enabling controllers for children fails (EBUSY) when this group also holds processes and is
    // not the root: a delegated group must be arranged by whoever started the agent.
    write(join(base, 'cgroup.subtree_control'), controllers.map(c => `+${c}`).join(' '))
    mkdirSync(root, { recursive: true })
    write(join(root, 'cgroup.subtree_control'), controllers.map(c => `+${c}`).join(' '))
  } catch (err: any) {
    rmdirQuiet(root)
    for (const c of controllers) missing[c] = `cgroup v2 at ${base} cannot delegate ${c}: ${String(err?.code ?? err?.message ?? err)}`
    return undefined
  }
  return {
    version: 'v2',
    controllers,
    create: (name, limits) => {
      const dir = join(root, name)
      // Another host of this process may have closed the shared folder meanwhile: make it again.
      if (!existsSync(root)) {
        mkdirSync(root, { recursive: true })
        write(join(root, 'cgroup.subtree_control'), controllers.map(c => `+${c}`).join(' '))
      }
      mkdirSync(dir)
      try {
        if (controllers.includes('memory')) {
          write(join(dir, 'memory.max'), String(limits.memoryBytes))
          if (existsSync(join(dir, 'memory.swap.max'))) write(join(dir, 'memory.swap.max'), '0')
        }
        if (controllers.includes('pids')) write(join(dir, 'pids.max'), String(limits.pidsMax))
        if (controllers.includes('cpu')) write(join(dir, 'cpu.max'), `${Math.round(limits.cpus * 100_000)} 100000`)
      } catch (err) {
        rmdirQuiet(dir)
        throw err
      }
      return {
        procsFiles: [join(dir, 'cgroup.procs')],
        pids: () => readPids(join(dir, 'cgroup.procs')),
        oomKills: () => counter(join(dir, 'memory.events'), 'oom_kill'),
        remove: () => rmdirQuiet(dir)
      }
    },
    close: () => { rmdirQuiet(root) }
  }
}

function probeV1 (missing: CgroupProbe['missing'], wanted: Controller[]): CgroupHost | undefined {
  const all = mounts().filter(m => m.fstype === 'cgroup')
  const own = ownGroups()
  const roots = new Map<Controller, string>()
  for (const c of wanted) {
    const mount = all.find(m => m.superOptions.includes(c))
    const path = [...own.entries()].find(([list]) => list.split(',').includes(c))?.[1]
    if (mount == null || path == null) { missing[c] ??= `no cgroup v1 ${c} hierarchy is mounted`; continue }
    const base = join(mount.path, path)
    const root = join(base, `fnmesh-${process.pid}`)
    try {
      sweepStale(base)
      mkdirSync(root, { recursive: true })
      const probe = join(root, 'probe')
      mkdirSync(probe, { recursive: true })
      try {
        if (c === 'memory') write(join(probe, 'memory.limit_in_bytes'), String(256 * 1024 * 1024))
        if (c === 'pids') write(join(probe, 'pids.max'), '64')
        if (c === 'cpu') write(join(probe, 'cpu.cfs_quota_us'), '100000')
      } finally {
        rmdirQuiet(probe)
      }
      roots.set(c, root)
      delete missing[c]
    } catch (err: any) {
      rmdirQuiet(root)
      missing[c] = `cgroup v1 ${c} at ${base} is not writable: ${String(err?.code ?? err?.message ?? err)}`
    }
  }
  if (roots.size === 0) return undefined
  const controllers = [...roots.keys()]
  return {
    version: 'v1',
    controllers,
    create: (name, limits) => {
      const dirs = new Map<Controller, string>()
      try {
        for (const [c, root] of roots) {
          const dir = join(root, name)
          // recursive: the shared folder may have been closed by another host of this process
          mkdirSync(dir, { recursive: true })
          dirs.set(c, dir)
          if (c === 'memory') {
            write(join(dir, 'memory.limit_in_bytes'), String(limits.memoryBytes))
            // With swap accounting, swap counts too: the limit is memory, not memory plus swap.
            if (existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) write(join(dir, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes))
          }
          if (c === 'pids') write(join(dir, 'pids.max'), String(limits.pidsMax))
          if (c === 'cpu') {
            write(join(dir, 'cpu.cfs_period_us'), '100000')
            write(join(dir, 'cpu.cfs_quota_us'), String(Math.round(limits.cpus * 100_000)))
          }
        }
      } catch (err) {
        for (const dir of dirs.values()) rmdirQuiet(dir)
        throw err
      }
      const any = [...dirs.values()][0]
      return {
        procsFiles: [...dirs.values()].map(d => join(d, 'cgroup.procs')),
        pids: () => readPids(join(any, 'cgroup.procs')),
        oomKills: () => dirs.has('memory') ? counter(join(dirs.get('memory') as string, 'memory.oom_control'), 'oom_kill') : 0,
        remove: () => [...dirs.values()].map(rmdirQuiet).every(Boolean)
      }
    },
    close: () => { for (const root of roots.values()) rmdirQuiet(root) }
  }
}

/** What this machine lets the agent do with cgroups, for the `wanted` controllers */
export function probeCgroups (wanted: Controller[] = CONTROLLERS): CgroupProbe {
  const missing: CgroupProbe['missing'] = {}
  if (process.platform !== 'linux') {
    for (const c of CONTROLLERS) missing[c] = 'not Linux'
    return { host: undefined, missing }
  }
  try {
    if (wanted.length === 0) return { host: undefined, missing }
    const v2 = probeV2(missing, wanted)
    if (v2 != null && v2.controllers.length === wanted.length) return { host: v2, missing }
    const v1 = probeV1(missing, wanted)
    if (v1 != null && (v2 == null || v1.controllers.length > v2.controllers.length)) {
      v2?.close()
      return { host: v1, missing }
    }
    v1?.close()
    return { host: v2, missing }
  } catch (err: any) {
    for (const c of CONTROLLERS) missing[c] ??= `cannot read the cgroup setup: ${String(err?.message ?? err)}`
    return { host: undefined, missing }
  }
}
