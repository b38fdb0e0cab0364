/**
 * Figure: the sandbox alone, agent to child and back, for a warm echo function: SandboxPool
 * (the agent's own pool, here in the benchmark process) against a bare IPC echo to a plain
 * Node child with the same environment, serialization and message size. It is one of the parts
 * of a warm invocation, and the runtime issue's target (under 0.3 ms p50).
 */
import { spawn } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { silentLogger } from '../../../node/src/logger.js'
import { SandboxPool } from '../../../node/src/sandbox/pool.js'
import { baseEnv } from '../../../node/src/sandbox/spawner.js'
import type { StoredSpec } from '../../../core/registry.js'
import { interleaved } from '../loops.js'
import { paddedEvent, PAYLOAD_BYTES } from '../mesh.js'
import { step } from '../progress.js'
import { compact, summarize } from '../stats.js'
import { latencyRows, row, type Figure } from '../types.js'

/** What SandboxPool gives a generic worker (inside a mount namespace, where tmp is /tmp) */
export const SANDBOX_ENV = baseEnv({ tmp: '/tmp' })

export const sandboxRoundTrip: Figure = {
  id: 'sandbox-round-trip',
  title: `Sandbox round trip to a warm child, ${PAYLOAD_BYTES} B echo`,
  run: async (ctx) => {
    const n = ctx.options.quick ? 2000 : 10_000
    const warmup = 300
    const dir = await ctx.cleanup.tempDir('sandbox')
    const taskRoot = join(dir, 'fn')
    await mkdir(taskRoot)
    await writeFile(join(taskRoot, 'index.mjs'), 'export const handler = async (event) => event\n')
    const spec: StoredSpec = {
      name: 'bench-echo', version: 1, handler: 'index.handler', memoryMb: 128, timeoutMs: 10_000, concurrency: 0,
      env: {}, triggers: [], egress: false, bundleObject: '', bundleSha256: '', bundleSize: 0, createdAtMs: 0,
      maxRetries: 2, retryBackoffMs: 1000, maxEventAgeMs: 21_600_000
    }
    // Every isolation layer this machine offers, as an agent in "auto" mode uses them.
    const pool = new SandboxPool({ workDir: join(dir, 'work'), protectDir: dir, prewarm: 1, logger: silentLogger() })
    ctx.cleanup.defer('stop the sandbox pool', async () => { pool.stop(); await pool.settled(5000); pool.plan?.cgroup?.close() })
    await pool.start()
    const layers = pool.plan?.layers.filter(l => l.active).map(l => l.id) ?? []
    const plain = spawn(process.execPath, ['-e', 'process.on("message", (m) => process.send(m))'], { env: SANDBOX_ENV, stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'json' })
    const plainExited = new Promise(resolve => plain.once('exit', resolve))
    ctx.cleanup.defer('stop the plain IPC child', async () => { if (plain.exitCode == null && plain.signalCode == null) { plain.kill('SIGKILL'); await plainExited } })

    const payload = JSON.stringify(paddedEvent(PAYLOAD_BYTES))
    let id = 0
    const sandboxCall = async (): Promise<void> => {
      const { worker } = await pool.acquire(spec, taskRoot)
      const out = await worker.invoke(`bench-${++id}`, payload, Date.now() + 10_000)
      pool.release(worker)
      if (!out.ok || out.payload?.length !== payload.length) throw Object.assign(new Error('wrong echo'), { code: out.error?.code ?? 'BENCH_WRONG_RESULT' })
    }
    const pending = new Map<number, () => void>()
    plain.on('message', (m: { id: number }) => { pending.get(m.id)?.(); pending.delete(m.id) })
    const plainCall = async (): Promise<void> => {
      const msgId = ++id
      await new Promise<void>((resolve, reject) => {
        pending.set(msgId, resolve)
        plain.send({ t: 'invoke', id: msgId, requestId: `bench-${msgId}`, payload, deadlineMs: Date.now() + 10_000 }, (err) => { if (err != null) reject(err) })
      })
    }

    await step(`warm-up: ${warmup} calls each`, async () => { await interleaved({ sandbox: sandboxCall, plain: plainCall }, warmup, warmup, { label: 'warm-up calls', signal: ctx.signal }) })
    const r = await step(`measuring ${n} sequential round trips each`, async () => await interleaved({ sandbox: sandboxCall, plain: plainCall }, n, 500, { label: 'round trips', signal: ctx.signal }))
    pool.stop()
    const s = summarize(r.sandbox.samples)
    const p = summarize(r.plain.samples)
    return {
      rows: [
        ...latencyRows('sandbox round trip', s, 'bare IPC echo to a child', p, ['p50', 'p99']),
        row('sandbox round trip p50', 'ms', s.p50, 'issue 3 target', 0.3, 'lower', { ratio: 1, source: 'issue 3' })
      ],
      details: { calls: n, warmupCalls: warmup, layers, sandbox: compact(s), plainIpc: compact(p), errors: { sandbox: r.sandbox.errors, plainIpc: r.plain.errors }, target: 'issue 3: under 0.3 ms p50' },
      notes: [
        `SandboxPool.acquire + SandboxWorker.invoke + release from the benchmark process, as the executor calls them (no NATS, no meter write), with the isolation layers this machine offers (${layers.join(', ')}); the child parses the event, runs the handler and serialises the result.`,
        `Baseline: a child started with the same environment and 'json' IPC that sends each message back unchanged; same message size. Issue 3's target for the sandbox alone is under 0.3 ms p50: here ${s.p50.toFixed(3)} ms.`
      ]
    }
  }
}
