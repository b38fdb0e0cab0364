/**
 * The agent's metrics in Prometheus form (prom-client): the only file that imports it.
 * Names follow Lambda's CloudWatch set (Invocations, Errors, Throttles, Duration, Init duration,
 * ConcurrentExecutions) and the OpenTelemetry FaaS conventions (seconds, its histogram buckets).
 * Labels stay bounded: function names come from the registry, and past MAX_FUNCTIONS distinct
 * names (or MAX_SERIES children of one metric) new ones are counted under "_other".
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { EventResult, InvocationSample, MetricsSink } from './sink.js'

/** OTel FaaS invoke/init duration buckets, in seconds */
export const FAAS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
export const MAX_FUNCTIONS = 500
export const MAX_SERIES = 5000
export const OTHER = '_other'
/** trigger label values; any other (a peer's request can say anything) counts as "other" */
const TRIGGERS = new Set(['sync', 'http', 'direct', 'subject', 'schedule', 'object', 'kv'])

/** What the node-level gauges read at scrape time (never on a hot path) */
export interface NodeStats {
  slots: () => number
  inFlight: () => number
  queueLength: () => number
  /** specialised sandboxes alive (idle or busy) */
  sandboxesWarm: () => number
  /** every live sandbox: specialised, generic (prewarmed) and booting */
  sandboxes: () => number
  /** gossip adverts this node sent, received, and rejected (forged or malformed), since it started */
  adverts: () => { sent: number, received: number, rejected: number }
  /** isolation layers active on this node */
  layersActive: () => number
  /** free bytes where the meter ledger lives */
  diskFreeBytes: () => number
  /** p99 of the meter replication lag over the recent window, ms */
  replicationLagMs: () => number
  underReplicated: () => number
  /** routable peers in the gossip table, this node excluded */
  gossipPeers: () => number
  /** libp2p bytes since start by protocol ("wire": every connection on TCP), in and out */
  libp2pBytes?: () => Record<string, { in: number, out: number }>
  /** membership "swim" (gossip/swim.ts): its messages and bytes, and what it detected, since start */
  swim?: () => { health: number, sent: number, received: number, rejected: number, bytesIn: number, bytesOut: number, pingFailures: number, suspected: number, dead: number, refuted: number }
  /** routing "probe": how picks went and probes were answered since start (router.ts probeStats) */
  probes?: () => { own: number, free: number, queue: number, fallback: number, answered: number, unanswered: number }
  natsConnected: () => boolean
  /** messages in the dead-letter stream per function (mesh-wide); read at scrape time, may reject */
  dlqMessages?: () => Promise<Record<string, number>>
}

/** A metric's children bound once per label set, so a hot-path call is one Map lookup */
class Children<T> {
  private readonly map = new Map<string, T>()
  constructor (private readonly bind: (labels: string[]) => T) {}
  /** `key` names the label set (the values joined); `labels` builds them only on a miss */
  get (key: string, labels: () => string[]): T {
    let child = this.map.get(key)
    if (child == null) {
      // Past MAX_SERIES children, a new label set is counted under "_other" (and not kept).
      if (this.map.size >= MAX_SERIES) return this.bind(labels().map((_, i) => i === 0 ? OTHER : ''))
      child = this.bind(labels())
      this.map.set(key, child)
    }
    return child
  }
}

export class PromMetrics implements MetricsSink {
  readonly registry = new Registry()
  private readonly names = new Set<string>()
  private readonly invocations: Children<Counter.Internal>
  private readonly errors: Children<Counter.Internal>
  private readonly throttles: Children<Counter.Internal>
  private readonly durations: Children<Histogram.Internal<string>>
  private readonly inits: Children<Histogram.Internal<string>>
  private readonly colds: Children<Counter.Internal>
  private readonly concurrent: Children<Gauge.Internal<string>>
  private readonly waits: Histogram
  private readonly backlogs: Children<Gauge.Internal<string>>
  private readonly ages: Children<Histogram.Internal<string>>
  private readonly events: Children<Counter.Internal>

