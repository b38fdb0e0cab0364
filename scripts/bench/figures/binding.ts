/**
 * Figure: a kv binding's get, function -> agent -> NATS KV -> agent -> function, against a
 * direct NATS KV get from the agent's own connection, in the same run and on the same
 * connection and bucket. The binding side is the agent's own parts in the benchmark process
 * (SandboxPool and BindingServer, as the executor wires them), timed inside the function around
 * each `context.bindings.c.get()`; so the difference is the binding's cost: the IPC hop both
 * ways, the scope check, base64, and the child's promise.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Kvm } from '@nats-io/kv'
import { openBucket } from '../../../core/kv-follow.js'
import type { StoredSpec } from '../../../core/registry.js'
import { silentLogger } from '../../../node/src/logger.js'
import { BindingServer } from '../../../node/src/bindings/server.js'
import { SandboxPool } from '../../../node/src/sandbox/pool.js'
import { step } from '../progress.js'
import { compact, summarize } from '../stats.js'
import { latencyRows, type Figure } from '../types.js'

const BUCKET = 'bench_binding'
const VALUE_BYTES = 100

export const bindingGet: Figure = {
  id: 'binding-get',
  title: `kv binding get round trip (function -> agent -> NATS KV), ${VALUE_BYTES} B value`,
  run: async (ctx) => {
    const n = ctx.options.quick ? 2000 : 10_000
    const block = 250
    const env = await ctx.mesh()
    const nc = env.raw
    await new Kvm(nc).create(BUCKET, { history: 1 }).catch(async () => await new Kvm(nc).open(BUCKET))
    ctx.cleanup.defer(`delete KV bucket ${BUCKET}`, async () => { await new Kvm(nc).open(BUCKET).then(async kv => { await kv.destroy() }).catch(() => {}) })
    const kv = await openBucket(nc, BUCKET)
    await kv.put('k', 'v'.repeat(VALUE_BYTES))

    const dir = await ctx.cleanup.tempDir('binding')
    const taskRoot = join(dir, 'fn')
    await mkdir(taskRoot)
    await writeFile(join(taskRoot, 'index.mjs'), [
      'export const handler = async (event, context) => {',
      '  const kv = context.bindings.c',
      '  const out = []',
      '  for (let i = 0; i < event.n; i++) {',
      '    const t = performance.now()',
      '    const e = await kv.get("k")',
      '    out.push(performance.now() - t)',
      `    if (e == null || e.bytes.length !== ${VALUE_BYTES}) throw new Error("wrong value")`,
      '  }',
      '  return out',
      '}',
      ''
    ].join('\n'))
    const spec: StoredSpec = {
      name: 'bench-binding', version: 1, handler: 'index.handler', memoryMb: 128, timeoutMs: 60_000, concurrency: 0,
      env: {}, triggers: [], egress: false, bundleObject: '', bundleSha256: '', bundleSize: 0, createdAtMs: 0,
      maxRetries: 2, retryBackoffMs: 1000, maxEventAgeMs: 21_600_000, bindings: [`c=kv:${BUCKET}`]
    }
    const server = new BindingServer({ nc, logger: silentLogger() })
    const pool = new SandboxPool({ workDir: join(dir, 'work'), protectDir: dir, prewarm: 1, logger: silentLogger() })
    ctx.cleanup.defer('stop the sandbox pool', async () => { pool.stop(); await pool.settled(5000); pool.plan?.cgroup?.close() })
    await pool.start()
    const layers = pool.plan?.layers.filter(l => l.active).map(l => l.id) ?? []

    let id = 0
    const viaBinding = async (count: number): Promise<number[]> => {
      const { worker } = await pool.acquire(spec, taskRoot)
      const deadline = Date.now() + 60_000
      const usage = { calls: 0, bytes: 0 }
      const invocationId = `bench-${++id}`
      const out = await worker.invoke(invocationId, JSON.stringify({ n: count }), deadline, { bindings: async (call) => await server.serve(spec, call, deadline, usage, { invocationId, hops: 0 }) })
      pool.release(worker)
      if (!out.ok) throw Object.assign(new Error(out.error?.errorMessage ?? 'binding get failed'), { code: out.error?.code })
      return JSON.parse(out.payload ?? '[]') as number[]
    }
    const direct = async (count: number): Promise<number[]> => {
      const out: number[] = []
      for (let i = 0; i < count; i++) {
        const t = performance.now()
        const e = await kv.get('k')
        out.push(performance.now() - t)
        if (e?.value.byteLength !== VALUE_BYTES) throw new Error('wrong value')
      }
      return out
    }
    await step('warm-up: 300 gets each', async () => { await viaBinding(300); await direct(300) })
    const binding: number[] = []
    const raw: number[] = []
    await step(`measuring ${n} sequential gets each, alternating blocks of ${block}`, async () => {
      for (let done = 0; done < n; done += block) {
        ctx.signal.throwIfAborted()
        binding.push(...await viaBinding(Math.min(block, n - done)))
        raw.push(...await direct(Math.min(block, n - done)))
      }
    })
    pool.stop()
    const b = summarize(binding)
    const d = summarize(raw)
    return {
      rows: latencyRows('binding kv get', b, "direct NATS KV get from the agent's connection", d, ['p50', 'p99']),
      details: { gets: n, block, valueBytes: VALUE_BYTES, layers, binding: compact(b), direct: compact(d) },
      notes: [
        `Binding: context.bindings.c.get() timed inside a warm sandboxed function (layers: ${layers.join(', ')}): a bind message over IPC, BindingServer.serve (scope check, deadline, a direct get on the bucket), the bind-result back; the agent's parts run in the benchmark process, as the executor wires them.`,
        `Baseline: the same direct get (KV get, ${VALUE_BYTES} B value) on the same NATS connection, from the benchmark process standing in for the agent; blocks of ${block} alternate so drift on a shared machine hits both.`
      ]
    }
  }
}
