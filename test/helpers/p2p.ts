/**
 * A bare libp2p host for tests that play a hostile or broken peer: dials an agent and speaks
 * its meter protocols frame by frame.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { framesOf } from '../../node/src/metering/replication/wire.js'

export async function testHost (privateKey?: PrivateKey): Promise<Libp2p> {
  return await createLibp2p({
    ...(privateKey != null ? { privateKey } : {}),
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  }) as unknown as Libp2p
}

/** Opens `protocol` on the agent at `addrs` and sends each frame, returning the reply to each */
export async function exchange (host: Libp2p, addrs: string[], protocol: string, frames: Uint8Array[]): Promise<Uint8Array[]> {
  const addr = addrs.find(a => a.startsWith('/ip4/127.0.0.1/')) ?? addrs[0]
  const stream = await host.dialProtocol(multiaddr(addr), protocol, { signal: AbortSignal.timeout(5000) })
  const lp = framesOf(stream)
  const replies: Uint8Array[] = []
  try {
    for (const f of frames) {
      await lp.write(f, { signal: AbortSignal.timeout(5000) })
      replies.push((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())
    }
  } finally {
    await stream.close().catch(() => {})
  }
  return replies
}
