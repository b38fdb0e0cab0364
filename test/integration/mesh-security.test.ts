/**
 * A mesh that lets no one in, with real agents: a private swarm (agents without the swarm key,
 * or with another one, never join), forged adverts from a host inside the swarm dropped, and
 * agents with a trust list running only deploys signed by a trusted deployer key, with the
 * code digest checked.
 */
import { readFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gossipsub, type GossipSub } from '@chainsafe/libp2p-gossipsub'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { Kvm } from '@nats-io/kv'
import { Objm } from '@nats-io/obj'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p, type Libp2p } from 'libp2p'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decode, encode } from '../../proto/codec.js'
import { FnmeshError } from '../../proto/errors.js'
import { ADVERTS_TOPIC, BUNDLES_BUCKET, FUNCTIONS_BUCKET } from '../../proto/subjects.js'
import { spawnAgent, type AgentProcess } from '../../node/src/dev/cluster.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { http, httpPorts } from '../helpers/http.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { viewsByAgent } from '../helpers/views.js'
import { sleep, waitFor, within } from '../helpers/wait.js'

describe('mesh security with real agents', () => {
  let t: TestMesh
  let dir: string
  let swarmKey: string
  let keyA: string
  let keyB: string
  const code = async (p: Promise<unknown>): Promise<string> => {
    const err = await within(p.then(() => 'ok', (e: unknown) => e), 40_000, 'invocation')
    if (err === 'ok') return 'ok'
    expect(err).toBeInstanceOf(FnmeshError)
    if ((err as FnmeshError).code === 'FNMESH_ERR_FUNCTION_ERROR') console.log((err as Error).message)
    return (err as FnmeshError).code
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-sec-'))
    swarmKey = join(dir, 'swarm.key')
    keyA = join(dir, 'alice.pem')
    keyB = join(dir, 'bob.pem')
    expect((await runCli(['keys', 'swarm', '--out', swarmKey])).code).toBe(0)
    const alice = await runCli(['keys', 'deployer', 'create', '--out', keyA])
    expect(alice.code, alice.stderr).toBe(0)
    expect((await runCli(['keys', 'deployer', 'create', '--out', keyB])).code).toBe(0)
    await mkdir(join(dir, 'trusted'))
    const { writeFile } = await import('node:fs/promises')
    await writeFile(join(dir, 'trusted', 'alice.pub'), alice.stdout)
    t = await startMesh({ nodes: 2, slots: 4, args: ['--swarm-key', swarmKey, '--trust', join(dir, 'trusted'), '--http', '127.0.0.1:0'] })
  })

  afterAll(async () => {
    await t?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('keeps agents without the swarm key, or with another one, out of the swarm', async () => {
    const otherKey = join(dir, 'other.key')
    expect((await runCli(['keys', 'swarm', '--out', otherKey])).code).toBe(0)
    const members = t.cluster.agents.map(a => a.nodeId)
    // at debug level, an outsider logs each dial that fails ("dial failed", gossip.ts dialPeer)
    const outsider = async (name: string, args: string[]): Promise<AgentProcess> => await spawnAgent({ nats: t.url, name, dataDir: join(dir, name), slots: 2, args, logFile: join(dir, `${name}.log`), logLevel: 'debug' })
    const [noKey, wrongKey] = await Promise.all([outsider('no-key', []), outsider('wrong-key', ['--swarm-key', otherKey])])
    // The control: each newcomer hears the members on NATS (their announce every 5 s) and dials
    // every one of them, so each must log a failed dial to each member; a dial that worked
    // instead would join it and end its dialling, and this wait would fail.
    const triedAndFailed = async (o: AgentProcess, member: string): Promise<Record<string, unknown>> =>
      await o.waitForLog(l => l.msg === 'dial failed' && l.peer === member, 20_000).catch((err: Error) => {
        throw new Error(`Outsider ${o.name} did not log a failed dial to member ${member} within 20 s: it never tried, or got in (${err.message.slice(0, 300)})`)
      })
    const failures = await Promise.all([noKey, wrongKey].flatMap(o => members.map(async m => await triedAndFailed(o, m))))
    expect(failures).toHaveLength(2 * members.length)
    // Every outsider has tried every member at least once and been refused: now each agent's own table.
    const views = await viewsByAgent(t.mesh, [...members, noKey.nodeId, wrongKey.nodeId], 10_000)
    for (const id of members) expect(views.get(id)?.map(n => n.id).sort(), `table of member ${id}`).toEqual([...members].sort())
    expect(views.get(noKey.nodeId)?.map(n => n.id)).toEqual([noKey.nodeId])
    expect(views.get(wrongKey.nodeId)?.map(n => n.id)).toEqual([wrongKey.nodeId])
    await Promise.all([noKey.stop(), wrongKey.stop()])
  })

  it('drops an advert signed by a host that is not the node it describes', async () => {
    const [a1, a2] = t.cluster.agents
    const rogue = await rogueHost(await readFile(swarmKey))
    try {
      await rogue.dial(multiaddr(a1.addrs[0]))
      const pubsub = rogue.services.pubsub
      pubsub.subscribe(ADVERTS_TOPIC)
      await waitFor(() => pubsub.getSubscribers(ADVERTS_TOPIC).some(p => p.toString() === a1.nodeId), { timeoutMs: 10_000, message: 'agent-1 subscribed, seen by the rogue host' })
      const rejected = a1.waitForLog(l => l.msg === 'rejected an advert: signer or values out of range' && l.claims === a2.nodeId, 15_000)
      const started = Date.now()
      for (let seq = 1; seq <= 15; seq++) {
        const base = { slots: 2, inFlight: 0, freeMemMb: 100, warm: [], seq, draining: false, startedAtMs: started, sentAtMs: Date.now(), invocations: 0, coldStarts: 0, warmStarts: 0 }
        // its own advert (the control: gossip from this host does reach agent-1)...
        await pubsub.publish(ADVERTS_TOPIC, encode('CapacityAdvert', { ...base, nodeId: rogue.peerId.toString(), name: 'rogue-honest' }))
        // ...and one claiming to be agent-2, newer than agent-2's own, with huge capacity
        await pubsub.publish(ADVERTS_TOPIC, encode('CapacityAdvert', { ...base, nodeId: a2.nodeId, name: 'forged', slots: 999, startedAtMs: started + 60_000 }))
        await sleep(100)
      }
      const line = await rejected
      expect(line.from).toBe(rogue.peerId.toString())
      const view = (await viewsByAgent(t.mesh, [a1.nodeId])).get(a1.nodeId) ?? []
      expect(view.find(n => n.id === rogue.peerId.toString())?.name, 'the rogue host\'s own advert was accepted').toBe('rogue-honest')
      const seenA2 = view.find(n => n.id === a2.nodeId)
      expect(seenA2?.name).toBe('agent-2')
      expect(seenA2?.slots).toBe(4)
      expect(view.some(n => n.name === 'forged')).toBe(false)
    } finally {
      await rogue.stop()
    }
    await t.waitForNodes(2, 10_000)
  })

  it('runs a deploy signed by a trusted key, and refuses unsigned, untrusted and tampered ones with clear codes', async () => {
    const port = httpPorts(t.cluster.agents)[0]
    const signed = await runCli(['deploy', fixture('http/api.js'), '--name', 'signed', '--route', 'GET /signed', '--sign', keyA, '--nats', t.url])
    expect(signed.code, signed.stderr).toBe(0)
    expect(signed.stdout).toMatch(/signed by ed25519:/)
    expect(await code(t.mesh.invoke('signed', { rawPath: '/x/bare' }))).toBe('ok')
    expect((await http(port, 'GET', '/signed')).status).toBe(201)

    await t.mesh.deploy({ name: 'unsigned', path: fixture('http/api.js'), routes: ['GET /unsigned'] })
    expect(await code(t.mesh.invoke('unsigned', {}))).toBe('FNMESH_ERR_UNSIGNED_DEPLOY')
    expect((await http(port, 'GET', '/unsigned')).json.code, 'the gateway does not serve routes of untrusted deploys').toBe('FNMESH_ERR_ROUTE_NOT_FOUND')

    await t.mesh.deploy({ name: 'by-bob', path: fixture('ok.js'), signingKey: keyB })
    expect(await code(t.mesh.invoke('by-bob', {}))).toBe('FNMESH_ERR_UNSIGNED_DEPLOY')

    // The spec changed after signing (an environment variable added, signature kept)
    await t.mesh.deploy({ name: 'spec-tampered', path: fixture('ok.js'), signingKey: keyA })
    const kv = await new Kvm(t.mesh.nc).open(FUNCTIONS_BUCKET)
    const entry = await kv.get('spec-tampered')
    const spec = decode('FunctionSpec', entry!.value)
    const body = encode('FunctionSpec', { ...spec.toJSON(), version: spec.version + 1, env: { INJECTED: '1' }, signature: null } as never)
    await kv.put('spec-tampered', Buffer.concat([body, encode('FunctionSpec', { signature: spec.signature })]))
    // (the signed version may still run until an agent's KV watch brings the new one)
    await waitFor(async () => await code(t.mesh.invoke('spec-tampered', {})) === 'FNMESH_ERR_SIGNATURE_INVALID', { timeoutMs: 10_000, message: 'the tampered version refused' })

    // The code changed after signing: the object holding the bundle replaced, spec untouched
    // Code of its own (a comment makes its digest unique): an agent that had already unpacked the
    // same bundle for another function would run its copy and never fetch the tampered object.
    const own = await mkdtemp(join(tmpdir(), 'fnmesh-tampered-'))
    await writeFile(join(own, 'index.js'), `${await readFile(fixture('ok.js'), 'utf8')}\n// ${Date.now()}-${Math.random()}\n`)
    const dep = await t.mesh.deploy({ name: 'code-tampered', path: join(own, 'index.js'), signingKey: keyA })
    const store = await new Objm(t.mesh.nc).open(BUNDLES_BUCKET)
    const evil = await readFile(fixture('throw.js'))
    await store.putBlob({ name: `sha256-${dep.sha256}` }, encode('Bundle', { files: [{ path: 'index.js', mode: 0o644, data: evil }] }))
    expect(await code(t.mesh.invoke('code-tampered', {}))).toBe('FNMESH_ERR_BUNDLE_INVALID')

    // and the agents are unharmed
    expect(await code(t.mesh.invoke('signed', { rawPath: '/x/bare' }))).toBe('ok')
  })
})

async function rogueHost (psk: Uint8Array): Promise<Libp2p<{ identify: unknown, pubsub: GossipSub }>> {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionProtector: preSharedKey({ psk }),
    services: {
      identify: identify(),
      pubsub: gossipsub({ emitSelf: false, allowPublishToZeroTopicPeers: true, heartbeatInterval: 200, globalSignaturePolicy: 'StrictSign' })
    }
  }) as unknown as Libp2p<{ identify: unknown, pubsub: GossipSub }>
}
