/**
 * Token bucket arithmetic, pure: a bucket of `burst` tokens refilled at `rate` per second. Used
 * on the shared state in NATS KV (each lease refills, then takes) and for the local fallback.
 */

export interface BucketState {
  tokens: number
  /** when `tokens` was computed, ms */
  atMs: number
}

export interface BucketLimits {
  /** tokens per second */
  rate: number
  /** capacity */
  burst: number
}

/** The bucket at `now`. A clock behind `atMs` (another agent's clock ahead) refills nothing */
export function refill (s: BucketState, now: number, l: BucketLimits): BucketState {
  const elapsed = Math.max(0, now - s.atMs)
  return { tokens: Math.min(l.burst, s.tokens + elapsed * l.rate / 1000), atMs: Math.max(s.atMs, now) }
}

/** A full bucket: what a bucket never seen before holds */
export function full (now: number, l: BucketLimits): BucketState {
  return { tokens: l.burst, atMs: now }
}

/** Takes up to `want` whole tokens from a refilled state */
export function take (s: BucketState, want: number): { state: BucketState, granted: number } {
  const granted = Math.max(0, Math.min(want, Math.floor(s.tokens + 1e-9)))
  return { state: { tokens: s.tokens - granted, atMs: s.atMs }, granted }
}

/** Milliseconds until one token is there */
export function msUntilToken (s: BucketState, l: BucketLimits): number {
  return s.tokens >= 1 ? 0 : Math.ceil((1 - s.tokens) * 1000 / l.rate)
}

/** A bucket living in one process (the fallback when NATS KV is unreachable) */
export class LocalBucket {
  private state: BucketState | undefined
  constructor (private readonly now: () => number = Date.now) {}

  /** Takes one token; returns 0 if granted, else ms until one is there */
  tryTake (l: BucketLimits): number {
    const now = this.now()
    const s = refill(this.state ?? full(now, l), now, l)
    const r = take(s, 1)
    this.state = r.state
    return r.granted === 1 ? 0 : msUntilToken(r.state, l)
  }
}
