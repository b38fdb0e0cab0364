/**
 * What an advert costs on the wire and in CPU, from the real code: the CapacityAdvert encoded by
 * proto/codec.ts, wrapped as gossipsub publishes it (signed RPC message with from, seqno, topic,
 * signature and key, as @chainsafe/libp2p-gossipsub buildRawMessage does), and the time this
 * machine takes to check one received copy: the agent's fast message id (gossip.ts advertFastId, a
 * SHA-256 over the message) for every copy, and the signature check only for the first (later
 * copies are recognised as duplicates by that id before validation); and to decode it (the agent decodes each accepted advert twice:
 * in its topic validator and in onAdvert).
 *
 * Then per-node traffic for a mesh of N nodes each publishing `rate` adverts per second, under
 * two models: full-mesh flooding (every node receives every advert exactly once: the least any
 * design that tells everyone everything can do) and gossipsub as the agent configures it
 * (flood publish, mesh degree D = 6, IHAVE gossip every 500 ms heartbeat).
 */
import { RPC } from '@chainsafe/libp2p-gossipsub/message'
import { generateKeyPairFromSeed, publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { decode, encode, type CapacityAdvert } from '../../proto/codec.js'
import { ADVERTS_TOPIC } from '../../proto/subjects.js'
import { advertFastId } from '../../node/src/gossip/gossip.js'

/** gossipsub as the agent configures it (gossip.ts) */
export const GOSSIPSUB = {
  D: 3,
  Dlazy: 3,
  gossipFactor: 0.1,
  /** heartbeats of history advertised in IHAVE (mcacheGossip) */
  historyGossip: 3,
  maxIHaveLength: 5000,
  /** gossip.ts sets heartbeatInterval: 1000 */
  heartbeatMs: 1000,
  /** libp2p's default connection manager limit */
  maxConnections: 300
} as const

/** yamux frame header + noise length prefix and AEAD tag, per frame when frames are not coalesced */
const TRANSPORT_OVERHEAD = 12 + 2 + 16

export interface WireCosts {
  /** warm function entries in the sample advert */
  warmFunctions: number
  /** CapacityAdvert as encoded by proto/codec.ts */
  advertBytes: number
  /** the gossipsub RPC carrying it, with its length prefix */
  rpcBytes: number
  /** + yamux and noise framing (TCP/IP headers not counted) */
  frameBytes: number
  /** StrictSign message id: public key protobuf + seqno */
  msgIdBytes: number
  /** one received copy: rebuild the signed bytes and verify the Ed25519 signature, µs (this machine) */
  verifyUs: number
  /** one received copy: the agent's fast message id (advertFastId), µs (this machine) */
  fastIdUs: number
  /** decode('CapacityAdvert'), µs (this machine) */
  decodeUs: number
}

function varintLength (n: number): number {
  let len = 1
  while (n >= 0x80) { n = Math.floor(n / 128); len++ }
  return len
}

/** Builds a realistic signed advert and times what a receiver does with it */
export async function measureWire (warmFunctions = 1): Promise<WireCosts> {
  // @libp2p/crypto 5.1 is typed against @libp2p/interface 3; the keys are the same at run time.
  const key = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(7)) as unknown as PrivateKey
  const peerId = peerIdFromPrivateKey(key)
  const advert: CapacityAdvert = {
    nodeId: peerId.toString(),
    name: 'worker-0042',
    slots: 16,
    inFlight: 11,
    freeMemMb: 14_336,
    addrs: [],
    warm: Array.from({ length: warmFunctions }, (_, i) => `function-${String(i).padStart(3, '0')}@12`),
    provisioned: [],
    seq: 1_234_567,
    draining: false,
    startedAtMs: 1_763_900_000_000,
    sentAtMs: 1_763_990_000_000,
    invocations: 48_000_000,
    coldStarts: 12_345,
    warmStarts: 47_987_655,
    refusing: '',
    // what every agent carries: the automatic labels and one of its own
    labels: { arch: 'x64', os: 'linux', cpus: '16', memory: '62', zone: 'eu-1a' },
    layers: 0b1000111111,
    keepaliveMs: 10_000
  }
  const data = encode('CapacityAdvert', advert)
  const from = peerId.toMultihash().bytes
  const seqno = new Uint8Array([0x17, 0x9a, 0x32, 0x05, 0xe1, 0x4c, 0x88, 0x0f])
  const prefix = new TextEncoder().encode('libp2p-pubsub:')
  const preSign = RPC.Message.encode({ from, data, seqno, topic: ADVERTS_TOPIC })
  const signed = new Uint8Array(prefix.length + preSign.length)
  signed.set(prefix)
  signed.set(preSign, prefix.length)
  const signature = await key.sign(signed)
  const pubKey = publicKeyToProtobuf(key.publicKey as never)
  const message = { from, data, seqno, topic: ADVERTS_TOPIC, signature, key: pubKey }
  const rpc = RPC.encode({ subscriptions: [], messages: [message] })
  const rpcBytes = rpc.length + varintLength(rpc.length)

  const time = async (n: number, fn: () => unknown): Promise<number> => {
    for (let i = 0; i < Math.min(200, n); i++) await fn()
    const t0 = performance.now()
    for (let i = 0; i < n; i++) await fn()
    return (performance.now() - t0) * 1000 / n
  }
  const verifyUs = await time(2000, async () => {
    const pk = publicKeyFromProtobuf(message.key)
    const body = RPC.Message.encode({ from: message.from, data: message.data, seqno: message.seqno, topic: message.topic })
    const bytes = new Uint8Array(prefix.length + body.length)
    bytes.set(prefix)
    bytes.set(body, prefix.length)
    if (!(await pk.verify(bytes, message.signature))) throw new Error('Advert signature did not verify')
  })
  const fastIdUs = await time(20_000, () => advertFastId(message))
  const decodeUs = await time(20_000, () => decode('CapacityAdvert', data))
  return {
    warmFunctions,
    advertBytes: data.length,
    rpcBytes,
    frameBytes: rpcBytes + TRANSPORT_OVERHEAD,
    msgIdBytes: pubKey.length + 8,
    verifyUs,
    fastIdUs,
    decodeUs
  }
}

