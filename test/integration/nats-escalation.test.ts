/**
 * Least privilege that holds against a hostile holder of each NATS role (node/src/dev/nats-auth-config.ts,
 * as in the README): the mesh works end to end with the generated config (init by the admin,
 * deploy, invoke, events, schedules, logs, usage, keys), and every way of writing into the
 * function registry, purging it, reading it (invokers) or reading another role's replies is
 * refused with a permissions violation, while the same operation by a role allowed to do it
 * succeeds: so the attempt was really made and would have worked.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { Objm } from '@nats-io/obj'
import type { NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BUNDLES_BUCKET, FUNCTIONS_BUCKET } from '../../proto/subjects.js'
import { connect, type Mesh } from '../../sdk/src/client.js'
import { EVENTS_STREAM, SCHEDULES_BUCKET } from '../../core/events.js'
import { connectNats, isPermissionError } from '../../core/nats.js'
import type { NatsAuth } from '../../core/nats-auth.js'
import { spawnAgent, startDevCluster, type AgentProcess, type DevCluster } from '../../node/src/dev/cluster.js'
import { startNatsServer } from '../../node/src/dev/nats-server.js'
import { runCli } from '../helpers/cli.js'
import { natsAuthConfig, ROLE_INBOX } from '../../node/src/dev/nats-auth-config.js'
import { fixture } from '../helpers/fixtures.js'
import { http, httpPorts } from '../helpers/http.js'
import { waitFor, within } from '../helpers/wait.js'

const ADMIN = { user: 'admin', password: 'admin-pw-91f', inboxPrefix: ROLE_INBOX.admin }
const AGENT = { user: 'agent', password: 'agent-pw-3c0', inboxPrefix: ROLE_INBOX.agent }
const DEPLOYER = { user: 'deployer', password: 'deployer-pw-e42', inboxPrefix: ROLE_INBOX.deployer }
const INVOKER = { user: 'invoker', password: 'invoker-pw-7b8', inboxPrefix: ROLE_INBOX.invoker }
const KV_FUNCTIONS = `KV_${FUNCTIONS_BUCKET}`
const OBJ_BUNDLES = `OBJ_${BUNDLES_BUCKET}`

type Hostile = 'agent' | 'deployer' | 'invoker'

describe('least privilege against a hostile holder of each NATS role', () => {
  let cluster: DevCluster
  let deployer: Mesh
  let invoker: Mesh
  const nc = {} as Record<'admin' | Hostile, NatsConnection>
  const jsm = {} as Record<'admin' | Hostile, JetStreamManager>

  /** The error of `p`, which must be a NATS permissions violation (not a timeout or anything else) */
  const refused = async (p: Promise<unknown>, what: string): Promise<Error> => {
    const err = await within(p.then(() => undefined, (e: unknown) => e), 10_000, what)
    expect(err, `${what} should be refused`).toBeInstanceOf(Error)
    expect(isPermissionError(err), `${what} should be a permissions violation, got: ${String((err as Error).message)}`).toBe(true)
    return err as Error
  }

  /** Subscribes and resolves with the error the server answers, or null if none came within 1.5 s */
  const subscribeError = async (conn: NatsConnection, subject: string): Promise<Error | null> => {
    const sub = conn.subscribe(subject)
    const ended = (async () => { for await (const _ of sub) { /* drain */ } return null })().catch((e: Error) => e)
    const err = await Promise.race([ended, new Promise<null>(resolve => setTimeout(() => { resolve(null) }, 1500))])
    sub.unsubscribe()
    return err
  }

  beforeAll(async () => {
    cluster = await startDevCluster({
      nodes: 2,
      slots: 4,
      nats: { extraConfig: natsAuthConfig({ admins: [ADMIN], agents: [AGENT], deployers: [DEPLOYER], invokers: [INVOKER], eventSubjects: ['orders.>'] }) },
      initAuth: ADMIN,
      env: { FNMESH_NATS_USER: AGENT.user, FNMESH_NATS_PASSWORD: AGENT.password, FNMESH_INBOX_PREFIX: AGENT.inboxPrefix },
      args: ['--http', '127.0.0.1:0']
    })
    const auths: Record<'admin' | Hostile, NatsAuth> = { admin: ADMIN, agent: AGENT, deployer: DEPLOYER, invoker: INVOKER }
    for (const [role, auth] of Object.entries(auths) as Array<['admin' | Hostile, NatsAuth]>) {
      nc[role] = await connectNats({ servers: cluster.nats.url, auth })
      jsm[role] = await jetstreamManager(nc[role], { checkAPI: false })
    }
    deployer = await connect({ servers: cluster.nats.url, auth: DEPLOYER })
    invoker = await connect({ servers: cluster.nats.url, auth: INVOKER })
    await waitFor(async () => (await deployer.nodes({ timeoutMs: 2000 })).length === 2, { timeoutMs: 15_000, message: 'both agents in the mesh' })
    await deployer.deploy({ name: 'secret', path: fixture('greet-env.js'), env: { GREETING: 'top-secret-value' } })
  })

  afterAll(async () => {
    await deployer?.close()
    await invoker?.close()
    for (const c of Object.values(nc)) await c?.close().catch(() => {})
    await cluster?.stop()
  })

  it('runs the mesh end to end: deploy, invoke, events, schedules, logs, usage and keys', async () => {
    expect(await invoker.invoke('secret', { n: 1 })).toMatchObject({ greeting: 'top-secret-value', n: 1 })
    await deployer.deploy({ name: 'orders', path: fixture('ok.js'), triggers: ['orders.>'] })
    await deployer.deploy({ name: 'tick', path: fixture('ok.js'), triggers: ['rate:1s'] })
    await invoker.publish('orders.created', { id: 1 })
    const runs = async (fn: string): Promise<number> => (await deployer.usage({ fn })).functions.find(f => f.name === fn)?.invocations ?? 0
    await waitFor(async () => await runs('orders') >= 1, { timeoutMs: 15_000, message: 'the event run by an agent' })
    await waitFor(async () => await runs('tick') >= 2, { timeoutMs: 15_000, message: 'the schedule fired twice' })
    const lines: string[] = []
    const ac = new AbortController()
    await waitFor(async () => {
      for await (const l of deployer.logs('secret', { signal: ac.signal })) lines.push(l.message)
      return lines.some(l => l.includes('greeting 1 from secret'))
    }, { timeoutMs: 10_000, message: 'the function\'s log line stored' })
    const { key } = await deployer.keys.create('app')
    expect(key).toMatch(/^fnm_/)
    expect((await deployer.keys.list()).map(k => k.name)).toContain('app')
    // The gateway: API keys followed from their bucket, the mesh-wide rate limit in its bucket.
    await deployer.deploy({ name: 'web', path: fixture('http/api.js'), routes: ['GET /web'], auth: 'apikey', rateLimit: { perSecond: 1, burst: 1 } })
    const [port] = httpPorts(cluster.agents)
    await waitFor(async () => (await http(port, 'GET', '/web', { headers: { 'x-api-key': key } })).status === 201, { timeoutMs: 10_000, message: 'the keyed route served' })
    await waitFor(async () => (await http(port, 'GET', '/web', { headers: { 'x-api-key': key } })).status === 429, { timeoutMs: 10_000, message: 'the route\'s rate limit applied' })
    await deployer.keys.revoke('app')
    await waitFor(async () => (await http(port, 'GET', '/web', { headers: { 'x-api-key': key } })).status === 403, { timeoutMs: 10_000, message: 'the revoked key refused' })
    expect(await deployer.functions()).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'secret' })]))
    // Nothing an agent did was refused: agents needed no more than the config gives them.
    for (const f of (await readdir(cluster.dir)).filter(f => f.endsWith('.log'))) {
      expect(await readFile(join(cluster.dir, f), 'utf8'), f).not.toMatch(/permissions? violation|FNMESH_ERR_NOT_INITIALIZED|unreachable in NATS KV/i)
    }
  })

  it.each(['agent', 'invoker'] as const)('refuses the %s every write into the registry, with the deployer doing the same as control', async (role) => {
    // No API check: the put itself must be what is refused.
    const kv = await new Kvm(jetstream(nc[role], { checkAPI: false })).open(FUNCTIONS_BUCKET)
    await refused(kv.put('secret', new TextEncoder().encode('evil spec')), `${role}: KV put into ${FUNCTIONS_BUCKET}`)
    await refused(kv.delete('secret'), `${role}: KV delete of a spec`)
    await refused(kv.purge('secret'), `${role}: KV purge of a spec`)
    const os = await new Objm(jetstream(nc[role], { checkAPI: false })).open(BUNDLES_BUCKET, false)
    await refused(os.putBlob({ name: 'evil' }, new Uint8Array([1, 2, 3])), `${role}: object put into ${BUNDLES_BUCKET}`)
    // Control: the deployer may write, delete and purge there.
    const dkv = await new Kvm(nc.deployer).open(FUNCTIONS_BUCKET, { allow_direct: true })
    await dkv.put('control-key', new TextEncoder().encode('x'))
    await dkv.purge('control-key')
    const dos = await new Objm(nc.deployer).open(BUNDLES_BUCKET)
    await dos.putBlob({ name: 'control-object' }, new Uint8Array([1, 2, 3]))
    await dos.delete('control-object')
    expect((await jetstream(nc.deployer).publish(`$KV.${FUNCTIONS_BUCKET}.control-key`, 'y')).stream).toBe(KV_FUNCTIONS)
    await dkv.purge('control-key')
  })

  it.each(['agent', 'deployer', 'invoker'] as const)('refuses the %s streams that republish, mirror or source into the registry, and purging or deleting its streams', async (role) => {
    const j = jsm[role]
    await refused(j.streams.add({ name: 'EVIL_RP', subjects: ['fnmesh.evil.rp'], republish: { src: 'fnmesh.evil.rp', dest: `$KV.${FUNCTIONS_BUCKET}.evil_rp` } }), `${role}: stream republishing into the registry`)
    await refused(j.streams.add({ name: 'EVIL_MIRROR', mirror: { name: KV_FUNCTIONS } }), `${role}: stream mirroring the registry`)
    await refused(j.streams.add({ name: 'EVIL_SOURCES', subjects: ['evil.src.>'], sources: [{ name: KV_FUNCTIONS }] }), `${role}: stream sourcing the registry`)
    await refused(j.streams.update(KV_FUNCTIONS, { republish: { src: '>', dest: 'evil.out.>' } } as never), `${role}: update of the registry stream`)
    await refused(j.streams.purge(KV_FUNCTIONS), `${role}: purge of ${KV_FUNCTIONS}`)
    await refused(j.streams.purge(KV_FUNCTIONS, { filter: `$KV.${FUNCTIONS_BUCKET}.secret` }), `${role}: purge of one spec`)
    await refused(j.streams.deleteMessage(KV_FUNCTIONS, 1), `${role}: delete of a spec message`)
    await refused(j.streams.delete(KV_FUNCTIONS), `${role}: delete of ${KV_FUNCTIONS}`)
    await refused(j.streams.delete(OBJ_BUNDLES), `${role}: delete of ${OBJ_BUNDLES}`)
    if (role !== 'deployer') await refused(j.streams.purge(OBJ_BUNDLES), `${role}: purge of ${OBJ_BUNDLES}`)
  })

  it('lets the admin do the same (the refusals above were real attempts that would have worked)', async () => {
    const a = jsm.admin
    // A stream republishing into the registry really writes there: the attack the config stops.
    await a.streams.add({ name: 'CONTROL_RP', subjects: ['fnmesh.control.rp'], republish: { src: 'fnmesh.control.rp', dest: `$KV.${FUNCTIONS_BUCKET}.control_rp` } })
    // ...published by the agent credential, as in the finding this config fixes.
    await jetstream(nc.agent).publish('fnmesh.control.rp', 'republished')
    const kv = await new Kvm(nc.admin).open(FUNCTIONS_BUCKET, { allow_direct: true })
    await waitFor(async () => (await kv.get('control_rp'))?.string() === 'republished', { timeoutMs: 5000, message: 'the republished message in the registry' })
    await a.streams.delete('CONTROL_RP')
    await a.streams.purge(KV_FUNCTIONS, { filter: `$KV.${FUNCTIONS_BUCKET}.control_rp` })
    await a.streams.add({ name: 'CONTROL_MIRROR', mirror: { name: KV_FUNCTIONS } })
    await a.streams.delete('CONTROL_MIRROR')
    await a.streams.add({ name: 'CONTROL_SOURCES', subjects: ['control.src.>'], sources: [{ name: KV_FUNCTIONS }] })
    await a.streams.delete('CONTROL_SOURCES')
    const ci = await a.consumers.add(EVENTS_STREAM, { durable_name: 'control_push', deliver_subject: `$KV.${FUNCTIONS_BUCKET}.control_push`, ack_policy: 'none' as never })
    expect(ci.config.deliver_subject).toBe(`$KV.${FUNCTIONS_BUCKET}.control_push`)
    await a.consumers.delete(EVENTS_STREAM, 'control_push')
  })

  it.each(['agent', 'invoker'] as const)('refuses the %s consumers, so none can deliver into the registry', async (role) => {
    for (const stream of [EVENTS_STREAM, `KV_${SCHEDULES_BUCKET}`, KV_FUNCTIONS]) {
      await refused(jsm[role].consumers.add(stream, { durable_name: 'evil_push', deliver_subject: `$KV.${FUNCTIONS_BUCKET}.evil_push`, ack_policy: 'none' as never }), `${role}: push consumer on ${stream} delivering into the registry`)
      await refused(jsm[role].consumers.add(stream, { name: 'evil_eph', deliver_subject: `$KV.${FUNCTIONS_BUCKET}.evil_eph`, ack_policy: 'none' as never }), `${role}: ephemeral push consumer on ${stream}`)
      await refused(jsm[role].consumers.delete(EVENTS_STREAM, 'fnmesh_secret_direct'), `${role}: delete of a function's consumer`)
    }
  })

  it('refuses invokers any read of the registry, which agents and deployers have', async () => {
    const direct = `$JS.API.DIRECT.GET.${KV_FUNCTIONS}.$KV.${FUNCTIONS_BUCKET}.secret`
    await refused(nc.invoker.request(direct, new Uint8Array(0), { timeout: 5000 }), 'invoker: direct get of a spec')
    await refused(jsm.invoker.streams.getMessage(KV_FUNCTIONS, { last_by_subj: `$KV.${FUNCTIONS_BUCKET}.secret` }), 'invoker: message get of a spec')
    await refused(jsm.invoker.streams.info(KV_FUNCTIONS, { subjects_filter: '>' }), 'invoker: list of function names')
    await refused(invoker.functions(), 'invoker: list functions')
    expect(String(await subscribeError(nc.invoker, `$KV.${FUNCTIONS_BUCKET}.>`))).toMatch(/permissions violation/i)
    for (const role of ['agent', 'deployer'] as const) {
      const m = await nc[role].request(direct, new Uint8Array(0), { timeout: 5000 })
      expect(new TextDecoder().decode(m.data), `${role} reads the spec`).toContain('top-secret-value')
    }
  })

  it.each(['agent', 'deployer', 'invoker'] as const)('refuses the %s every inbox but its own', async (role) => {
    for (const subject of ['_INBOX.>', '>', ...Object.values(ROLE_INBOX).filter(p => p !== ROLE_INBOX[role]).map(p => `${p}.>`)]) {
      const err = await subscribeError(nc[role], subject)
      expect(String(err), `${role} subscribing to ${subject}`).toMatch(/permissions violation for subscription/i)
    }
    // Control: its own prefix works (requests get their replies there).
    expect(await subscribeError(nc[role], `${ROLE_INBOX[role]}.control`)).toBeNull()
    const m = await nc[role].request('fnmesh.api.nodes', new Uint8Array(0), { timeout: 5000 }).catch((e: Error) => e)
    if (role === 'deployer' || role === 'invoker') expect(m).not.toBeInstanceOf(Error)
  })
})

