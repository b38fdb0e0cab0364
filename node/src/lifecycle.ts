/**
 * The agent's few lifecycle and waiting primitives, so no part hand-rolls them:
 *
 * - `Startable`: the one start/stop contract every part follows (js-libp2p's startable): `start()`
 *   and `stop()` idempotent, `isStarted()`. Parts that drain add `drain()` (finish what they hold)
 *   beside `stop()` (stop at once), both idempotent with the closing promise cached (`Once`).
 * - `Once`: runs an async step at most once and gives every caller the same promise.
 * - `Idle`: a counter of work in hand that resolves every `whenIdle()` caller once it reaches 0,
 *   each wait bounded by a timeout and an AbortSignal.
 * - `Waiters`: FIFO waiters per key, each wait bounded by a timeout and an AbortSignal; `wake`
 *   resolves the longest one, `wakeAll` every one.
 *
 * Nothing here imports another part of the agent.
 */

/** The start/stop contract of every part the agent wires (agent.ts) */
export interface Startable {
  /** Idempotent: a second call resolves at once */
  start: () => void | Promise<void>
  /** Idempotent: stops at once, without waiting for work in hand */
  stop: () => void | Promise<void>
  isStarted: () => boolean
}

/** A part that can also finish what it holds before stopping */
export interface Drainable {
  /** Idempotent: every caller gets the same promise, resolved once the part holds no work */
  drain: () => Promise<void>
}

/** Runs `fn` on the first `run()` and returns that same promise to every later caller */
export class Once<T = void> {
  private promise: Promise<T> | undefined

  constructor (private readonly fn: () => Promise<T>) {}

  run (): Promise<T> {
    this.promise ??= this.fn()
    return this.promise
  }

  get started (): boolean {
    return this.promise != null
  }
}

/**
 * Work in hand: `enter()` and `leave()` around each piece; `whenIdle()` resolves (for every caller,
 * however many) once the count is 0, at once when it already is.
 */
export class Idle {
  private count = 0
  private resolvers = new Set<() => void>()

  get size (): number {
    return this.count
  }

  enter (): void {
    this.count++
  }

  leave (): void {
    if (this.count === 0) return
    if (--this.count === 0) {
      const resolvers = this.resolvers
      this.resolvers = new Set()
      for (const r of resolvers) r()
    }
  }

  /**
   * Resolves `true` once the count is 0 (at once when it already is), `false` when `timeoutMs`
   * passes or `signal` aborts first.
   */
  async whenIdle (options: WaitOptions = {}): Promise<boolean> {
    if (this.count === 0) return true
    const { timeoutMs, signal } = options
    if (signal?.aborted === true) return false
    return await new Promise<boolean>(resolve => {
      let timer: NodeJS.Timeout | undefined
      const done = (idle: boolean): void => {
        if (timer != null) clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        this.resolvers.delete(onIdle)
        resolve(idle)
      }
      const onIdle = (): void => { done(true) }
      const onAbort = (): void => { done(false) }
      if (timeoutMs != null) timer = setTimeout(onAbort, Math.max(0, timeoutMs))
      signal?.addEventListener('abort', onAbort, { once: true })
      this.resolvers.add(onIdle)
    })
  }
}

export interface WaitOptions {
  /** give up after this long (the wait resolves `false`) */
  timeoutMs?: number
  /** give up when aborted (the wait resolves `false`) */
  signal?: AbortSignal
}

interface Waiter { done: (woken: boolean) => void }

/**
 * FIFO waiters per key. `wait(key)` resolves `true` when woken, `false` after its timeout or
 * abort; a waiter that gave up leaves the queue, so `wake` always reaches a live one.
 */
export class Waiters<K = string> {
  private readonly queues = new Map<K, Waiter[]>()

  async wait (key: K, options: WaitOptions = {}): Promise<boolean> {
    const { timeoutMs, signal } = options
    if (signal?.aborted === true) return false
    return await new Promise<boolean>((resolve) => {
      let timer: NodeJS.Timeout | undefined
      const onAbort = (): void => { waiter.done(false) }
      const waiter: Waiter = {
        done: (woken) => {
          if (timer != null) clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          if (!woken) this.remove(key, waiter)
          resolve(woken)
        }
      }
      if (timeoutMs != null) timer = setTimeout(() => { waiter.done(false) }, Math.max(0, timeoutMs))
      signal?.addEventListener('abort', onAbort, { once: true })
      const queue = this.queues.get(key) ?? []
      queue.push(waiter)
      this.queues.set(key, queue)
    })
  }

  /** Wakes the longest waiter of `key`; false if there was none */
  wake (key: K): boolean {
    const queue = this.queues.get(key)
    const waiter = queue?.shift()
    if (queue?.length === 0) this.queues.delete(key)
    waiter?.done(true)
    return waiter != null
  }

  /** Wakes every waiter of `key`, or of every key */
  wakeAll (key?: K): void {
    const queues = key === undefined ? [...this.queues.values()] : [this.queues.get(key) ?? []]
    if (key === undefined) this.queues.clear()
    else this.queues.delete(key)
    for (const queue of queues) for (const w of queue) w.done(true)
  }

  /** Waiters of `key` (or of every key) */
  size (key?: K): number {
    if (key !== undefined) return this.queues.get(key)?.length ?? 0
    let n = 0
    for (const q of this.queues.values()) n += q.length
    return n
  }

  private remove (key: K, waiter: Waiter): void {
    const queue = this.queues.get(key)
    if (queue == null) return
    const i = queue.indexOf(waiter)
    if (i >= 0) queue.splice(i, 1)
    if (queue.length === 0) this.queues.delete(key)
  }
}
