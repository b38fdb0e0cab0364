import { describe, expect, it } from 'vitest'
import { createPeerScoreParams, createPeerScoreThresholds, defaultPeerScoreThresholds, PeerScore, validatePeerScoreParams, validatePeerScoreThresholds } from '@chainsafe/libp2p-gossipsub/score'
import { RejectReason } from '@chainsafe/libp2p-gossipsub/types'
import { defaultLogger } from '@libp2p/logger'
import { meshScoreParams, meshScoreThresholds } from '../../node/src/gossip/scoring.js'

const TOPIC = 'fnmesh/adverts/1'

/** gossipsub's own scorer with `params`, and `n` peers connected from one address */
function scorer (params: ReturnType<typeof createPeerScoreParams>, n: number): { score: PeerScore, peers: string[] } {
  const score = new PeerScore(params, null, defaultLogger(), { scoreCacheValidityMs: 0 })
  const peers = Array.from({ length: n }, (_, i) => `peer-${i}`)
  for (const p of peers) {
    score.addPeer(p)
    score.addIP(p, '127.0.0.1')
    score.graft(p, TOPIC)
  }
  return { score, peers }
}

describe('gossipsub scoring for the mesh', () => {
  it('is accepted by gossipsub\'s own validation', () => {
    expect(() => { validatePeerScoreParams(createPeerScoreParams(meshScoreParams([TOPIC]))) }).not.toThrow()
    expect(() => { validatePeerScoreThresholds(createPeerScoreThresholds(meshScoreThresholds())) }).not.toThrow()
  })

  it('graylists every peer of 20 behind one address under gossipsub\'s defaults, which broke the mesh', () => {
    const { score, peers } = scorer(createPeerScoreParams({}), 19)
    // 19 peers on one address: (19 - 10)² x -5 = -405, below the graylist threshold (-80)
    expect(score.score(peers[0])).toBeLessThan(defaultPeerScoreThresholds.graylistThreshold)
  })

  it('scores 200 honest peers behind one address at zero', () => {
    const { score, peers } = scorer(createPeerScoreParams(meshScoreParams([TOPIC])), 200)
    for (const p of peers) expect(score.score(p)).toBe(0)
  })

  it('graylists a peer that sends three invalid adverts, and not its neighbours', () => {
    const { score, peers } = scorer(createPeerScoreParams(meshScoreParams([TOPIC])), 30)
    for (let i = 0; i < 3; i++) {
      score.validateMessage(`bad-${i}`)
      score.rejectMessage(peers[0], `bad-${i}`, TOPIC, RejectReason.Reject)
    }
    expect(score.score(peers[0])).toBeLessThan(meshScoreThresholds().graylistThreshold ?? -80)
    expect(score.score(peers[1])).toBe(0)
  })

  it('does not score a peer down for adverts it ignores as stale', () => {
    const { score, peers } = scorer(createPeerScoreParams(meshScoreParams([TOPIC])), 5)
    for (let i = 0; i < 10; i++) {
      score.validateMessage(`old-${i}`)
      score.rejectMessage(peers[0], `old-${i}`, TOPIC, RejectReason.Ignore)
    }
    expect(score.score(peers[0])).toBe(0)
  })
})
