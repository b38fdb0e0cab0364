/**
 * Admission by deadline on real agents and a real nats-server: a burst far over the mesh's slots
 * waits in the executors' queues and completes when the callers' deadline allows it; sustained
 * overload with short deadlines is refused at once (measured from the caller) while every
 * accepted call answers within its deadline; the gateway answers such a refusal 503 with
 * Retry-After.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixture } from '../helpers/fixtures.js'
import { http, httpPorts } from '../helpers/http.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'

interface Outcome { ok: boolean, code: string, ms: number }


describe('admission by deadline on 3 agents of 2 slots', () => {
  let t: TestMesh

  const call = async (timeoutMs: number): Promise<Outcome> => {
    const t0 = performance.now()
    try {
      await t.mesh.invoke('five', { ms: 5 }, { timeoutMs })
      return { ok: true, code: '', ms: performance.now() - t0 }
    } catch (err: any) {
      return { ok: false, code: String(err?.code), ms: performance.now() - t0 }
    }
  }

  const probe = async (): Promise<Outcome> => {
    const t0 = performance.now()
    const code = await t.mesh.invoke('absent', {}, { timeoutMs: 5000 }).then(() => '', (err: any) => String(err?.code))
    return { ok: false, code, ms: performance.now() - t0 }
  }

  beforeAll(async () => {
    t = await startMesh({ nodes: 3, slots: 2 })
    await t.mesh.deploy({ name: 'five', path: fixture('slow.js') })
    for (let i = 0; i < 6; i++) await t.mesh.invoke('five', { ms: 5 })
  }, 60_000)

  afterAll(async () => { await t?.stop() })

  it('completes a burst of 32 x the mesh\'s slots of 5 ms calls with a 60 s deadline, none refused', async () => {
    const t0 = Date.now()
    const out = await Promise.all(Array.from({ length: 192 }, async () => await call(60_000)))
    const refused = out.filter(o => !o.ok)
    expect(refused.map(o => o.code)).toEqual([])
    expect(Date.now() - t0).toBeLessThan(60_000)
  }, 90_000)

  it('under sustained 2x overload with 600 ms deadlines refuses most calls at once, none after its deadline, and answers accepted calls within their deadline', async () => {
    // What the mesh serves here: a closed loop of 12 callers for 1.5 s.
    let served = 0
    const until = Date.now() + 1500
    await Promise.all(Array.from({ length: 12 }, async () => {
      while (Date.now() < until) if ((await call(10_000)).ok) served++
    }))
    const rate = served / 1.5
    // Twice that, open loop, for 5 s.
    const gapMs = 1000 / (2 * rate)
    const calls: Array<Promise<Outcome>> = []
    // Alongside, what an answer that needs no slot takes on this machine now (a function that
    // is not deployed: the router answers after one registry read), the floor of any refusal.
    const probes: Array<Promise<Outcome>> = []
    const end = Date.now() + 5000
    let next = Date.now()
    let probeAt = Date.now()
    while (Date.now() < end) {
      while (next <= Date.now()) { calls.push(call(600)); next += gapMs }
      if (probeAt <= Date.now()) { probes.push(probe()); probeAt += 100 }
      await new Promise(resolve => setTimeout(resolve, 2))
    }
    const out = await Promise.all(calls)
    const floor = (await Promise.all(probes)).map(o => o.ms).sort((a, b) => a - b)
    const accepted = out.filter(o => o.ok)
    const refused = out.filter(o => !o.ok && o.code === 'FNMESH_ERR_NO_CAPACITY')
    const timedOut = out.filter(o => !o.ok && o.code !== 'FNMESH_ERR_NO_CAPACITY')
    const pct = (xs: number[], q: number): number => xs.length === 0 ? 0 : [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))]
    const summary = JSON.stringify({
      served, calls: out.length, accepted: accepted.length, refused: refused.length, timedOut: timedOut.map(o => o.code),
      refusedMs: [0.5, 0.9, 0.99].map(q => Math.round(pct(refused.map(o => o.ms), q))),
      floorMs: [0.5, 0.9, 0.99].map(q => Math.round(pct(floor, q))),
      acceptedMs: [0.5, 0.99].map(q => Math.round(pct(accepted.map(o => o.ms), q)))
    })
    if (process.env.ADMISSION_DEBUG != null) console.log(summary)
    expect(refused.length, summary).toBeGreaterThan(0)
    expect(accepted.length, summary).toBeGreaterThan(0)
    // Refused at once: within 50 ms of what an answer needing no slot took meanwhile (on an idle
    // runner that floor is a few ms; on a starved one it is what any answer takes).
    expect(pct(refused.map(o => o.ms), 0.5), summary).toBeLessThanOrEqual(pct(floor, 0.5) + 50)
    // Not every refusal comes at once: a call admitted to a queue whose work ran slower than the
    // estimate is refused when its budget runs out (measured on an idle 2-core runner: p90 435 ms,
    // issue 13 says so). What always holds: no refusal comes after the caller's deadline.
    expect(refused.filter(o => o.ms > 650).map(o => Math.round(o.ms)), summary).toEqual([])
    // Accepted calls answered within their deadline (a later answer is the SDK's CLIENT_TIMEOUT):
    // the margin of the queue budget keeps these rare; an estimate can still be wrong.
    // (50 ms for this process's own timers, late on a starved runner)
    expect(accepted.filter(o => o.ms > 650).map(o => Math.round(o.ms)), summary).toEqual([])
    expect(timedOut.length, summary).toBeLessThanOrEqual(Math.ceil(out.length * 0.05))
  }, 60_000)
})

describe('the gateway when the mesh refuses', () => {
  let t: TestMesh
  let port: number

  beforeAll(async () => {
    // No queue at all: a call that finds the slot taken is refused at once.
    t = await startMesh({ nodes: 1, slots: 1, args: ['--http', '127.0.0.1:0', '--max-queue', '0'] })
    port = httpPorts(t.cluster.agents)[0]
    await t.mesh.deploy({ name: 'nap', path: fixture('slow.js'), routes: ['GET /nap'] })
    await waitFor(async () => (await http(port, 'GET', '/nap')).status === 200, { timeoutMs: 10_000, intervalMs: 50, message: 'the route /nap served' })
  }, 60_000)

  afterAll(async () => { await t?.stop() })

  it('answers 503 FNMESH_ERR_NO_CAPACITY with Retry-After at once', async () => {
    const holder = t.mesh.invoke('nap', { ms: 1500 })
    await waitFor(async () => (await t.mesh.nodes())[0]?.inFlight === 1, { timeoutMs: 2000, intervalMs: 10, message: 'the slot taken' })
    const t0 = performance.now()
    const r = await http(port, 'GET', '/nap')
    expect(performance.now() - t0).toBeLessThan(200)
    expect(r.status).toBe(503)
    expect(r.json?.code).toBe('FNMESH_ERR_NO_CAPACITY')
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    await holder
  }, 30_000)
})