  constructor (stats: NodeStats) {
    const r = [this.registry]
    const invocations = new Counter({ name: 'fnmesh_invocations_total', help: 'Invocations run on this node, by how they ended', labelNames: ['function', 'version', 'trigger', 'outcome'], registers: r })
    const errors = new Counter({ name: 'fnmesh_invocation_errors_total', help: 'Invocations run on this node that did not succeed, by error code', labelNames: ['function', 'code'], registers: r })
    const throttles = new Counter({ name: 'fnmesh_throttles_total', help: 'Invocations this node refused for want of a slot (FNMESH_ERR_BUSY)', labelNames: ['function'], registers: r })
    const durations = new Histogram({ name: 'fnmesh_invocation_duration_seconds', help: 'Run time of invocations in the sandbox', labelNames: ['function', 'trigger'], buckets: FAAS_BUCKETS, registers: r })
    const inits = new Histogram({ name: 'fnmesh_init_duration_seconds', help: 'Time spent loading a function on a cold start', labelNames: ['function'], buckets: FAAS_BUCKETS, registers: r })
    const colds = new Counter({ name: 'fnmesh_cold_starts_total', help: 'Invocations that started a new sandbox', labelNames: ['function'], registers: r })
    const concurrent = new Gauge({ name: 'fnmesh_concurrent_executions', help: 'Invocations running on this node now', labelNames: ['function'], registers: r })
    this.waits = new Histogram({ name: 'fnmesh_queue_wait_seconds', help: 'Time invocations waited in this node\'s queue for a slot', buckets: [0, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: r })
    const backlogs = new Gauge({ name: 'fnmesh_event_backlog', help: 'Events still pending on a function\'s consumer, as this node last saw when pulling (mesh-wide: max over nodes)', labelNames: ['function'], registers: r })
    const ages = new Histogram({ name: 'fnmesh_event_age_seconds', help: 'Time from an event\'s storing to its pull (Lambda AsyncEventAge)', labelNames: ['function'], buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600], registers: r })
    const events = new Counter({ name: 'fnmesh_events_total', help: 'Events this node settled: acked after a run, retried, dead-lettered, handed back', labelNames: ['function', 'result'], registers: r })
    this.backlogs = new Children(l => backlogs.labels(...l))
    this.ages = new Children(l => ages.labels(...l))
    this.events = new Children(l => events.labels(...l))
    this.invocations = new Children(l => invocations.labels(...l))
    this.errors = new Children(l => errors.labels(...l))
    this.throttles = new Children(l => throttles.labels(...l))
    this.durations = new Children(l => durations.labels(...l))
    this.inits = new Children(l => inits.labels(...l))
    this.colds = new Children(l => colds.labels(...l))
    this.concurrent = new Children(l => concurrent.labels(...l))
    const gauge = (name: string, help: string, read: () => number): void => {
      new Gauge({ name, help, registers: r, collect () { this.set(read()) } })
    }
    gauge('fnmesh_slots', 'Invocations this node runs at once (--slots)', stats.slots)
    gauge('fnmesh_in_flight', 'Invocations holding a slot on this node', stats.inFlight)
    gauge('fnmesh_queue_length', 'Invocations waiting for a slot on this node', stats.queueLength)
    gauge('fnmesh_sandboxes_warm', 'Sandboxes loaded with a function (idle or busy)', stats.sandboxesWarm)
    gauge('fnmesh_sandboxes', 'Live sandboxes: specialised, generic (prewarmed) and booting', stats.sandboxes)
    new Counter({
      name: 'fnmesh_gossip_adverts_total',
      help: 'Capacity adverts this node sent, received and rejected',
      labelNames: ['direction'],
      registers: r,
      collect () {
        const a = stats.adverts()
        this.reset()
        this.inc({ direction: 'sent' }, a.sent)
        this.inc({ direction: 'received' }, a.received)
        this.inc({ direction: 'rejected' }, a.rejected)
      }
    })
    const probes = stats.probes
    if (probes != null) {
      new Counter({
        name: 'fnmesh_router_probe_picks_total',
        help: 'Routing "probe": picks by how they went: own (this node had a free slot), free (a probed peer had one), queue (to wait at a probed executor), fallback (no probe answer had room: the adverts\' view)',
        labelNames: ['how'],
        registers: r,
        collect () {
          const p = probes()
          this.reset()
          for (const how of ['own', 'free', 'queue', 'fallback'] as const) this.inc({ how }, p[how])
        }
      })
      new Counter({
        name: 'fnmesh_router_probes_total',
        help: 'Routing "probe": load probes this router sent, by whether they were answered in time by an accepting node',
        labelNames: ['answer'],
        registers: r,
        collect () {
          const p = probes()
          this.reset()
          this.inc({ answer: 'answered' }, p.answered)
          this.inc({ answer: 'none' }, p.unanswered)
        }
      })
    }
    const swim = stats.swim
    if (swim != null) {
      gauge('fnmesh_membership_health', 'Membership "swim": Lifeguard\'s local health multiplier, 0 (healthy) to 8: probes that no helper answered and refuted suspicions of this node raise it, acks lower it; timeouts and the probe period scale by 1 + it', () => swim().health)
      // A counter whose samples are read from the membership's stats at scrape time, one per label value
      const counted = (name: string, help: string, label: string, read: (s: ReturnType<NonNullable<typeof stats.swim>>) => Record<string, number>): void => {
        new Counter({
          name,
          help,
          labelNames: [label],
          registers: r,
          collect () {
            this.reset()
            for (const [value, n] of Object.entries(read(swim()))) this.inc({ [label]: value }, n)
          }
        })
      }
      counted('fnmesh_membership_messages_total', 'Membership "swim": SWIM messages this node sent and received, and those rejected (malformed, or an update that did not check out)', 'direction', s => ({ sent: s.sent, received: s.received, rejected: s.rejected }))
      counted('fnmesh_membership_bytes_total', 'Membership "swim": bytes of SWIM messages this node sent (out) and received (in)', 'direction', s => ({ in: s.bytesIn, out: s.bytesOut }))
      counted('fnmesh_membership_events_total', 'Membership "swim": failed probes (no ack, directly or through others), members this node suspected or saw declared dead, and suspicions of itself it refuted', 'event', s => ({ probe_failed: s.pingFailures, suspected: s.suspected, dead: s.dead, refuted: s.refuted }))
    }
    const bytes = stats.libp2pBytes
    if (bytes != null) {
      new Counter({
        name: 'fnmesh_libp2p_bytes_total',
        help: 'libp2p bytes since start: protocol "wire" is every connection as sent on TCP (Noise, yamux), the others each protocol\'s stream payload (/meshsub/… is gossip)',
        labelNames: ['protocol', 'direction'],
        registers: r,
        collect () {
          this.reset()
          for (const [protocol, c] of Object.entries(bytes())) {
            this.inc({ protocol, direction: 'in' }, c.in)
            this.inc({ protocol, direction: 'out' }, c.out)
          }
        }
      })
    }
    gauge('fnmesh_isolation_layers_active', 'Sandbox isolation layers active on this node', stats.layersActive)
    gauge('fnmesh_disk_free_bytes', 'Free bytes where the meter ledger lives', stats.diskFreeBytes)
    gauge('fnmesh_meter_replication_lag_seconds', 'p99 time for a meter record to reach its replicas (recent window)', () => stats.replicationLagMs() / 1000)
    gauge('fnmesh_meter_under_replicated', 'Own meter records not yet on enough peers', stats.underReplicated)
    gauge('fnmesh_gossip_peers', 'Routable peers in the gossip table, this node excluded', stats.gossipPeers)
    gauge('fnmesh_nats_connected', '1 while the NATS connection is up', () => stats.natsConnected() ? 1 : 0)
    const dlq = stats.dlqMessages
    if (dlq != null) {
      new Gauge({
        name: 'fnmesh_dlq_messages',
        help: 'Dead letters kept per function (the mesh-wide stream, as this node reads it: use max over nodes)',
        labelNames: ['function'],
        registers: r,
        async collect () {
          // A scrape must not hang on JetStream: no answer within 1 s leaves the last values.
          let counts: Record<string, number>
          try { counts = await Promise.race([dlq(), new Promise<never>((_, reject) => setTimeout(() => { reject(new Error('timeout')) }, 1000).unref())]) } catch { return }
          this.reset()
          for (const [name, n] of Object.entries(counts).sort((a, b) => b[1] - a[1]).slice(0, MAX_FUNCTIONS)) this.set({ function: name }, n)
        }
      })
    }
  }

