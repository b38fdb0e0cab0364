/**
 * Sandbox isolation layers as a node's capacity advert carries them: one bit each, in this
 * order (append only: an id keeps its bit across versions). Shared by the agent, which sets the
 * bits of its active layers, and the SDK, which reads them back as names.
 */
export const LAYER_BITS = ['process', 'permission', 'mount', 'net', 'pid', 'uid', 'cgroup-memory', 'cgroup-pids', 'cgroup-cpu', 'rlimit'] as const

/** Layer ids -> the advert's bit mask (unknown ids are left out) */
export function layersToMask (ids: readonly string[]): number {
  let mask = 0
  for (const id of ids) {
    const i = (LAYER_BITS as readonly string[]).indexOf(id)
    if (i >= 0) mask |= 1 << i
  }
  return mask >>> 0
}

/** The advert's bit mask -> layer ids (bits this version does not know are ignored) */
export function maskToLayers (mask: number): string[] {
  return LAYER_BITS.filter((_, i) => (mask & (1 << i)) !== 0)
}
