/**
 * Routing "probe" (docs/SCALING.md, "Designs compared"): load is not gossiped, it is asked for.
 * A router runs an invocation on its own node when that has a free slot; otherwise it probes d
 * peers, the one it chose last (its memory: "power of d choices with memory") and others drawn
 * in proportion to their slots, each answering its executor's running and queued counts at that
 * moment (LoadProbe -> LoadAnswer over NATS), and takes the best answer by choose.ts. Gossip is
 * left with membership, and the cost of load information follows the invocations, not the mesh size.
 */

/** Peers probed per pick, the memory included */
export const PROBES_PER_PICK = 2
/** Rounds of probes (new peers each) before a pick falls back to the adverts' view */
export const PROBE_ROUNDS = 3
/** A peer that has not answered a probe within this long is left out of that pick */
export const PROBE_TIMEOUT_MS = 50

/**
 * The peers to probe: `memory` first (if it is among them), then distinct others drawn in
 * proportion to `weight`, `d` in all (fewer only when there are fewer). `rng` returns [0, 1).
 */
export function probeTargets<T> (peers: readonly T[], weight: (p: T) => number, d: number, memory: T | undefined, rng: () => number): T[] {
  const out: T[] = []
  const want = Math.min(d, peers.length)
  if (want <= 0) return out
  if (memory !== undefined && peers.includes(memory)) out.push(memory)
  if (out.length >= want) return out
  const rest = peers.filter(p => p !== memory)
  const weights = rest.map(p => Math.max(0, weight(p)))
  let total = weights.reduce((a, b) => a + b, 0)
  while (out.length < want && rest.length > 0) {
    let i = 0
    if (total > 0) {
      let x = rng() * total
      while (i < rest.length - 1 && x >= weights[i]) { x -= weights[i]; i++ }
    } else {
      i = Math.floor(rng() * rest.length)
    }
    out.push(rest[i])
    total -= weights[i]
    rest.splice(i, 1)
    weights.splice(i, 1)
  }
  return out
}

/** Draws nodes in proportion to their slots in O(log n) (the simulator's meshes of 10,000) */
export class SlotSampler {
  private readonly cum: Float64Array
  private readonly total: number

  constructor (slots: ArrayLike<number>) {
    this.cum = new Float64Array(slots.length)
    let t = 0
    for (let i = 0; i < slots.length; i++) { t += Math.max(0, slots[i]); this.cum[i] = t }
    this.total = t
  }

  /** the node for a uniform `u` in [0, 1) */
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
