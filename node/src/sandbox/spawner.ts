/**
 * Starts one sandboxed worker with every layer of the isolation plan: a fresh slot (code and tmp
 * folders), its own uid, its cgroup with the function's memory, the namespaces and the
 * permission model; and undoes all of it when the worker exits.
 */
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

/** A sandbox's environment before it knows its function: nothing of the agent's */
export function baseEnv (inside: { tmp: string }): Record<string, string> {
  return { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', TZ: ':UTC', HOME: inside.tmp, TMPDIR: inside.tmp }
}

let groups = 0

export class Spawner {
  /** workers whose slot or cgroup is still being removed */
  readonly cleaning = new Idle()

  constructor (private readonly init: SpawnerInit) {}

  spawn (memoryMb: number, egress: boolean): Spawned {
    const { plan, workspace } = this.init
    const slot = workspace.take()
    const uid = plan.uidBase != null ? plan.uidBase + slot.index : undefined
    let cgroup: WorkerCgroup | undefined
    try {
      if (uid != null) chownSync(slot.tmp, uid, uid)
      const limits: CgroupLimits = { memoryBytes: memoryMb * 1024 * 1024, pidsMax: this.init.pidsMax, cpus: this.init.cpus }
      cgroup = plan.cgroup?.create(`s${slot.index}-${++groups}`, limits)
      const command = buildCommand({ plan, runtimeDir: this.init.runtimeDir, slot, memoryMb, egress, cgroup, uid, nproc: this.init.pidsMax, tmpMb: this.init.tmpMb ?? 512 })
      const monitor = plan.namespaces === 'bwrap' || (plan.namespaces === 'unshare' && plan.pid)
      const worker = new SandboxWorker({ command, env: baseEnv(command.inside), memoryMb, cgroup, monitor })
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

/** What the function sees: its own variables plus Lambda's */
export function functionEnv (spec: StoredSpec, inside: Spawned['inside']): Record<string, string> {
  return {
    ...baseEnv(inside),
    ...spec.env,
    AWS_LAMBDA_FUNCTION_NAME: spec.name,
    AWS_LAMBDA_FUNCTION_VERSION: String(spec.version),
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(spec.memoryMb),
    AWS_LAMBDA_LOG_GROUP_NAME: `/fnmesh/${spec.name}`,
    LAMBDA_TASK_ROOT: inside.task,
    LAMBDA_RUNTIME_DIR: inside.runtime,
    _HANDLER: spec.handler
  }
}
