/**
 * The routing policies. "least-loaded" is fnmesh's routing (choose.ts choosePeer, with the
 * executor queues of dispatch.ts when nothing is free); "probe" is the same choice made from
 * loads asked of the executors per invocation instead of gossiped (probe.ts: the design for large
 * meshes, docs/SCALING.md); the others exist only to measure them
 * against (npm run bench): "local" runs everything where NATS delivered it (a plain queue
 * group), "round-robin" cycles through the peers with a free slot in this router's view,
 * "oracle" takes the least-utilised peer by this router's own exact counts (true load when it is
 * the mesh's only router). Baselines wait at the router when they find no slot.
 * config.ts and router.ts both take the list from here.
 */
import { better, type Candidate } from './choose.js'

export type RoutingPolicy = 'least-loaded' | 'probe' | 'local' | 'round-robin' | 'oracle'
export const ROUTING_POLICIES: readonly RoutingPolicy[] = ['least-loaded', 'probe', 'local', 'round-robin', 'oracle']

export type BaselinePolicy = Exclude<RoutingPolicy, 'least-loaded' | 'probe'>

/** What a baseline may know beyond the candidates */
export interface BaselineView {
  /** invocations in flight on the router's own node, exactly */
  localInFlight: number
  /** dispatches this router sent to `peer` that have not ended */
  outstanding: (peer: string) => number
}

/** One pick of a baseline policy (it may keep state between picks: round-robin's position) */
export type BaselinePick = <C extends Candidate>(candidates: C[], view: BaselineView) => C | undefined

/** A fresh pick function per policy (each router has its own round-robin position) */
export const BASELINES: Readonly<Record<BaselinePolicy, () => BaselinePick>> = {
  local: () => (candidates) => candidates.find(c => c.self === true && c.load < c.slots),
  'round-robin': () => {
    let rr = 0
    return (candidates) => {
      const ordered = candidates.sort((a, b) => a.id.localeCompare(b.id))
      for (let i = 0; i < ordered.length; i++) {
        const c = ordered[(rr + i) % ordered.length]
        if (c.load < c.slots) { rr = (rr + i + 1) % ordered.length; return c }
      }
      return undefined
    }
  },
  oracle: () => (candidates, view) => {
    let best: { c: typeof candidates[number], x: Candidate } | undefined
    for (const c of candidates) {
      // Exact when this is the only router: every dispatch in flight is its own.
      const x = { ...c, load: c.self === true ? view.localInFlight : view.outstanding(c.id) }
      if (x.load < x.slots && (best == null || better(x, best.x))) best = { c, x }
    }
    return best?.c
  }
}
