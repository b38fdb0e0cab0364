import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'

describe('a mesh of 3 agents on a real nats-server', () => {
  let t: TestMesh

  beforeAll(async () => {
    t = await startMesh({ nodes: 3, slots: 4 })
  })

  afterAll(async () => {
    await t?.stop()
  })

  it('returns a deployed function\'s result through the SDK', async () => {
    const dep = await t.mesh.deploy({ name: 'ok', path: fixture('ok.js') })
    expect(dep.version).toBe(1)
    const out = await t.mesh.invokeDetailed<{ ok: boolean, event: unknown, requestId: string }>('ok', { n: 1 })
    expect(out.result.ok).toBe(true)
    expect(out.result.event).toEqual({ n: 1 })
    expect(out.result.requestId).toBe(out.invocationId)
    expect(t.cluster.agents.map(a => a.nodeId)).toContain(out.nodeId)
  })

  it('returns a deployed function\'s result through the CLI', async () => {
    const dep = await runCli(['deploy', fixture('echo.mjs'), '--name', 'echo', '--nats', t.url])
    expect(dep.stderr).toBe('')
    expect(dep.stdout).toMatch(/^deployed echo version 1 /)
    const res = await runCli(['invoke', 'echo', '--data', '{"n":1,"s":"x"}', '--nats', t.url])
    expect(res.code).toBe(0)
    expect(JSON.parse(res.stdout)).toEqual({ n: 1, s: 'x' })
  })
})
