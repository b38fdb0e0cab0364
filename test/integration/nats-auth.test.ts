/**
 * The mesh on a real nats-server configured with an account and users with permissions
 * (node/src/dev/nats-auth-config.ts, as in the README): agents, a deployer and invokers (one with
 * a password, one with an nkey), each able to do its part and refused the rest.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createUser } from '@nats-io/nkeys'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FnmeshError } from '../../proto/errors.js'
import { execSubject, SWIM_JOIN_SUBJECT, swimSubject } from '../../proto/subjects.js'
import { connect, type Mesh } from '../../sdk/src/client.js'
import { request } from '../../core/nats.js'
import { startDevCluster, type DevCluster } from '../../node/src/dev/cluster.js'
import { natsAuthConfig } from '../../node/src/dev/nats-auth-config.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { http, httpPorts } from '../helpers/http.js'
import { waitFor, within } from '../helpers/wait.js'

const ADMIN = { user: 'admin', password: 'admin-pw-3d2', inboxPrefix: '_INBOX_admins' }
const AGENT = { user: 'agent', password: 'agent-pw-5e1' }
const DEPLOYER = { user: 'deployer', password: 'deployer-pw-77c', inboxPrefix: '_INBOX_deployers' }
const INVOKER = { user: 'invoker', password: 'invoker-pw-0a9', inboxPrefix: '_INBOX_invokers' }

describe('a mesh on a NATS server with separate permissions for agents, deployers and invokers', () => {
  let cluster: DevCluster
  let dir: string
  let deployer: Mesh
  let invoker: Mesh
  let nkeyFile: string
  const failure = async (p: Promise<unknown>, what: string): Promise<FnmeshError> => {
    const err = await within(p.then(() => undefined, (e: unknown) => e), 20_000, what)
    expect(err, `${what} should fail`).toBeInstanceOf(FnmeshError)
    console.log(what, (err as Error).message)
    return err as FnmeshError
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-natsauth-'))
    const nkey = createUser()
    nkeyFile = join(dir, 'invoker.nk')
    await writeFile(nkeyFile, new TextDecoder().decode(nkey.getSeed()), { mode: 0o600 })
    cluster = await startDevCluster({
      nodes: 2,
      slots: 4,
      nats: { extraConfig: natsAuthConfig({ admins: [ADMIN], agents: [AGENT], deployers: [DEPLOYER], invokers: [INVOKER, { nkey: nkey.getPublicKey() }] }) },
      // `fnmesh init` runs as the admin before the agents start; agents cannot create anything.
      initAuth: ADMIN,
      env: { FNMESH_NATS_USER: AGENT.user, FNMESH_NATS_PASSWORD: AGENT.password, FNMESH_INBOX_PREFIX: '_INBOX_agents' },
      args: ['--http', '127.0.0.1:0']
    })
    deployer = await connect({ servers: cluster.nats.url, auth: DEPLOYER })
    invoker = await connect({ servers: cluster.nats.url, auth: INVOKER })
    await waitFor(async () => (await deployer.nodes({ timeoutMs: 2000 })).length === 2, { timeoutMs: 15_000, message: 'both agents in the mesh' })
  })

  afterAll(async () => {
    await deployer?.close()
    await invoker?.close()
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('lets the deployer deploy and the invokers invoke, by password and by nkey', async () => {
    await deployer.deploy({ name: 'hello', path: fixture('ok.js'), routes: ['GET /hello'] })
    expect(await invoker.invoke('hello', { n: 1 })).toMatchObject({ ok: true, event: { n: 1 } })
    const cli = await runCli(['invoke', 'hello', '--data', '{"n":2}', '--nats', cluster.nats.url, '--nats-nkey', nkeyFile, '--inbox-prefix', '_INBOX_invokers'])
    expect(cli.code, cli.stderr).toBe(0)
    expect(JSON.parse(cli.stdout)).toMatchObject({ ok: true, event: { n: 2 } })
    expect((await invoker.nodes()).length).toBe(2)
  })

  it('streams a response of more chunks than the agents may answer one request with, to an invoker and over HTTP', async () => {
    // allow_responses lets an agent answer one message 2000 times: every ack renews it.
    await deployer.deploy({ name: 'many', path: fixture('stream'), handler: 'index.many', routes: ['GET /many'], timeoutMs: 60_000 })
    const s = await invoker.invokeStream('many', { n: 2500 }, { timeoutMs: 60_000 })
    let chunks = 0
    let bytes = 0
    for await (const c of s) { chunks++; bytes += c.byteLength }
    expect(bytes).toBe(2500)
    expect(chunks, 'chunk messages').toBeGreaterThan(2000)
    expect(await s.done).toMatchObject({ streamed: true, bytes: 2500 })
    const r = await http(httpPorts(cluster.agents)[0], 'GET', '/many', { timeoutMs: 60_000 })
    expect(r.status).toBe(200)
    expect(r.text).toBe('x'.repeat(10))
  }, 90_000)

  it('serves HTTP through agents that may only read the registry and write their own buckets', async () => {
    await deployer.deploy({ name: 'keyed', path: fixture('http/api.js'), routes: ['GET /keyed'], auth: 'apikey' })
    const { key } = await deployer.keys.create('app')
    for (const port of httpPorts(cluster.agents)) {
      await waitFor(async () => (await http(port, 'GET', '/keyed', { headers: { 'x-api-key': key } })).status === 201, { timeoutMs: 10_000, message: `keyed route on ${port}` })
    }
  })

  it('refuses invokers the registry, deploys, API keys and agents\' exec subjects', async () => {
    expect((await failure(invoker.deploy({ name: 'evil', path: fixture('ok.js') }), 'deploy as invoker')).code).toBe('FNMESH_ERR_FORBIDDEN')
    expect((await failure(invoker.functions(), 'list functions as invoker')).code).toBe('FNMESH_ERR_FORBIDDEN')
    expect((await failure(invoker.keys.create('stolen'), 'create a key as invoker')).code).toBe('FNMESH_ERR_FORBIDDEN')
    const exec = request(invoker.nc, execSubject(cluster.agents[0].nodeId), new Uint8Array(0), { timeoutMs: 5000, what: 'send work straight to an agent' })
    expect((await failure(exec, 'exec as invoker')).code).toBe('FNMESH_ERR_FORBIDDEN')
    // nor speak membership "swim" (a forged accusation or join needs an agent's credentials)
    const swim = request(invoker.nc, swimSubject(cluster.agents[0].nodeId), new Uint8Array(0), { timeoutMs: 5000, what: 'ping an agent\'s membership' })
    expect((await failure(swim, 'swim as invoker')).code).toBe('FNMESH_ERR_FORBIDDEN')
    const join = request(invoker.nc, SWIM_JOIN_SUBJECT, new Uint8Array(0), { timeoutMs: 5000, what: 'join the membership' })
    expect((await failure(join, 'swim join as invoker')).code).toBe('FNMESH_ERR_FORBIDDEN')
    // the deployer cannot take invocations in the agents' place
    const cli = await runCli(['invoke', 'hello', '--nats', cluster.nats.url], { env: { FNMESH_NATS_USER: DEPLOYER.user, FNMESH_NATS_PASSWORD: DEPLOYER.password, FNMESH_INBOX_PREFIX: '_INBOX_deployers' } })
    expect(cli.code).toBe(1)
    expect(cli.stderr).toMatch(/^error FNMESH_ERR_FORBIDDEN: /)
  })

  it('refuses connections without credentials or with wrong ones', async () => {
    expect((await failure(connect({ servers: cluster.nats.url, auth: {} }), 'anonymous connect')).code).toBe('FNMESH_ERR_FORBIDDEN')
    expect((await failure(connect({ servers: cluster.nats.url, auth: { user: 'invoker', password: 'guess' } }), 'wrong password')).code).toBe('FNMESH_ERR_FORBIDDEN')
    const cli = await runCli(['nodes', '--nats', cluster.nats.url], { env: { FNMESH_NATS_USER: '', FNMESH_NATS_PASSWORD: '' } })
    expect(cli.stderr).toMatch(/^error FNMESH_ERR_FORBIDDEN: /)
  })
})
