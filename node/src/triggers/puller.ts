/**
 * One pull loop per (function, trigger) consumer. It asks JetStream only for as many events as
 * this node has free slots (and the function has room under its concurrency), so events spread
 * over the mesh by capacity: a node with more free slots pulls more.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Consumer, JetStreamClient } from '@nats-io/jetstream'
import type { Binding } from '../../../core/events.js'
import type { WaitOptions } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { Dispatcher } from './dispatcher.js'

export interface PullerComponents {
  js: JetStreamClient
  dispatcher: Dispatcher
  /** events this node can take now for `fn` */
  room: (fn: string) => number
  /** resolves when room may have grown (a slot freed), after `timeoutMs`, or on abort */
  roomChanged: (options: WaitOptions) => Promise<void>
  logger: Logger
}

export interface PullerInit {
  /** Most events asked for at once. @default 8 */
  maxBatch?: number
  /** How long one pull request waits for events. @default 2000 */
  expiresMs?: number
}

export class Puller {
  private running = false
  private loop: Promise<void> | undefined
  /** aborted by stop(): ends the loop's waits at once */
  private stopping = new AbortController()
  private readonly inFlight = new Set<Promise<void>>()
  /** pulled events not yet holding an executor slot */
  private claimed = 0
  private consumer: Consumer | undefined
  private readonly maxBatch: number
  private readonly expiresMs: number

  constructor (readonly binding: Binding, private readonly c: PullerComponents, init: PullerInit = {}) {
    this.maxBatch = init.maxBatch ?? 8
    this.expiresMs = init.expiresMs ?? 2000
  }

  start (): void {
    if (this.running) return
    this.running = true
    this.stopping = new AbortController()
    this.loop = this.run()
  }

  isStarted (): boolean {
    return this.running
  }

  /** Stops pulling; resolves when the events already pulled are settled */
  async stop (): Promise<void> {
    this.running = false
    this.stopping.abort()
    await this.loop
    await Promise.all([...this.inFlight])
  }

  private async run (): Promise<void> {
    let failures = 0
    while (this.running) {
      const room = Math.min(this.maxBatch, this.c.room(this.binding.fn) - this.claimed)
      if (room <= 0) {
        await this.c.roomChanged({ timeoutMs: 500, signal: this.stopping.signal })
        continue
      }
      try {
        this.consumer ??= await this.c.js.consumers.get(this.binding.stream, this.binding.consumer)
        const batch = await this.consumer.fetch({ max_messages: room, expires: this.expiresMs })
        for await (const msg of batch) {
          this.claimed++
          const p = this.c.dispatcher.handle(msg, this.binding, () => { this.claimed-- })
            // handle() settles every message itself; a throw past it is a bug, logged, not fatal.
            .catch((err: any) => { this.c.logger.error({ fn: this.binding.fn, code: 'FNMESH_ERR_INTERNAL', err: String(err?.message ?? err) }, 'settling an event failed') })
            .finally(() => { this.inFlight.delete(p) })
          this.inFlight.add(p)
        }
        failures = 0
      } catch (err: any) {
        // NATS restarting, the consumer not created yet, the stream gone: back off and retry.
        this.consumer = undefined
        failures++
        if (failures === 1 || failures % 30 === 0) {
          this.c.logger.warn({ fn: this.binding.fn, consumer: this.binding.consumer, err: String(err?.message ?? err) }, 'pulling events failed; retrying')
        }
        await sleep(Math.min(5000, 250 * failures), undefined, { signal: this.stopping.signal }).catch(() => {})
      }
    }
  }
}
