/**
 * The oracle's view: every node's true load (running plus already on its way there), kept in a
 * tournament tree whose matches are decided by the router's own `better` (choose.ts), so the
 * root is the globally least-utilised node with the same tie-breaks fnmesh uses, found in
 * O(log N) per load change instead of a scan per invocation.
 */
import { better, type Candidate } from '../../node/src/router/choose.js'

export class OracleTree {
  private readonly size: number
  /** winner (node index) of each match; leaves at [size, 2 size) */
  private readonly tree: Int32Array

  constructor (private readonly nodes: readonly Candidate[]) {
    let size = 1
    while (size < nodes.length) size *= 2
    this.size = size
    this.tree = new Int32Array(2 * size).fill(-1)
    for (let i = 0; i < nodes.length; i++) this.tree[size + i] = i
    for (let i = size - 1; i >= 1; i--) this.tree[i] = this.match(this.tree[2 * i], this.tree[2 * i + 1])
  }

  private match (a: number, b: number): number {
    if (a < 0) return b
    if (b < 0) return a
    const ca = this.nodes[a]
    const cb = this.nodes[b]
    // A full node never wins; otherwise the router's own comparison decides.
    const fa = ca.load >= ca.slots
    const fb = cb.load >= cb.slots
    if (fa !== fb) return fa ? b : a
    return better(ca, cb) ? a : b
  }

  /** Call after changing nodes[i].load */
  update (i: number): void {
    let p = (this.size + i) >> 1
    while (p >= 1) {
      this.tree[p] = this.match(this.tree[2 * p], this.tree[2 * p + 1])
      p >>= 1
    }
  }

  /** The least-utilised node with a free slot, or -1 */
  best (): number {
    const i = this.tree[1]
    if (i < 0) return -1
    const c = this.nodes[i]
    return c.load < c.slots ? i : -1
  }
}

/** The oracle policy: every node's true load, the best node at the root, and one mesh-wide FIFO of waiters */
export class OracleModel<T> {
  readonly nodes: Array<Candidate & { idx: number }>
  readonly tree: OracleTree
  /** invocations waiting for any slot, oldest first */
  readonly queue: T[] = []

  constructor (ids: readonly string[], slots: readonly number[]) {
    this.nodes = ids.map((id, i) => ({ idx: i, id, slots: slots[i], load: 0, warm: true }))
    this.tree = new OracleTree(this.nodes)
  }

  /** The globally least-utilised node with a free slot, or -1 */
  best (): number {
    return this.tree.best()
  }

  /** Node p's true load changed by `delta` (a dispatch sent there, or one that finished) */
  add (p: number, delta: number): void {
    this.nodes[p].load += delta
    this.tree.update(p)
  }
}
