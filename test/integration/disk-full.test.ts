/**
 * A full disk, for real: a small tmpfs holds the ledger. A write that finds no space fails
 * cleanly and the store works again once space is back; an agent whose data folder runs low on
 * space stops taking work (FNMESH_ERR_DISK_FULL, its advert and `fnmesh nodes` say why), the
 * mesh routes around it, and it serves again when space returns. Nothing runs unmetered.
 * Needs root to mount the tmpfs; skipped (saying so) otherwise.
 */
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, statfs, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as natsConnect } from '@nats-io/transport-node'
import { afterAll, describe, expect, it } from 'vitest'
import { spawnAgent, type AgentProcess } from '../../node/src/dev/cluster.js'
import { silentLogger } from '../../node/src/logger.js'
import { DiskGuard } from '../../node/src/metering/ledger/disk.js'
import { MeterStore } from '../../node/src/metering/ledger/store.js'
import { minuteRows, queryUsage, recount } from '../../node/src/metering/queries/usage.js'
import { decode, encode } from '../../proto/codec.js'
import { execSubject } from '../../proto/subjects.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { countBy, startLoad } from '../helpers/load.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { rec, signed, testNode } from '../helpers/meter.js'
import { waitFor, within } from '../helpers/wait.js'

const MiB = 1024 * 1024
const base = await mkdtemp(join(tmpdir(), 'fnmesh-diskfull-'))
const disk = join(base, 'disk')
let mounted = false
let why = ''
try {
  await mkdir(disk)
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', disk], { stdio: 'pipe' })
  mounted = true
} catch (err: any) {
  why = String(err?.stderr ?? err?.message ?? err).trim()
  console.log(`skipping the full-disk tests: cannot mount a tmpfs here (${why})`)
}

const free = async (): Promise<number> => { const s = await statfs(disk); return Number(s.bavail) * Number(s.bsize) }

/** Fills the tmpfs until `leave` bytes are free */
async function fill (name: string, leave: number): Promise<void> {
  await writeFile(join(disk, name), Buffer.alloc(Math.max(0, await free() - leave)))
}

