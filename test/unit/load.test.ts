import { describe, expect, it } from 'vitest'
import { LoadTracker } from '../../node/src/router/load.js'

describe('router load tracker', () => {
  it('estimates a peer it never sent to at its advertised in-flight count', () => {
    const t = new LoadTracker()
    expect(t.estimate('p', 3, 8)).toBe(3)
    expect(t.outstanding('p')).toBe(0)
  })

  it('adds dispatches sent since the last advert to the advertised count', () => {
    const t = new LoadTracker()
    t.onAdvert('p')
    t.sent('p')
    t.sent('p')
    expect(t.estimate('p', 3, 8)).toBe(5)
    expect(t.outstanding('p')).toBe(2)
  })

  it('stops adding dispatches once an advert has counted them', () => {
    const t = new LoadTracker()
    t.onAdvert('p')
    t.sent('p')
    t.sent('p')
    t.onAdvert('p')
    // The new advert's in-flight already includes the two; they stay outstanding until they finish.
    expect(t.estimate('p', 2, 8)).toBe(2)
    expect(t.outstanding('p')).toBe(2)
    t.sent('p')
    expect(t.estimate('p', 2, 8)).toBe(3)
  })

  it('takes a finished dispatch of the current epoch off the estimate', () => {
    const t = new LoadTracker()
    t.onAdvert('p')
    const d = t.sent('p')
    t.sent('p')
    t.finished(d)
    expect(t.estimate('p', 0, 8)).toBe(1)
    expect(t.outstanding('p')).toBe(1)
  })

  it('does not decrement the current epoch when a dispatch from an earlier epoch finishes', () => {
    const t = new LoadTracker()
    t.onAdvert('p')
    const early = t.sent('p')
    t.onAdvert('p')
    const late = t.sent('p')
    expect(early.epoch).toBeLessThan(late.epoch)
    t.finished(early)
    expect(t.estimate('p', 4, 8)).toBe(5)
    expect(t.outstanding('p')).toBe(1)
    t.finished(late)
    expect(t.estimate('p', 4, 8)).toBe(4)
    expect(t.outstanding('p')).toBe(0)
  })

  it('never counts below zero when a dispatch is reported finished twice', () => {
    const t = new LoadTracker()
    t.onAdvert('p')
    const d = t.sent('p')
    t.finished(d)
    t.finished(d)
    expect(t.estimate('p', 1, 8)).toBe(1)
    expect(t.outstanding('p')).toBe(0)
  })

  it('keeps peers apart', () => {
    const t = new LoadTracker()
    t.onAdvert('a')
    t.onAdvert('b')
    t.sent('a')
    t.sent('a')
    t.sent('b')
    t.onAdvert('a')
    expect(t.estimate('a', 0, 4)).toBe(0)
    expect(t.estimate('b', 0, 4)).toBe(1)
  })

  it('treats a peer that said it was full as full until its next advert', () => {
    const t = new LoadTracker()
    t.onAdvert('p')
    t.sent('p')
    t.markFull('p')
    expect(t.estimate('p', 1, 8)).toBe(8)
    const d = t.sent('p')
    t.finished(d)
    expect(t.estimate('p', 0, 8)).toBe(8)
    t.onAdvert('p')
    expect(t.estimate('p', 5, 8)).toBe(5)
  })

  it('can mark a peer full before hearing any advert from it, or fuller if its advert says so', () => {
    const t = new LoadTracker()
    t.markFull('p')
    expect(t.estimate('p', 0, 6)).toBe(6)
    expect(t.estimate('p', 9, 6)).toBe(9)
    t.onAdvert('p')
    expect(t.estimate('p', 0, 6)).toBe(0)
  })

  it('forgets a peer entirely', () => {
    const t = new LoadTracker()
    t.onAdvert('p')
    const d = t.sent('p')
    t.sent('p')
    t.markFull('p')
    t.forget('p')
    expect(t.estimate('p', 2, 8)).toBe(2)
    expect(t.outstanding('p')).toBe(0)
    // A dispatch that finishes after the peer was forgotten changes nothing.
    t.finished(d)
    expect(t.outstanding('p')).toBe(0)
    expect(t.estimate('p', 2, 8)).toBe(2)
  })

  it('does not let a dispatch from before a peer left lower its count after it returns', () => {
    const t = new LoadTracker()
    t.onAdvert('p')
    const old = t.sent('p')
    t.forget('p')
    t.onAdvert('p')
    t.sent('p')
    expect(t.estimate('p', 0, 8)).toBe(1)
    t.finished(old)
    expect(t.estimate('p', 0, 8)).toBe(1)
  })
})

describe('router load tracker, queued dispatches', () => {
  it('remembers the longest queue budget a peer refused until its next advert, and counts it full meanwhile', () => {
    const t = new LoadTracker()
    expect(t.waitAbove('p')).toBeUndefined()
    t.markQueueRefused('p', 300)
    t.markQueueRefused('p', 200)
    expect(t.waitAbove('p')).toBe(300)
    expect(t.estimate('p', 1, 4)).toBe(4)
    t.onAdvert('p')
    expect(t.waitAbove('p')).toBeUndefined()
    expect(t.estimate('p', 1, 4)).toBe(1)
    t.markQueueRefused('p', 300)
    t.forget('p')
    expect(t.waitAbove('p')).toBeUndefined()
    expect(t.estimate('p', 2, 4)).toBe(2)
  })
})
