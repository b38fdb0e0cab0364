/**
 * Anti-entropy between two nodes, independent of the transport: the initiator compares digests
 * of key ranges level by level (per node over all time -> days -> hours -> minutes) and descends
 * only where they differ; in a differing minute it pulls the records it lacks and pushes those
 * the other lacks (keys compared, or everything when one side holds none of that minute). A
 * node that missed hours of records therefore transfers only those records, plus a few small
 * digest messages. Minutes older than the retention hold no raw records: there the nodes swap
 * seals (signed registers) instead. Everything pulled goes through the Intake: verified first.
 */
import { SyncOp, type Encodable, type RangeDigest, type SyncReply, type SyncRequest } from '../../../../proto/codec.js'
import { sealsOf } from '../ledger/compaction.js'
import { sameDigest } from '../records/digest.js'
import { MINUTE_MS } from '../records/keys.js'
import type { Intake } from './intake.js'
import { PAGE_RECORDS, childDigests, fetchKeys, fetchRanges, keysIn, resumeAt } from './ranges.js'
import { compareRegisters } from '../records/rollup.js'
import type { MeterStore } from '../ledger/store.js'

export type Ask = (req: Encodable<SyncRequest>) => Promise<SyncReply>

const MAX_RANGES = 1000

export interface SyncResult {
  /** records this node pulled (new to it or not) and pushed */
  pulled: number
  pushed: number
  /** minutes that differed */
  minutes: number
  /** request/reply round trips */
  rounds: number
  /** false if the session stopped at its minute cap (run another) */
  complete: boolean
}

/** Answers one request of a peer's session */
export async function answer (store: MeterStore, intake: Intake, peer: string, req: SyncRequest): Promise<Encodable<SyncReply>> {
  const ranges = req.ranges.slice(0, MAX_RANGES)
  switch (req.op) {
    case SyncOp.OP_DIGESTS: {
      if (ranges.length === 0) return { digests: await childDigests(store) }
      const digests: RangeDigest[] = []
      for (const r of ranges) digests.push(...await childDigests(store, r))
      return { digests }
    }
    case SyncOp.OP_KEYS:
      return await keysIn(store, ranges, req.afterKey, req.limit > 0 ? Math.min(req.limit, PAGE_RECORDS * 5) : undefined)
    case SyncOp.OP_FETCH: {
      if (req.keys.length > 0) return { bundle: await fetchKeys(store, req.keys) }
      const page = await fetchRanges(store, ranges, req.afterKey)
      return { bundle: page.bundle, more: page.more, lastKey: page.lastKey }
    }
    case SyncOp.OP_PUSH:
      return { ack: await intake.take(peer, req.bundle, [], 'sync') }
    case SyncOp.OP_REGISTERS: {
      const registers = []
      for (const r of ranges) registers.push(...await sealsOf(store.db, r.nodeId, [r.fromMs]))
      return { registers }
    }
    case SyncOp.OP_PUT_REGISTERS:
      return { ack: await intake.take(peer, undefined, req.registers, 'sync') }
    default:
      return { error: { code: 'FNMESH_ERR_DECODE', errorMessage: `Unknown anti-entropy op ${String(req.op)}` } }
  }
}

const key = (r: RangeDigest): string => `${r.nodeId}|${r.fromMs}|${r.toMs}`

/** Ranges that differ between the two lists (present on one side only, or with other digests) */
function differing (mine: RangeDigest[], theirs: RangeDigest[]): Array<{ range: RangeDigest, mine?: RangeDigest, theirs?: RangeDigest }> {
  const a = new Map(mine.map(r => [key(r), r]))
  const b = new Map(theirs.map(r => [key(r), r]))
  const out = []
  for (const k of new Set([...a.keys(), ...b.keys()])) {
    const m = a.get(k)
    const t = b.get(k)
    if (m != null && t != null && sameDigest(m, t)) continue
    out.push({ range: (m ?? t) as RangeDigest, mine: m, theirs: t })
  }
  return out.sort((x, y) => x.range.fromMs - y.range.fromMs)
}

export interface SyncOptions {
  /** Minutes differing in a session at most (the rest in the next one). @default 5000 */
  maxMinutes?: number
  /**
   * Skip minutes that ended less than this long ago: pushes are still landing there, so both
   * sides differ by records in flight and listing the minute's keys would be wasted. @default 0
   */
  settleMs?: number
  now?: number
}

