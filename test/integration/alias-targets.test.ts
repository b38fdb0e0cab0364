/**
 * Issue 15: gateway routes, triggers and invoke bindings may target an alias (or a version), as a
 * Lambda API integration or event source points at a qualified ARN. One mesh of 2 real agents
 * with gateways.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixture } from '../helpers/fixtures.js'
import { http, httpPorts } from '../helpers/http.js'
import { meterRecords } from '../helpers/ledgers.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'

interface Ran { version: string, tag: string | null }

describe('routes, triggers and invoke bindings that target an alias', () => {
  let t: TestMesh
  let ports: number[]

  beforeAll(async () => {
    t = await startMesh({ nodes: 2, slots: 3, args: ['--http', '127.0.0.1:0'] })
    ports = httpPorts(t.cluster.agents)
    await t.mesh.deploy({ name: 'tgt', path: fixture('versioned.js'), env: { TAG: 'one' } })
    await t.mesh.deploy({ name: 'tgt', path: fixture('versioned.js'), env: { TAG: 'two' } })
    await t.mesh.aliasSet('tgt', 'live', 1)
    // Version 3 declares the route and the trigger, and says they run the alias "live".
    await t.mesh.deploy({ name: 'tgt', path: fixture('versioned.js'), env: { TAG: 'three' }, routes: ['GET /tgt'], triggers: ['tgt.events'], target: 'live' })
  }, 90_000)

  afterAll(async () => {
    await t?.stop()
  })

  const viaHttp = async (port: number): Promise<Ran> => {
    const res = await http(port, 'GET', '/tgt')
    if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${res.text}`)
    return res.json as Ran
  }

  it('serves the route with the alias\'s version while a plain invoke runs the latest', async () => {
    await waitFor(async () => (await viaHttp(ports[0]).catch(() => null))?.version === '1' && (await viaHttp(ports[1]).catch(() => null))?.version === '1', { timeoutMs: 20_000, message: 'both gateways serve /tgt with version 1' })
    for (let i = 0; i < 6; i++) expect(await viaHttp(ports[i % 2])).toMatchObject({ version: '1', tag: 'one' })
    expect(await t.mesh.invoke<Ran>('tgt')).toMatchObject({ version: '3', tag: 'three' })
    const fns = await t.mesh.functions()
    expect(fns.find(f => f.name === 'tgt')?.target).toBe('live')
  }, 60_000)

  it('runs events of the trigger with the alias\'s version, and moving the alias moves both', async () => {
    for (let i = 0; i < 3; i++) await t.mesh.publish('tgt.events', { i }, { id: `tgt-ev-${i}` })
    // Each export is answered by one agent, whose replica may lag: the read that saw all 3 is the one checked.
    let events: Awaited<ReturnType<typeof meterRecords>> = []
    await waitFor(async () => (events = (await meterRecords(t.mesh, 'tgt')).filter(r => r.eventId.startsWith('tgt-ev-'))).length === 3, { timeoutMs: 30_000, message: '3 events of tgt metered' })
    expect(events.map(r => r.version)).toEqual([1, 1, 1])
    await t.mesh.aliasSet('tgt', 'live', 2)
    await waitFor(async () => (await viaHttp(ports[0]))?.version === '2' && (await viaHttp(ports[1]))?.version === '2', { timeoutMs: 20_000, message: 'the route follows the alias to version 2' })
    await t.mesh.publish('tgt.events', { i: 9 }, { id: 'tgt-ev-9' })
    let nine: number | undefined
    await waitFor(async () => (nine = (await meterRecords(t.mesh, 'tgt')).find(r => r.eventId === 'tgt-ev-9')?.version) != null, { timeoutMs: 30_000, message: 'event 9 metered' })
    expect(nine).toBe(2)
  }, 90_000)

  it('calls an alias through an invoke binding', async () => {
    await t.mesh.deploy({ name: 'caller', path: fixture('alias-caller.js'), bindings: ['next=invoke:tgt:live'] })
    expect(await t.mesh.invoke<Ran>('caller', {})).toMatchObject({ version: '2', tag: 'two' })
    const fns = await t.mesh.functions()
    expect(fns.find(f => f.name === 'caller')?.bindings).toEqual(['next=invoke:tgt:live'])
  }, 60_000)

  it('refuses a malformed target at deploy, and answers a missing alias with its code (HTTP 502)', async () => {
    const bad = await t.mesh.deploy({ name: 'tgt-bad', path: fixture('ok.js'), target: 'no!pe' }).then(() => 'deployed', (e: any) => String(e.code))
    expect(bad).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    const badBinding = await t.mesh.deploy({ name: 'tgt-bad', path: fixture('ok.js'), bindings: ['next=invoke:tgt:no!pe'] }).then(() => 'deployed', (e: any) => String(e.code))
    expect(badBinding).toBe('FNMESH_ERR_INVALID_BINDING')
    await t.mesh.deploy({ name: 'tgt-ghost', path: fixture('ok.js'), routes: ['GET /ghost'], target: 'ghost' })
    await waitFor(async () => (await http(ports[0], 'GET', '/ghost')).status !== 404, { timeoutMs: 20_000, message: 'the /ghost route served' })
    const res = await http(ports[0], 'GET', '/ghost')
    expect(res.status).toBe(502)
    expect(res.json).toMatchObject({ code: 'FNMESH_ERR_ALIAS_NOT_FOUND' })
  }, 60_000)
})
