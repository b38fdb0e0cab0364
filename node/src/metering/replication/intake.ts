/**
 * Records and seals arriving from peers (pushed by the node that ran them, or pulled and pushed
 * by anti-entropy): verified, stored, counted. Whatever fails a check is refused with a logged
 * reason (rate-limited per peer) and never stored; the rest of the same message is still taken.
 */
import type { MeterAck, MeterBundle, RollupRegister } from '../../../../proto/codec.js'
import type { Logger } from '../../logger.js'
import type { BundleVerifier } from '../records/signing.js'
import type { MeterStore } from '../ledger/store.js'
import { LogLimiter } from './wire.js'

export interface IntakeStats {
  /** records received from peers (pushes and anti-entropy) */
  received: number
  /** records new to this node */
  stored: number
  /** records and seals refused */
  rejected: number
}

export class Intake {
  readonly stats: IntakeStats = { received: 0, stored: 0, rejected: 0 }
  private readonly limiter = new LogLimiter()

  constructor (private readonly store: MeterStore, private readonly verifier: BundleVerifier, private readonly log: Logger) {}

  /** Verifies and stores what `peer` sent; resolves once it is on disk */
  async take (peer: string, bundle: MeterBundle | null | undefined, seals: readonly RollupRegister[] = [], via = 'push'): Promise<Omit<MeterAck, 'seq'>> {
    const ack = { stored: 0, known: 0, rejected: 0, reason: '' }
    if (bundle != null && bundle.records.length + bundle.proofs.length > 0) {
      const v = await this.verifier.verify(bundle)
      this.stats.received += bundle.records.length
      if (v.rejected > 0 || v.reasons.length > 0) {
        ack.rejected += v.rejected
        ack.reason = v.reasons[0] ?? ''
        this.refused(peer, via, v.rejected, v.reasons)
      }
      if (v.records.length > 0) {
        const r = await this.store.ingest(v.records, v.proofs)
        ack.stored += r.stored
        ack.known += r.known
        if (r.stale > 0) {
          ack.rejected += r.stale
          ack.reason ||= `${r.stale} records are older than the retention (only seals are kept for those minutes)`
        }
        this.stats.stored += r.stored
      }
    }
    if (seals.length > 0) {
      const good: RollupRegister[] = []
      const reasons: string[] = []
      for (const s of seals) {
        const why = this.verifier.checkSeal(s)
        if (why == null) good.push(s)
        else reasons.push(`seal of ${s.digest?.nodeId ?? '?'} minute ${s.digest?.fromMs ?? '?'}: ${why}`)
      }
      if (reasons.length > 0) {
        ack.rejected += reasons.length
        ack.reason ||= reasons[0]
        this.refused(peer, via, reasons.length, reasons)
      }
      if (good.length > 0) await this.store.adoptRegisters(good)
    }
    this.stats.rejected += ack.rejected
    return ack
  }

  /** Logs bytes from `peer` that are not a message at all */
  garbage (peer: string, via: string, err: unknown): Omit<MeterAck, 'seq'> {
    const reason = `not a valid message: ${String((err as Error)?.message ?? err)}`
    this.stats.rejected++
    this.refused(peer, via, 1, [reason])
    return { stored: 0, known: 0, rejected: 1, reason }
  }

  private refused (peer: string, via: string, count: number, reasons: string[]): void {
    const suppressed = this.limiter.take(peer)
    if (suppressed < 0) return
    this.log.warn({ peer, via, refused: count, reasons, suppressedBefore: suppressed }, 'rejected meter data from a peer')
  }
}
