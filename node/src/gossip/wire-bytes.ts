/**
 * Byte counters for libp2p, given to it as its `metrics` component: every connection's bytes as
 * they cross TCP (after Noise and yamux: what the network carries), and each protocol stream's
 * bytes by protocol (gossipsub's `/meshsub/…`, the meter protocols, identify). What the agent's
 * gossip costs a node is read from here (`fnmesh_libp2p_bytes_total`); libp2p's other metric
 * calls (registerMetric and the like) are accepted and dropped.
 */
import type { Metrics, MultiaddrConnection, Stream } from '@libp2p/interface'

/** One direction of one protocol */
export interface ByteCount { in: number, out: number }

/** protocols counted under their own name; any other under "other" (a peer chooses the name) */
const KNOWN = /^\/(meshsub|fnmesh|ipfs\/id)\//

const noop = (): void => {}
const metric = { update: noop, increment: noop, decrement: noop, reset: noop, observe: noop, timer: () => noop }

export class WireBytes {
  /** by protocol, plus "wire" for every connection's bytes on TCP */
  readonly counts = new Map<string, ByteCount>([['wire', { in: 0, out: 0 }]])

  private count (key: string): ByteCount {
    const name = key === 'wire' || KNOWN.test(key) ? key : 'other'
    let c = this.counts.get(name)
    if (c == null) {
      c = { in: 0, out: 0 }
      this.counts.set(name, c)
    }
    return c
  }

  /** What libp2p takes as its `metrics` (a factory of its components) */
  metrics (): () => Metrics {
    return () => {
      const self = this
      const counting = (c: ByteCount, d: { source: AsyncIterable<any>, sink: (s: any) => Promise<void> }): void => {
        const source = d.source
        d.source = (async function * () {
          for await (const buf of source) {
            c.in += buf.byteLength
            yield buf
          }
        })()
        const sink = d.sink.bind(d)
        d.sink = async (s: AsyncIterable<any> | Iterable<any>) => {
          await sink((async function * () {
            for await (const buf of s) {
              c.out += buf.byteLength
              yield buf
            }
          })())
        }
      }
      const m = {
        trackMultiaddrConnection (maConn: MultiaddrConnection) { counting(self.count('wire'), maConn as never) },
        trackProtocolStream (stream: Stream) { counting(self.count(stream.protocol ?? 'other'), stream as never) },
        registerMetric: () => metric,
        registerMetricGroup: () => metric,
        registerCounter: () => metric,
        registerCounterGroup: () => metric,
        registerHistogram: () => metric,
        registerHistogramGroup: () => metric,
        registerSummary: () => metric,
        registerSummaryGroup: () => metric,
        traceFunction: (_name: string, fn: unknown) => fn,
        createTrace: () => undefined
      }
      return m as unknown as Metrics
    }
  }

  /** A copy: protocol -> bytes in and out */
  snapshot (): Record<string, ByteCount> {
    return Object.fromEntries([...this.counts].map(([k, v]) => [k, { ...v }]))
  }
}
