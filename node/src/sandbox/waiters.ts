/**
 * Invocations waiting for a sandbox of a function that is at its concurrency cap: FIFO per
 * "name@version", each wait bounded; a release or an exit of one of its sandboxes wakes the
 * longest waiter, which then looks again.
 */
interface Waiter { resolve: () => void }

export class KeyedWaiters {
  private readonly waiters = new Map<string, Waiter[]>()

  /** Resolves when woken for `key` or after `ms` */
  async wait (key: string, ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const waiter: Waiter = { resolve: () => { clearTimeout(timer); resolve() } }
      const timer = setTimeout(() => {
        const list = this.waiters.get(key) ?? []
        const i = list.indexOf(waiter)
        if (i >= 0) list.splice(i, 1)
        if (list.length === 0) this.waiters.delete(key)
        resolve()
      }, ms)
      const list = this.waiters.get(key) ?? []
      list.push(waiter)
      this.waiters.set(key, list)
    })
  }

  /** Wakes the longest waiter of `key` */
  wake (key: string): void {
    const list = this.waiters.get(key)
    list?.shift()?.resolve()
    if (list?.length === 0) this.waiters.delete(key)
  }

  /** Wakes everyone (the pool stops) */
  wakeAll (): void {
    for (const list of this.waiters.values()) for (const w of list) w.resolve()
    this.waiters.clear()
  }
}
