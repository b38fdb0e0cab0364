/**
 * Bad input of every kind gets one clear error with a code, nothing hangs, and the agents keep
 * serving: garbage on the wire, bad JSON, oversize events, unknown functions and handlers, a dead
 * NATS server, no agents, no free slot, bad command lines, and forged capacity adverts.
 */
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gossipsub, type GossipSub } from '@chainsafe/libp2p-gossipsub'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node'
import { createLibp2p, type Libp2p } from 'libp2p'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startNatsServer } from '../../node/src/dev/nats-server.js'
import { decode, encode, type CapacityAdvert, type InvokeResult } from '../../proto/codec.js'
import { FnmeshError } from '../../proto/errors.js'
import { ADVERTS_TOPIC, execSubject, invokeSubject } from '../../proto/subjects.js'
import { connect } from '../../sdk/src/client.js'
import { runCli, type CliResult } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { viewsByAgent } from '../helpers/views.js'
import { sleep, waitFor, within } from '../helpers/wait.js'

const MiB = 1024 * 1024
const GARBAGE = [Buffer.from('this is not protobuf'), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Buffer.from([0x0a, 0xff, 0xff, 0x03])]

/** The SDK call's rejection, which must be an FnmeshError */
async function rejection (p: Promise<unknown>, what: string): Promise<FnmeshError> {
  const err = await within(p.then((v) => { throw new Error(`${what} succeeded with ${JSON.stringify(v)}`) }, (e: unknown) => e), 20_000, what)
  expect(err, what).toBeInstanceOf(FnmeshError)
  return err as FnmeshError
}

/** One line on stderr, `error CODE: message`, nothing on stdout, and the exit status */
function expectCliError (res: CliResult, code: string, status = 1): string {
  expect(res.stdout).toBe('')
  expect(res.code, `exit status; stderr: ${res.stderr}`).toBe(status)
  expect(res.stderr.endsWith('\n')).toBe(true)
  expect(res.stderr.trimEnd().split('\n'), 'stderr lines').toHaveLength(1)
  expect(res.stderr).toMatch(new RegExp(`^error ${code}: \\S`))
  return res.stderr.trimEnd().slice(`error ${code}: `.length)
}

async function deadNatsUrl (): Promise<string> {
  const port = await new Promise<number>((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const p = (srv.address() as { port: number }).port
      srv.close(() => { resolve(p) })
    })
  })
  return `nats://127.0.0.1:${port}`
}

