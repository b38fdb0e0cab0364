/**
 * The puller's idle backoff against a stub JetStream consumer: empty pulls wait ever longer (to
 * idleExpiresMs) for one event at a time; an event brings back short pulls of full batches; a
 * stop during a long pull does not wait it out.
 */
import { describe, expect, it } from 'vitest'
import { Puller } from '../../node/src/triggers/puller.js'
import { createLogger } from '../../node/src/logger.js'

interface Fetch { max_messages: number, expires: number }

/** A consumer whose fetch() answers from a script: each call takes the next batch (empty = the pull expires) */
function stubConsumer (script: Array<Array<{ id: number }>>): { fetches: Fetch[], consumer: any } {
  const fetches: Fetch[] = []
  const consumer = {
    fetch: async (o: Fetch) => {
      fetches.push(o)
      const batch = script.shift() ?? []
      let stopped = false
      let wake: (() => void) | undefined
      return {
        stop: () => { stopped = true; wake?.() },
        async * [Symbol.asyncIterator] () {
          for (const m of batch) yield m
          if (batch.length > 0) return
          // An empty pull lasts its expiry (shortened here: 1 ms per second asked), or until stopped.
          await new Promise<void>(resolve => { wake = resolve; setTimeout(resolve, stopped ? 0 : o.expires / 1000) })
        }
      }
    }
  }
  return { fetches, consumer }
}

function puller (consumer: any, init: { expiresMs?: number, idleExpiresMs?: number } = {}): { p: Puller, handled: number[] } {
  const handled: number[] = []
  const p = new Puller({ fn: 'f', trigger: null, stream: 'S', filter: 'fnmesh.fn.f.>', consumer: 'c' }, {
    js: { consumers: { get: async () => consumer } } as any,
    dispatcher: { handle: async (msg: { id: number }, _b: unknown, claim: () => void) => { handled.push(msg.id); claim() } } as any,
    room: () => 8,
    roomChanged: async () => {},
    logger: createLogger({ level: 'silent' })
  }, init)
  return { p, handled }
}

describe('Puller idle backoff', () => {
  it('doubles the wait of empty pulls up to the idle limit, asking for one event, and returns to short full batches on an event', async () => {
    const { fetches, consumer } = stubConsumer([[], [], [], [], [], [{ id: 1 }], [], []])
    const { p, handled } = puller(consumer, { expiresMs: 2000, idleExpiresMs: 16_000 })
    p.start()
    while (fetches.length < 8) await new Promise(resolve => setTimeout(resolve, 5))
    await p.stop()
    expect(fetches.slice(0, 8)).toEqual([
      { max_messages: 8, expires: 2000 },
      { max_messages: 1, expires: 4000 },
      { max_messages: 1, expires: 8000 },
      { max_messages: 1, expires: 16_000 },
      { max_messages: 1, expires: 16_000 },
      { max_messages: 1, expires: 16_000 },
      // the event came: short pulls of full batches again
      { max_messages: 8, expires: 2000 },
      { max_messages: 1, expires: 4000 }
    ])
    expect(handled).toEqual([1])
  })

  it('stops at once during a long pull', async () => {
    // the ninth pull would last 256 s (stub: 256 ms), and is cut by stop()
    const { fetches, consumer } = stubConsumer([])
    const { p } = puller(consumer, { expiresMs: 1000, idleExpiresMs: 1_000_000 })
    p.start()
    while (fetches.length < 9) await new Promise(resolve => setTimeout(resolve, 5))
    expect(fetches.at(-1)?.expires).toBe(256_000)
    const t0 = Date.now()
    await p.stop()
    expect(Date.now() - t0).toBeLessThan(100)
  })
})
