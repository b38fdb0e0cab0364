/**
 * Node 20 lacks Promise.withResolvers, which libp2p's dependencies (it-queue, mortice,
 * @libp2p/utils) call. Imported first by every entry point, before libp2p loads, and by
 * vitest's setupFiles; test/unit/polyfill.test.ts checks that it is there.
 */
declare global {
  interface PromiseConstructor {
    withResolvers?: <T>() => { promise: Promise<T>, resolve: (value: T | PromiseLike<T>) => void, reject: (reason?: unknown) => void }
  }
}

// eslint-disable-next-line @typescript-eslint/unbound-method
Promise.withResolvers ??= function <T> (this: PromiseConstructor) {
  let resolve!: (value: T | PromiseLike<T>) => void
  let reject!: (reason?: unknown) => void
  const promise = new this<T>((a, b) => { resolve = a; reject = b })
  return { promise, resolve, reject }
}

export {}
