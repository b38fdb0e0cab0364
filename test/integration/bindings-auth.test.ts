/**
 * Bindings under the role permissions of node/src/dev/nats-auth-config.ts: agents hold data-plane
 * rights on the declared binding buckets only (`bindingBuckets`), deployers may create exactly
 * those, so a bucket outside the list is refused by NATS itself, whatever the agent would allow.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect, type Mesh } from '../../sdk/src/client.js'
import { startDevCluster, type DevCluster } from '../../node/src/dev/cluster.js'
import { natsAuthConfig } from '../../node/src/dev/nats-auth-config.js'
import { fixture } from '../helpers/fixtures.js'
import { waitFor } from '../helpers/wait.js'

const ADMIN = { user: 'admin', password: 'admin-pw-b1', inboxPrefix: '_INBOX_admins' }
const AGENT = { user: 'agent', password: 'agent-pw-b2' }
const DEPLOYER = { user: 'deployer', password: 'deployer-pw-b3', inboxPrefix: '_INBOX_deployers' }
const INVOKER = { user: 'invoker', password: 'invoker-pw-b4', inboxPrefix: '_INBOX_invokers' }

describe('bindings on a NATS server where agents hold rights on declared buckets only', () => {
  let cluster: DevCluster
  let admin: Mesh
  let deployer: Mesh
  let invoker: Mesh
  const path = fixture('bindings')

  beforeAll(async () => {
    cluster = await startDevCluster({
      nodes: 1,
      slots: 4,
      nats: { extraConfig: natsAuthConfig({ admins: [ADMIN], agents: [AGENT], deployers: [DEPLOYER], invokers: [INVOKER], bindingBuckets: ['kv:auth_counts', 'object:auth_files', 'kv:auth_ro:ro'], publishSubjects: ['auth.ok.*'] }) },
      initAuth: ADMIN,
      env: { FNMESH_NATS_USER: AGENT.user, FNMESH_NATS_PASSWORD: AGENT.password, FNMESH_INBOX_PREFIX: '_INBOX_agents' }
    })
    admin = await connect({ servers: cluster.nats.url, auth: ADMIN })
    deployer = await connect({ servers: cluster.nats.url, auth: DEPLOYER })
    invoker = await connect({ servers: cluster.nats.url, auth: INVOKER })
    await waitFor(async () => (await deployer.nodes({ timeoutMs: 2000 })).length === 1, { timeoutMs: 15_000, message: 'the agent in the mesh' })
  }, 60_000)

  afterAll(async () => {
    await admin?.close()
    await deployer?.close()
    await invoker?.close()
    await cluster?.stop()
  })

  it('lets the deployer make the declared buckets and functions use them through the agent', async () => {
    await deployer.deploy({ name: 'incr', path, handler: 'index.incr', timeoutMs: 20_000, bindings: ['counts=kv:auth_counts'] })
    const outs = await Promise.all(Array.from({ length: 5 }, async () => await invoker.invoke<{ value: number }>('incr', {}, { timeoutMs: 30_000 })))
    expect(outs.map(o => o.value).sort()).toEqual([1, 2, 3, 4, 5])
    await deployer.deploy({ name: 'objects', path, handler: 'index.objects', memoryMb: 256, timeoutMs: 20_000, bindings: ['files=object:auth_files'] })
    expect(await invoker.invoke<any>('objects', { mb: 1, name: 'a.bin' }, { timeoutMs: 30_000 })).toMatchObject({ size: 1024 * 1024, same: true, listed: [{ name: 'a.bin', size: 1024 * 1024 }] })
    // Replacing an object purges the old chunks: the agent's purge right on its own store.
    expect(await invoker.invoke<any>('objects', { mb: 1, name: 'a.bin' }, { timeoutMs: 30_000 })).toMatchObject({ same: true })
  }, 60_000)

  it('refuses a deploy that would create a bucket outside the list, and the agent cannot reach one made by the admin', async () => {
    const err = await deployer.deploy({ name: 'other', path, handler: 'index.kv', bindings: ['counts=kv:auth_other'] }).then(() => null, (e: any) => e)
    expect(err?.code).toBe('FNMESH_ERR_FORBIDDEN')
    // The admin makes it and a deploy (whose check only reads) stores the spec: NATS still refuses the agent.
    await admin.deploy({ name: 'other', path, handler: 'index.kv', bindings: ['counts=kv:auth_other'] })
    expect(await invoker.invoke<any>('other', { key: 'n', put: '1' })).toMatchObject({ code: 'FNMESH_ERR_FORBIDDEN' })
    expect(await invoker.invoke<any>('other', { key: 'n' })).toMatchObject({ code: 'FNMESH_ERR_FORBIDDEN' })
  }, 60_000)

  it('gives agents no write right on a bucket listed read-only, even for a binding declared read-write', async () => {
    await admin.deploy({ name: 'rw', path, handler: 'index.kv', bindings: ['counts=kv:auth_ro'] })
    expect(await invoker.invoke<any>('rw', { key: 'n', put: '1' })).toMatchObject({ code: 'FNMESH_ERR_FORBIDDEN', message: expect.stringMatching(/NATS refused/) })
    expect(await invoker.invoke<any>('rw', { key: 'n' })).toBeNull()
  }, 60_000)

  it('lets agents publish through a binding only on the subjects listed, and invoke through the router with no more rights', async () => {
    await deployer.deploy({ name: 'tryout', path, handler: 'index.tryout', timeoutMs: 20_000, bindings: ['out=publish:auth.>', 'next=invoke:incr'] })
    expect(await invoker.invoke<any>('tryout', { publish: 'auth.ok.x' })).toMatchObject({ ok: { stream: 'FNMESH_EVENTS', duplicate: false } })
    // Declared by the function, but not in the agents' rights: NATS itself refuses.
    expect(await invoker.invoke<any>('tryout', { publish: 'auth.other' }, { timeoutMs: 30_000 })).toMatchObject({ code: 'FNMESH_ERR_FORBIDDEN', message: expect.stringMatching(/NATS refused/) })
    expect(await invoker.invoke<any>('tryout', { invoke: {} })).toMatchObject({ ok: { value: 6 } })
  }, 60_000)
})
