/** What the figures were measured on, recorded with them */
import { spawnSync } from 'node:child_process'
import { availableParallelism, cpus, hostname, release, totalmem } from 'node:os'
import { PACKAGE_ROOT } from '../../node/src/paths.js'

export interface Machine {
  host: string
  cpu: string
  cores: number
  memGb: number
  kernel: string
  node: string
  natsServer: string
  commit: string
  /** uncommitted changes in the tree the figures were measured on */
  dirty: boolean
  nodeExtraCaCerts: boolean
}

export function machine (): Machine {
  const run = (cmd: string, args: string[]): string => {
    const r = spawnSync(cmd, args, { cwd: PACKAGE_ROOT, encoding: 'utf8', timeout: 5000 })
    return r.status === 0 ? r.stdout.trim() : ''
  }
  return {
    host: hostname(),
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    memGb: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    natsServer: run('nats-server', ['--version']).replace(/^nats-server:\s*/, '') || 'unknown',
    commit: run('git', ['rev-parse', '--short', 'HEAD']) || 'unknown',
    dirty: run('git', ['status', '--porcelain', '--untracked-files=no']) !== '',
    nodeExtraCaCerts: process.env.NODE_EXTRA_CA_CERTS != null
  }
}
