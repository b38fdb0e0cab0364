/**
 * Gathering the acks an answer waits for (`--ack-replicas`): a record is pushed to candidate
 * peers in order until enough of them have it written, and a push that fails or is slow is made
 * up for by the next candidate, not waited out. Resolves `true` once every wait has its acks,
 * `false` at the deadline: the caller then must not answer as if the copies existed.
 *
 * Candidates come owners first (placement.ts), then any other live peer: a copy on a non-owner
 * is a real copy, and its handoff moves it to the owners before it is dropped (handoff.ts).
 */

/** `need` acks from peers other than `not` (the router's node, whose carried copy is counted apart) */
export interface AckWait { need: number, not?: string }

export interface GatherOptions {
  /** peers to push to, in order of preference */
  candidates: readonly string[]
  waits: readonly AckWait[]
  /** peers that already have it written (their acks count) */
  acked: Set<string>
  /** one push to `peer`; resolves whether it has the records written (acked is updated by the caller) */
  push: (peer: string) => Promise<boolean>
  /** the answer waits no longer than this */
  timeoutMs: number
  /** a push not acked within this long gets a second candidate beside it. @default timeoutMs / 4 */
  hedgeMs?: number
  /** failed candidates are tried again after this pause, while time is left. @default 100 */
  retryGapMs?: number
}

const others = (set: Iterable<string>, not: string | undefined): number => {
  let n = 0
  for (const p of set) if (p !== not) n++
  return n
}

/** Whether every wait has its acks in `acked` */
export function satisfied (waits: readonly AckWait[], acked: ReadonlySet<string>): boolean {
  return waits.every(w => others(acked, w.not) >= w.need)
}

/**
 * Pushes to candidates until `waits` are satisfied; resolves true then, false at the deadline.
 * At most as many pushes are in flight as acks are missing, plus one per hedge.
 */
export async function gatherAcks (o: GatherOptions): Promise<boolean> {
  if (satisfied(o.waits, o.acked)) return true
  return await new Promise<boolean>((resolve) => {
    const inFlight = new Set<string>()
    const failed = new Set<string>()
    const tried = new Set<string>(o.acked)
    let slow = new Set<string>()
    let over = false
    let again: NodeJS.Timeout | undefined
    const finish = (ok: boolean): void => {
      if (over) return
      over = true
      clearTimeout(deadline)
      clearTimeout(hedge)
      clearTimeout(again)
      resolve(ok)
    }
    const launch = (peer: string): void => {
      tried.add(peer)
      inFlight.add(peer)
      void o.push(peer).catch(() => false).then((ok) => {
        inFlight.delete(peer)
        slow.delete(peer)
        if (!ok) failed.add(peer)
        check()
      })
    }
    // Pushes in flight count as acks to come, except those the hedge found slow.
    const pump = (): void => {
      for (;;) {
        const short = o.waits.find(w => others(o.acked, w.not) + others([...inFlight].filter(p => !slow.has(p)), w.not) < w.need)
        if (short == null) return
        const next = o.candidates.find(p => !tried.has(p) && p !== short.not)
        if (next == null) return
        launch(next)
      }
    }
    const check = (): void => {
      if (over) return
      if (satisfied(o.waits, o.acked)) { finish(true); return }
      pump()
      if (inFlight.size === 0 && again == null && failed.size > 0) {
        // Every candidate was tried: the failed ones again after a pause (a dial that had no
        // address yet, a stream that broke), until the deadline.
        again = setTimeout(() => {
          again = undefined
          for (const p of failed) tried.delete(p)
          failed.clear()
          check()
        }, o.retryGapMs ?? 100)
      }
    }
    const deadline = setTimeout(() => { finish(satisfied(o.waits, o.acked)) }, o.timeoutMs)
    const hedge = setTimeout(() => { slow = new Set(inFlight); check() }, o.hedgeMs ?? Math.max(1, Math.floor(o.timeoutMs / 4)))
    check()
  })
}
