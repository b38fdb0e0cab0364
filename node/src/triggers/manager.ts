/**
 * The triggers part: keeps one Puller per (function, trigger) consumer of the deployed functions,
 * and the Scheduler. The streams and consumers are made by `fnmesh init` and by deploys, never by
 * an agent (an agent credential that may create consumers can write into the registry); a
 * consumer deleted by hand is made again by the next deploy of its function or `fnmesh init`.
 */
import { jetstream, RetentionPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { bindingsOf, DLQ_STREAM, EVENTS_STREAM, manager, SCHEDULES_BUCKET, type Binding } from '../../../core/events.js'
import { requireStreams } from '../../../core/init.js'
import { followKv, openBucket } from '../../../core/kv-follow.js'
import type { Registry, StoredSpec } from '../../../core/registry.js'
import type { Executor } from '../executor/executor.js'
import { Waiters, type Startable } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { FunctionCache } from '../registry/cache.js'
import type { MetricsSink } from '../metrics/sink.js'
import { Dispatcher } from './dispatcher.js'
import { EventsJanitor } from './janitor.js'
import { Puller } from './puller.js'
import { Scheduler, type SchedulerComponents } from './scheduler.js'

export interface TriggerComponents {
  nc: NatsConnection
  registry: Registry
  functions: FunctionCache
  executor: Executor
  capacity: LocalCapacity
  logger: Logger
  /** where events are counted; none when metrics are off */
  metrics?: MetricsSink
  /** placement (core/placement.ts): which functions this node may pull events for, and when it should leave them to others */
  placement?: TriggerPlacement
}

/** What the triggers need to know of placement (agent.ts wires this node's labels and the peer table in) */
export interface TriggerPlacement {
  /** this node's labels satisfy the function's constraints: it may run its events */
  eligible: (spec: StoredSpec) => boolean
  /** the function prefers other labels than this node's, and a live node it prefers has a free slot */
  preferredElsewhere: (spec: StoredSpec) => boolean
}

/** What the triggers need to know of this node's room (agent.ts wires the executor and the sandbox pool in) */
export interface LocalCapacity {
  /** slots free now (0 while the executor drains) */
  free: () => number
  /** invocations of `fn@version` running here now, for the function's concurrency */
  running: (key: string) => number
}

export interface TriggerInit {
  /** @default 300000 */
  scheduleGraceMs?: number
  /** about one purge of settled events this often mesh-wide (janitor.ts). @default 10000 */
  eventsPurgeMs?: number
  /** agents in the mesh (the peer table), for the purge period. @default 1 */
  meshSize?: () => number
}

export class TriggerManager implements Startable {
  private readonly pullers = new Map<string, Puller>()
  private readonly specs = new Map<string, StoredSpec>()
  private js!: JetStreamClient
  private jsm!: JetStreamManager
  private dispatcher!: Dispatcher
  private scheduler: Scheduler | undefined
  private janitor: EventsJanitor | undefined
  /** pullers waiting for a free slot */
  private readonly roomWaiters = new Waiters<'room'>()
  private started = false
  /** the stop under way: every caller waits for the same one */
  private stopping: Promise<void> | undefined
  /** set once the streams, dispatcher and scheduler exist: onSpec does nothing before */
  private ready = false

  constructor (private readonly c: TriggerComponents, private readonly init: TriggerInit = {}) {}

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    this.stopping = undefined
    this.js = jetstream(this.c.nc)
    this.jsm = await manager(this.c.nc)
    // Streams, buckets and consumers are made by `fnmesh init` and deploys, never by agents.
    await requireStreams(this.jsm, [EVENTS_STREAM, DLQ_STREAM])
    // A stream made before limits retention keeps interest retention (JetStream cannot change it):
    // say so once, with what to do, where it matters (a replicated stream; core/events.ts).
    const events = await this.jsm.streams.info(EVENTS_STREAM).catch(() => null)
    if (events != null && events.config.retention === RetentionPolicy.Interest && (events.config.num_replicas ?? 1) > 1) {
      this.c.logger.warn({ stream: EVENTS_STREAM, replicas: events.config.num_replicas }, 'the events stream has interest retention, which lost acknowledged events across server restarts on nats-server 2.9 clusters: re-create it with fnmesh init once its backlog is empty (README, Guarantees)')
    }
    this.dispatcher = new Dispatcher({ js: this.js, executor: this.c.executor, functions: this.c.functions, logger: this.c.logger, metrics: this.c.metrics })
    const kv = await openBucket(this.c.nc, SCHEDULES_BUCKET)
    const watch: SchedulerComponents['watch'] = async (onEntry) => await followKv(this.c.nc, kv, SCHEDULES_BUCKET, (key, e) => { onEntry(key, e != null ? e.string() : null) })
    this.scheduler = new Scheduler({ js: this.js, kv, watch, specs: () => this.specs.values(), logger: this.c.logger }, { graceMs: this.init.scheduleGraceMs })
    await this.scheduler.start()
    this.janitor = new EventsJanitor({ jsm: this.jsm, logger: this.c.logger, meshSize: this.init.meshSize ?? (() => 1) }, { periodMs: this.init.eventsPurgeMs })
    this.janitor.start()
    // Spec changes before this point were not applied (nothing to bind them with yet); every
    // usable spec known now is. Only specs the FunctionCache accepted (trust list, deploy rules).
    this.ready = true
    for (const spec of this.c.functions.all()) await this.onSpec(spec.name, spec)
  }

  isStarted (): boolean {
    return this.started
  }

  /** Called when the executor frees a slot */
  wake (): void {
    this.roomWaiters.wakeAll()
  }

  /**
   * Applies a spec change: binds new triggers, unbinds removed ones. Never rejects: a spec whose
   * triggers cannot be bound is logged and left unbound, and the agent goes on.
   */
  async onSpec (name: string, spec: StoredSpec | null): Promise<void> {
    if (!this.started || !this.ready) return
    try {
      await this.apply(name, spec)
    } catch (err: any) {
      this.c.logger.error({ fn: name, code: 'FNMESH_ERR_INTERNAL', err: String(err?.message ?? err) }, 'cannot apply a spec change to the triggers')
    }
  }

  private async apply (name: string, spec: StoredSpec | null): Promise<void> {
    if (spec == null) {
      this.specs.delete(name)
      this.unbind(name, new Set())
      return
    }
    const known = this.specs.get(name)
    if (known != null && known.version > spec.version) return
    this.specs.set(name, spec)
    // The deploy made these consumers (and `fnmesh init` remakes missing ones): a puller whose
    // consumer is missing says so and retries.
    let bindings: Binding[]
    try {
      bindings = bindingsOf(spec)
    } catch (err: any) {
      this.c.logger.error({ fn: name, err: String(err?.message ?? err) }, 'cannot bind the triggers of a function')
      return
    }
    // Superseded while binding (a newer version, a delete) or stopped: the later change decides.
    if (!this.started || this.specs.get(name) !== spec) return
    // A node whose labels do not satisfy the constraints pulls nothing: its events wait in the
    // stream for a node that does (labels are fixed for an agent's run).
    if (this.c.placement != null && !this.c.placement.eligible(spec)) {
      this.unbind(name, new Set())
      return
    }
    this.unbind(name, new Set(bindings.map(b => `${b.stream}/${b.consumer}`)))
    for (const b of bindings) {
      const key = `${b.stream}/${b.consumer}`
      if (this.pullers.has(key)) continue
      const p = new Puller(b, {
        js: this.js,
        dispatcher: this.dispatcher,
        room: (fn) => this.room(fn),
        roomChanged: async (options) => { await this.roomWaiters.wait('room', options) },
        logger: this.c.logger
      })
      this.pullers.set(key, p)
      p.start()
    }
  }

  /** Stops the pullers of `name` whose consumer is not in `keep` */
  private unbind (name: string, keep: ReadonlySet<string>): void {
    for (const [key, p] of this.pullers) {
      if (p.binding.fn !== name || keep.has(key)) continue
      this.pullers.delete(key)
      p.stop().catch((err: any) => { this.c.logger.warn({ fn: name, err: String(err?.message ?? err) }, 'error while stopping a puller') })
    }
  }

  /**
   * Events this node can take now for `fn`: free slots, within the function's concurrency; none
   * while a node the function prefers has room (pullers ask again within 500 ms)
   */
  private room (fn: string): number {
    const free = this.c.capacity.free()
    const spec = this.specs.get(fn)
    if (spec != null && free > 0 && (spec.prefer?.length ?? 0) > 0 && this.c.placement?.preferredElsewhere(spec) === true) return 0
    if (spec == null || spec.concurrency === 0) return free
    return Math.min(free, spec.concurrency - this.c.capacity.running(`${fn}@${spec.version}`))
  }

  /** Stops pulling and scheduling; resolves once pulled events are settled (acked or handed back) */
  async stop (): Promise<void> {
    if (!this.started) return await this.stopping
    this.started = false
    this.ready = false
    this.scheduler?.stop()
    this.janitor?.stop()
    const all = [...this.pullers.values()]
    this.pullers.clear()
    this.wake()
    this.stopping = Promise.all(all.map(async p => await p.stop())).then(() => {})
    await this.stopping
  }

  get stats (): Dispatcher['stats'] & { scheduled: number } {
    return { ...this.dispatcher.stats, scheduled: this.scheduler?.fired ?? 0 }
  }
}
