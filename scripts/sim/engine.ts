/**
 * One discrete-event run of the mesh: Poisson arrivals, each at a uniformly random router (a
 * NATS queue group), routed by the policy (router-model.ts: the agent's choose.ts, load.ts and
 * dispatch.ts); executors that run, queue or refuse with BUSY by the agent's admission rule
 * (executor-model.ts: executor/admit.ts); adverts at the agent's cadence (gossip.ts); the oracle's
 * true view (oracle.ts); measurements (metrics.ts). This file is the event loop that joins them.
 * Virtual time, no timers: a run is a pure function of its config.
 */
import { EventQueue } from './events.js'
import { ExecutorModel } from './executor-model.js'
import { GossipModel, type AdvertRecord } from './gossip.js'
import { Metrics } from './metrics.js'
import { resolve, type ResolvedConfig, type RunResult, type SimConfig } from './model.js'
import { OracleModel } from './oracle.js'
import { RouterModel } from './router-model.js'
import { deriveSeed, drawService, exponential, prng, serviceMean } from './rng.js'
import { RouterViews } from './views.js'
import { shardLayout, type ShardLayout } from './shards.js'
import { Ev, type Invocation, type World } from './world.js'

export { WINDOW } from './metrics.js'

export class Simulation {
  readonly c: ResolvedConfig
  private readonly n: number
  private readonly q = new EventQueue<Ev>()
  private readonly w: World
  private readonly gossip: GossipModel
  private readonly views: RouterViews
  private readonly metrics: Metrics
  private readonly exec: ExecutorModel
  private readonly routers: RouterModel
  private readonly oracle: OracleModel<Invocation> | undefined
  private readonly arrivals: () => number
  private readonly meanGapMs: number
  private readonly layout: ShardLayout | undefined

  constructor (config: SimConfig) {
    const c = resolve(config)
    this.c = c
    const n = c.slots.length
    this.n = n
    const ids = Array.from({ length: n }, (_, i) => `n${String(i).padStart(5, '0')}`)
    this.metrics = new Metrics(c, n)
    const totalSlots = c.slots.reduce((a, b) => a + b, 0)
    this.meanGapMs = serviceMean(c.service) / (c.load * totalSlots)
    this.arrivals = prng(deriveSeed(c.seed, 'arrivals', n, c.load))
    this.gossip = new GossipModel({
      nodes: n,
      slots: Int32Array.from(c.slots),
      seed: deriveSeed(c.seed, 'gossip-delay', n),
      delayMinMs: c.gossipDelayMs[0],
      delayMaxMs: c.gossipDelayMs[1],
      intervalMs: c.advertIntervalMs,
      minGapMs: c.advertMinGapMs
    })
    this.w = { c, n, q: this.q, gossip: this.gossip, metrics: this.metrics }
    this.exec = new ExecutorModel(this.w, c.slots)
    const routing = prng(deriveSeed(c.seed, 'routing', n, c.load, c.policy))
    const diagnose = prng(deriveSeed(c.seed, 'diagnose', n, c.load, c.policy))
    this.layout = c.design === 'shards' ? shardLayout(n, c.shardSize, c.shardsRead, deriveSeed(c.seed, 'shards', n)) : undefined
    this.views = new RouterViews({ n, ids, slots: this.exec.slots, inFlight: this.exec.inFlight, queues: this.exec.queues }, this.gossip, routing, { fullScanMaxNodes: c.fullScanMaxNodes, now: () => this.q.now, layout: this.layout })
    if (c.policy === 'oracle') this.oracle = new OracleModel(ids, c.slots)
    this.routers = new RouterModel(this.w, this.views, this.exec, this.oracle, diagnose)
    // Agents start at different moments: each node's periodic and prompt adverts have their own phase.
    const phase = prng(deriveSeed(c.seed, 'advert-phase', n))
    for (let i = 0; i < n; i++) {
      // design "probe": membership only, no load adverts (its cost is cost.ts's)
      if (c.design !== 'probe') this.q.at(phase() * c.advertIntervalMs, Ev.Tick, i, undefined)
      this.gossip.setLastSent(i, -phase() * c.advertMinGapMs)
    }
    this.q.at(exponential(this.arrivals, this.meanGapMs), Ev.Arrival, undefined, undefined)
  }

  /** every invocation ever created, finished and refused (conservation check) */
  get totals (): Metrics['totals'] {
    return this.metrics.totals
  }

