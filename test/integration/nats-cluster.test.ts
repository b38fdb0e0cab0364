/**
 * A local NATS cluster of 3 servers (one machine, `fnmesh dev --nats-servers 3`): `fnmesh init`
 * makes every asset with 3 replicas, moves a mesh made with 1 replica to 3 in place keeping its
 * data, and deploys, listing, invokes and events go on when a server is SIGKILLed.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { connect as natsConnect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { startNatsCluster, type NatsCluster } from '../../node/src/dev/nats-cluster.js'
import { initNats } from '../../node/src/dev/cluster.js'
import { MESH_STREAMS } from '../../core/init.js'
import { bindingsOf } from '../../core/events.js'
import { connect } from '../../sdk/src/client.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { meteredEvents } from '../helpers/ledgers.js'
import { waitFor } from '../helpers/wait.js'

describe('a mesh on a 3-server NATS cluster', () => {
  let cluster: NatsCluster | undefined
  let t: TestMesh | undefined

  afterEach(async () => {
    await t?.stop()
    t = undefined
    await cluster?.stop()
    cluster = undefined
  })

  it('scales a mesh initialised with 1 replica to 3 in place, keeping every spec, bundle, key and event', async () => {
    cluster = await startNatsCluster(3)
    const first = await initNats(cluster.urls, undefined, { replicas: 1 })
    expect(first.replicas).toBe(1)
    const mesh = await connect({ servers: cluster.urls })
    try {
      await mesh.deploy({ name: 'kept', path: fixture('ok.js'), triggers: ['kept.>'] })
      await mesh.keys.create('k1')
      for (let i = 0; i < 20; i++) await mesh.publish('kept.x', { i }, { id: `k-${i}` })
      const second = await initNats(cluster.urls)
      expect(second.replicas).toBe(3)
      expect(second.created).toEqual([])
      expect(second.scaled.map(s => s.stream).sort()).toEqual([...MESH_STREAMS].sort())
      const nc = await natsConnect({ servers: cluster.urls.split(',') })
      try {
        const jsm = await jetstreamManager(nc)
        for (const s of MESH_STREAMS) {
          const info = await jsm.streams.info(s)
          expect(info.config.num_replicas, s).toBe(3)
          expect((info.cluster?.replicas ?? []).length, `${s} followers`).toBe(2)
        }
        // The data moved with the streams; the function's consumer (inheriting replicas) too.
        expect((await jsm.streams.info('FNMESH_EVENTS')).state.messages).toBe(20)
        const binding = bindingsOf({ name: 'kept', triggers: ['kept.>'] }).find(b => b.trigger != null)
        const consumer = await jsm.consumers.info('FNMESH_EVENTS', binding?.consumer ?? '')
        expect(consumer.num_pending).toBe(20)
        expect((consumer.cluster?.replicas ?? []).length).toBe(2)
      } finally {
        await nc.close()
      }
      expect((await mesh.functions()).map(f => f.name)).toEqual(['kept'])
      expect((await mesh.keys.list()).map(k => k.name)).toEqual(['k1'])
      // Idempotent: a third run changes nothing.
      const third = await initNats(cluster.urls)
      expect(third.scaled).toEqual([])
    } finally {
      await mesh.close()
    }
  })

  it('deploys, lists, invokes and runs events with one of the 3 servers SIGKILLed', async () => {
    t = await startMesh({ nodes: 2, natsServers: 3, args: ['--sandbox', 'none'] })
    const mesh = t.mesh
    await mesh.deploy({ name: 'ev', path: fixture('ok.js'), triggers: ['ev.>'] })
    await t.cluster.natsServers[0].kill('SIGKILL')
    const killedAt = Date.now()
    // Each within the bounded retries of the SDK (leader elections of 2.9.10 take 4-9 s).
    await mesh.deploy({ name: 'after', path: fixture('ok.js') })
    expect((await mesh.functions()).map(f => f.name)).toEqual(['after', 'ev'])
    expect(await mesh.invoke('after', { x: 1 }, { timeoutMs: 10_000 })).toMatchObject({ ok: true })
    for (let i = 0; i < 20; i++) await mesh.publish('ev.x', { i }, { id: `e-${i}`, timeoutMs: 15_000 })
    console.log(`one of 3 servers SIGKILLed: deploy, list, invoke and 20 publishes done ${Date.now() - killedAt} ms after`)
    await waitFor(async () => (await meteredEvents(mesh, 'ev')).size === 20, { timeoutMs: 30_000, intervalMs: 500, message: '20 events metered' })
  })
})
