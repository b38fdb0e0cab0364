/**
 * FNMESH_EVENTS keeps events by limits (core/events.ts says why not by interest) and the agents
 * purge what every consumer settled: events that ran leave the stream, and an event still
 * waiting for its function (here: no node satisfies its constraint) holds the purge back until
 * it ran, whatever other functions did meanwhile.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { jetstreamManager, RetentionPolicy } from '@nats-io/jetstream'
import { EVENTS_STREAM } from '../../core/events.js'
import { fixture } from '../helpers/fixtures.js'
import { meteredEvents } from '../helpers/ledgers.js'
import { startMesh, type TestMesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'

describe('the events stream purges what was settled', () => {
  let t: TestMesh | undefined

  afterEach(async () => {
    await t?.stop()
    t = undefined
  })

  it('purges events that ran, keeps one still waiting for its function, and purges it once it ran', async () => {
    t = await startMesh({ nodes: 2, slots: 4, env: { FNMESH_EVENTS_PURGE_MS: '300' } })
    const mesh = t.mesh
    const jsm = await jetstreamManager(mesh.nc)
    expect((await jsm.streams.info(EVENTS_STREAM)).config.retention).toBe(RetentionPolicy.Limits)
    await mesh.deploy({ name: 'work', path: fixture('ok.js'), triggers: ['purge.work'] })
    // No agent has the label: its events wait in the stream.
    await mesh.deploy({ name: 'held', path: fixture('ok.js'), triggers: ['purge.held'], constraints: ['zone=nowhere'] })
    const ids = Array.from({ length: 60 }, (_, i) => `pw-${i}`)
    for (const [i, id] of ids.entries()) {
      await mesh.publish('purge.work', { i }, { id })
      if (i === 10) await mesh.publish('purge.held', { held: true }, { id: 'held-1' })
    }
    await waitFor(async () => { const m = await meteredEvents(mesh, 'work'); return ids.every(id => m.has(id)) }, { timeoutMs: 30_000, intervalMs: 500, message: 'every work event run' })
    // Settled up to the held event (published 12th): the ones before it go, it and those after it stay.
    let state = (await jsm.streams.info(EVENTS_STREAM)).state
    await waitFor(async () => { state = (await jsm.streams.info(EVENTS_STREAM)).state; return state.messages <= 50 }, { timeoutMs: 15_000, intervalMs: 300, message: 'the settled prefix purged' }).catch(async (err) => {
      const cs: unknown[] = []
      for await (const c of jsm.consumers.list(EVENTS_STREAM)) cs.push({ name: c.name, ackFloor: c.ack_floor, delivered: c.delivered, pending: c.num_pending, ackPending: c.num_ack_pending })
      throw new Error(`${String(err.message)}: stream ${JSON.stringify(state)}; consumers ${JSON.stringify(cs)}`)
    })
    const held = (await jsm.consumers.info(EVENTS_STREAM, 'fnmesh_held_' + (await heldConsumer(jsm)))).num_pending
    expect(held, 'the waiting event is still there for its function').toBe(1)
    expect(state.messages, `stream ${JSON.stringify(state)}`).toBeGreaterThanOrEqual(1)
    // Now a node may run it: it runs, and then everything is settled and purged.
    await mesh.deploy({ name: 'held', path: fixture('ok.js'), triggers: ['purge.held'] })
    await waitFor(async () => (await meteredEvents(mesh, 'held')).has('held-1'), { timeoutMs: 30_000, intervalMs: 500, message: 'the held event run' })
    await waitFor(async () => { state = (await jsm.streams.info(EVENTS_STREAM)).state; return state.messages === 0 }, { timeoutMs: 15_000, intervalMs: 300, message: `every settled event purged (${JSON.stringify(state)})` })
    expect(state.last_seq).toBeGreaterThanOrEqual(61)
  }, 120_000)
})

/** The consumer name suffix of held's subject trigger (core/events.ts bindingsOf) */
async function heldConsumer (jsm: Awaited<ReturnType<typeof jetstreamManager>>): Promise<string> {
  for await (const c of jsm.consumers.list(EVENTS_STREAM)) if (c.name.startsWith('fnmesh_held_') && c.name !== 'fnmesh_held_direct') return c.name.slice('fnmesh_held_'.length)
  throw new Error('no consumer for held\'s trigger')
}
