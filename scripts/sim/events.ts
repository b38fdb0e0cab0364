/**
 * The simulator's clock: a binary min-heap of events ordered by virtual time, then by the order
 * they were scheduled (so equal times run first-in first-out and a run is reproducible).
 *
 * Runs at 10,000 nodes keep ~10^5 events pending and pop tens of millions, so the heap holds
 * times and sequence numbers in typed arrays (no object per comparison) and the payloads in
 * slots reused through a free list.
 */

export class EventQueue<K extends number> {
  private cap = 1024
  private t = new Float64Array(this.cap)
  private s = new Float64Array(this.cap)
  private slot = new Int32Array(this.cap)
  private n = 0
  private kinds: K[] = []
  private as: unknown[] = []
  private bs: unknown[] = []
  private free: number[] = []
  private seq = 0
  /** current virtual time, ms */
  now = 0
  /** the popped event */
  kind: K = 0 as K
  a: any = undefined
  b: any = undefined

  get size (): number {
    return this.n
  }

  at (time: number, kind: K, a: unknown, b: unknown): void {
    let id = this.free.pop()
    if (id === undefined) {
      id = this.kinds.length
      this.kinds.push(kind)
      this.as.push(a)
      this.bs.push(b)
    } else {
      this.kinds[id] = kind
      this.as[id] = a
      this.bs[id] = b
    }
    if (this.n === this.cap) this.grow()
    const seq = this.seq++
    const t = this.t
    const s = this.s
    const slot = this.slot
    let i = this.n++
    while (i > 0) {
      const p = (i - 1) >> 1
      if (t[p] < time || (t[p] === time && s[p] < seq)) break
      t[i] = t[p]
      s[i] = s[p]
      slot[i] = slot[p]
      i = p
    }
    t[i] = time
    s[i] = seq
    slot[i] = id
  }

  /** Takes the earliest event into `kind`, `a`, `b` and moves the clock to it; false when empty */
  pop (): boolean {
    if (this.n === 0) return false
    const t = this.t
    const s = this.s
    const slot = this.slot
    const id = slot[0]
    this.now = t[0]
    this.kind = this.kinds[id]
    this.a = this.as[id]
    this.b = this.bs[id]
    this.as[id] = undefined
    this.bs[id] = undefined
    this.free.push(id)
    const n = --this.n
    if (n > 0) {
      const lt = t[n]
      const ls = s[n]
      const lslot = slot[n]
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        if (l >= n) break
        const r = l + 1
        let c = l
        if (r < n && (t[r] < t[l] || (t[r] === t[l] && s[r] < s[l]))) c = r
        if (lt < t[c] || (lt === t[c] && ls < s[c])) break
        t[i] = t[c]
        s[i] = s[c]
        slot[i] = slot[c]
        i = c
      }
      t[i] = lt
      s[i] = ls
      slot[i] = lslot
    }
    return true
  }

  private grow (): void {
    this.cap *= 2
    const t = new Float64Array(this.cap)
    t.set(this.t)
    this.t = t
    const s = new Float64Array(this.cap)
    s.set(this.s)
    this.s = s
    const slot = new Int32Array(this.cap)
    slot.set(this.slot)
    this.slot = slot
  }
}
