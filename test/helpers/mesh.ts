import { startDevCluster, type DevCluster, type DevClusterOptions } from '../../node/src/dev/cluster.js'
import { connect, type Mesh } from '../../sdk/src/client.js'
import { waitFor } from './wait.js'

export interface TestMesh {
  cluster: DevCluster
  mesh: Mesh
  url: string
  /** Waits until every running agent sees `n` nodes in its table (asked through the SDK) */
  waitForNodes: (n: number, timeoutMs?: number) => Promise<void>
  stop: () => Promise<void>
}

export interface TestMeshOptions extends DevClusterOptions {
  /** longest wait for every agent to see every other one before the mesh counts as started. @default 15000 */
  readyTimeoutMs?: number
}

/** A real nats-server plus agent processes, and an SDK client connected to them */
export async function startMesh (options: TestMeshOptions = {}): Promise<TestMesh> {
  const cluster = await startDevCluster(options)
  let mesh: Mesh
  try {
    mesh = await connect({ servers: cluster.natsUrls })
  } catch (err) {
    await cluster.stop()
    throw err
  }
  const waitForNodes = async (n: number, timeoutMs = 15_000): Promise<void> => {
    // Ask several times: each request is answered by one agent of the queue group.
    await waitFor(async () => {
      for (let i = 0; i < 6; i++) {
        const nodes = await mesh.nodes({ timeoutMs: 2000 })
        if (nodes.length !== n) return false
      }
      return true
    }, { timeoutMs, message: `every agent seeing ${n} nodes` })
  }
  try {
    await waitForNodes(cluster.agents.length, options.readyTimeoutMs)
  } catch (err) {
    // Nobody gets a handle to stop this mesh: stop it here, or its processes outlive the test.
    await mesh.close().catch(() => {})
    await cluster.stop()
    throw err
  }
  return {
    cluster,
    mesh,
    url: cluster.natsUrls,
    waitForNodes,
    stop: async () => {
      await mesh.close().catch(() => {})
      await cluster.stop()
    }
  }
}
