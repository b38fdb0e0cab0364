/**
 * Starts one sandboxed worker with every layer of the isolation plan: a fresh slot (code and tmp
 * folders), its own uid, its cgroup with the function's memory, the namespaces and the
 * permission model; and undoes all of it when the worker exits.
 */
import { randomBytes } from 'node:crypto'
import { chownSync } from 'node:fs'
import { fnmeshError } from '../../../proto/errors.js'
import type { StoredSpec } from '../../../core/registry.js'
import type { Logger } from '../logger.js'
import { Idle } from '../lifecycle.js'
import type { CgroupLimits, WorkerCgroup } from './layers/cgroup.js'
import { buildCommand, type SandboxCommand } from './layers/command.js'
import type { IsolationPlan } from './layers/detect.js'
import type { SlotDirs, Workspace } from './layers/workspace.js'
import { SandboxWorker } from './worker.js'

export interface SpawnerInit {
  plan: IsolationPlan
  workspace: Workspace
  /** folder of the compiled runtime (main.js) */
  runtimeDir: string
  /** processes and threads per sandbox (cgroup pids.max; RLIMIT_NPROC per uid) */
  pidsMax: number
  /** CPU cores per sandbox (cgroup CPU quota) */
  cpus: number
  /** Size of the sandbox's /tmp in MB. @default 512 */
  tmpMb?: number
  logger: Logger
}

/** A worker and what was set up for it */
export interface Spawned {
  worker: SandboxWorker
  slot: SlotDirs
  inside: SandboxCommand['inside']
  egress: boolean
}

/**
 * What a sandbox is booted as, when not a generic Node worker: a custom runtime's host, or Node
 * with the function's NODE_OPTIONS (which Node reads only when it starts)
 */
export interface SpawnVariant {
  runtime?: 'provided'
  nodeOptions?: string
}

