/**
 * `npm run netns-mesh -- up [--hosts 3] [--agents-per-host 1]`: the multi-host mesh of the tests
 * on this machine (root): each host a network namespace with an address in 198.18.0.0/15, a
 * 3-server NATS cluster across them, `fnmesh init` (3 replicas) and agents on every host. Prints
 * how to reach it and to break it (kill a server, cut a host), and stays up until Ctrl-C, which
 * removes everything it made.
 * `npm run netns-mesh -- down --id ID` (or `--all`) removes what a run that crashed left behind:
 * namespaces fnm<ID>h*, links fnv<ID>h*, bridge fnb<ID> (their processes die with them).
 */
import '../node/src/polyfill.js'
import { execFileSync, spawnSync } from 'node:child_process'
import { startNetnsMesh } from '../node/src/dev/netns-mesh.js'
import { netnsUnavailable } from '../node/src/dev/netns.js'

function arg (name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : fallback
}

async function up (): Promise<void> {
  const reason = netnsUnavailable()
  if (reason != null) { process.stderr.write(`error FNMESH_ERR_UNSUPPORTED: Cannot make hosts: ${reason}\n`); process.exit(1) }
  const hosts = Number(arg('--hosts', '3'))
  const m = await startNetnsMesh({ hosts, agentsPerHost: Number(arg('--agents-per-host', '1')) })
  const out = process.stdout
  out.write(`mesh ${m.net.id} up: ${hosts} hosts, NATS cluster of ${m.servers.length} (replicas ${m.init.replicas}), ${m.agents.length} agents; logs in ${m.dir}\n\n`)
  for (const h of m.net.hosts) {
    const server = m.servers[h.index - 1]
    const agents = m.agents.filter(a => a.name.startsWith(`h${h.index}-`)).map(a => `${a.name} (pid ${String(a.pid)})`).join(', ')
    out.write(`host ${h.index}: namespace ${h.ns}, address ${h.address}, link ${h.veth}${server != null ? `, nats-server pid ${String(server.pid)}` : ''}, agents ${agents}\n`)
  }
  out.write(`\nexport FNMESH_NATS=${m.natsUrls}\n`)
  out.write('fnmesh deploy ./examples/hello --name hello && fnmesh invoke hello --data \'{"name":"mesh"}\'\n')
  out.write(`break it: kill -9 <nats-server pid>; ip link set ${m.net.hosts[1]?.veth ?? '<link>'} down (and up); ip netns exec ${m.net.hosts[0].ns} ss -tn\n`)
  out.write('Ctrl-C stops everything and removes the namespaces.\n')
  await new Promise<void>((resolve) => {
    const onSignal = (): void => { out.write('stopping...\n'); m.stop().then(resolve, resolve) }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
  })
}

function down (): void {
  const id = arg('--id')
  const all = process.argv.includes('--all')
  if (id == null && !all) { process.stderr.write('error FNMESH_ERR_INVALID_ARGUMENT: give --id ID (printed by "up") or --all\n'); process.exit(2) }
  const mine = (name: string, kind: 'fnm' | 'fnv' | 'fnb'): boolean => new RegExp(`^${kind}${id ?? '[0-9a-f]{6}'}(h\\d+)?$`).test(name)
  for (const ns of execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map(l => l.split(' ')[0]).filter(n => mine(n, 'fnm'))) {
    // Processes inside a namespace: killed by pid (ip netns pids), then the namespace goes.
    const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean)
    for (const pid of pids) { try { process.kill(Number(pid), 'SIGKILL') } catch {} }
    spawnSync('ip', ['netns', 'del', ns])
    process.stdout.write(`removed namespace ${ns} (${pids.length} processes killed)\n`)
  }
  for (const link of execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' }).split('\n').map(l => l.split(': ')[1]?.split('@')[0] ?? '')) {
    if (mine(link, 'fnv') || mine(link, 'fnb')) { spawnSync('ip', ['link', 'del', link]); process.stdout.write(`removed link ${link}\n`) }
  }
}

const cmd = process.argv[2]
if (cmd === 'up') await up()
else if (cmd === 'down') down()
else { process.stderr.write('usage: npm run netns-mesh -- up [--hosts N] [--agents-per-host N] | down --id ID | down --all\n'); process.exit(2) }
