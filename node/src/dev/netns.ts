/**
 * Hosts on one machine, each a Linux network namespace with its own address in 198.18.0.0/15
 * (the benchmarking range: never a private range a real network uses), joined by a bridge in the
 * root namespace that also carries an address, so the process that made them reaches every host.
 * For the multi-host tests and `scripts/netns-mesh.sh`. Needs root and iproute2.
 *
 * Names carry a per-run id, so a crashed run never blocks the next: bridge `fnb<id>`, namespaces
 * `fnm<id>h<i>`, veths `fnv<id>h<i>` (root side; `eth0` inside), subnet 198.18.<octet>.0/24 with
 * an octet no interface of this machine uses.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'

export interface NetHost {
  /** 1-based */
  index: number
  ns: string
  /** the root side of its link: down = the host is cut off */
  veth: string
  address: string
  /** prefix that runs a command inside the host: ["ip", "netns", "exec", ns] */
  wrap: string[]
}

export interface NetHosts {
  id: string
  bridge: string
  /** the root namespace's address on the bridge */
  gateway: string
  hosts: NetHost[]
  /** Adds one more host to the bridge */
  addHost: () => NetHost
  /** Cuts a host off (its link down) or joins it again */
  setLink: (host: NetHost, up: boolean) => void
  /** Removes every namespace, link and the bridge (processes inside must be gone first) */
  destroy: () => void
}

/** Why network namespaces cannot be used here, or null when they can */
export function netnsUnavailable (): string | null {
  if (process.platform !== 'linux') return 'not Linux'
  if (process.getuid?.() !== 0) return 'not root (network namespaces need CAP_NET_ADMIN)'
  if (spawnSync('ip', ['-V']).status !== 0) return 'iproute2 ("ip") is not installed'
  const probe = `fnprobe${randomBytes(3).toString('hex')}`
  const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' })
  if (r.status !== 0) return `"ip netns add" fails: ${r.stderr.trim()}`
  spawnSync('ip', ['netns', 'del', probe])
  return null
}

function ip (...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] })
}

/** A /24 in 198.18.0.0/15 that no interface of this machine has an address in */
function freeOctet (): number {
  const used = execFileSync('ip', ['-4', '-o', 'addr'], { encoding: 'utf8' })
  for (let tries = 0; tries < 200; tries++) {
    const o = 1 + Math.floor(Math.random() * 250)
    if (!used.includes(`198.18.${o}.`)) return o
  }
  throw new Error('Cannot find a free /24 in 198.18.0.0/16')
}

export function createNetHosts (count: number, options: { id?: string } = {}): NetHosts {
  const id = options.id ?? randomBytes(3).toString('hex')
  const octet = freeOctet()
  const bridge = `fnb${id}`
  const gateway = `198.18.${octet}.254`
  const hosts: NetHost[] = []
  const made: Array<() => void> = []
  const destroy = (): void => {
    for (const undo of made.reverse()) { try { undo() } catch {} }
    made.length = 0
  }
  const addHost = (): NetHost => {
    const index = hosts.length + 1
    const ns = `fnm${id}h${index}`
    const veth = `fnv${id}h${index}`
    const peer = `fnp${id}h${index}`
    const address = `198.18.${octet}.${index}`
    ip('netns', 'add', ns)
    made.push(() => { spawnSync('ip', ['netns', 'del', ns]) })
    ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', peer)
    made.push(() => { spawnSync('ip', ['link', 'del', veth]) })
    ip('link', 'set', peer, 'netns', ns)
    ip('link', 'set', veth, 'master', bridge)
    ip('link', 'set', veth, 'up')
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up')
    ip('netns', 'exec', ns, 'ip', 'link', 'set', peer, 'name', 'eth0')
    ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${address}/24`, 'dev', 'eth0')
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'eth0', 'up')
    const host = { index, ns, veth, address, wrap: ['ip', 'netns', 'exec', ns] }
    hosts.push(host)
    return host
  }
  try {
    ip('link', 'add', bridge, 'type', 'bridge')
    made.push(() => { spawnSync('ip', ['link', 'del', bridge]) })
    ip('addr', 'add', `${gateway}/24`, 'dev', bridge)
    ip('link', 'set', bridge, 'up')
    for (let i = 0; i < count; i++) addHost()
  } catch (err) {
    destroy()
    throw err
  }
  return {
    id,
    bridge,
    gateway,
    hosts,
    addHost,
    setLink: (host, up) => { ip('link', 'set', host.veth, up ? 'up' : 'down') },
    destroy
  }
}
