/**
 * Figure: membership. Join: time from starting a 4th agent to its first routed invocation,
 * next to the time the same agent process takes to become ready at all (its floor). Failure:
 * time from SIGKILL of an agent to the last invocation any router sent it, and to every
 * survivor dropping it from its table, next to the configured peer timeout.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startDevCluster } from '../../../node/src/dev/cluster.js'
import { PEER_TIMEOUT_MS } from '../../../node/src/gossip/peer-table.js'
import { connect } from '../../../sdk/src/client.js'
import { step } from '../progress.js'
import { row, type Figure } from '../types.js'

export const membership: Figure = {
  id: 'membership',
  title: 'Membership: a joining agent takes work; a killed one stops getting it',
  run: async (ctx) => {
    const cluster = await step('starting nats-server and 3 agents', async () => await startDevCluster({ nodes: 3 }))
    ctx.cleanup.defer('stop the membership cluster', async () => { await cluster.stop() }, 60_000)
    const mesh = await connect({ servers: cluster.nats.url })
    try {
      const dir = join(cluster.dir, 'fn')
      const { mkdir, writeFile } = await import('node:fs/promises')
      await mkdir(dir, { recursive: true })
      await writeFile(join(dir, 'index.mjs'), 'export const handler = async () => { await new Promise(r => setTimeout(r, 20)); return 1 }\n')
      await mesh.deploy({ name: 'bench-member', path: dir, timeoutMs: 5000 })
      // Steady load: 8 callers in a closed loop, each result noted with where and when it ran.
      let running = true
      const results: Array<{ nodeId: string, at: number }> = []
      const loop = Promise.all(Array.from({ length: 8 }, async () => {
        while (running && !ctx.signal.aborted) {
          try {
            const r = await mesh.invokeDetailed('bench-member', {}, { timeoutMs: 10_000 })
            results.push({ nodeId: r.nodeId, at: Date.now() })
          } catch {
            // Failures (a killed peer, the mesh stopping) must not spin: yield to timers.
            await new Promise(resolve => setTimeout(resolve, 10))
          }
        }
      }))
      await new Promise(resolve => setTimeout(resolve, 2000))

      const spawnAt = Date.now()
      const joiner = await step('starting a 4th agent under load', async () => await cluster.addAgent())
      const readyMs = Date.now() - spawnAt
      const firstWork = await step('waiting for its first invocation', async () => {
        const deadline = Date.now() + 20_000
        for (;;) {
          const r = results.find(x => x.nodeId === joiner.nodeId)
          if (r != null) return r.at
          if (Date.now() > deadline) throw new Error('the 4th agent got no work within 20 s')
          await new Promise(resolve => setTimeout(resolve, 20))
        }
      })
      const joinMs = firstWork - spawnAt

      const victim = cluster.agents[1]
      const survivors = cluster.agents.filter(a => a !== victim)
      const killAt = Date.now()
      victim.kill('SIGKILL')
      const droppedMs = await step(`SIGKILL of ${victim.name}: waiting for every survivor to drop it`, async () => {
        const deadline = Date.now() + 20_000
        for (;;) {
          let all = true
          for (let i = 0; i < 8; i++) {
            // A request NATS handed to the victim just before it noticed the kill goes unanswered: ask again.
            const listed = await mesh.nodes({ timeoutMs: 2000 }).catch(() => undefined)
            if (listed == null || listed.some(n => n.id === victim.nodeId)) all = false
          }
          if (all) return Date.now() - killAt
          if (Date.now() > deadline) throw new Error('survivors still list the killed agent after 20 s')
          await new Promise(resolve => setTimeout(resolve, 20))
        }
      })
      await new Promise(resolve => setTimeout(resolve, 1000))
      running = false
      await loop
      // The last dispatch any router attempted to the dead agent, from the survivors' logs.
      const logs = await Promise.all(survivors.map(async a => await readFile(join(cluster.dir, `${a.name}.log`), 'utf8').catch(() => '')))
      const last = lastDispatchAfterKill(logs, victim.nodeId, killAt)
      // No line at all is no measurement (a renamed message, a log not written), not "0 ms"
      const lastRoutedMs = last?.ms ?? NaN
      return {
        rows: [
          row('join: start to first invocation', 'ms', joinMs, 'agent start to ready', readyMs, 'lower'),
          row('failure: kill to last dispatch to it', 'ms', lastRoutedMs, 'configured peer timeout', PEER_TIMEOUT_MS, 'lower'),
          row('failure: kill to dropped everywhere', 'ms', droppedMs, 'configured peer timeout', PEER_TIMEOUT_MS, 'lower')
        ],
        details: { joinMs, readyMs, lastRoutedMs: last?.ms ?? null, failedDispatchLines: last?.lines ?? 0, droppedMs, peerTimeoutMs: PEER_TIMEOUT_MS },
        notes: [
          ...(last == null ? ['Kill to last dispatch: not measured, the survivors logged no "dispatch failed" line naming the killed agent.'] : []),
          'Under a steady closed-loop load of 8 callers (20 ms function) on 3 agents. Join: from spawning the 4th agent process to the first result it returned; baseline: from spawning it to its "agent ready" line (node start, libp2p, NATS).',
          'Failure: SIGKILL of agent-2. Last dispatch = when the latest dispatch that failed against it was sent, from the survivors\' "dispatch failed" log lines (0 when every failed dispatch was sent before the kill; not measured when there is no such line); dropped = every survivor\'s table (asked 8 times through the SDK) without it. Baseline: the peer timeout after which silent peers are dropped (2 s); a lost connection stops new work before that.'
        ]
      }
    } finally {
      await mesh.close()
      await cluster.stop()
    }
  }
}

/**
 * When the latest dispatch that failed against the killed agent was sent, in ms after the kill,
 * from the routers' "dispatch failed" log lines (pino JSON): 0 when every one was sent before
 * the kill (none after it); undefined when there is no such line at all, which is no measurement.
 */
export function lastDispatchAfterKill (logs: readonly string[], victimId: string, killAt: number): { ms: number, lines: number } | undefined {
  let latest = -Infinity
  let lines = 0
  for (const text of logs) {
    for (const line of text.split('\n')) {
      if (!line.includes('"dispatch failed"') || !line.includes(victimId)) continue
      let entry: { msg?: unknown, peer?: unknown, sentAt?: unknown }
      try { entry = JSON.parse(line) } catch { continue }
      const sentAt = Number(entry.sentAt)
      if (entry.msg !== 'dispatch failed' || entry.peer !== victimId || !Number.isFinite(sentAt)) continue
      lines++
      latest = Math.max(latest, sentAt - killAt)
    }
  }
  return lines === 0 ? undefined : { ms: Math.max(0, latest), lines }
}
