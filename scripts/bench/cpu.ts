/**
 * CPU time per process group over a measured window, from /proc (Linux; elsewhere it reports
 * nothing). Divided by the calls made in the window it says where a call's CPU goes: at
 * saturation on a small machine, throughput is about cores / CPU per call. It also measures
 * what other processes used meanwhile, so that a run disturbed by other work says so.
 * /proc counts in clock ticks (10 ms here), so windows should be a second or more.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'

const TICK_MS = (() => {
  const hz = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim())
  return 1000 / (Number.isFinite(hz) && hz > 0 ? hz : 100)
})()

export const cpuAccounting = existsSync('/proc/self/stat')

/** Every live process: parent and CPU used so far (user + system), ms */
export type ProcTable = Map<number, { ppid: number, cpuMs: number }>

export function scanProcesses (): ProcTable {
  const out: ProcTable = new Map()
  if (!cpuAccounting) return out
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const text = readFileSync(`/proc/${name}/stat`, 'utf8')
      // Fields after the command name, which is in parentheses and may hold spaces.
      const f = text.slice(text.lastIndexOf(')') + 2).split(' ')
      out.set(Number(name), { ppid: Number(f[1]), cpuMs: (Number(f[11]) + Number(f[12])) * TICK_MS })
    } catch {}
  }
  return out
}

/** Live descendants of `parents` in `procs` (sandboxes, and the processes inside them) */
export function descendantsOf (procs: ProcTable, parents: ReadonlyArray<number | undefined>): number[] {
  const out: number[] = []
  let level = new Set(parents)
  for (let depth = 0; depth < 8 && level.size > 0; depth++) {
    const next = new Set<number>()
    for (const [pid, p] of procs) if (level.has(p.ppid)) { next.add(pid); out.push(pid) }
    level = next
  }
  return out
}

/** Groups of processes to account, found again at every sample (sandboxes come and go) */
export type CpuGroups = Record<string, (procs: ProcTable) => ReadonlyArray<number | undefined>>

/** CPU ms so far by group, then by pid */
type CpuSample = Record<string, Map<number, number>>

/** Keys in a sample besides the groups: the whole machine, and processes outside this run */
const MACHINE = '(machine)'
const OTHERS = 'other processes'

function machineBusyMs (): number | undefined {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal: all but idle and iowait
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) * TICK_MS
  } catch {
    return undefined
  }
}

/** Processes that are not this one, not its descendants and not kernel threads */
function outsiders (procs: ProcTable): number[] {
  const ours = (pid: number): boolean => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
      if (p === process.pid) return true
      p = procs.get(p)?.ppid ?? 0
    }
    return false
  }
  // Kernel threads are pid 2 (kthreadd) and its children.
  return [...procs].filter(([pid, p]) => pid !== 2 && p.ppid !== 2 && !ours(pid)).map(([pid]) => pid)
}

function sampleCpu (groups: CpuGroups): CpuSample {
  const procs = scanProcesses()
  const out: CpuSample = {}
  const busy = machineBusyMs()
  if (busy != null) out[MACHINE] = new Map([[0, busy]])
  const take = (pids: ReadonlyArray<number | undefined>): Map<number, number> => {
    const m = new Map<number, number>()
    for (const pid of pids) {
      if (pid == null) continue
      // This process is read through cpuUsage (microseconds) rather than ticks.
      const self = pid === process.pid ? process.cpuUsage() : undefined
      const ms = self != null ? (self.user + self.system) / 1000 : procs.get(pid)?.cpuMs
      if (ms != null) m.set(pid, ms)
    }
    return m
  }
  for (const [name, pids] of Object.entries(groups)) out[name] = take(pids(procs))
  out[OTHERS] = take(outsiders(procs))
  return out
}

/**
 * CPU used by each key between two samples. A process that appeared in between counts from
 * zero (its whole life fell inside the window); one that exited is lost, which is why
 * sandboxes are warmed up before a window starts.
 */
