/**
 * Trigger strings, as given to `deploy --on` or in fnmesh.yaml, parsed and checked once, for the
 * SDK (at deploy) and the agent (to bind consumers and schedules):
 *   orders.*  uploads.>        a NATS subject pattern (events through the FNMESH_EVENTS stream)
 *   cron:*\/5 * * * *          a cron expression, 5 or 6 fields (seconds first), UTC
 *   rate:5m  rate(5 minutes)   a fixed rate, ticks at multiples of it since the epoch
 *   object:BUCKET              a put or delete in a NATS object store bucket
 *   kv:BUCKET                  a change in a NATS KV bucket
 */
import { createHash } from 'node:crypto'
import { Cron } from 'croner'
import { UsageError } from '../proto/errors.js'

export type Trigger =
  | { kind: 'subject', raw: string, pattern: string }
  | { kind: 'schedule', raw: string, cron?: string, everyMs?: number }
  | { kind: 'object', raw: string, bucket: string }
  | { kind: 'kv', raw: string, bucket: string }

export type TriggerKind = Trigger['kind']

const BUCKET = /^[A-Za-z0-9_-]{1,64}$/
const TOKEN = /^[A-Za-z0-9_\-:=@+~]+$/
/** Subjects fnmesh uses itself, never user triggers */
const RESERVED = /^(fnmesh|_INBOX|\$)/i
const UNIT_MS: Record<string, number> = {
  s: 1000, sec: 1000, secs: 1000, second: 1000, seconds: 1000,
  m: 60_000, min: 60_000, mins: 60_000, minute: 60_000, minutes: 60_000,
  h: 3_600_000, hour: 3_600_000, hours: 3_600_000,
  d: 86_400_000, day: 86_400_000, days: 86_400_000
}

function invalid (raw: string, why: string): never {
  throw new UsageError('FNMESH_ERR_INVALID_TRIGGER', `Trigger "${raw}" is invalid: ${why}`)
}

/** Checks a NATS subject pattern a trigger may listen on */
export function checkSubjectPattern (raw: string, pattern: string): string {
  if (pattern.length === 0 || pattern.length > 256) invalid(raw, 'a subject has 1 to 256 characters')
  if (/\s/.test(pattern)) invalid(raw, 'a subject cannot contain spaces')
  if (RESERVED.test(pattern)) invalid(raw, 'subjects starting with "fnmesh", "_INBOX" or "$" are reserved')
  const tokens = pattern.split('.')
  tokens.forEach((t, i) => {
    if (t === '>') { if (i !== tokens.length - 1) invalid(raw, '">" may only be the last token') } else if (t !== '*' && !TOKEN.test(t)) {
      invalid(raw, t === '' ? 'a subject cannot have empty tokens' : `token "${t}" has characters a subject cannot hold`)
    }
  })
  return pattern
}

export function parseTrigger (raw: string): Trigger {
  if (typeof raw !== 'string' || raw.trim() === '') invalid(String(raw), 'it is empty')
  const text = raw.trim()
  const rate = /^rate(?::\s*(\d+)\s*([a-z]+)|\(\s*(\d+)\s+([a-z]+)\s*\))$/i.exec(text)
  if (rate != null) {
    const n = Number(rate[1] ?? rate[3])
    const unit = UNIT_MS[(rate[2] ?? rate[4]).toLowerCase()]
    if (unit == null) invalid(raw, 'the unit of a rate is s, m, h or d (or seconds, minutes, hours, days)')
    if (n < 1 || n * unit > 366 * 86_400_000) invalid(raw, 'a rate is at least 1 second and at most a year')
    return { kind: 'schedule', raw: text, everyMs: n * unit }
  }
  if (/^rate[:(]/i.test(text)) invalid(raw, 'expected rate:5m or rate(5 minutes)')
  const colon = text.indexOf(':')
  const kind = colon > 0 ? text.slice(0, colon) : ''
  if (kind === 'cron') {
    const expr = text.slice(colon + 1).trim()
    if (expr.split(/\s+/).length > 6) invalid(raw, 'a cron expression has 5 fields, or 6 with seconds first')
    try {
      // eslint-disable-next-line no-new
      new Cron(expr, { paused: true, timezone: 'UTC' })
    } catch (err: any) {
      invalid(raw, String(err?.message ?? err).replace(/^CronPattern:\s*/, ''))
    }
    return { kind: 'schedule', raw: `cron:${expr}`, cron: expr }
  }
  if (kind === 'object' || kind === 'kv') {
    const bucket = text.slice(colon + 1).trim()
    if (!BUCKET.test(bucket)) invalid(raw, 'a bucket name has 1-64 letters, digits, "-" or "_"')
    return kind === 'object' ? { kind, raw: `object:${bucket}`, bucket } : { kind, raw: `kv:${bucket}`, bucket }
  }
  if (kind !== '' && /^[a-z]+$/i.test(kind) && !text.includes('.')) {
    invalid(raw, `unknown trigger kind "${kind}": use a subject pattern, cron:, rate:, object: or kv:`)
  }
  return { kind: 'subject', raw: text, pattern: checkSubjectPattern(raw, text) }
}

/** A short stable id of a trigger, for consumer names and schedule state */
export function triggerId (t: Trigger): string {
  return createHash('sha256').update(t.raw).digest('hex').slice(0, 10)
}

/** Parsed cron expressions (a paused Cron only computes run times), so a scheduler checking its
 * schedules several times a second does not parse each again; bounded, oldest dropped first. */
const crons = new Map<string, Cron>()
function cronOf (expr: string): Cron {
  let cron = crons.get(expr)
  if (cron == null) {
    cron = new Cron(expr, { paused: true, timezone: 'UTC' })
    if (crons.size >= 1024) crons.delete(crons.keys().next().value as string)
    crons.set(expr, cron)
  }
  return cron
}

/** Tick times (epoch ms) of a schedule in (afterMs, untilMs], oldest first, at most `max` */
export function ticksBetween (t: Extract<Trigger, { kind: 'schedule' }>, afterMs: number, untilMs: number, max = 1000): number[] {
  const out: number[] = []
  if (t.everyMs != null) {
    for (let tick = (Math.floor(afterMs / t.everyMs) + 1) * t.everyMs; tick <= untilMs && out.length < max; tick += t.everyMs) out.push(tick)
    return out
  }
  const cron = cronOf(t.cron as string)
  let next = cron.nextRun(new Date(afterMs))
  while (next != null && next.getTime() <= untilMs && out.length < max) {
    out.push(next.getTime())
    next = cron.nextRun(next)
  }
  return out
}