export interface GossipLoad {
  /** adverts received per node per second (each advert once) */
  advertsPerSec: number
  /** full-mesh flooding: each advert received once, own adverts sent to N - 1 */
  fullMeshBytesPerSec: number
  /** gossipsub as configured: copies of each advert received per node */
  gossipsubCopies: number
  /** gossipsub: advert copies plus IHAVE, received per node */
  gossipsubBytesPerSec: number
  /** of which IHAVE gossip */
  ihaveBytesPerSec: number
  /** CPU to id every copy, verify and decode (twice) every new advert, in cores */
  gossipsubCores: number
  /** what full-mesh flooding (one copy each) would cost in CPU, in cores */
  fullMeshCores: number
}

/** Per-node gossip load in a mesh of `n` nodes each publishing `rate` adverts per second */
export function gossipLoad (n: number, rate: number, w: WireCosts): GossipLoad {
  const adverts = (n - 1) * rate
  const g = GOSSIPSUB
  // Flood publish reaches every connected peer (at most maxConnections); every receiver then
  // forwards its first copy to its mesh peers except the one it came from.
  const peers = Math.min(n - 1, g.maxConnections)
  const mesh = Math.min(g.D, peers)
  const duplicates = n <= 2 ? 0 : mesh - mesh / peers
  const copies = 1 + duplicates
  // IHAVE: every heartbeat, to max(Dlazy, 25% of non-mesh peers) peers, the ids of every advert
  // seen in the last 3 heartbeats (at most 5000); sent and received alike on average.
  const nonMesh = Math.max(0, peers - mesh)
  const targets = Math.min(nonMesh, Math.max(g.Dlazy, g.gossipFactor * nonMesh))
  const ids = Math.min(g.maxIHaveLength, n * rate * g.historyGossip * g.heartbeatMs / 1000)
  const ihave = ids > 0 ? ids * (w.msgIdBytes + 2) + 24 + TRANSPORT_OVERHEAD : 0
  const ihaveBytesPerSec = (1000 / g.heartbeatMs) * targets * ihave
  return {
    advertsPerSec: adverts,
    fullMeshBytesPerSec: adverts * w.frameBytes,
    gossipsubCopies: copies,
    gossipsubBytesPerSec: adverts * copies * w.frameBytes + ihaveBytesPerSec,
    ihaveBytesPerSec,
    gossipsubCores: adverts * (copies * w.fastIdUs + w.verifyUs + 2 * w.decodeUs) / 1e6,
    fullMeshCores: adverts * (w.fastIdUs + w.verifyUs + 2 * w.decodeUs) / 1e6
  }
}