describe('bad input to a mesh of 2 agents', () => {
  let t: TestMesh
  let nc: NatsConnection

  /** Every agent is alive, both are in the table, and a burst of ok calls succeeds */
  const expectStillServing = async (): Promise<void> => {
    for (const a of t.cluster.agents) expect(a.running, `${a.name} is running`).toBe(true)
    const outs = await Promise.all([1, 2, 3].map(async i => await t.mesh.invoke<{ ok: boolean }>('ok', { i }, { timeoutMs: 10_000 })))
    expect(outs.map(o => o.ok)).toEqual([true, true, true])
    expect((await t.mesh.nodes()).map(n => n.id).sort()).toEqual(t.cluster.agents.map(a => a.nodeId).sort())
  }

  /** A raw NATS request, its reply decoded as an InvokeResult */
  const rawRequest = async (subject: string, data: Uint8Array): Promise<InvokeResult> => {
    const msg = await nc.request(subject, data, { timeout: 10_000 })
    return decode('InvokeResult', msg.data)
  }

  beforeAll(async () => {
    t = await startMesh({ nodes: 2, slots: 2 })
    await t.mesh.deploy({ name: 'ok', path: fixture('ok.js') })
    nc = await natsConnect({ servers: t.url })
  })

  afterAll(async () => {
    await nc?.close().catch(() => {})
    await t?.stop()
  })

  it('answers garbage bytes sent as an invoke request with a decodable FNMESH_ERR_DECODE result', async () => {
    for (const g of GARBAGE) {
      const res = await rawRequest(invokeSubject('ok'), g)
      expect(res.ok).toBe(false)
      expect(res.error.code).toBe('FNMESH_ERR_DECODE')
      expect(res.error.errorMessage).toMatch(/^Cannot decode InvokeRequest/)
    }
    await expectStillServing()
  })

  it('answers garbage sent to each agent\'s exec subject with FNMESH_ERR_DECODE', async () => {
    for (const a of t.cluster.agents) {
      for (const g of GARBAGE) {
        const res = await rawRequest(execSubject(a.nodeId), g)
        expect(res.ok).toBe(false)
        expect(res.error.code).toBe('FNMESH_ERR_DECODE')
        expect(res.nodeId).toBe(a.nodeId)
      }
    }
    await expectStillServing()
  })

  it('rejects an event that is not valid JSON with FNMESH_ERR_INVALID_JSON, on the wire and on the CLI', async () => {
    const res = await rawRequest(invokeSubject('ok'), encode('InvokeRequest', { function: 'ok', payload: Buffer.from('{"n": 1,'), timeoutMs: 10_000 }))
    expect(res.ok).toBe(false)
    expect(res.error.code).toBe('FNMESH_ERR_INVALID_JSON')
    expect(res.error.errorMessage).toContain('"ok"')
    expectCliError(await runCli(['invoke', 'ok', '--data', '{"n": 1,', '--nats', t.url]), 'FNMESH_ERR_INVALID_JSON')
    await expectStillServing()
  })

  it('rejects an event over 6 MiB with FNMESH_ERR_PAYLOAD_TOO_LARGE, and the SDK refuses it before sending', async () => {
    // Watches what reaches NATS on the invoke subjects.
    let big = 0
    const spy = nc.subscribe('fnmesh.invoke.>', { callback: (_err, msg) => { if (msg.data.byteLength > 6 * MiB) big++ } })
    try {
      const event = Buffer.from(JSON.stringify('a'.repeat(6 * MiB)))
      const res = await rawRequest(invokeSubject('ok'), encode('InvokeRequest', { function: 'ok', payload: event, timeoutMs: 10_000 }))
      expect(res.ok).toBe(false)
      expect(res.error.code).toBe('FNMESH_ERR_PAYLOAD_TOO_LARGE')
      await nc.flush()
      await waitFor(() => big === 1, { timeoutMs: 5000, message: 'the spy seeing the raw oversize request' })

      const err = await rejection(t.mesh.invoke('ok', 'a'.repeat(6 * MiB)), 'an oversize invoke from the SDK')
      expect(err.code).toBe('FNMESH_ERR_PAYLOAD_TOO_LARGE')
      await t.mesh.nc.flush()
      await nc.flush()
      expect(big, 'oversize requests seen on NATS').toBe(1)
    } finally {
      spy.unsubscribe()
    }
    await expectStillServing()
  })

  it('answers an unknown function with FNMESH_ERR_NOT_FOUND through the SDK and the CLI', async () => {
    const err = await rejection(t.mesh.invoke('no-such-fn', {}), 'invoke of an unknown function')
    expect(err.code).toBe('FNMESH_ERR_NOT_FOUND')
    expect(err.message).toContain('"no-such-fn"')
    expect(expectCliError(await runCli(['invoke', 'no-such-fn', '--nats', t.url]), 'FNMESH_ERR_NOT_FOUND')).toContain('"no-such-fn"')
    await expectStillServing()
  })

  it('refuses at deploy a default handler whose module is not in the code, with FNMESH_ERR_HANDLER_NOT_FOUND', async () => {
    // A folder holding only noexport.js: the default handler index.handler has no module.
    const dir = await mkdtemp(join(tmpdir(), 'fnmesh-noindex-'))
    try {
      await mkdir(join(dir, 'fn'))
      await copyFile(fixture('noexport.js'), join(dir, 'fn', 'noexport.js'))
      const err = await rejection(t.mesh.deploy({ name: 'noindex', path: join(dir, 'fn') }), 'deploy without index.js')
      expect(err.code).toBe('FNMESH_ERR_HANDLER_NOT_FOUND')
      expect(err.message).toContain('index.handler')
      expectCliError(await runCli(['deploy', join(dir, 'fn'), '--name', 'noindex', '--nats', t.url]), 'FNMESH_ERR_HANDLER_NOT_FOUND')
      expectCliError(await runCli(['deploy', fixture('noexport.js'), '--name', 'noindex', '--handler', 'index.handler', '--nats', t.url]), 'FNMESH_ERR_HANDLER_NOT_FOUND')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
    expect((await t.mesh.functions()).map(f => f.name)).not.toContain('noindex')
    await expectStillServing()
  })

  it('deploys a module that lacks the handler export, and its invocations fail with Runtime.HandlerNotFound', async () => {
    // noexport.js alone is stored as index.js; the default handler index.handler is not exported.
    await t.mesh.deploy({ name: 'noexport', path: fixture('noexport.js') })
    const dep = await runCli(['deploy', fixture('ok.js'), '--name', 'wrongexport', '--handler', 'ok.missing', '--nats', t.url])
    expect(dep.stderr).toBe('')
    expect(dep.code).toBe(0)
    for (const [fn, handler] of [['noexport', 'index.handler'], ['wrongexport', 'ok.missing']]) {
      const err = await rejection(t.mesh.invoke(fn, {}), `invoke of "${fn}"`)
      expect(err.code).toBe('FNMESH_ERR_HANDLER_NOT_FOUND')
      expect(err.errorType).toBe('Runtime.HandlerNotFound')
      expect(err.message).toBe(`${handler} is undefined or not exported`)
    }
    // The CLI's error line names the errorType too (error CODE: errorType: message), as the AWS CLI shows the payload.
    expect(expectCliError(await runCli(['invoke', 'wrongexport', '--nats', t.url]), 'FNMESH_ERR_HANDLER_NOT_FOUND')).toBe('Runtime.HandlerNotFound: ok.missing is undefined or not exported')
    await expectStillServing()
  })

  it('fails within a few seconds with FNMESH_ERR_NATS_UNAVAILABLE when the NATS URL is dead, on the CLI and in the SDK', async () => {
    const dead = await deadNatsUrl()
    for (const args of [['invoke', 'ok', '--data', '{}'], ['nodes', '--json'], ['usage'], ['deploy', fixture('ok.js'), '--name', 'x']]) {
      // runCli fails the test if the command has not exited within 5 s.
      expect(expectCliError(await runCli([...args, '--nats', dead], { timeoutMs: 5000 }), 'FNMESH_ERR_NATS_UNAVAILABLE')).toContain(dead)
    }
    const err = await rejection(connect({ servers: dead }), 'SDK connect to a dead URL')
    expect(err.code).toBe('FNMESH_ERR_NATS_UNAVAILABLE')
  })

  it('answers FNMESH_ERR_NO_AGENTS when no agent listens on the NATS server', async () => {
    const empty = await startNatsServer()
    const mesh = await connect({ servers: empty.url })
    try {
      const err = await rejection(mesh.invoke('ok', {}, { timeoutMs: 10_000 }), 'invoke with no agents')
      expect(err.code).toBe('FNMESH_ERR_NO_AGENTS')
      expect(expectCliError(await runCli(['invoke', 'ok', '--nats', empty.url], { timeoutMs: 10_000 }), 'FNMESH_ERR_NO_AGENTS')).toMatch(/fnmesh agent/)
    } finally {
      await mesh.close()
      await empty.stop()
    }
  })

  it('exits 2 with one line `error FNMESH_ERR_BAD_USAGE: ...` on a bad command line', async () => {
    const cases = [
      ['frobnicate'],
      ['invoke'],
      ['deploy', fixture('ok.js')],
      ['nodes', '--bogus'],
      ['agent', '--slots', 'many'],
      ['deploy', fixture('ok.js'), '--name', 'x', '--timeout', 'soon']
    ]
    const results = await Promise.all(cases.map(async args => await runCli(args)))
    results.forEach((res, i) => {
      const message = expectCliError(res, 'FNMESH_ERR_BAD_USAGE', 2)
      console.log(`fnmesh ${cases[i].join(' ')} -> ${message}`)
    })
  })

  it('answers a publish no function listens to with FNMESH_ERR_NOT_FOUND at once', async () => {
    expectCliError(await runCli(['publish', 'orders.created', '--data', '{"id":1}', '--nats', t.url]), 'FNMESH_ERR_NOT_FOUND')
    const started = Date.now()
    expect((await rejection(t.mesh.publish('orders.created', { id: 1 }), 'SDK publish')).code).toBe('FNMESH_ERR_NOT_FOUND')
    // Not after the retries meant for a leader election (it took the whole ~10 s budget before)
    expect(Date.now() - started).toBeLessThan(3000)
  })

  it('prints help and exits 0 for --help on every command', async () => {
    const commands = [[], ['agent'], ['dev'], ['deploy'], ['invoke'], ['publish'], ['functions'], ['nodes'], ['usage'], ['logs'],
      ['dlq'], ['dlq', 'list'], ['dlq', 'replay'], ['dlq', 'purge'], ['meter'], ['meter', 'status'], ['keys'], ['keys', 'create'], ['keys', 'list'], ['keys', 'revoke']]
    // Three at a time: the machine has two cores.
    for (let i = 0; i < commands.length; i += 3) {
      const batch = commands.slice(i, i + 3)
      const results = await Promise.all(batch.map(async cmd => await runCli([...cmd, '--help'])))
      results.forEach((res, j) => {
        const name = ['fnmesh', ...batch[j]].join(' ')
        expect(res.code, `${name} --help; stderr: ${res.stderr}`).toBe(0)
        expect(res.stderr).toBe('')
        expect(res.stdout).toMatch(new RegExp(`^Usage: ${name} `))
      })
    }
  })

  it('ignores capacity adverts signed by another peer or out of range, and accepts a well-formed one', async () => {
    const [a1, a2] = t.cluster.agents
    const ids = [a1.nodeId, a2.nodeId]
    const host = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: {
        identify: identify(),
        pubsub: gossipsub({ emitSelf: false, allowPublishToZeroTopicPeers: true, heartbeatInterval: 500, globalSignaturePolicy: 'StrictSign' })
      }
    }) as unknown as Libp2p<{ pubsub: GossipSub }>
    const pubsub = host.services.pubsub
    const me = host.peerId.toString()
    const startedAtMs = Date.now()
    let seq = 0
    const advert = (fields: Partial<CapacityAdvert>): Uint8Array => encode('CapacityAdvert', {
      nodeId: me, name: 'test-host', slots: 3, inFlight: 0, freeMemMb: 1024, warm: [], seq: ++seq, draining: false,
      startedAtMs, sentAtMs: Date.now(), invocations: 0, coldStarts: 0, warmStarts: 0, ...fields
    })
    let ticker: NodeJS.Timeout | undefined
    try {
      pubsub.subscribe(ADVERTS_TOPIC)
      for (const a of [a1, a2]) await host.dial(multiaddr(a.addrs.find(x => x.startsWith('/ip4/127.0.0.1/')) as string), { signal: AbortSignal.timeout(5000) })
      await waitFor(() => ids.every(id => pubsub.getSubscribers(ADVERTS_TOPIC).some(p => p.toString() === id)), { timeoutMs: 10_000, message: 'both agents subscribed to the adverts topic' })

      // A well-formed advert of the test host's own reaches every agent's table: the path works.
      ticker = setInterval(() => { void pubsub.publish(ADVERTS_TOPIC, advert({})).catch(() => {}) }, 300)
      await waitFor(async () => {
        const views = await viewsByAgent(t.mesh, ids, 3000)
        return [...views.values()].every(nodes => nodes.some(n => n.id === me && n.name === 'test-host' && n.slots === 3))
      }, { timeoutMs: 10_000, message: 'every agent listing the test host with 3 slots' })
      clearInterval(ticker)
      ticker = undefined
      await sleep(350)

      // Forged: agent-2's id signed by the test host, huge slots, and a start time far ahead so it would
      // shadow every real advert of agent-2; then the test host's own id with 0 slots.
      const sentAt = Date.now()
      await pubsub.publish(ADVERTS_TOPIC, advert({ nodeId: a2.nodeId, name: 'forged', slots: 100_000, startedAtMs: Date.now() + 1e9, seq: 1e6 }))
      await pubsub.publish(ADVERTS_TOPIC, advert({ slots: 0 }))

      // For the next second, each agent's table still has the real agent-2 and the test host's 3 slots.
      let sawSelf = 0
      while (Date.now() < sentAt + 1000) {
        const views = await viewsByAgent(t.mesh, ids, 3000)
        for (const [viewer, nodes] of views) {
          const two = nodes.find(n => n.id === a2.nodeId)
          expect(two, `agent-2 in the table of ${viewer}`).toBeDefined()
          expect(two?.name).toBe(a2.name)
          expect(two?.slots).toBe(2)
          expect(nodes.some(n => n.slots === 100_000 || n.name === 'forged')).toBe(false)
          const mine = nodes.find(n => n.id === me)
          if (mine != null) { sawSelf++; expect(mine.slots, `the test host's slots in the table of ${viewer}`).toBe(3) }
        }
        await sleep(100)
      }
      expect(sawSelf, 'observations of the test host\'s entry after the bad adverts').toBeGreaterThan(0)
      // The agents did receive both and rejected them (so the assertions above could have failed).
      await sleep(200)
      for (const a of [a1, a2]) {
        const lines = (await readFile(join(t.cluster.dir, `${a.name}.log`), 'utf8')).split('\n').filter(l => l.includes('rejected an advert'))
        const claims = lines.map(l => String((JSON.parse(l) as { claims?: string }).claims))
        expect(claims, `adverts ${a.name} rejected`).toContain(a2.nodeId)
        expect(claims, `adverts ${a.name} rejected`).toContain(me)
      }
      // agent-2's real adverts are still taken (the forged start time did not make them look stale).
      await sleep(1000)
      const views = await viewsByAgent(t.mesh, [a1.nodeId], 3000)
      expect(views.get(a1.nodeId)?.find(n => n.id === a2.nodeId)?.lastSeenMs).toBeLessThan(1500)
    } finally {
      clearInterval(ticker)
      await host.stop()
    }
    await waitFor(async () => !(await t.mesh.nodes()).some(n => n.id === me), { timeoutMs: 5000, message: 'the test host leaving the tables' })
    await expectStillServing()
  })
})

