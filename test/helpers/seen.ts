import { connect, type NatsConnection, type Subscription } from '@nats-io/transport-node'

/** One run reported by test/fixtures/functions/report.js */
export interface Seen {
  fn: string
  requestId: string
  event: any
  cloudEvent: Record<string, string> | null
  started: number
  ended: number
}

/** Collects the runs report.js publishes on test.seen.> */
export class SeenLog {
  readonly runs: Seen[] = []
  private constructor (private readonly nc: NatsConnection, private readonly sub: Subscription) {}

  static async start (url: string): Promise<SeenLog> {
    const nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 100 })
    let log: SeenLog | undefined
    const sub = nc.subscribe('test.seen.>', { callback: (err, msg) => { if (err == null) log?.runs.push(msg.json<Seen>()) } })
    log = new SeenLog(nc, sub)
    await nc.flush()
    return log
  }

  of (fn: string): Seen[] {
    return this.runs.filter(r => r.fn === fn)
  }

  async stop (): Promise<void> {
    this.sub.unsubscribe()
    await this.nc.close()
  }
}
