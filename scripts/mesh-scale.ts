/**
 * A real mesh of many agents on this host (scripts/bench/mesh-scale.ts): time to form, idle CPU
 * and gossip bytes per agent, join to first work, failure to no routing.
 *
 *   node dist/scripts/mesh-scale.js [--agents 10,20,30] [--window-ms 30000] [--no-churn] [--wave n] [--calibrate-keepalive ms] [--calibrate-swim-period ms] [--out file] [-- agent flags...]
 *
 * With `-- --membership swim`, `--calibrate-swim-period 100` runs the smallest mesh again pinging
 * 10x as often: its extra CPU per extra SWIM message is what one costs an agent (the simulator's
 * membership cost, scripts/sim/cost.ts).
 *
 * Prints one JSON line per size on stdout (progress on stderr) and, with --out, writes them all.
 */
import '../node/src/polyfill.js'
import { writeFile } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { runMeshScale, type MeshScaleResult } from './bench/mesh-scale.js'

function usage (): string {
  return 'usage: node dist/scripts/mesh-scale.js [--agents 10,20,30] [--slots 1] [--window-ms 30000] [--no-churn] [--wave n] [--calibrate-keepalive ms] [--calibrate-swim-period ms] [--out file] [-- agent flags...]'
}

async function main (): Promise<number> {
  const argv = process.argv.slice(2)
  let sizes = [10, 20, 30]
  let windowMs = 30_000
  let slots = 1
  let churn = true
  let wave: number | undefined
  let calibrateMs: number | undefined
  let calibrateSwimMs: number | undefined
  let out: string | undefined
  let extra: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--agents') sizes = (argv[++i] ?? '').split(',').map(Number)
    else if (a === '--window-ms') windowMs = Number(argv[++i])
    else if (a === '--slots') slots = Number(argv[++i])
    else if (a === '--no-churn') churn = false
    else if (a === '--wave') wave = Number(argv[++i])
    else if (a === '--calibrate-keepalive') calibrateMs = Number(argv[++i])
    else if (a === '--calibrate-swim-period') calibrateSwimMs = Number(argv[++i])
    else if (a === '--out') out = argv[++i]
    else if (a === '--') { extra = argv.slice(i + 1); break } else if (a === '--help' || a === '-h') { process.stdout.write(usage() + '\n'); return 0 } else {
      process.stderr.write(`error FNMESH_ERR_BAD_USAGE: unknown option "${a}"\n${usage()}\n`)
      return 2
    }
  }
  if (sizes.some(s => !Number.isInteger(s) || s < 2 || s > 500) || !(windowMs >= 1000) || !(slots >= 1)) {
    process.stderr.write(`error FNMESH_ERR_BAD_USAGE: --agents takes sizes of 2-500, --window-ms at least 1000, --slots at least 1\n${usage()}\n`)
    return 2
  }
  const results: Array<MeshScaleResult & { load1: number }> = []
  for (const agents of sizes) {
    const r = await runMeshScale({ agents, slots, idleWindowMs: windowMs, churn, wave, args: extra, log: l => { process.stderr.write(`[${agents}] ${l}\n`) } })
    const row = { ...r, load1: loadavg()[0] }
    results.push(row)
    process.stdout.write(JSON.stringify(row) + '\n')
    // Written after every size: a later size that fails leaves the earlier ones.
    if (out != null) await writeFile(out, JSON.stringify({ when: new Date().toISOString(), command: ['node', 'dist/scripts/mesh-scale.js', ...argv].join(' '), results }, null, 2) + '\n')
  }
  // The same smallest mesh again with a short keepalive: its extra CPU and bytes over the first
  // run, per extra advert heard, are what one advert costs (the simulator's calibration).
  let calibration: Record<string, unknown> | undefined
  if (calibrateMs != null && results.length > 0) {
    const agents = results[0].agents
    const fast = await runMeshScale({ agents, slots, idleWindowMs: windowMs, churn: false, wave, args: [...extra, '--keepalive', String(calibrateMs)], log: l => { process.stderr.write(`[${agents}, keepalive ${calibrateMs} ms] ${l}\n`) } })
    calibration = { agents, keepaliveMs: calibrateMs, slow: results[0].idle, fast: fast.idle, load1: loadavg()[0] }
    process.stdout.write(JSON.stringify({ calibration }) + '\n')
  }
  // Membership "swim": the same with the agents pinging more often; extra CPU per extra message.
  let swimCalibration: Record<string, unknown> | undefined
  if (calibrateSwimMs != null && results.length > 0) {
    const agents = results[0].agents
    const fast = await runMeshScale({ agents, slots, idleWindowMs: windowMs, churn: false, wave, args: [...extra, '--swim-period', String(calibrateSwimMs)], log: l => { process.stderr.write(`[${agents}, swim period ${calibrateSwimMs} ms] ${l}\n`) } })
    const slow = results[0].idle
    const extraMsgs = fast.idle.membershipMessagesPerAgentPerSec - slow.membershipMessagesPerAgentPerSec
    swimCalibration = {
      agents,
      periodMs: calibrateSwimMs,
      slow,
      fast: fast.idle,
      cpuUsPerMessage: extraMsgs > 0 ? (fast.idle.corePerAgent - slow.corePerAgent) * 1e6 / extraMsgs : null,
      bytesPerMessage: extraMsgs > 0 ? (fast.idle.membershipBytesPerAgentPerSec - slow.membershipBytesPerAgentPerSec) / extraMsgs : null,
      natsServerUsPerMessage: extraMsgs > 0 ? (fast.idle.natsCoresPerAgent - slow.natsCoresPerAgent) * 1e6 / extraMsgs : null,
      load1: loadavg()[0]
    }
    process.stdout.write(JSON.stringify({ swimCalibration }) + '\n')
  }
  if (out != null) await writeFile(out, JSON.stringify({ when: new Date().toISOString(), command: ['node', 'dist/scripts/mesh-scale.js', ...argv].join(' '), results, calibration, swimCalibration }, null, 2) + '\n')
  return 0
}

main().then(code => { process.exitCode = code }, err => { process.stderr.write(`error: ${String(err?.stack ?? err)}\n`); process.exitCode = 1 })
