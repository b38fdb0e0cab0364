import { UsageError } from '../proto/errors.js'

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/** "90s", "15m", "2h", "7d" -> ms */
export function parseDuration (text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/.exec(String(text).trim())
  if (m == null) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Duration "${text}" is invalid: use a number and a unit, e.g. 90s, 15m, 2h, 7d`)
  return Math.round(Number(m[1]) * UNITS[m[2]])
}
