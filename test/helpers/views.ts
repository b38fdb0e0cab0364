import type { Mesh, NodeInfo } from '../../sdk/src/client.js'
import { sleep } from './wait.js'

/**
 * Each agent's own peer table, asked through the SDK. `nodes` is answered by one agent of the
 * queue group, which marks itself `self`; this asks until every id in `agentIds` has answered.
 */
export async function viewsByAgent (mesh: Mesh, agentIds: string[], timeoutMs = 5000): Promise<Map<string, NodeInfo[]>> {
  const deadline = Date.now() + timeoutMs
  const views = new Map<string, NodeInfo[]>()
  while (agentIds.some(id => !views.has(id))) {
    if (Date.now() > deadline) {
      throw new Error(`no nodes answer from ${agentIds.filter(id => !views.has(id)).join(', ')} within ${timeoutMs} ms`)
    }
    const nodes = await mesh.nodes({ timeoutMs: 2000 })
    const self = nodes.find(n => n.self)
    if (self != null) views.set(self.id, nodes)
    else await sleep(20)
  }
  return views
}
