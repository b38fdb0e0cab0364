/**
 * Purges what every consumer of FNMESH_EVENTS has settled (core/events.ts purgeSettled: the stream
 * keeps events by limits, not by interest, see there why). Every agent runs one, at a period that
 * grows with the mesh (about one purge every `periodMs` mesh-wide) and a random phase; purges
 * are idempotent, so two at once do no harm. A failure is logged once per kind and retried at the
 * next period: a purge late only keeps settled events on disk longer (they still expire by age).
 */
import type { JetStreamManager } from '@nats-io/jetstream'
import { purgeSettled } from '../../../core/events.js'
import type { Logger } from '../logger.js'

export interface JanitorComponents {
  jsm: JetStreamManager
  logger: Logger
  /** agents in the mesh now (the peer table), for the period */
  meshSize: () => number
}

export interface JanitorInit {
  /** about one purge this often mesh-wide. @default 10000 */
  periodMs?: number
  rng?: () => number
}

export class EventsJanitor {
  private timer: NodeJS.Timeout | undefined
  private running = false
  private lastError = ''
  /** events purged since start */
  purged = 0
  private readonly periodMs: number
  private readonly rng: () => number

  constructor (private readonly c: JanitorComponents, init: JanitorInit = {}) {
    this.periodMs = init.periodMs ?? 10_000
    this.rng = init.rng ?? Math.random
  }

  start (): void {
    if (this.running) return
    this.running = true
    this.schedule()
  }

  stop (): void {
    this.running = false
    clearTimeout(this.timer)
    this.timer = undefined
  }

  /** Purges now; resolves to the events purged (0 on failure, logged) */
  async sweep (): Promise<number> {
    try {
      const n = await purgeSettled(this.c.jsm)
      this.purged += n
      if (n > 0) this.c.logger.debug({ purged: n }, 'purged settled events')
      this.lastError = ''
      return n
    } catch (err: any) {
      const msg = String(err?.message ?? err)
      if (msg !== this.lastError) this.c.logger.warn({ err: msg }, 'cannot purge settled events; retrying later')
      this.lastError = msg
      return 0
    }
  }

  private schedule (): void {
    if (!this.running) return
    // Each of N agents every N x period, at a random point of it: about one purge per period.
    const ms = this.periodMs * Math.max(1, this.c.meshSize()) * (0.5 + this.rng())
    this.timer = setTimeout(() => {
      void this.sweep().finally(() => { this.schedule() })
    }, ms)
    this.timer.unref?.()
  }
}
