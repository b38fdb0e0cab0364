/**
 * Whether a plan can be used at pool start. Strict mode needs every OS layer. Sandboxes that run
 * under their own uid without a mount namespace reach their code through its real path: every
 * folder above the work folder must let others through; in auto mode a blocked path drops the
 * uid layer (sandboxes then run as the agent's user), in strict mode it fails the start.
 */
import { statSync } from 'node:fs'
import { dirname, sep } from 'node:path'
import { fnmeshError } from '../../../../proto/errors.js'
import type { Logger } from '../../logger.js'
import { strictMissing, type IsolationPlan } from './detect.js'

/** The first folder above `dir` (outside `protect`, which the pool opens itself) that others cannot traverse */
export function closedAncestor (dir: string, protect: string | undefined): string | undefined {
  for (let d = dirname(dir); ; d = dirname(d)) {
    const ours = protect != null && (d === protect || d.startsWith(protect + sep))
    try {
      if (!ours && (statSync(d).mode & 0o001) === 0) return d
    } catch {}
    if (dirname(d) === d) return undefined
  }
}

/**
 * `plan` as usable for `workDir`: unchanged, or without the uid layer (auto), or an error (strict,
 * also when an OS layer is missing).
 */
export function usablePlan (plan: IsolationPlan, workDir: string, protect: string | undefined, log: Logger): IsolationPlan {
  const missing = strictMissing(plan)
  if (plan.mode === 'strict' && missing.length > 0) {
    throw fnmeshError('FNMESH_ERR_SANDBOX_UNAVAILABLE', `Cannot start with --sandbox strict: missing isolation layers: ${missing.join('; ')}`)
  }
  if (plan.uidBase == null || plan.mount) return plan
  const blocked = closedAncestor(workDir, protect)
  if (blocked == null) return plan
  const why = `sandbox uids cannot traverse ${blocked} (no execute bit for others) to reach ${workDir}`
  if (plan.mode === 'strict') throw fnmeshError('FNMESH_ERR_SANDBOX_UNAVAILABLE', `Cannot start with --sandbox strict: ${why}`)
  log.warn(`${why}: sandboxes run as the agent's user; install bubblewrap or use a data folder others can traverse`)
  return Object.freeze({ ...plan, uidBase: undefined, layers: plan.layers.map(l => l.id === 'uid' ? { ...l, active: false, detail: why } : l) })
}
