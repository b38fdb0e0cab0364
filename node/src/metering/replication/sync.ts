/**
 * Anti-entropy between two nodes, independent of the transport: the initiator compares digests
 * of key ranges level by level (per node over all time -> days -> hours -> minutes) and descends
 * only where they differ; in a differing minute it pulls the records it lacks and pushes those
 * the other lacks (keys compared, or everything when one side holds none of that minute). A
 * node that missed hours of records therefore transfers only those records, plus a few small
 * digest messages. Minutes older than the retention hold no raw records: there the nodes swap
 * seals (signed registers) instead. Everything pulled goes through the Intake: verified first.
 */
import { SyncOp, SyncScope, type Encodable, type RangeDigest, type SyncReply, type SyncRequest } from '../../../../proto/codec.js'
import { UsageError } from '../../../../proto/errors.js'
import { sealsOf } from '../ledger/compaction.js'
import { sameDigest, type HourFilter } from '../records/digest.js'
import { MemberView } from './placement.js'
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
  /** records pushed that the peer did not store (refused, or could not write) */
  shortfall: number
}

/**
 * Which ranges a session covers (owner-based placement): the initiator's member list and R, and
 * whether the ranges are those both own (records go both ways) or those only the answerer owns
 * (a handoff: the initiator only pushes).
 */
export interface SessionScope { scope: SyncScope, view: MemberView }

/** Member lists taken from a peer's request at most */
const MAX_MEMBERS = 10_000

/** The ranges a scope covers, as seen by `initiator` and `answerer` alike */
export function scopeFilter (scope: SyncScope, view: MemberView, initiator: string, answerer: string): HourFilter {
  if (scope === SyncScope.SCOPE_CO_OWNED) return (nodeId, hourMs) => view.isOwner(initiator, nodeId, hourMs) && view.isOwner(answerer, nodeId, hourMs)
  if (scope === SyncScope.SCOPE_HANDOFF) return (nodeId, hourMs) => view.isOwner(answerer, nodeId, hourMs) && !view.isOwner(initiator, nodeId, hourMs)
  return undefined
}

const views = new Map<string, MemberView>()

