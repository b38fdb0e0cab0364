#!/usr/bin/env node
// Makes sure bubblewrap is installed: the sandbox's mount namespace layer uses it. Installs
// Debian's package when this user can (root, or sudo without a password), as ensure-nats does for
// nats-server. Unlike nats-server it is optional: without it the agent runs with the layers it
// has (and the tests that need it skip, saying why), so a failed install warns and exits 0.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'

const found = () => spawnSync('sh', ['-c', 'command -v bwrap'], { encoding: 'utf8' }).stdout.trim() !== '' ||
  ['/usr/bin/bwrap', '/usr/local/bin/bwrap'].some(p => existsSync(p))

if (!found() && process.platform === 'linux' && process.env.FNMESH_NO_BWRAP_INSTALL !== '1') {
  const root = process.getuid?.() === 0
  const sudo = !root && spawnSync('sudo', ['-n', 'true']).status === 0
  const hasApt = spawnSync('sh', ['-c', 'command -v apt-get'], { encoding: 'utf8' }).stdout.trim() !== ''
  if ((!root && !sudo) || !hasApt) {
    console.error('warning: bubblewrap is not installed, so sandboxes get no mount namespace: run "sudo apt-get install -y bubblewrap" (tests that need it are skipped)')
  } else {
    console.error('bubblewrap is missing: installing Debian\'s package (apt-get install -y bubblewrap)...')
    const run = (args) => spawnSync(root ? args[0] : 'sudo', root ? args.slice(1) : ['-n', ...args], { stdio: 'inherit' }).status
    if (run(['apt-get', 'install', '-y', '-qq', 'bubblewrap']) !== 0 && (run(['apt-get', 'update', '-qq']) !== 0 || run(['apt-get', 'install', '-y', '-qq', 'bubblewrap']) !== 0)) {
      console.error('warning: installing bubblewrap failed: sandboxes get no mount namespace (tests that need it are skipped)')
    }
  }
}
