/**
 * A local NATS cluster of 3 servers (one machine, `fnmesh dev --nats-servers 3`): `fnmesh init`
 * makes every asset with 3 replicas, moves a mesh made with 1 replica to 3 in place keeping its
 * data, and deploys, listing, invokes and events go on when a server is SIGKILLed.
 */
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { natsAuthConfig } from '../../node/src/dev/nats-auth-config.js'
import { findNatsServer } from '../../node/src/dev/nats-server.js'
import { connect as natsConnect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { natsClusterServerConfig, startNatsCluster, type NatsCluster } from '../../node/src/dev/nats-cluster.js'
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

  it('writes a production cluster configuration with the accounts block that nats-server accepts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fnmesh-conf-'))
    try {
      const accounts = natsAuthConfig({ admins: [{ user: 'admin', password: 'a' }], agents: [{ user: 'agent', password: 'b' }], deployers: [{ user: 'deployer', password: 'c' }], invokers: [{ user: 'invoker', password: 'd' }] })
      const conf = natsClusterServerConfig({ serverName: 'nats-1', clusterName: 'fnmesh', routes: ['nats-route://nats-1.internal:6222', 'nats-route://nats-2.internal:6222', 'nats-route://nats-3.internal:6222'], storeDir: join(dir, 'js'), accounts })
      await writeFile(join(dir, 'nats.conf'), conf)
      const r = spawnSync(findNatsServer(), ['-t', '-c', join(dir, 'nats.conf')], { encoding: 'utf8' })
      expect(r.status, r.stderr).toBe(0)
      expect(conf).toContain('ping_interval')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
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
          // Right after the update the group is still moving: wait for 2 current followers.
          await waitFor(async () => { const c = (await jsm.streams.info(s)).cluster; return c?.leader != null && (c.replicas ?? []).length === 2 && (c.replicas ?? []).every(r => r.current) }, { timeoutMs: 15_000, message: `${s} with a leader and 2 current followers` })
        }
        // The data moved with the streams; the function's consumer (inheriting replicas) too.
        expect((await jsm.streams.info('FNMESH_EVENTS')).state.messages).toBe(20)
        const binding = bindingsOf({ name: 'kept', triggers: ['kept.>'] }).find(b => b.trigger != null)
        const consumer = await jsm.consumers.info('FNMESH_EVENTS', binding?.consumer ?? '')
        expect(consumer.num_pending).toBe(20)
        await waitFor(async () => ((await jsm.consumers.info('FNMESH_EVENTS', binding?.consumer ?? '')).cluster?.replicas ?? []).length === 2, { timeoutMs: 15_000, message: 'the consumer with 2 followers' })
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

  it('keeps one membership "swim" across the SIGKILL of a server: agents that reconnect elsewhere are taken back (refuting their suspicion) and run work', async () => {
    t = await startMesh({ nodes: 4, natsServers: 3, args: ['--membership', 'swim', '--sandbox', 'none', '--admin', '127.0.0.1:0'] })
    const mesh = t.mesh
    const agents = t.cluster.agents
    const peers = async (): Promise<number[]> => await Promise.all(agents.map(async a => {
      const text = await fetch(`http://127.0.0.1:${String(a.ready.adminPort)}/metrics`, { signal: AbortSignal.timeout(5000) }).then(async r => await r.text()).catch(() => '')
      const m = /^fnmesh_gossip_peers (\S+)$/m.exec(text)
      return m == null ? NaN : Number(m[1])
    }))
    await waitFor(async () => (await peers()).every(n => n === 3), { timeoutMs: 15_000, message: 'every agent routing to the 3 others' })
    await mesh.deploy({ name: 'swimmed', path: fixture('ok.js') })
    // The server most agents are on (each agent's ready line names its server)
    const portOf = (x: string): string => /:(\d+)\/?$/.exec(x)?.[1] ?? x
    const on = t.cluster.natsServers.map(s => agents.filter(a => portOf(String(a.ready.natsServer)) === portOf(s.url)).length)
    const victim = on.indexOf(Math.max(...on))
    expect(on[victim], `agents per server: ${on.join(', ')}`).toBeGreaterThan(0)
    await t.cluster.natsServers[victim].kill('SIGKILL')
    const killedAt = Date.now()
    // The agents on the killed server reconnect to another; meanwhile their pings fail (no
    // responders) and they may be suspected or declared dead: each refutes once back.
    let last: number[] = []
    for (const deadline = Date.now() + 45_000; !(last = await peers()).every(n => n === 3);) {
      if (Date.now() > deadline) throw new Error(`every agent routing to the 3 others again: not within 45 s (routable peers per agent: ${last.join(', ')})`)
      await new Promise(resolve => setTimeout(resolve, 500))
    }
    console.log(`membership swim whole again ${Date.now() - killedAt} ms after the SIGKILL of the server ${on[victim]} of the 4 agents were on`)
    const ran = new Set<string>()
    for (let i = 0; i < 60 && ran.size < 4; i++) {
      const r = await mesh.invokeDetailed('swimmed', { i }, { timeoutMs: 15_000 })
      ran.add(r.nodeId)
    }
    expect(ran.size, 'work reaches agents on every remaining server').toBeGreaterThan(1)
  })
})