  /** Runs to the end of the window and until every invocation has an outcome */
  run (): RunResult {
    const t0 = performance.now()
    const q = this.q
    const m = this.metrics
    const totals = m.totals
    while (q.pop()) {
      m.events++
      if (!this.views.measuring && q.now >= m.measureFrom) this.views.measuring = true
      if (this.views.measuring && q.now >= m.measureTo) this.views.measuring = false
      const a = q.a
      switch (q.kind) {
        case Ev.Arrival: this.onArrival(); break
        case Ev.Exec: this.onExec(a, q.b); break
        case Ev.Finish: this.onFinish(a, q.b); break
        case Ev.Reply: this.routers.onReply(a); break
        case Ev.Busy: this.routers.onBusy(a); break
        case Ev.Tick: this.publish(a); q.at(q.now + this.c.advertIntervalMs, Ev.Tick, a, undefined); break
        case Ev.Prompt: this.gossip.promptFired(a); this.publish(a); break
        case Ev.Wake: this.routers.changed(a, q.b); this.routers.wake(a); break
        case Ev.Timeout: this.routers.onTimeout(a); break
        case Ev.Settle: this.gossip.settle(a, q.now); break
        case Ev.QueueTimeout: this.onQueueTimeout(a, q.b); break
        case Ev.ProbeAt: this.routers.onProbeAt(a); break
        case Ev.ProbeBack: this.routers.onProbeBack(a); break
      }
      if (q.now >= m.measureTo && totals.arrivals === totals.completed + totals.rejected) break
    }
    if (totals.arrivals !== totals.completed + totals.rejected) {
      throw new Error(`Invocations lost: ${totals.arrivals} arrived, ${totals.completed} completed, ${totals.rejected} refused`)
    }
    return m.result(performance.now() - t0, { slots: this.exec.slots, inFlight: this.exec.inFlight, advertsPublished: this.gossip.published, stats: this.views.stats, tracked: this.routers.tracked, viewNodes: this.layout?.meanView ?? this.n - 1 })
  }

  private onArrival (): void {
    const now = this.q.now
    if (now >= this.metrics.measureTo) return
    const r = Math.floor(this.arrivals() * this.n)
    const inv: Invocation = {
      arrive: now,
      router: r,
      serviceMs: drawService(this.c.service, this.arrivals),
      measured: this.metrics.inWindow(now),
      attempts: 0,
      busy: 0,
      failures: 0,
      waitStarted: undefined,
      waiting: false,
      timeoutSet: false,
      start: NaN,
      node: -1,
      dispatch: undefined,
      remote: false,
      sentAt: NaN,
      queueing: false,
      queueMs: 0,
      runMs: 0,
      inQueue: false
    }
    this.metrics.totals.arrivals++
    if (inv.measured) this.metrics.m.arrivals++
    this.q.at(now + exponential(this.arrivals, this.meanGapMs), Ev.Arrival, undefined, undefined)
    this.routers.route(inv)
  }

  /** An ExecRequest reaches node p: it runs, waits in p's queue, or BUSY goes back a hop later */
  private onExec (inv: Invocation, p: number): void {
    if (this.exec.arrive(inv, p)) return
    this.busyBack(inv, p)
  }

  private busyBack (inv: Invocation, p: number): void {
    if (inv.measured) this.metrics.m.busy++
    if (this.metrics.inWindow(this.q.now)) this.metrics.m.execMsgs++
    this.q.at(this.q.now + this.c.hopMs, Ev.Busy, inv, p)
  }

  /** The wait in p's queue ran out: BUSY back to the router (which then finds its budget too short) */
  private onQueueTimeout (inv: Invocation, p: number): void {
    if (!this.exec.queueTimeout(inv, p)) return
    if (inv.remote) this.busyBack(inv, p)
    else this.metrics.reject(inv)
  }

  private onFinish (inv: Invocation, p: number): void {
    this.exec.finish(p, inv)
    this.oracle?.add(p, -1)
    if (inv.remote) {
      if (this.metrics.inWindow(this.q.now)) this.metrics.m.execMsgs++
      this.q.at(this.q.now + this.c.hopMs, Ev.Reply, inv, undefined)
    } else {
      this.metrics.complete(inv, this.q.now)
    }
    // The executor's onLoadChange wakes its own router's waiters.
    if (this.oracle != null) {
      this.routers.drainOracle()
    } else {
      this.routers.changed(p, p)
      this.routers.wake(p)
    }
  }

  private publish (p: number): void {
    const now = this.q.now
    const rec: AdvertRecord = this.gossip.publish(p, now, this.exec.load(p), this.metrics.inWindow(now))
    this.q.at(now + this.gossip.delayMaxMs, Ev.Settle, p, undefined)
    for (const r of this.routers.listening) {
      if (r !== p && this.views.inView(r, p)) this.q.at(this.gossip.arrival(rec, r), Ev.Wake, r, p)
    }
  }
}

/** Runs one configuration */
export function simulate (config: SimConfig): RunResult {
  return new Simulation(config).run()
}