/** The scope a peer's request asks for, checked (the member list is untrusted input) */
function requestFilter (req: SyncRequest, peer: string, self: string): HourFilter {
  const scope = req.scope ?? SyncScope.SCOPE_ALL
  if (scope === SyncScope.SCOPE_ALL) return undefined
  if (scope !== SyncScope.SCOPE_CO_OWNED && scope !== SyncScope.SCOPE_HANDOFF) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Unknown anti-entropy scope ${String(scope)}`)
  if (req.members.length > MAX_MEMBERS || req.members.some(m => m.length === 0 || m.length > 128) || req.replicas > 64) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', 'The anti-entropy scope names too many members, a malformed member or too many replicas')
  }
  const key = `${req.replicas}|${[...req.members].sort().join(',')}`
  let view = views.get(key)
  if (view == null) {
    if (views.size >= 8) views.clear()
    views.set(key, view = new MemberView(req.members, req.replicas))
  }
  return scopeFilter(scope, view, peer, self)
}

/** Answers one request of a peer's session */
export async function answer (store: MeterStore, intake: Intake, peer: string, req: SyncRequest, self = ''): Promise<Encodable<SyncReply>> {
  const ranges = req.ranges.slice(0, MAX_RANGES)
  switch (req.op) {
    case SyncOp.OP_DIGESTS: {
      const keep = requestFilter(req, peer, self)
      if (ranges.length === 0) return { digests: await childDigests(store, undefined, keep) }
      const digests: RangeDigest[] = []
      for (const r of ranges) digests.push(...await childDigests(store, r, keep))
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
  /** Owner-based placement: the ranges this session covers (none: every range held) */
  scope?: SessionScope
  /** this node's id (with a scope) */
  self?: string
}

/** One session with a peer reached through `ask`; pulls and pushes the difference */
export async function syncWith (store: MeterStore, intake: Intake, peer: string, ask: Ask, options: SyncOptions = {}): Promise<SyncResult> {
  const maxMinutes = options.maxMinutes ?? 5000
  const settle = options.settleMs ?? 0
  const settledBefore = settle > 0 ? (options.now ?? Date.now()) - settle : Infinity
  const res: SyncResult = { pulled: 0, pushed: 0, minutes: 0, rounds: 0, complete: true, shortfall: 0 }
  const sc = options.scope
  const keep = sc != null ? scopeFilter(sc.scope, sc.view, options.self ?? '', peer) : undefined
  const scoped = sc != null ? { scope: sc.scope, members: [...sc.view.members], replicas: sc.view.replicas } : {}
  // A handoff only pushes: the ranges are not this node's to keep.
  const pushOnly = sc?.scope === SyncScope.SCOPE_HANDOFF
  const call = async (req: Encodable<SyncRequest>): Promise<SyncReply> => {
    res.rounds++
    const reply = await ask(req.op === SyncOp.OP_DIGESTS ? { ...req, ...scoped } : req)
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
  const nodes = differing(store.tree.perNode(keep), (await call({ op: SyncOp.OP_DIGESTS })).digests)
  if (nodes.length === 0) return res
  const days = await descend(nodes.map(n => ({ ...n.range, fromMs: 0, toMs: 0 })), async r => store.tree.days(r.nodeId, keep))
  const hours = await descend(days.map(d => d.range), async r => store.tree.hoursOf(r.nodeId, r.fromMs, keep))
  let minutes = (await descend(hours.map(h => h.range), async r => await childDigests(store, r, keep)))
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
    else if ((m.mine?.count ?? 0) === 0) { if (!pushOnly) pull.push(r) }
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
      if (page.bundle.records.length > 0) await pushBundle(page.bundle)
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
    const missing = pushOnly ? [] : [...theirs].filter(k => !mine.has(k))
    const extra = [...mine].filter(k => !theirs.has(k))
    let taking: Promise<void> = Promise.resolve()
    for (let i = 0; i < missing.length; i += PAGE_RECORDS) {
      const reply = await call({ op: SyncOp.OP_FETCH, keys: missing.slice(i, i + PAGE_RECORDS) })
      await taking
      taking = take(reply)
    }
    await taking
    for (let i = 0; i < extra.length; i += PAGE_RECORDS) {
      await pushBundle(await fetchKeys(store, extra.slice(i, i + PAGE_RECORDS)))
    }
  }

  /** Pushes one page; counts the records the peer did not store */
  async function pushBundle (bundle: Awaited<ReturnType<typeof fetchKeys>>): Promise<void> {
    const reply = await call({ op: SyncOp.OP_PUSH, bundle })
    const n = bundle.records.length
    res.pushed += n
    const ack = reply.ack
    res.shortfall += Math.max(0, n - ((ack?.stored ?? 0) + (ack?.known ?? 0)))
  }

  async function exchangeSeals (ranges: RangeDigest[]): Promise<void> {
    for (let i = 0; i < ranges.length; i += MAX_RANGES) {
      const part = ranges.slice(i, i + MAX_RANGES)
      const theirs = (await call({ op: SyncOp.OP_REGISTERS, ranges: part })).registers
      if (theirs.length > 0 && !pushOnly) await intake.take(peer, undefined, theirs, 'sync')
      const byMinute = new Map(theirs.map(s => [`${s.digest.nodeId}|${s.digest.fromMs}`, s]))
      const better = []
      for (const r of part) {
        for (const s of await sealsOf(store.db, r.nodeId, [r.fromMs])) {
          const t = byMinute.get(`${r.nodeId}|${r.fromMs}`)
          if (t == null || compareRegisters(s, t) > 0) better.push(s)
        }
      }
      if (better.length > 0) {
        const ack = (await call({ op: SyncOp.OP_PUT_REGISTERS, registers: better })).ack
        if ((ack?.rejected ?? 0) > 0) res.shortfall += ack?.rejected ?? 0
      }
    }
  }
}
