import type { Mesh } from '../../sdk/src/client.js'
import type { ExportedRecord } from '../../sdk/src/usage.js'

/** Every meter record of `fn` the mesh holds (exported from one agent's replica, one per run) */
export async function meterRecords (mesh: Mesh, fn: string): Promise<ExportedRecord[]> {
  const out: ExportedRecord[] = []
  for await (const r of mesh.exportRecords({ fn, timeoutMs: 10_000 })) out.push(r)
  return out
}

/** Distinct event ids metered for `fn` */
export async function meteredEvents (mesh: Mesh, fn: string): Promise<Set<string>> {
  return new Set((await meterRecords(mesh, fn)).map(r => r.eventId))
}
