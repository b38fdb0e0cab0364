/**
 * Aliases under the trust model (issue 15): an agent that runs only signed deploys follows only
 * aliases signed by a trusted deployer, refuses a replayed older one, and still runs an older
 * signed version asked for by number (that is not a rollback: the caller named it).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Kvm, type KV } from '@nats-io/kv'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FUNCTIONS_BUCKET } from '../../proto/subjects.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'

async function code (p: Promise<unknown>): Promise<string> {
  try { await p; return 'ok' } catch (err: any) { return String(err?.code ?? err) }
}

describe('aliases on an agent that runs only signed deploys', () => {
  let t: TestMesh
  let kv: KV
  let dir: string
  let key: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-alias-trust-'))
    key = join(dir, 'alice.pem')
    const alice = await runCli(['keys', 'deployer', 'create', '--out', key])
    expect(alice.code, alice.stderr).toBe(0)
    await mkdir(join(dir, 'trusted'))
    await writeFile(join(dir, 'trusted', 'alice.pub'), alice.stdout)
    t = await startMesh({ nodes: 1, slots: 4, args: ['--trust', join(dir, 'trusted')] })
    kv = await new Kvm(t.mesh.nc).open(FUNCTIONS_BUCKET)
    for (const tag of ['one', 'two']) await t.mesh.deploy({ name: 'sfn', path: fixture('versioned.js'), env: { TAG: tag }, signingKey: key })
  }, 60_000)

  afterAll(async () => {
    await t?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('follows a signed alias, refuses an unsigned one and a replayed older one, and runs a signed version by number', async () => {
    expect(await t.mesh.invoke('sfn:1')).toMatchObject({ version: '1', tag: 'one' })
    const signed = await runCli(['alias', 'set', 'sfn', 'live', '1', '--sign', key, '--json', '--nats', t.url])
    expect(signed.code, signed.stderr).toBe(0)
    expect(JSON.parse(signed.stdout)).toMatchObject({ signature: 'signed', serial: 1 })
    expect(await t.mesh.invoke('sfn:live')).toMatchObject({ version: '1' })
    const first = (await kv.get('alias.sfn.live'))?.value as Uint8Array

    await t.mesh.aliasSet('sfn', 'live', 2, { signingKey: key })
    await waitFor(async () => (await t.mesh.invoke<{ version: string }>('sfn:live')).version === '2', { timeoutMs: 10_000, message: 'the moved alias is followed' })
    // The older signed value put back: its serial is below one already trusted.
    await kv.put('alias.sfn.live', first)
    await waitFor(async () => await code(t.mesh.invoke('sfn:live')) === 'FNMESH_ERR_INVALID_ALIAS', { timeoutMs: 10_000, message: 'the replayed alias is refused' })

    // Unsigned: stored by anyone with write access, refused by the agent.
    await t.mesh.aliasSet('sfn', 'canary', 2)
    expect(await code(t.mesh.invoke('sfn:canary'))).toBe('FNMESH_ERR_INVALID_ALIAS')
    const list = await t.mesh.aliasList('sfn')
    expect(list.find(a => a.alias === 'canary')).toMatchObject({ signature: 'unsigned', status: 'ok' })
    expect(await t.mesh.invoke('sfn')).toMatchObject({ version: '2' })
    for (const a of t.cluster.agents) expect(a.running).toBe(true)
  })
})
