/**
 * The sharded gossip design, as simulated: each node publishes its adverts on one of M shard
 * topics (M = round(N / shardSize), the shard a hash of the node: shards are not balanced by
 * capacity) and reads `read` of them, its own and others drawn at random, so it hears about
 * read x N / M nodes, whatever N. A router routes only to the nodes it hears about (power of two
 * choices among them, queueing at one of them); the views of routers reading different shards
 * overlap, so load spreads between shards through the routers that read both.
 *
 * The design "all" is today's agent: one topic, every node hears every node.
 */
import { hashUnit } from './rng.js'

/** all: every node hears every node's load adverts; shards: see above; probe: membership only, load by probes (probe.ts) */
export type GossipDesign = 'all' | 'shards' | 'probe'
export const DESIGNS: readonly GossipDesign[] = ['all', 'shards', 'probe']

export interface ShardLayout {
  shards: number
  read: number
  /** each node's shard */
  shardOf: Int32Array
  /** per router, the shards it reads (read entries each) */
  reads: Int32Array
  /** per router, the other nodes it hears about */
  view: Int32Array[]
  /** mean nodes a router hears about, itself excluded */
  meanView: number
}

export function shardLayout (n: number, shardSize: number, read: number, seed: number): ShardLayout {
  const shards = Math.max(1, Math.round(n / shardSize))
  const k = Math.min(read, shards)
  const shardOf = Int32Array.from({ length: n }, (_, p) => Math.floor(hashUnit(seed, 1, p, 0) * shards))
  const members: number[][] = Array.from({ length: shards }, () => [])
  for (let p = 0; p < n; p++) members[shardOf[p]].push(p)
  const reads = new Int32Array(n * k)
  const view: Int32Array[] = []
  let total = 0
  for (let r = 0; r < n; r++) {
    const mine = [shardOf[r]]
    for (let tries = 0; mine.length < k && tries < 1000; tries++) {
      const s = Math.floor(hashUnit(seed, 2, r, tries) * shards)
      if (!mine.includes(s)) mine.push(s)
    }
    for (let i = 0; i < k; i++) reads[r * k + i] = mine[i]
    const v: number[] = []
    for (const s of mine) for (const p of members[s]) if (p !== r) v.push(p)
    view.push(Int32Array.from(v))
    total += v.length
  }
  return { shards, read: k, shardOf, reads, view, meanView: total / n }
}

/** True if router r hears about node p */
export function inView (l: ShardLayout, r: number, p: number): boolean {
  const s = l.shardOf[p]
  for (let i = r * l.read, end = i + l.read; i < end; i++) if (l.reads[i] === s) return true
  return false
}
