/**
 * gossipsub peer scoring chosen for fnmesh's threat model, not gossipsub's defaults.
 *
 * The defaults were made for open public networks (Ethereum, Filecoin), where anyone can join and
 * identities are free, so many peers on one IP address are taken for a Sybil attack: past 10 peers
 * on one address each scores -5 x surplus², and at -80 gossipsub ignores everything it sends. In
 * fnmesh many agents behind one address is the normal case (one host, containers behind NAT,
 * SNAT in a cluster): with 15 agents on one host every peer scored -80, with 20 -405, and the
 * whole mesh fell apart ("adverts stopped" for every peer, each agent alone).
 *
 * Who can be a peer: with `--swarm-key`, only hosts holding the mesh's pre-shared key can open a
 * libp2p connection at all; without it, the libp2p port must only be reachable by the mesh's own
 * hosts (docs/SCALING.md). Every advert is signed by the node it describes (StrictSign, and the
 * validator checks signer = node id), so a peer can lie only about itself, which the router
 * bounds (BUSY penalties, timeouts). Hence:
 *
 * - no IP colocation penalty (P6 weight 0): it punishes our normal deployment and protects
 *   against nothing a member could not do anyway;
 * - no mesh delivery penalties (P3, P3b): adverts are sent only on changes and a slow keepalive,
 *   so a quiet, honest peer delivers few messages and must not be scored down for it;
 * - a peer that sends invalid adverts (forged, malformed, out of range: the validator's Reject)
 *   is graylisted fast (P4: -10 x count², three invalid messages -> -90, below -80) and forgiven
 *   slowly (x0.97 a second: about half a minute per halving);
 * - gossipsub's own misbehaviour penalty (P7: broken IWANT promises, GRAFT during backoff) stays,
 *   with a small allowance so that a loaded but honest peer answering late is not graylisted;
 * - thresholds stay gossipsub's (gossip -10, publish -50, graylist -80).
 */
import type { PeerScoreParams, PeerScoreThresholds, TopicScoreParams } from '@chainsafe/libp2p-gossipsub/score'

export const INVALID_ADVERT_WEIGHT = -10
export const BEHAVIOUR_PENALTY_THRESHOLD = 4

export function advertTopicScore (): TopicScoreParams {
  return {
    topicWeight: 1,
    // P1, P2: positive scores buy nothing here (no peer exchange, no opportunistic grafting
    // between members that are all equal).
    timeInMeshWeight: 0,
    timeInMeshQuantum: 1000,
    timeInMeshCap: 1,
    firstMessageDeliveriesWeight: 0,
    firstMessageDeliveriesDecay: 0.5,
    firstMessageDeliveriesCap: 1,
    // P3, P3b: off (quiet honest peers)
    meshMessageDeliveriesWeight: 0,
    meshMessageDeliveriesDecay: 0.5,
    meshMessageDeliveriesCap: 1,
    meshMessageDeliveriesThreshold: 1,
    meshMessageDeliveriesWindow: 10,
    meshMessageDeliveriesActivation: 5000,
    meshFailurePenaltyWeight: 0,
    meshFailurePenaltyDecay: 0.5,
    // P4: invalid adverts graylist their sender
    invalidMessageDeliveriesWeight: INVALID_ADVERT_WEIGHT,
    invalidMessageDeliveriesDecay: 0.97
  }
}

/** Score parameters for a node subscribed to `topics` (each scored as an advert topic) */
export function meshScoreParams (topics: readonly string[]): Partial<PeerScoreParams> {
  return {
    topics: Object.fromEntries(topics.map(t => [t, advertTopicScore()])),
    topicScoreCap: 0,
    appSpecificScore: () => 0,
    appSpecificWeight: 0,
    IPColocationFactorWeight: 0,
    IPColocationFactorThreshold: 1,
    IPColocationFactorWhitelist: new Set(),
    behaviourPenaltyWeight: -10,
    behaviourPenaltyThreshold: BEHAVIOUR_PENALTY_THRESHOLD,
    behaviourPenaltyDecay: 0.5,
    decayInterval: 1000,
    decayToZero: 0.01,
    retainScore: 10 * 60_000
  }
}

export function meshScoreThresholds (): Partial<PeerScoreThresholds> {
  return { gossipThreshold: -10, publishThreshold: -50, graylistThreshold: -80, acceptPXThreshold: 10, opportunisticGraftThreshold: 20 }
}
