/**
 * Provisioned concurrency (`--provisioned N`, issue 15): N sandboxes of a function's latest
 * version kept warm across the mesh, on distinct nodes while there are at least N. No
 * coordinator: every agent computes the same placement from the same inputs, rendezvous hashing
 * of (function, version, node id) over the live nodes of its peer table, and keeps warm the
 * sandboxes placed on itself. A node that leaves drops out of every table within the peer
 * timeout (2 s) or at once when it drains, so the next pass places its share on another node.
 * Routers prefer nodes whose adverts list an idle provisioned sandbox (router.ts).
 */
import type { StoredSpec } from '../../../core/registry.js'
import { placeProvisioned } from '../../../core/placement.js'
import type { Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'

export { placeProvisioned } from '../../../core/placement.js'

export interface ProvisionerComponents {
  nodeId: () => string
  /** ids of the live nodes that take work and whose labels satisfy the spec's placement constraints (this one included when they do) */
  nodes: (spec: StoredSpec) => string[]
  /** this node's labels satisfy the spec's placement constraints (core/placement.ts) */
  eligible?: (spec: StoredSpec) => boolean
  /** usable specs (latest versions) */
  specs: () => StoredSpec[]
  /** the function's unpacked code */
  taskRoot: (spec: StoredSpec) => Promise<string>
  pool: {
    provision: (spec: StoredSpec, taskRoot: string, count: number) => Promise<number>
    unprovision: (keep: ReadonlySet<string>) => void
  }
  /** this node takes no new work (draining, disk full): it holds none */
  refusing?: () => boolean
  logger: Logger
}

export interface ProvisionerInit {
  /** How often placement is checked. @default 1000 */
  intervalMs?: number
}

export class Provisioner implements Startable {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private again = false
  private readonly failing = new Map<string, number>()

  constructor (private readonly c: ProvisionerComponents, private readonly init: ProvisionerInit = {}) {}

  start (): void {
    if (this.timer != null) return
    this.timer = setInterval(() => { this.check() }, this.init.intervalMs ?? 1000)
    this.timer.unref()
    this.check()
  }

  isStarted (): boolean {
    return this.timer != null
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** Checks placement now (a spec changed, a node joined or left); passes never overlap */
  check (): void {
    if (this.running != null) { this.again = true; return }
    this.running = this.pass().catch((err: any) => {
      this.c.logger.warn({ err: String(err?.message ?? err) }, 'provisioning pass failed')
    }).finally(() => {
      this.running = undefined
      if (this.again && this.timer != null) { this.again = false; this.check() }
    })
  }

  /** Resolves once the pass in progress (if any) is over */
  async settled (): Promise<void> {
    while (this.running != null) await this.running
  }

  private async pass (): Promise<void> {
    const self = this.c.nodeId()
    const keep = new Set<string>()
    const refusing = this.c.refusing?.() === true
    const wanted: Array<{ spec: StoredSpec, count: number }> = []
    for (const spec of this.c.specs()) {
      const n = spec.provisioned ?? 0
      if (n <= 0 || refusing || this.c.eligible?.(spec) === false) continue
      const nodes = this.c.nodes(spec)
      const count = placeProvisioned(`${spec.name}@${spec.version}`, nodes.includes(self) ? nodes : [...nodes, self], n).get(self) ?? 0
      if (count > 0) {
        keep.add(`${spec.name}@${spec.version}`)
        wanted.push({ spec, count })
      }
    }
    this.c.pool.unprovision(keep)
    for (const { spec, count } of wanted) {
      const key = `${spec.name}@${spec.version}`
      // A function whose code fails to load is tried again at most every 30 s.
      if ((this.failing.get(key) ?? 0) > Date.now()) continue
      try {
        await this.c.pool.provision(spec, await this.c.taskRoot(spec), count)
        this.failing.delete(key)
      } catch (err: any) {
        this.failing.set(key, Date.now() + 30_000)
        this.c.logger.warn({ fn: spec.name, version: spec.version, code: err?.code, err: String(err?.message ?? err) }, 'could not start a provisioned sandbox')
      }
    }
  }
}