describe.skipIf(!mounted)('a full disk', () => {
  let t: TestMesh | undefined
  let small: AgentProcess | undefined

  afterAll(async () => {
    small?.kill('SIGKILL')
    await small?.exited
    await t?.stop()
    if (mounted) execFileSync('umount', [disk])
    await rm(base, { recursive: true, force: true })
  })

  it('fails a ledger write that finds no space with a clear error, refuses work, and writes again once space is back', async () => {
    const node = await testNode()
    const log = silentLogger()
    const guard = new DiskGuard({ dir: join(disk, 'store'), minFreeBytes: 0, logger: log })
    await mkdir(join(disk, 'store'))
    const store = await MeterStore.open({ dir: join(disk, 'store', 'ledger'), logger: log, onWriteError: (e) => { guard.writeFailed(e) } })
    try {
      await fill('filler-1', 64 * 1024)
      let stored = 0
      let failure: any
      for (let i = 0; i < 400 && failure == null; i++) {
        const s = signed(node, Array.from({ length: 20 }, (_, j) => rec(node, { invocationId: `f-${i}-${j}` })))
        try { stored += (await store.ingest(s.items, s.proofs)).stored } catch (err) { failure = err }
      }
      expect(failure, 'a write failing for lack of space').toBeDefined()
      expect(failure.code).toBe('FNMESH_ERR_METER_UNAVAILABLE')
      expect(failure.message).toMatch(/^Cannot record usage: .*No space left on device/)
      expect(guard.refusing).toMatch(/^disk full: writing the meter ledger in .* failed \(.*No space left on device/)
      await unlink(join(disk, 'filler-1'))
      await guard.check()
      expect(guard.refusing).toBe('')
      // The ledger takes writes again (reopened if LevelDB held on to the error), and what it holds adds up.
      const after = signed(node, [rec(node, { invocationId: 'after-space' })])
      await waitFor(async () => (await store.ingest(after.items, after.proofs).then(r => r.stored + r.known, () => 0)) === 1, { timeoutMs: 10_000, message: 'a write succeeding once space is back' })
      const usage = await queryUsage(store)
      expect(usage.functions[0].invocations).toBeGreaterThanOrEqual(stored + 1)
      expect(await minuteRows(store, 0)).toEqual(await recount(store, 0))
    } finally {
      await store.close()
      await rm(join(disk, 'store'), { recursive: true, force: true })
    }
  })

  it('makes an agent low on space stop taking work, say why, and serve again once space is back, with every invocation metered', async () => {
    t = await startMesh({ nodes: 1, slots: 3 })
    small = await spawnAgent({ nats: t.url, name: 'small', dataDir: join(disk, 'small'), slots: 3, args: ['--min-free-mb', '8'], logFile: join(t.cluster.dir, 'small.log') })
    await t.waitForNodes(2)
    const mesh = t.mesh
    const big = t.cluster.agents[0]
    await mesh.deploy({ name: 'ok', path: fixture('ok.js') })
    let made = 0
    const burst = async (n: number): Promise<Record<string, number>> => {
      const load = startLoad(mesh, 'ok', { concurrency: 3, total: n })
      await within(load.done, 30_000, 'a burst')
      expect(load.records.filter(r => !r.ok).map(r => `${r.code}: ${r.message}`)).toEqual([])
      made += n
      return countBy(load.records, r => r.nodeId)
    }
    await waitFor(async () => (await burst(12))[small?.nodeId ?? ''] > 0, { timeoutMs: 20_000, message: 'the small agent running invocations' })

    await fill('filler-2', 4 * MiB)
    const node = await waitFor(async () => (await mesh.nodes()).find(n => n.id === small?.nodeId && n.refusing !== ''), { timeoutMs: 5000, message: 'the small agent advertising why it refuses work' })
    expect(node.refusing).toMatch(/^disk full: \d+\.\d MB free in .*small\/ledger, below the 8\.0 MB needed to meter invocations$/)
    const cli = await runCli(['nodes', '--nats', t.url])
    expect(cli.stdout).toMatch(/small .*refusing work: disk full/)
    const logged = (await readFile(join(t.cluster.dir, 'small.log'), 'utf8')).split('\n').filter(l => l.includes('taking no new work: disk full'))
    expect(logged.length).toBe(1)
    expect(JSON.parse(logged[0]).level).toBe(50)
    // Asked directly, it refuses with the new code instead of running unmetered.
    const nc = await natsConnect({ servers: t.url })
    try {
      const reply = decode('InvokeResult', (await nc.request(execSubject(small.nodeId), encode('ExecRequest', { invocationId: 'direct', function: 'ok', version: 1, payload: Buffer.from('{}'), attempt: 1 }), { timeout: 10_000 })).data)
      expect(reply.ok).toBe(false)
      expect(reply.error.code).toBe('FNMESH_ERR_DISK_FULL')
      expect(reply.error.errorMessage).toMatch(/takes no new work: disk full/)
    } finally {
      await nc.close()
    }
    // The mesh routes around it.
    expect(await burst(30)).toEqual({ [big.nodeId]: 30 })

    await unlink(join(disk, 'filler-2'))
    await waitFor(async () => (await mesh.nodes()).find(n => n.id === small?.nodeId)?.refusing === '', { timeoutMs: 5000, message: 'the small agent taking work again' })
    await waitFor(async () => (await burst(12))[small?.nodeId ?? ''] > 0, { timeoutMs: 20_000, message: 'invocations reaching the small agent again' })

    // Every invocation that succeeded is metered, once, on both agents.
    await waitFor(async () => {
      const us = await Promise.all([big, small as AgentProcess].map(async a => await mesh.usage({ via: a.nodeId })))
      return us.every(u => u.totals.invocations === made && u.missing.length === 0)
    }, { timeoutMs: 15_000, message: `both agents metering all ${made} invocations` })
  })
})
