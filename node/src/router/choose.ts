/**
 * The routing choice, pure: power of two choices over the peers with a free slot, by estimated
 * utilisation; on a tie, prefer a peer where the function is warm, then the router's own node
 * (no network hop), then the one with more free slots. Sampling two at random keeps routers with
 * the same stale view from all picking the same peer (the herd effect of "always pick the least
 * loaded"). When the router's own node has a free slot it is always one of the two: its load is
 * known exactly, and NATS's queue group already picked the router at random, so the pair is
 * still a random one.
 */
import { expectedWaitAt } from '../wait.js'

export interface Candidate {
  id: string
  slots: number
  /** estimated in-flight invocations: the peer's advert plus what this router sent since */
  load: number
  /** the function has a warm sandbox there */
  warm: boolean
  /** the router's own node */
  self?: boolean
  /** what this router learned from failed or stalled work sent there (router/penalty.ts), added to utilisation */
  penalty?: number
  /** since its last advert the peer refused to queue an invocation allowed to wait this long (its wait is longer) */
  waitAboveMs?: number
}

const EPSILON = 1e-9

/**
 * Queued invocations per slot up to which a queue counts as shallow: chooseQueue picks among
 * shallow queues while its view shows any, and among every queue that fits the deadline after
 */
export const SPREAD_PER_SLOT = 3

/** True if `a` is the better place for the next invocation */
export function better (a: Candidate, b: Candidate): boolean {
  const ua = a.load / a.slots + (a.penalty ?? 0)
  const ub = b.load / b.slots + (b.penalty ?? 0)
  if (Math.abs(ua - ub) > EPSILON) return ua < ub
  if (a.warm !== b.warm) return a.warm
  if ((a.self === true) !== (b.self === true)) return a.self === true
  return a.slots - a.load >= b.slots - b.load
}

/**
 * Picks a peer for one invocation, or undefined if none has a free slot.
 * `rng` returns [0, 1) (injected for tests).
 */
export function choosePeer<C extends Candidate> (candidates: readonly C[], rng: () => number = Math.random): C | undefined {
  return twoChoices(candidates.filter(c => c.slots > 0 && c.load < c.slots), rng, better)
}

/**
 * True if an invocation allowed to wait `budgetMs` may queue at `c`: its expected wait (../wait.ts,
 * every run taking `runMs`) fits, and it has not refused one with as long a budget since its
 * last advert (its queue was fuller, or its runs slower, than this view says).
 */
export function canQueue (c: Candidate, budgetMs: number, runMs: number): boolean {
  return c.slots > 0 && expectedWaitAt(c.slots, c.load, runMs) <= budgetMs && !(c.waitAboveMs !== undefined && c.waitAboveMs >= budgetMs)
}

/**
 * The pick when no candidate has a free slot in this router's view: where the invocation should
 * wait in the executor's own queue (executor.ts takes it as soon as a slot frees there, which
 * the executor knows at once and a router only learns from the next advert). Power of two
 * choices again among the nodes where the expected wait fits the invocation's budget (canQueue),
 * the router's own node always one of the two when it is among them, by (load + 1) / slots: the
 * shorter expected wait (for one function's run time, the wait grows with it). Undefined when
 * no node's wait fits: the router refuses at once.
 */
export function chooseQueue<C extends Candidate> (candidates: readonly C[], budgetMs: number, runMs: number, rng: () => number = Math.random): C | undefined {
  const queued = (c: C): Candidate => ({ ...c, load: c.load + 1 })
  const fits = candidates.filter(c => canQueue(c, budgetMs, runMs))
  // Shallow queues first: views lag, and a deep queue behind long runs is where tails come from.
  const shallow = fits.filter(c => c.load < (1 + SPREAD_PER_SLOT) * c.slots)
  return twoChoices(shallow.length > 0 ? shallow : fits, rng, (a, b) => better(queued(a), queued(b)))
}

/** Of two candidates drawn at random (the router's own node always one, when it is there), the one that `wins` */
function twoChoices<C extends Candidate> (list: readonly C[], rng: () => number, wins: (a: C, b: C) => boolean): C | undefined {
  if (list.length <= 1) return list[0]
  const own = list.findIndex(c => c.self === true)
  const i = own >= 0 ? own : Math.floor(rng() * list.length)
  let j = Math.floor(rng() * (list.length - 1))
  if (j >= i) j++
  return wins(list[i], list[j]) ? list[i] : list[j]
}

/**
 * Routing "probe" (router/probe.ts): the candidates' loads are fresh answers, not a view shared
 * with other routers, so there is no herd to break up: the best free one by `better`, or undefined.
 */
export function bestFree<C extends Candidate> (candidates: readonly C[]): C | undefined {
  let best: C | undefined
  for (const c of candidates) if (c.slots > 0 && c.load < c.slots && (best === undefined || better(c, best))) best = c
  return best
}

/** Routing "probe": none free, the queue to wait in: among those `canQueue` allows, the best with it counted */
export function bestQueue<C extends Candidate> (candidates: readonly C[], budgetMs: number, runMs: number): C | undefined {
  let best: C | undefined
  for (const c of candidates) {
    if (!canQueue(c, budgetMs, runMs)) continue
    if (best === undefined || better({ ...c, load: c.load + 1 }, { ...best, load: best.load + 1 })) best = c
  }
  return best
}
