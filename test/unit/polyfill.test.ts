import { afterEach, describe, expect, it } from 'vitest'
import { fileURLToPath } from 'node:url'
import '../../node/src/polyfill.js'

type WithResolvers = NonNullable<PromiseConstructor['withResolvers']>
const original = Promise.withResolvers
const native = Object.getOwnPropertyDescriptor(Promise, 'withResolvers')
const POLYFILL = fileURLToPath(new URL('../../node/src/polyfill.ts', import.meta.url))
let reloads = 0

/** Evaluates the polyfill module again: a new query string makes a new module instance */
async function reloadPolyfill (): Promise<void> {
  await import(/* @vite-ignore */ `${POLYFILL}?reload=${++reloads}`)
}

describe('Promise.withResolvers polyfill', () => {
  afterEach(() => {
    if (native != null) Object.defineProperty(Promise, 'withResolvers', native)
  })

  it('is installed once the polyfill is loaded', () => {
    expect(typeof Promise.withResolvers).toBe('function')
  })

  it('resolves the promise it returns through resolve', async () => {
    const { promise, resolve } = (Promise.withResolvers as WithResolvers)<number>()
    expect(promise).toBeInstanceOf(Promise)
    resolve(42)
    await expect(promise).resolves.toBe(42)
  })

  it('rejects the promise it returns through reject', async () => {
    const { promise, reject } = (Promise.withResolvers as WithResolvers)<number>()
    reject(new RangeError('nope'))
    await expect(promise).rejects.toThrow(RangeError)
  })

  it('settles only once', async () => {
    const { promise, resolve, reject } = (Promise.withResolvers as WithResolvers)<string>()
    resolve('first')
    resolve('second')
    reject(new Error('late'))
    await expect(promise).resolves.toBe('first')
  })

  it('installs itself when Promise.withResolvers is missing', async () => {
    delete (Promise as { withResolvers?: unknown }).withResolvers
    expect(Promise.withResolvers).toBeUndefined()
    await reloadPolyfill()
    expect(typeof Promise.withResolvers).toBe('function')
    expect(Promise.withResolvers).not.toBe(original)
    const { promise, resolve } = (Promise.withResolvers as WithResolvers)<string>()
    resolve('fresh')
    await expect(promise).resolves.toBe('fresh')
  })

  it('leaves an existing Promise.withResolvers alone', async () => {
    const mine = function <T> (): ReturnType<WithResolvers> { throw new Error(`not called ${String({} as T)}`) } as unknown as WithResolvers
    Promise.withResolvers = mine
    await reloadPolyfill()
    expect(Promise.withResolvers).toBe(mine)
  })

  it('builds promises of the constructor it is called on', () => {
    class MyPromise<T> extends Promise<T> {}
    const { promise } = (Promise.withResolvers as WithResolvers).call(MyPromise)
    expect(promise).toBeInstanceOf(MyPromise)
  })
})
