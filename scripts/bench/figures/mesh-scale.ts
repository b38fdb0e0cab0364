/**
 * Figure: a real mesh of many agents on this host (scripts/bench/mesh-scale.ts): time to form
 * one mesh, idle CPU and gossip bytes per agent, join to first work and failure to no routing,
 * at 10 and 20 agents (full run only; `node dist/scripts/mesh-scale.js --agents 10,20,30`
 * goes further); then the same with `--membership swim` at 10 and 30 agents, each figure beside
 * membership "gossip"'s at 10 agents in the same run. The simulator's per-node gossip cost is
 * calibrated on the same measurement.
 */
import { runMeshScale, type MeshScaleResult } from '../mesh-scale.js'
import { note } from '../progress.js'
import { row, type Figure, type Row } from '../types.js'
import { keepaliveFor } from '../../../node/src/gossip/gossip.js'

export const meshScale: Figure = {
  id: 'mesh-scale',
  title: 'A real mesh of 10-30 agents on one host: forming, idle cost, join, failure (membership gossip and swim)',
  run: async (ctx) => {
    // Dozens of agent processes take minutes on 2 cores: not within --quick's 3-minute budget.
    if (ctx.options.quick) return { rows: [], details: { skipped: 'quick run' }, notes: ['Not run with --quick: run the full bench, or node dist/scripts/mesh-scale.js --agents 10,20,30.'] }
    const sizes = [10, 20]
    const results: MeshScaleResult[] = []
    for (const agents of sizes) {
      // Join and failure at 10 agents only: the 20-agent mesh measures forming and idle cost, in
      // bounded time within the bench's limit.
      results.push(await runMeshScale({ agents, wave: 5, idleWindowMs: 20_000, churn: agents === 10, signal: ctx.signal, log: l => { note(`[${agents} agents] ${l}`) } }))
    }
    // Membership "swim" (gossip/swim.ts): the same, SWIM messages instead of adverts
    const swim: MeshScaleResult[] = []
    for (const agents of [10, 30]) {
      swim.push(await runMeshScale({ agents, wave: 5, idleWindowMs: 20_000, churn: agents === 10, args: ['--membership', 'swim'], signal: ctx.signal, log: l => { note(`[${agents} agents, swim] ${l}`) } }))
    }
    const gossip10 = results[0]
    const swimRows: Row[] = swim.flatMap(r => [
      row(`swim, ${r.agents} agents: idle CPU per agent`, 'ms', r.idle.corePerAgent * 1000, 'gossip, 10 agents, same run', gossip10.idle.corePerAgent * 1000, 'lower', { value: 10, source: 'issue 16: 0.01 core' }),
      row(`swim, ${r.agents} agents: membership bytes per agent`, '/s', r.idle.membershipBytesPerAgentPerSec, 'gossip bytes per agent, 10 agents', gossip10.idle.gossipBytesPerAgentPerSec, 'lower'),
      row(`swim, ${r.agents} agents: all ready to one mesh`, 'ms', r.formMs, 'gossip, 10 agents', gossip10.formMs, 'lower'),
      ...(r.failureToNoRoutingMs != null
        ? [
            row(`swim, ${r.agents} agents: SIGKILL to no routing`, 'ms', r.failureToNoRoutingMs, 'gossip, 10 agents', gossip10.failureToNoRoutingMs ?? NaN, 'lower', { value: 3000, source: 'issue 16 (simulated)' }),
            row(`swim, ${r.agents} agents: SIGSTOP (hung) to no routing`, 'ms', r.hangToNoRoutingMs ?? NaN, 'gossip, 10 agents', gossip10.hangToNoRoutingMs ?? NaN, 'lower'),
            row(`swim, ${r.agents} agents: join to first work`, 'ms', r.joinMs ?? NaN, 'gossip, 10 agents', gossip10.joinMs ?? NaN, 'lower')
          ]
        : [])
    ])
    const rows: Row[] = results.flatMap(r => r.joinMs == null && r.failureToNoRoutingMs == null ? [
      row(`${r.agents} agents: idle CPU per agent`, 'ms', r.idle.corePerAgent * 1000, 'target 0.01 core (10 ms/s)', 10, 'lower', { value: 10, source: 'issue 16' }),
      row(`${r.agents} agents: gossip bytes per agent`, '/s', r.idle.gossipBytesPerAgentPerSec, 'every libp2p byte on the wire', r.idle.wireBytesPerAgentPerSec, 'lower'),
      row(`${r.agents} agents: all ready to one mesh`, 'ms', r.formMs, 'spawn to all ready', r.startMs, 'lower')
    ] : [
      row(`${r.agents} agents: idle CPU per agent`, 'ms', r.idle.corePerAgent * 1000, 'target 0.01 core (10 ms/s)', 10, 'lower', { value: 10, source: 'issue 16' }),
      row(`${r.agents} agents: gossip bytes per agent`, '/s', r.idle.gossipBytesPerAgentPerSec, 'every libp2p byte on the wire', r.idle.wireBytesPerAgentPerSec, 'lower'),
      row(`${r.agents} agents: all ready to one mesh`, 'ms', r.formMs, 'spawn to all ready', r.startMs, 'lower'),
      row(`${r.agents} agents: join to first work`, 'ms', r.joinMs ?? NaN, 'spawn to ready', r.joinReadyMs ?? NaN, 'lower'),
      row(`${r.agents} agents: SIGKILL to no routing`, 'ms', r.failureToNoRoutingMs ?? NaN, 'target of issue 16 (simulated)', 3000, 'lower'),
      row(`${r.agents} agents: SIGSTOP (hung) to no routing`, 'ms', r.hangToNoRoutingMs ?? NaN, '3 keepalives of silence', 3 * keepaliveFor(r.agents + 1), 'lower')
    ])
    rows.push(...swimRows)
    return {
      rows,
      details: { results, swim },
      notes: [
        'Agents with --sandbox none --slots 1 --admin 0, started in waves of 5 on one nats-server. Idle CPU from /proc (user + system) over the window; gossip bytes from each agent\'s fnmesh_libp2p_bytes_total (gossipsub protocol, in + out) and adverts from fnmesh_gossip_adverts_total. Idle CPU counts everything an idle agent does (NATS, timers, meter anti-entropy), not gossip alone.',
        'Join: from spawning one more agent under 8 closed-loop callers (20 ms function) to its first invocation. Failure: SIGKILL of agent-2 to every survivor\'s routable peers without it (scraped every 200 ms); hang: SIGSTOP of agent-3 (its connections stay up) to the same, then SIGCONT to every survivor routing to it again. On a machine shared with other work these times stretch with its load.',
        'swim rows: the same agents with --membership swim (SWIM over NATS, routing probe); membership bytes from fnmesh_membership_bytes_total, compared with the gossip mesh of 10 agents measured in the same run.'
      ]
    }
  }
}
