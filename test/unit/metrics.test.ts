import { afterEach, describe, expect, it } from 'vitest'
import { resolveConfig } from '../../node/src/config.js'
import { createLogger } from '../../node/src/logger.js'
import { AdminServer } from '../../node/src/metrics/admin.js'
import { MAX_FUNCTIONS, OTHER, PromMetrics, type NodeStats } from '../../node/src/metrics/prom.js'
import { http } from '../helpers/http.js'

const logger = createLogger({ level: 'silent' })
const stats: NodeStats = {
  slots: () => 4,
  inFlight: () => 1,
  queueLength: () => 2,
  sandboxesWarm: () => 3,
  sandboxes: () => 5,
  adverts: () => ({ sent: 7, received: 14, rejected: 1 }),
  layersActive: () => 5,
  diskFreeBytes: () => 1e9,
  replicationLagMs: () => 250,
  underReplicated: () => 0,
  gossipPeers: () => 2,
  natsConnected: () => true
}

describe('the admin listener', () => {
  let admin: AdminServer | undefined
  afterEach(async () => { await admin?.stop(); admin = undefined })

  it('serves /healthz always and /readyz only while the agent says it is ready', async () => {
    let why = ''
    const metrics = new PromMetrics(stats)
    admin = new AdminServer({ metrics: async () => ({ contentType: metrics.contentType, text: await metrics.text() }), notReady: () => why, logger })
    await admin.start()
    const port = admin.port as number
    expect((await http(port, 'GET', '/healthz')).status).toBe(200)
    expect((await http(port, 'GET', '/readyz')).status).toBe(200)
    why = 'agent is draining'
    const r = await http(port, 'GET', '/readyz')
    expect(r.status).toBe(503)
    expect(r.text).toContain('draining')
    expect((await http(port, 'GET', '/healthz')).status).toBe(200)
    const m = await http(port, 'GET', '/metrics')
    expect(m.headers.get('content-type')).toContain('text/plain')
    expect(m.text).toMatch(/^fnmesh_slots 4$/m)
    expect(m.text).toMatch(/^fnmesh_meter_replication_lag_seconds 0\.25$/m)
    expect(m.text).toMatch(/^fnmesh_gossip_adverts_total\{direction="received"\} 14$/m)
    expect(m.text).toMatch(/^fnmesh_sandboxes 5$/m)
    expect((await http(port, 'GET', '/nope')).status).toBe(404)
  })

  it('answers 401 without the bearer token, and serves with it', async () => {
    const token = 'a-long-enough-admin-token'
    admin = new AdminServer({ metrics: async () => ({ contentType: 'text/plain', text: '' }), notReady: () => '', logger }, { host: '0.0.0.0', token })
    await admin.start()
    const port = admin.port as number
    expect((await http(port, 'GET', '/metrics')).status).toBe(401)
    expect((await http(port, 'GET', '/healthz', { headers: { authorization: 'Bearer wrong' } })).status).toBe(401)
    expect((await http(port, 'GET', '/healthz', { headers: { authorization: `Bearer ${token}x` } })).status).toBe(401)
    expect((await http(port, 'GET', '/healthz', { headers: { authorization: `Bearer ${token}` } })).status).toBe(200)
  })
})

describe('the admin options', () => {
  it('binds 127.0.0.1 unless a host is given', () => {
    expect(resolveConfig({ name: 'a', admin: 9100 }).admin).toEqual({ host: '127.0.0.1', port: 9100 })
    expect(resolveConfig({ name: 'a', admin: '127.0.0.2:0' }).admin).toEqual({ host: '127.0.0.2', port: 0 })
    expect(resolveConfig({ name: 'a' }).admin).toBeUndefined()
  })

  it('refuses a bind other machines reach without --admin-token', () => {
    expect(() => resolveConfig({ name: 'a', admin: '0.0.0.0:9100' })).toThrow(/admin-token/)
    expect(resolveConfig({ name: 'a', admin: '0.0.0.0:9100', adminToken: '/tmp/t' }).admin?.host).toBe('0.0.0.0')
  })
})

describe('the Prometheus metrics', () => {
  it('counts invocations, errors, cold starts and throttles with bounded labels', async () => {
    const m = new PromMetrics(stats)
    m.invocation({ function: 'f', version: 1, trigger: 'sync', outcome: 'success', durationMs: 20, initMs: 30 })
    m.invocation({ function: 'f', version: 1, trigger: 'sync', outcome: 'success', durationMs: 20 })
    m.invocation({ function: 'f', version: 1, trigger: 'made-up', outcome: 'error', code: 'FNMESH_ERR_FUNCTION', durationMs: 5 })
    m.throttle('f')
    m.running('f', 1)
    m.queueWait(12)
    for (let i = 0; i < MAX_FUNCTIONS + 10; i++) m.throttle(`g${i}`)
    const text = await m.text()
    expect(text).toContain('fnmesh_invocations_total{function="f",version="1",trigger="sync",outcome="success"} 2')
    expect(text).toContain('fnmesh_invocations_total{function="f",version="1",trigger="other",outcome="error"} 1')
    expect(text).toContain('fnmesh_invocation_errors_total{function="f",code="FNMESH_ERR_FUNCTION"} 1')
    expect(text).toContain('fnmesh_cold_starts_total{function="f"} 1')
    expect(text).toContain('fnmesh_init_duration_seconds_count{function="f"} 1')
    expect(text).toContain('fnmesh_invocation_duration_seconds_bucket{le="0.025",function="f",trigger="sync"} 2')
    expect(text).toContain('fnmesh_concurrent_executions{function="f"} 1')
    expect(text).toContain('fnmesh_queue_wait_seconds_count 1')
    expect(text).toContain(`fnmesh_throttles_total{function="${OTHER}"} 11`)
    expect(text.match(/^fnmesh_throttles_total\{/gm)?.length).toBe(MAX_FUNCTIONS + 1)
  })

  it('reads membership "swim" counters at scrape time, only when the agent runs it', async () => {
    const swim = { health: 2, sent: 10, received: 12, rejected: 1, bytesIn: 900, bytesOut: 800, pingFailures: 3, suspected: 4, dead: 1, refuted: 2 }
    const text = await new PromMetrics({ ...stats, swim: () => swim }).text()
    expect(text).toMatch(/^fnmesh_membership_health 2$/m)
    expect(text).toContain('fnmesh_membership_messages_total{direction="sent"} 10')
    expect(text).toContain('fnmesh_membership_messages_total{direction="received"} 12')
    expect(text).toContain('fnmesh_membership_messages_total{direction="rejected"} 1')
    expect(text).toContain('fnmesh_membership_bytes_total{direction="in"} 900')
    expect(text).toContain('fnmesh_membership_bytes_total{direction="out"} 800')
    expect(text).toContain('fnmesh_membership_events_total{event="probe_failed"} 3')
    expect(text).toContain('fnmesh_membership_events_total{event="refuted"} 2')
    swim.sent = 11
    expect(await new PromMetrics({ ...stats, swim: () => swim }).text()).toContain('fnmesh_membership_messages_total{direction="sent"} 11')
    expect(await new PromMetrics(stats).text()).not.toContain('fnmesh_membership_')
  })
})