/** A sandbox's environment before it knows its function: nothing of the agent's */
export function baseEnv (inside: { tmp: string, task?: string, runtime?: string }): Record<string, string> {
  const env: Record<string, string> = { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', TZ: ':UTC', HOME: inside.tmp, TMPDIR: inside.tmp }
  // Lambda's search path for bare module names, with layers' folders (absent here) first; Node
  // reads it when it starts, so a generic worker already has it.
  if (inside.task != null && inside.runtime != null) env.NODE_PATH = `/opt/nodejs/node${NODE_MAJOR}/node_modules:/opt/nodejs/node_modules:${inside.runtime}/node_modules:${inside.task}`
  return env
}

const NODE_MAJOR = process.versions.node.split('.')[0]

let groups = 0

export class Spawner {
  /** workers whose slot or cgroup is still being removed */
  readonly cleaning = new Idle()

  constructor (private readonly init: SpawnerInit) {}

  spawn (memoryMb: number, egress: boolean, variant: SpawnVariant = {}): Spawned {
    const { plan, workspace } = this.init
    const slot = workspace.take()
    const uid = plan.uidBase != null ? plan.uidBase + slot.index : undefined
    let cgroup: WorkerCgroup | undefined
    try {
      if (uid != null) chownSync(slot.tmp, uid, uid)
      const limits: CgroupLimits = { memoryBytes: memoryMb * 1024 * 1024, pidsMax: this.init.pidsMax, cpus: this.init.cpus }
      cgroup = plan.cgroup?.create(`s${slot.index}-${++groups}`, limits)
      const entry = variant.runtime === 'provided' ? 'provided/main.js' : undefined
      const command = buildCommand({ plan, runtimeDir: this.init.runtimeDir, slot, memoryMb, egress, cgroup, uid, nproc: this.init.pidsMax, tmpMb: this.init.tmpMb ?? 512, entry })
      const monitor = plan.namespaces === 'bwrap' || (plan.namespaces === 'unshare' && plan.pid)
      const env = baseEnv(command.inside)
      // Checked at deploy and on every stored spec (core/spec-rules.ts checkNodeOptions).
      if (variant.nodeOptions != null && entry == null) env.NODE_OPTIONS = variant.nodeOptions
      const worker = new SandboxWorker({ command, env, memoryMb, cgroup, monitor })
      worker.once('exit', () => { this.cleanUp(slot, cgroup) })
      return { worker, slot, inside: command.inside, egress }
    } catch (err) {
      this.cleanUp(slot, cgroup)
      throw err
    }
  }

  /** Boots one sandbox and waits for it; a sandbox that cannot boot with these layers is FNMESH_ERR_SANDBOX_UNAVAILABLE */
  async canary (timeoutMs: number): Promise<Spawned> {
    const canary = this.spawn(128, false)
    let stderr = ''
    canary.worker.on('line', (source, line) => { if (source === 'stderr') stderr = `${stderr}${line}\n`.slice(-2000) })
    try {
      await canary.worker.ready(timeoutMs)
    } catch (err: any) {
      canary.worker.kill('canary failed')
      throw fnmeshError('FNMESH_ERR_SANDBOX_UNAVAILABLE', `Cannot start the sandbox pool: a sandbox did not boot with these layers (${String(err?.reason ?? err?.message ?? err)}); its stderr: ${stderr.trim() || '(empty)'}`)
    }
    return canary
  }

  /** Puts the function's unpacked code into the worker's code folder */
  async fill (spawned: Spawned, taskRoot: string): Promise<void> {
    await this.init.workspace.fill(spawned.slot, taskRoot)
  }

  private cleanUp (slot: SlotDirs, cgroup: WorkerCgroup | undefined): void {
    // A group empties a moment after its last process is reaped.
    let tries = 0
    this.cleaning.enter()
    const done = (): void => {
      try { this.init.workspace.give(slot) } catch (err: any) {
        this.init.logger.warn({ slot: slot.index, err: String(err?.message ?? err) }, 'sandbox folder clean-up failed')
      }
      this.cleaning.leave()
    }
    const removeGroup = (): void => {
      if (cgroup == null || cgroup.remove()) { done(); return }
      if (++tries > 50) {
        this.init.logger.warn({ slot: slot.index, pids: cgroup.pids() }, 'sandbox cgroup still holds processes; left behind')
        done()
        return
      }
      setTimeout(removeGroup, 100).unref()
    }
    removeGroup()
  }
}

/** Region a function sees unless its environment names one: there is no AWS region to be in */
export const DEFAULT_REGION = 'fnmesh-local'

/**
 * What the function sees: its own variables plus Lambda's. AWS_REGION, AWS_DEFAULT_REGION, TZ,
 * NODE_PATH and LANG are defaults its own variables replace (core/spec-rules.ts RESERVED_ENV).
 * A custom runtime gets no AWS_EXECUTION_ENV and no NODE_PATH (as on Lambda's provided runtimes).
 */
export function functionEnv (spec: StoredSpec, inside: Spawned['inside'], logStreamName: string): Record<string, string> {
  const provided = spec.runtime === 'provided'
  const base = provided ? baseEnv({ tmp: inside.tmp }) : baseEnv(inside)
  return {
    ...base,
    AWS_REGION: DEFAULT_REGION,
    AWS_DEFAULT_REGION: spec.env.AWS_REGION ?? DEFAULT_REGION,
    ...(provided ? { LD_LIBRARY_PATH: `/lib64:/usr/lib64:${inside.task}:${inside.task}/lib` } : {}),
    ...spec.env,
    ...(provided ? {} : { AWS_EXECUTION_ENV: `AWS_Lambda_nodejs${NODE_MAJOR}.x` }),
    AWS_LAMBDA_FUNCTION_NAME: spec.name,
    AWS_LAMBDA_FUNCTION_VERSION: String(spec.version),
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(spec.memoryMb),
    AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand',
    AWS_LAMBDA_LOG_GROUP_NAME: logGroupName(spec.name),
    AWS_LAMBDA_LOG_STREAM_NAME: logStreamName,
    LAMBDA_TASK_ROOT: inside.task,
    LAMBDA_RUNTIME_DIR: inside.runtime,
    _HANDLER: spec.handler
  }
}

export function logGroupName (fn: string): string {
  return `/fnmesh/${fn}`
}

/** A sandbox's log stream, in Lambda's form: `2024/05/01/[VERSION]` and 32 hex digits */
export function logStreamName (version: number): string {
  const d = new Date()
  const day = `${d.getUTCFullYear()}/${String(d.getUTCMonth() + 1).padStart(2, '0')}/${String(d.getUTCDate()).padStart(2, '0')}`
  return `${day}/[${version}]${randomBytes(16).toString('hex')}`
}
