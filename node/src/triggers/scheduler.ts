/**
 * Schedules without a leader: every agent computes the ticks of every schedule and publishes
 * each due tick to fnmesh.fn.<function>.schedule with Nats-Msg-Id "sched:<fn>:<trigger>:<tick>",
 * so JetStream keeps exactly one per tick however many agents are up. The last tick fired is
 * kept in the KV bucket fnmesh_schedules, so ticks missed while no agent ran fire late (once)
 * within a grace window, and ticks already fired are not fired again.
 */
import type { JetStreamClient } from '@nats-io/jetstream'
import type { KV } from '@nats-io/kv'
import { headers as natsHeaders } from '@nats-io/transport-node'
import { EventHeaders, functionSubject } from '../../../core/events.js'
import type { StoredSpec } from '../../../core/registry.js'
import { parseTrigger, ticksBetween, triggerId, type Trigger } from '../../../core/triggers.js'
import type { Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'

export interface SchedulerComponents {
  js: JetStreamClient
  /** the fnmesh_schedules bucket */
  kv: KV
  /** follows the bucket: `onEntry(key, value)` for every key now and every change; returns a stop function */
  watch: (onEntry: (key: string, value: string | null) => void) => Promise<() => void>
  /** the functions deployed now */
  specs: () => Iterable<StoredSpec>
  logger: Logger
}

export interface SchedulerInit {
  /** Ticks missed by up to this long still fire (late, once). Below the 10 min dedupe window. @default 300000 */
  graceMs?: number
  /** How often due ticks are checked. @default 200 */
  intervalMs?: number
}

type Schedule = Extract<Trigger, { kind: 'schedule' }>

export class Scheduler implements Startable {
  private timer: NodeJS.Timeout | undefined
  private ticking = false
  /** last tick fired per "<fn>.<trigger id>", from this agent or (via KV) any other */
  private readonly lastFired = new Map<string, number>()
  private stopWatch: (() => void) | undefined
  /** each spec's schedules, parsed once (a spec object is immutable; a new version is a new object) */
  private readonly schedulesOf = new WeakMap<StoredSpec, Array<{ t: Schedule, id: string }>>()
  private readonly graceMs: number
  private readonly intervalMs: number
  fired = 0

  constructor (private readonly c: SchedulerComponents, init: SchedulerInit = {}) {
    this.graceMs = init.graceMs ?? 300_000
    this.intervalMs = init.intervalMs ?? 200
  }

  async start (): Promise<void> {
    if (this.timer != null) return
    this.stopWatch = await this.c.watch((key, value) => {
      const v = Number(value)
      if (value != null && Number.isFinite(v)) this.note(key, v)
    })
    this.timer = setInterval(() => {
      this.tick().catch((err: any) => { this.c.logger.error({ code: 'FNMESH_ERR_INTERNAL', err: String(err?.message ?? err) }, 'a schedule tick failed') })
    }, this.intervalMs)
  }

  isStarted (): boolean {
    return this.timer != null
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
    this.stopWatch?.()
  }

  private note (key: string, tick: number): void {
    if ((this.lastFired.get(key) ?? 0) < tick) this.lastFired.set(key, tick)
  }

  private async tick (): Promise<void> {
    if (this.ticking) return
    this.ticking = true
    try {
      const now = Date.now()
      for (const spec of this.c.specs()) {
        let schedules = this.schedulesOf.get(spec)
        if (schedules == null) {
          schedules = []
          for (const raw of spec.triggers) {
            let t: Trigger
            try { t = parseTrigger(raw) } catch { continue }
            if (t.kind === 'schedule') schedules.push({ t, id: triggerId(t) })
          }
          this.schedulesOf.set(spec, schedules)
        }
        for (const { t, id } of schedules) await this.fire(spec, t, id, now)
      }
    } finally {
      this.ticking = false
    }
  }

  private async fire (spec: StoredSpec, t: Schedule, id: string, now: number): Promise<void> {
    const key = `${spec.name}.${id}`
    // Never before the function existed, never further back than the grace window.
    const after = Math.max(this.lastFired.get(key) ?? spec.createdAtMs, spec.createdAtMs, now - this.graceMs)
    for (const tick of ticksBetween(t, after, now, 100)) {
      const eventId = `sched-${spec.name}-${id}-${tick}`
      const time = new Date(tick).toISOString()
      const event = { version: '0', id: eventId, 'detail-type': 'Scheduled Event', source: 'fnmesh.schedule', time, resources: [t.raw], detail: {} }
      const h = natsHeaders()
      h.set(EventHeaders.attempt, '1')
      h.set(EventHeaders.eventId, eventId)
      h.set(EventHeaders.eventTime, String(tick))
      h.set(EventHeaders.trigger, t.raw)
      h.set(EventHeaders.attributes, JSON.stringify({ id: eventId, source: 'fnmesh.schedule', type: 'fnmesh.schedule.tick', time, subject: t.raw }))
      try {
        const ack = await this.c.js.publish(functionSubject(spec.name, 'schedule'), JSON.stringify(event), { headers: h, msgID: `sched:${spec.name}:${id}:${tick}` })
        if (!ack.duplicate) this.fired++
      } catch (err: any) {
        this.c.logger.warn({ fn: spec.name, trigger: t.raw, tick: time, err: String(err?.message ?? err) }, 'could not fire a schedule tick; will retry')
        return
      }
      this.note(key, tick)
      await this.c.kv.put(key, String(tick)).catch(() => {})
    }
  }
}
