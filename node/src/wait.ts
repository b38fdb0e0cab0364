/**
 * How long a new invocation would wait for a slot at a node, shared by the executor (which
 * knows its queue exactly), the router (which knows a peer's load from its advert and its own
 * sends) and the simulator: the rule exists once.
 *
 * A full node's slots free one after another; with `slots` busy, a new invocation starts once
 * every invocation queued ahead of it has started and one more slot has freed. Taking each
 * run's slot time as its function's observed mean, that is about
 *
 *     wait = (slot time of everything queued ahead + one typical slot time) / slots
 *
 * and 0 when a slot is free. It is an estimate (run times vary), which the router's budget
 * leaves room for (router/dispatch.ts queueBudget).
 */

/** Expected wait in ms for one more invocation at a node */
export function expectedWaitMs (x: { slots: number, running: number, aheadMs: number, runMs: number }): number {
  if (x.running < x.slots) return 0
  return (x.aheadMs + x.runMs) / Math.max(1, x.slots)
}

/** The same, seen from a router: `load` = running + queued (what adverts count), every run `runMs` */
export function expectedWaitAt (slots: number, load: number, runMs: number): number {
  return expectedWaitMs({ slots, running: Math.min(load, slots), aheadMs: Math.max(0, load - slots) * runMs, runMs })
}

/**
 * Observed slot time (from taking a slot to giving it back: the run, its cold start, its meter
 * record) per `function@version`, smoothed; a function not seen yet takes the mean of all runs
 * here, and 0 before any run (an empty node admits).
 */
export class RunTimes {
  private readonly byKey = new Map<string, number>()
  private all = 0
  private seen = 0

  constructor (private readonly maxKeys = 10_000) {}

  observe (key: string, ms: number): void {
    const old = this.byKey.get(key)
    if (old === undefined && this.byKey.size >= this.maxKeys) {
      const first = this.byKey.keys().next().value
      if (first !== undefined) this.byKey.delete(first)
    }
    this.byKey.set(key, old === undefined ? ms : old * 0.8 + ms * 0.2)
    this.all = this.seen === 0 ? ms : this.all * 0.9 + ms * 0.1
    this.seen++
  }

  /** Expected slot time of one run of `key` (undefined: of any function) */
  estimate (key?: string): number {
    return (key === undefined ? undefined : this.byKey.get(key)) ?? this.all
  }
}

/**
 * How fast a full node really hands out slots: the smoothed gap between slot releases while
 * invocations wait. When something other than the slots limits a node (its CPU, the metering
 * disk), slot times grow and lag the estimate; the drain rate shows it at once.
 */
export class DrainRate {
  private gapMs = 0
  /** smoothed absolute deviation of the gaps */
  private devMs = 0
  private lastAt = -1

  /** A slot was released; `waiting`: invocations were queued at that moment */
  released (now: number, waiting: boolean): void {
    if (waiting && this.lastAt >= 0) {
      const gap = now - this.lastAt
      this.devMs = this.gapMs === 0 ? 0 : this.devMs * 0.8 + Math.abs(gap - this.gapMs) * 0.2
      this.gapMs = this.gapMs === 0 ? gap : this.gapMs * 0.8 + gap * 0.2
    }
    this.lastAt = waiting ? now : -1
  }

  /** The smoothed gap between releases while invocations waited (0: nothing measured yet) */
  get gap (): number {
    return this.gapMs
  }

  /**
   * Wait of one more invocation behind `queued` others, pessimistic: n = queued + 1 gaps at their
   * mean, plus twice their deviation for the sum of n (sqrt(n) times one gap's, as for
   * independent gaps): bursty releases on a starved machine are what made queued calls late
   * (0: nothing measured yet)
   */
  waitBehind (queued: number): number {
    const n = queued + 1
    return n * this.gapMs + 2 * this.devMs * Math.sqrt(n)
  }
}