/** One session with a peer reached through `ask`; pulls and pushes the difference */
export async function syncWith (store: MeterStore, intake: Intake, peer: string, ask: Ask, options: SyncOptions = {}): Promise<SyncResult> {
  const maxMinutes = options.maxMinutes ?? 5000
  const settle = options.settleMs ?? 0
  const settledBefore = settle > 0 ? (options.now ?? Date.now()) - settle : Infinity
  const res: SyncResult = { pulled: 0, pushed: 0, minutes: 0, rounds: 0, complete: true }
  const call = async (req: Encodable<SyncRequest>): Promise<SyncReply> => {
    res.rounds++
    const reply = await ask(req)
    if (reply.error != null && reply.error.code !== '') throw new Error(`peer ${peer} answered ${reply.error.code}: ${reply.error.errorMessage}`)
    return reply
  }
  const descend = async (ranges: RangeDigest[], local: (r: RangeDigest) => Promise<RangeDigest[]>): Promise<ReturnType<typeof differing>> => {
    const out: ReturnType<typeof differing> = []
    for (let i = 0; i < ranges.length; i += MAX_RANGES) {
      const part = ranges.slice(i, i + MAX_RANGES)
      const theirs = (await call({ op: SyncOp.OP_DIGESTS, ranges: part })).digests
      const mine: RangeDigest[] = []
      for (const r of part) mine.push(...await local(r))
      out.push(...differing(mine, theirs))
    }
    return out
  }
  const nodes = differing(store.tree.perNode(), (await call({ op: SyncOp.OP_DIGESTS })).digests)
  if (nodes.length === 0) return res
  const days = await descend(nodes.map(n => ({ ...n.range, fromMs: 0, toMs: 0 })), async r => store.tree.days(r.nodeId))
  const hours = await descend(days.map(d => d.range), async r => store.tree.hoursOf(r.nodeId, r.fromMs))
  let minutes = (await descend(hours.map(h => h.range), async r => await childDigests(store, r)))
    .filter(m => m.range.fromMs + MINUTE_MS <= settledBefore)
  if (minutes.length > maxMinutes) { minutes = minutes.slice(0, maxMinutes); res.complete = false }
  res.minutes = minutes.length
  const horizon = store.horizonMs()
  const old: RangeDigest[] = []
  const pull: RangeDigest[] = []
  const push: RangeDigest[] = []
  const both: RangeDigest[] = []
  for (const m of minutes) {
    const r = { ...m.range, toMs: m.range.fromMs + MINUTE_MS }
    if (r.fromMs < horizon) old.push(r)
    else if ((m.mine?.count ?? 0) === 0) pull.push(r)
    else if ((m.theirs?.count ?? 0) === 0) push.push(r)
    else both.push(r)
  }
  if (pull.length > 0) await pullRanges(pull)
  if (push.length > 0) await pushRanges(push)
  if (both.length > 0) await exchangeKeys(both)
  if (old.length > 0) await exchangeSeals(old)
  return res

  /** Verifies and stores one page of records from the peer */
  async function take (page: SyncReply): Promise<void> {
    if (page.bundle == null) return
    res.pulled += page.bundle.records.length
    await intake.take(peer, page.bundle, [], 'sync')
  }

  /** Everything the peer holds in minutes this node holds none of, a page stored while the next one comes */
  async function pullRanges (ranges: RangeDigest[]): Promise<void> {
    let taking: Promise<void> = Promise.resolve()
    for (let i = 0; i < ranges.length; i += MAX_RANGES) {
      let rest = ranges.slice(i, i + MAX_RANGES)
      let after = ''
      while (rest.length > 0) {
        const reply = await call({ op: SyncOp.OP_FETCH, ranges: rest, afterKey: after })
        await taking
        taking = take(reply)
        if (!reply.more || reply.lastKey === '') break
        rest = resumeAt(rest, reply.lastKey)
        after = reply.lastKey
      }
    }
    await taking
  }

  /** Everything this node holds in minutes the peer holds none of */
  async function pushRanges (ranges: RangeDigest[]): Promise<void> {
    let rest = ranges
    let after = ''
    while (rest.length > 0) {
      const page = await fetchRanges(store, rest, after)
      if (page.bundle.records.length > 0) {
        await call({ op: SyncOp.OP_PUSH, bundle: page.bundle })
        res.pushed += page.bundle.records.length
      }
      if (!page.more) return
      rest = resumeAt(rest, page.lastKey)
      after = page.lastKey
    }
  }

  /** Minutes both hold some of: compare keys, pull what is missing here, push what is missing there */
  async function exchangeKeys (ranges: RangeDigest[]): Promise<void> {
    const theirs = new Set<string>()
    for (let i = 0; i < ranges.length; i += MAX_RANGES) {
      let rest = ranges.slice(i, i + MAX_RANGES)
      let after = ''
      while (rest.length > 0) {
        const reply = await call({ op: SyncOp.OP_KEYS, ranges: rest, afterKey: after })
        for (const k of reply.keys) theirs.add(k)
        if (!reply.more || reply.lastKey === '') break
        rest = resumeAt(rest, reply.lastKey)
        after = reply.lastKey
      }
    }
    const mine = new Set<string>()
    let rest: RangeDigest[] = ranges
    let after = ''
    while (rest.length > 0) {
      const page = await keysIn(store, rest, after)
      for (const k of page.keys) mine.add(k)
      if (!page.more) break
      rest = resumeAt(rest, page.lastKey)
      after = page.lastKey
    }
    const missing = [...theirs].filter(k => !mine.has(k))
    const extra = [...mine].filter(k => !theirs.has(k))
    let taking: Promise<void> = Promise.resolve()
    for (let i = 0; i < missing.length; i += PAGE_RECORDS) {
      const reply = await call({ op: SyncOp.OP_FETCH, keys: missing.slice(i, i + PAGE_RECORDS) })
      await taking
      taking = take(reply)
    }
    await taking
    for (let i = 0; i < extra.length; i += PAGE_RECORDS) {
      const bundle = await fetchKeys(store, extra.slice(i, i + PAGE_RECORDS))
      await call({ op: SyncOp.OP_PUSH, bundle })
      res.pushed += bundle.records.length
    }
  }

  async function exchangeSeals (ranges: RangeDigest[]): Promise<void> {
    for (let i = 0; i < ranges.length; i += MAX_RANGES) {
      const part = ranges.slice(i, i + MAX_RANGES)
      const theirs = (await call({ op: SyncOp.OP_REGISTERS, ranges: part })).registers
      if (theirs.length > 0) await intake.take(peer, undefined, theirs, 'sync')
      const byMinute = new Map(theirs.map(s => [`${s.digest.nodeId}|${s.digest.fromMs}`, s]))
      const better = []
      for (const r of part) {
        for (const s of await sealsOf(store.db, r.nodeId, [r.fromMs])) {
          const t = byMinute.get(`${r.nodeId}|${r.fromMs}`)
          if (t == null || compareRegisters(s, t) > 0) better.push(s)
        }
      }
      if (better.length > 0) await call({ op: SyncOp.OP_PUT_REGISTERS, registers: better })
    }
  }
}