  /** A function name as a label: bounded to MAX_FUNCTIONS distinct values */
  private fn (name: string): string {
    if (this.names.has(name)) return name
    if (this.names.size >= MAX_FUNCTIONS) return OTHER
    this.names.add(name)
    return name
  }

  invocation (s: InvocationSample): void {
    const fn = this.fn(s.function)
    const trigger = TRIGGERS.has(s.trigger) ? s.trigger : 'other'
    this.invocations.get(`${fn}\0${s.version}\0${trigger}\0${s.outcome}`, () => [fn, String(s.version), trigger, s.outcome]).inc()
    this.durations.get(`${fn}\0${trigger}`, () => [fn, trigger]).observe(s.durationMs / 1000)
    if (s.outcome !== 'success') this.errors.get(`${fn}\0${s.code ?? ''}`, () => [fn, (s.code ?? '').slice(0, 64)]).inc()
    if (s.initMs != null) {
      this.colds.get(fn, () => [fn]).inc()
      this.inits.get(fn, () => [fn]).observe(s.initMs / 1000)
    }
  }

  throttle (name: string): void {
    const fn = this.fn(name)
    this.throttles.get(fn, () => [fn]).inc()
  }

  queueWait (ms: number): void {
    this.waits.observe(ms / 1000)
  }

  running (name: string, delta: 1 | -1): void {
    const fn = this.fn(name)
    this.concurrent.get(fn, () => [fn]).inc(delta)
  }

  eventPulled (name: string, backlog: number, ageMs: number): void {
    const fn = this.fn(name)
    this.backlogs.get(fn, () => [fn]).set(backlog)
    this.ages.get(fn, () => [fn]).observe(Math.max(0, ageMs) / 1000)
  }

  eventSettled (name: string, result: EventResult): void {
    const fn = this.fn(name)
    this.events.get(`${fn}\0${result}`, () => [fn, result]).inc()
  }

  async text (): Promise<string> {
    return await this.registry.metrics()
  }

  get contentType (): string {
    return this.registry.contentType
  }
}
