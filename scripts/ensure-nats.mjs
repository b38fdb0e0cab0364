#!/usr/bin/env node
// Makes sure nats-server (with JetStream) is installed: the demo and the tests start their own.
// Installs Debian's package when this user can (root, or sudo without a password); otherwise
// prints exactly what to run and exits 1.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'

const found = () => spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' }).stdout.trim() !== '' ||
  ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'].some(p => existsSync(p))

if (!found()) {
  const root = process.getuid?.() === 0
  const sudo = !root && spawnSync('sudo', ['-n', 'true']).status === 0
  if (!root && !sudo) {
    console.error('error FNMESH_ERR_NATS_UNAVAILABLE: nats-server is not installed: run "sudo apt-get install -y nats-server" (or put the binary from https://github.com/nats-io/nats-server/releases on PATH), then run this command again')
    process.exit(1)
  }
  console.error('nats-server is missing: installing Debian\'s package (apt-get install -y nats-server)...')
  const run = (args) => spawnSync(root ? args[0] : 'sudo', root ? args.slice(1) : ['-n', ...args], { stdio: 'inherit' }).status
  if (run(['apt-get', 'update', '-qq']) !== 0 || run(['apt-get', 'install', '-y', '-qq', 'nats-server']) !== 0 || !found()) {
    console.error('error FNMESH_ERR_NATS_UNAVAILABLE: installing nats-server failed: install it by hand ("apt-get install -y nats-server") and run this command again')
    process.exit(1)
  }
}
