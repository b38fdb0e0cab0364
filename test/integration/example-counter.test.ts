/**
 * The README's bindings example, exactly as a newcomer runs it: examples/counter deployed with
 * the CLI on a 3-agent mesh with gateways, counted through HTTP, one agent SIGKILLed, and the
 * count goes on where it was: the state lives in a KV binding, not in any agent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fileURLToPath } from 'node:url'
import { runCli } from '../helpers/cli.js'
import { http, httpPorts } from '../helpers/http.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'

const EXAMPLE = fileURLToPath(new URL('../../examples/counter', import.meta.url))

describe('the counter example: state in a KV binding survives the loss of an agent', () => {
  let t: TestMesh
  let ports: number[]

  beforeAll(async () => {
    t = await startMesh({ nodes: 3, slots: 4, args: ['--http', '127.0.0.1:0'] })
    ports = httpPorts(t.cluster.agents)
  }, 60_000)

  afterAll(async () => {
    await t?.stop()
  })

  it('counts through every gateway, and keeps counting after an agent is killed', async () => {
    const deploy = await runCli(['deploy', EXAMPLE, '--name', 'counter', '--nats', t.url])
    expect(deploy.code, deploy.stderr).toBe(0)
    expect(deploy.stdout).toMatch(/^deployed counter version 1 .*routes: GET \/count\/\{name\}, POST \/count\/\{name\}/)
    const post = async (port: number): Promise<number> => {
      const r = await http(port, 'POST', '/count/visits')
      expect(r.status, r.text).toBe(200)
      return (JSON.parse(r.text) as { count: number }).count
    }
    // every agent's gateway serves the route once its registry has the spec (a moment after deploy)
    for (const p of ports) await waitFor(async () => (await http(p, 'GET', '/count/visits')).status === 200, { timeoutMs: 10_000, message: `the route on gateway ${p}` })
    const first = await Promise.all(ports.map(async (p) => await post(p)))
    expect(first.sort()).toEqual([1, 2, 3])
    // ten at a time across the three gateways: compare-and-set loses none
    const burst = await Promise.all(Array.from({ length: 9 }, async (_, i) => await post(ports[i % 3])))
    expect(burst.sort((a, b) => a - b)).toEqual([4, 5, 6, 7, 8, 9, 10, 11, 12])

    const victim = t.cluster.agents[0]
    victim.kill('SIGKILL')
    await victim.exited
    await t.waitForNodes(2, 20_000)
    const after: number[] = []
    for (let i = 0; i < 8; i++) after.push(await post(ports[1 + (i % 2)]))
    expect(after).toEqual([13, 14, 15, 16, 17, 18, 19, 20])
    const read = await http(ports[2], 'GET', '/count/visits')
    expect(JSON.parse(read.text)).toEqual({ name: 'visits', count: 20 })
    expect((await http(ports[1], 'GET', '/count/other')).text).toBe('{"name":"other","count":0}')
    expect((await http(ports[1], 'POST', '/count/bad%20name')).status).toBe(400)
  }, 90_000)
})
