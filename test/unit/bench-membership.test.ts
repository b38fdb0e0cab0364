/**
 * The membership figure's "kill to last dispatch" reading of the routers' logs: a figure built
 * from log lines must say when it found none, never read that as 0 ms.
 */
import { describe, expect, it } from 'vitest'
import { lastDispatchAfterKill } from '../../scripts/bench/figures/membership.js'
import { formatValue } from '../../scripts/bench/report.js'

const failed = (peer: string, sentAt: number): string => JSON.stringify({ level: 40, msg: 'dispatch failed', fn: 'f', peer, sentAt, err: 'gone' })

describe('kill to last dispatch', () => {
  const killAt = 1_000_000

  it('is the latest failed dispatch to the killed agent sent after the kill, over every survivor', () => {
    const logs = [
      [failed('victim', killAt + 120), failed('other', killAt + 900), 'not json "dispatch failed" victim'].join('\n'),
      [failed('victim', killAt + 340), failed('victim', killAt - 50)].join('\n')
    ]
    expect(lastDispatchAfterKill(logs, 'victim', killAt)).toEqual({ ms: 340, lines: 3 })
  })

  it('is 0 when every failed dispatch to it was sent before the kill', () => {
    expect(lastDispatchAfterKill([failed('victim', killAt - 10)], 'victim', killAt)).toEqual({ ms: 0, lines: 1 })
  })

  it('is not measured when no survivor logged a failed dispatch to it', () => {
    expect(lastDispatchAfterKill(['', failed('other', killAt + 5), '{"msg":"dispatch failed","peer":"victim"}'], 'victim', killAt)).toBeUndefined()
    expect(formatValue(NaN, 'ms')).toBe('not measured')
  })
})