function cpuBetween (a: CpuSample, b: CpuSample): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [name, after] of Object.entries(b)) {
    let sum = 0
    for (const [pid, ms] of after) sum += Math.max(0, ms - (a[name]?.get(pid) ?? 0))
    out[name] = sum
  }
  return out
}

/** CPU of each group summed over one or more windows (start/stop pairs) */
export class CpuAccount {
  private readonly totals: Record<string, number> = {}
  /** wall time covered by the windows, ms */
  wallMs = 0
  private open: { sample: CpuSample, at: number } | undefined

  constructor (private readonly groups: CpuGroups) {}

  start (): void {
    if (cpuAccounting) this.open = { sample: sampleCpu(this.groups), at: performance.now() }
  }

  stop (): void {
    if (this.open == null) return
    const used = cpuBetween(this.open.sample, sampleCpu(this.groups))
    this.wallMs += performance.now() - this.open.at
    this.open = undefined
    for (const [name, ms] of Object.entries(used)) this.totals[name] = (this.totals[name] ?? 0) + ms
  }

  /** Cores that processes outside this run kept busy on average during the windows */
  otherProcessesCores (): number | undefined {
    const others = this.totals[OTHERS]
    return others == null || this.wallMs <= 0 ? undefined : others / this.wallMs
  }

  /**
   * CPU ms per call by group, plus "total" (the groups' sum), and apart from it "other
   * processes" (outside this run: another test run, say) and "unattributed" (the rest of the
   * machine's busy time: kernel threads, such as the journal's for fsync, interrupts, and
   * processes that came and went within a window); empty without /proc
   */
  perCall (calls: number): Record<string, number> {
    if (!cpuAccounting || calls <= 0) return {}
    const out: Record<string, number> = {}
    let total = 0
    for (const [name, ms] of Object.entries(this.totals)) {
      if (name === MACHINE || name === OTHERS) continue
      out[name] = ms / calls
      total += ms
    }
    out.total = total / calls
    const others = this.totals[OTHERS] ?? 0
    out[OTHERS] = others / calls
    if (this.totals[MACHINE] != null) out.unattributed = Math.max(0, this.totals[MACHINE] - total - others) / calls
    return out
  }
}

/** "1.234 ms (agents 0.800, nats-server 0.200, ...); outside the run: ..." */
export function formatCpu (perCall: Record<string, number>): string {
  if (perCall.total == null) return 'not measured (no /proc)'
  const outside = new Set(['total', OTHERS, 'unattributed'])
  const parts = Object.entries(perCall).filter(([k]) => !outside.has(k)).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v.toFixed(3)}`)
  const rest = [OTHERS, 'unattributed'].filter(k => perCall[k] != null).map(k => `${k} ${perCall[k].toFixed(3)}`)
  return `${perCall.total.toFixed(3)} ms (${parts.join(', ')})${rest.length > 0 ? `; besides: ${rest.join(', ')}` : ''}`
}

/** The larger of two optional numbers */
export function maxDefined (a: number | undefined, b: number | undefined): number | undefined {
  return a == null ? b : b == null ? a : Math.max(a, b)
}

/**
 * Waits until the whole machine is quiet (busy less than `busyFraction` of one core over a
 * 500 ms window), at most `maxMs`: work left over by the figure before (replication of its
 * records, anti-entropy, LevelDB compactions) must not land in a latency figure. Resolves with
 * the time waited; without /proc, at once.
 */
export async function waitForQuiet (signal: AbortSignal, maxMs = 30_000, busyFraction = 0.15): Promise<number> {
  const started = performance.now()
  let before = machineBusyMs()
  if (before == null) return 0
  while (performance.now() - started < maxMs && !signal.aborted) {
    await new Promise(resolve => setTimeout(resolve, 500))
    const now = machineBusyMs()
    if (now == null) break
    if (now - before < busyFraction * 500) break
    before = now
  }
  return performance.now() - started
}