describe('an agent started before `fnmesh init`', () => {
  it('creates nothing, says FNMESH_ERR_NOT_INITIALIZED naming fnmesh init, and starts once init has run', async () => {
    const nats = await startNatsServer()
    const dir = await mkdtemp(join(tmpdir(), 'fnmesh-noinit-'))
    const logFile = join(dir, 'agent.log')
    let agent: AgentProcess | undefined
    const conn = await connectNats({ servers: nats.url })
    try {
      const starting = spawnAgent({ nats: nats.url, name: 'early', dataDir: join(dir, 'early'), slots: 1, logFile, readyTimeoutMs: 60_000 })
      starting.catch(() => {})
      const line = await waitFor(async () => (await readFile(logFile, 'utf8').catch(() => '')).split('\n').find(l => l.includes('FNMESH_ERR_NOT_INITIALIZED')),
        { timeoutMs: 20_000, message: 'the agent saying the mesh is not initialised' })
      expect(JSON.parse(line)).toMatchObject({ level: 50, code: 'FNMESH_ERR_NOT_INITIALIZED', msg: expect.stringMatching(/fnmesh init/) })
      const j = await jetstreamManager(conn)
      const names: string[] = []
      for await (const n of j.streams.names()) names.push(n)
      expect(names, 'streams the waiting agent created').toEqual([])
      const cli = await runCli(['init', '--js-replicas', '1', '--json', '--nats', nats.url])
      expect(cli.code, cli.stderr).toBe(0)
      const res = JSON.parse(cli.stdout) as { replicas: number, created: string[] }
      expect(res.replicas).toBe(1)
      expect(res.created).toEqual(expect.arrayContaining([KV_FUNCTIONS, OBJ_BUNDLES, EVENTS_STREAM, `KV_${SCHEDULES_BUCKET}`]))
      agent = await starting
      expect(agent.nodeId).not.toBe('')
      // Run again: everything is there already and is left alone.
      const again = await runCli(['init', '--json', '--nats', nats.url])
      expect(again.code, again.stderr).toBe(0)
      expect(JSON.parse(again.stdout)).toMatchObject({ created: [] })
      expect((await runCli(['init', '--js-replicas', '0', '--nats', nats.url])).stderr).toMatch(/^error FNMESH_ERR_INVALID_ARGUMENT: /)
    } finally {
      await conn.close()
      await agent?.stop()
      await nats.stop()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
