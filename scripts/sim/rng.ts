/**
 * Seeded randomness for the simulator: a small PRNG (one stream per concern, so every routing
 * policy sees the same arrivals and service times), a stateless hash for per-(advert, receiver)
 * gossip delays, and the service-time distributions.
 */

/** mulberry32: returns [0, 1); the same seed gives the same sequence on every machine */
export function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A 32-bit seed derived from a base seed and labels, so streams are independent but reproducible */
export function deriveSeed (seed: number, ...labels: Array<number | string>): number {
  let h = (seed ^ 0x9E3779B9) >>> 0
  for (const l of labels) {
    const s = String(l)
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0
    h = mix32(h ^ 0x85EBCA6B)
  }
  return h
}

function mix32 (x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7FEB352D)
  x = Math.imul(x ^ (x >>> 15), 0x846CA68B)
  return (x ^ (x >>> 16)) >>> 0
}

/** Stateless uniform [0, 1) from four integers: the same inputs give the same value */
export function hashUnit (seed: number, a: number, b: number, c: number): number {
  let h = mix32(seed ^ Math.imul(a, 0x9E3779B1))
  h = mix32(h ^ Math.imul(b, 0x85EBCA77))
  h = mix32(h ^ Math.imul(c, 0xC2B2AE3D))
  return h / 4294967296
}

/** Exponential with the given mean */
export function exponential (rng: () => number, mean: number): number {
  return -Math.log(1 - rng()) * mean
}

/** Service times of the simulated function, in ms */
export type ServiceDist =
  | { kind: 'pareto', minMs: number, maxMs: number, alpha: number }
  | { kind: 'lognormal', medianMs: number, sigma: number, maxMs: number }

export const DEFAULT_SERVICE: ServiceDist = { kind: 'pareto', minMs: 5, maxMs: 50, alpha: 1.2 }
export const LOGNORMAL_SERVICE: ServiceDist = { kind: 'lognormal', medianMs: 10, sigma: 0.6, maxMs: 200 }

/** Draws one service time */
export function drawService (d: ServiceDist, rng: () => number): number {
  if (d.kind === 'pareto') {
    // Inverse CDF of the Pareto distribution truncated to [min, max].
    const { minMs: l, maxMs: h, alpha: a } = d
    const u = rng()
    return l / Math.pow(1 - u * (1 - Math.pow(l / h, a)), 1 / a)
  }
  // Box-Muller; values above maxMs are redrawn (a function timeout bounds real durations).
  for (;;) {
    const u1 = 1 - rng()
    const u2 = rng()
    const z = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2)
    const x = d.medianMs * Math.exp(d.sigma * z)
    if (x <= d.maxMs) return x
  }
}

/** Mean of the distribution (analytic for Pareto, numeric for the truncated lognormal) */
export function serviceMean (d: ServiceDist): number {
  if (d.kind === 'pareto') {
    const { minMs: l, maxMs: h, alpha: a } = d
    const norm = 1 - Math.pow(l / h, a)
    if (Math.abs(a - 1) < 1e-9) return (l * Math.log(h / l)) / norm
    return (Math.pow(l, a) / norm) * (a / (a - 1)) * (Math.pow(l, 1 - a) - Math.pow(h, 1 - a))
  }
  // Integrate x * pdf over (0, max] on a log grid, normalised by the mass below max.
  const mu = Math.log(d.medianMs)
  let mass = 0
  let sum = 0
  const steps = 20_000
  const lo = Math.log(d.maxMs) - 12 * d.sigma
  const hi = Math.log(d.maxMs)
  const dy = (hi - lo) / steps
  for (let i = 0; i < steps; i++) {
    const y = lo + (i + 0.5) * dy
    const p = Math.exp(-((y - mu) ** 2) / (2 * d.sigma ** 2)) / (d.sigma * Math.sqrt(2 * Math.PI)) * dy
    mass += p
    sum += p * Math.exp(y)
  }
  return sum / mass
}

export function describeService (d: ServiceDist): string {
  return d.kind === 'pareto'
    ? `bounded Pareto ${d.minMs}-${d.maxMs} ms, shape ${d.alpha} (mean ${serviceMean(d).toFixed(1)} ms)`
    : `lognormal, median ${d.medianMs} ms, sigma ${d.sigma}, cut at ${d.maxMs} ms (mean ${serviceMean(d).toFixed(1)} ms)`
}
