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
import type { Candidate } from '../../node/src/router/choose.js'
import { SlotSampler } from '../../node/src/router/probe.js'

export interface ProbeCandidate extends Candidate { idx: number }

export { bestFree, bestQueue } from '../../node/src/router/choose.js'
export { SlotSampler }

/**
 * The nodes router r probes: its memory (if any, and not r), then distinct others drawn by
 * slots, d in all (fewer only in a mesh too small to have them). The agent's probeTargets()
 * draws the same way from a list; this is its O(log n) form for meshes of 10,000.
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
