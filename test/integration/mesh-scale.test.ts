import { describe, expect, it } from 'vitest'
import { runMeshScale } from '../../scripts/bench/mesh-scale.js'

// Ten real agents (--sandbox none, one slot each) on one nats-server: the CI version of the
// bench's real-mesh scale run (scripts/mesh-scale.ts runs 10 to 30 and more).
describe('a real mesh of 10 agents on one host', () => {
  it('forms one mesh, gossips a few kB/s per idle agent, takes a joining agent, drops a killed one and a hung one, and takes the hung one back', async () => {
    const lines: string[] = []
    const r = await runMeshScale({ agents: 10, wave: 5, idleWindowMs: 8000, settleMs: 2000, formTimeoutMs: 60_000, log: l => lines.push(l) })
    // Every agent saw the 9 others (runMeshScale throws otherwise).
    expect(r.formMs, lines.join('\n')).toBeLessThan(60_000)
    // Idle: keepalives only (at most one per 1-2 s per peer), each a few copies of ~330 B.
    expect(r.idle.advertsReceivedPerAgentPerSec).toBeGreaterThan(0)
    expect(r.idle.advertsReceivedPerAgentPerSec).toBeLessThan(20)
    expect(r.idle.gossipBytesPerAgentPerSec).toBeGreaterThan(0)
    expect(r.idle.gossipBytesPerAgentPerSec).toBeLessThan(40_000)
    // A joining agent gets work; a SIGKILLed one leaves every survivor's routable peers.
    expect(r.joinMs, lines.join('\n')).toBeDefined()
    expect(r.failureToNoRoutingMs, lines.join('\n')).toBeLessThan(20_000)
    // A hung (SIGSTOPped) agent keeps its connections: only the silence of its adverts (3
    // keepalives, 2.2 s each at 11 agents) takes it out of routing; it is back once resumed.
    expect(r.hangToNoRoutingMs, lines.join('\n')).toBeLessThan(20_000)
    expect(r.resumeToRoutingMs, lines.join('\n')).toBeLessThan(20_000)
  }, 300_000)

  it('with membership swim: forms one mesh with no gossip, a few SWIM messages a second per idle agent, and finds a killed and a hung agent within seconds', async () => {
    const lines: string[] = []
    const r = await runMeshScale({ agents: 10, wave: 5, idleWindowMs: 5000, settleMs: 1000, formTimeoutMs: 60_000, args: ['--membership', 'swim'], log: l => lines.push(l) })
    const say = lines.join('\n')
    expect(r.formMs, say).toBeLessThan(60_000)
    // No gossipsub at all; membership is a ping and an ack each way a period (about 4 messages a
    // second per agent), whatever the mesh size: all-to-all would be 9 peers' worth.
    expect(r.idle.advertsReceivedPerAgentPerSec, say).toBe(0)
    expect(r.idle.gossipBytesPerAgentPerSec, say).toBe(0)
    expect(r.idle.membershipMessagesPerAgentPerSec, say).toBeGreaterThan(1)
    expect(r.idle.membershipMessagesPerAgentPerSec, say).toBeLessThan(8)
    expect(r.idle.membershipBytesPerAgentPerSec, say).toBeLessThan(2000)
    expect(r.joinMs, say).toBeDefined()
    // A killed agent's subject has no responder: the first ping of it fails at once; a hung one
    // fails a ping and 3 indirect ones (1 s); either is suspect at once and the suspicion spreads
    // in milliseconds. The resumed one hears it was declared dead and refutes.
    expect(r.failureToNoRoutingMs, say).toBeLessThan(10_000)
    expect(r.hangToNoRoutingMs, say).toBeLessThan(10_000)
    expect(r.resumeToRoutingMs, say).toBeLessThan(10_000)
  }, 300_000)
})