describe('a mesh whose only agent has one slot', () => {
  let t: TestMesh
  let noQueue: TestMesh

  beforeAll(async () => {
    t = await startMesh({ nodes: 1, slots: [1] })
    await t.mesh.deploy({ name: 'ok', path: fixture('ok.js') })
    await t.mesh.deploy({ name: 'hang', path: fixture('hang.js'), timeoutMs: 3000 })
    // The same, keeping no queue: a full node refuses at once
    noQueue = await startMesh({ nodes: 1, slots: [1], args: ['--max-queue', '0'] })
    await noQueue.mesh.deploy({ name: 'ok', path: fixture('ok.js') })
    await noQueue.mesh.deploy({ name: 'hang', path: fixture('hang.js'), timeoutMs: 3000 })
  })

  afterAll(async () => {
    await t?.stop()
    await noQueue?.stop()
  })

  it('queues a call behind the taken slot within the caller\'s deadline, and runs it once the slot frees', async () => {
    expect(await t.mesh.invoke('ok', {})).toMatchObject({ ok: true })
    const hanging = t.mesh.invoke('hang', {}, { timeoutMs: 20_000 }).then(() => undefined, (e: unknown) => e)
    await waitFor(async () => (await t.mesh.nodes())[0]?.inFlight === 1, { timeoutMs: 2000, intervalMs: 20, message: 'the hang invocation taking the slot' })
    const t0 = Date.now()
    const out = await within(t.mesh.invoke('ok', {}, { timeoutMs: 20_000 }), 15_000, 'the queued invocation')
    const waited = Date.now() - t0
    console.log(`queued behind the hang for ${waited} ms`)
    expect(out).toMatchObject({ ok: true })
    // it ran after the hang's 3 s timeout freed the slot, not beside it
    expect(waited).toBeGreaterThan(1000)
    const hangErr = await within(hanging, 10_000, 'the hang invocation')
    expect((hangErr as FnmeshError).code).toBe('FNMESH_ERR_TIMEOUT')
  })

  it('answers FNMESH_ERR_NO_CAPACITY at once while the slot is taken on a node that keeps no queue, and serves again once it frees', async () => {
    expect(await noQueue.mesh.invoke('ok', {})).toMatchObject({ ok: true })
    const hanging = noQueue.mesh.invoke('hang', {}, { timeoutMs: 20_000 }).then(() => undefined, (e: unknown) => e)
    await waitFor(async () => (await noQueue.mesh.nodes())[0]?.inFlight === 1, { timeoutMs: 2000, intervalMs: 20, message: 'the hang invocation taking the slot' })
    const t0 = Date.now()
    const err = await rejection(noQueue.mesh.invoke('ok', {}, { timeoutMs: 20_000 }), 'invoke while the only slot is taken')
    const waited = Date.now() - t0
    console.log(`NO_CAPACITY after ${waited} ms: ${err.message}`)
    expect(err.code).toBe('FNMESH_ERR_NO_CAPACITY')
    expect(waited).toBeLessThan(1500)
    const hangErr = await within(hanging, 10_000, 'the hang invocation')
    expect((hangErr as FnmeshError).code).toBe('FNMESH_ERR_TIMEOUT')
    expect(await noQueue.mesh.invoke('ok', {})).toMatchObject({ ok: true })
  })
})
