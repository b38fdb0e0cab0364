/**
 * The probing design, as simulated: no load adverts at all. Gossip carries membership only (who
 * is up and its slots, SWIM-style: cost.ts), and a router learns load where it is needed, per
 * invocation, from the executors themselves:
 *
 * - its own node with a free slot (and nothing queued): run it here, as router.ts does (exact
 *   load, no hop);
 * - else probe `d` nodes: the node this router last chose (its memory: Mitzenmacher's "power of
 *   d choices with memory") and d - 1 others drawn at random in proportion to their slots (a
 *   16-slot node is 8 times as likely as a 2-slot one: it can take 8 times the work). Each probe
 *   is a request a hop away answered with the executor's running and queued counts at that
 *   moment (one NATS request-reply);
 * - with the answers (a hop later) the agent's own choose.ts decides: the best free candidate by
 *   `better` (its own node included at its exact load), else `canQueue`/`better` over the
 *   queues (chooseQueue's rule without its random pair: the answers are fresh, not a shared
 *   stale view, so there is no herd to break up), else NO_CAPACITY;
 * - the dispatch goes as today (an executor that filled up meanwhile answers BUSY: probe again).
 *
 * The price is per invocation, not per node and second: d probes and their answers for each
 * invocation that does not run on its router's node, and two more hops of latency.
 */
import { better, canQueue, type Candidate } from '../../node/src/router/choose.js'

export interface ProbeCandidate extends Candidate { idx: number }

/** Draws nodes in proportion to their slots (cumulative sums, binary search) */
export class SlotSampler {
  private readonly cum: Float64Array
  private readonly total: number

  constructor (slots: ArrayLike<number>) {
    this.cum = new Float64Array(slots.length)
    let t = 0
    for (let i = 0; i < slots.length; i++) { t += slots[i]; this.cum[i] = t }
    this.total = t
  }

  draw (u: number): number {
    const x = u * this.total
    let lo = 0
    let hi = this.cum.length - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (this.cum[mid] > x) hi = mid
      else lo = mid + 1
    }
    return lo
  }
}

/**
 * The nodes router r probes: its memory (if any, and not r), then d - 1 (or d without a memory)
 * distinct others drawn by slots; fewer only in a mesh too small to have them
 */
export function probeSet (r: number, n: number, d: number, memory: number, sampler: SlotSampler, rng: () => number): number[] {
  const out: number[] = []
  if (memory >= 0 && memory !== r) out.push(memory)
  const want = Math.min(d, n - 1)
  for (let tries = 0; out.length < want && tries < 20 * d; tries++) {
    const p = sampler.draw(rng())
    if (p !== r && !out.includes(p)) out.push(p)
  }
  return out
}

/** The free candidate to run on, by `better` over all of them, or undefined */
export function bestFree (cands: readonly ProbeCandidate[]): ProbeCandidate | undefined {
  let best: ProbeCandidate | undefined
  for (const c of cands) if (c.load < c.slots && (best === undefined || better(c, best))) best = c
  return best
}

/** The queue to wait in: among those whose expected wait fits, the shortest by `better` with it counted */
export function bestQueue (cands: readonly ProbeCandidate[], budgetMs: number, runMs: number): ProbeCandidate | undefined {
  let best: ProbeCandidate | undefined
  for (const c of cands) {
    if (!canQueue(c, budgetMs, runMs)) continue
    if (best === undefined || better({ ...c, load: c.load + 1 }, { ...best, load: best.load + 1 })) best = c
  }
  return best
}
