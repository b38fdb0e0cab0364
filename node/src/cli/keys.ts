/**
 * `fnmesh keys ...`: API keys of the HTTP gateway (create, list, revoke), deployer signing keys
 * (keys deployer create|public) and the private swarm key (keys swarm).
 */
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { generateKey } from '@libp2p/pnet'
import type { Command } from 'commander'
import { UsageError } from '../../../proto/errors.js'
import type { Mesh } from '../../../sdk/src/client.js'
import { generateDeployerKey, loadDeployerKey } from '../../../core/signing.js'
import { table } from './format.js'

type WithMesh = <T>(opts: { nats: string }, fn: (mesh: Mesh) => Promise<T>) => Promise<T>

async function writeSecret (path: string, text: string, force: boolean): Promise<void> {
  if (existsSync(path) && !force) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `"${path}" exists: give --force to overwrite it`)
  await writeFile(path, text, { mode: 0o600 })
}

export function addKeyCommands (program: Command, withMesh: WithMesh, natsOption: () => import('commander').Option, int: (name: string, min?: number, max?: number) => (v: string) => number): void {
  const json = (value: unknown): void => { process.stdout.write(JSON.stringify(value, null, 2) + '\n') }
  const keys = program.command('keys').description('API keys for the HTTP gateway; deployer signing keys; the private swarm key')
  keys.command('create').argument('<name>').description('create an API key: it is printed once, only its hash is stored')
    .option('--rate <n>', 'mesh-wide requests per second with this key', int('--rate', 1, 1_000_000))
    .option('--burst <n>', 'requests admitted at once after a quiet spell (default: the rate)', int('--burst', 1, 1_000_000))
    .option('--json', 'print JSON').addOption(natsOption())
    .action(async (name: string, opts) => {
      await withMesh(opts, async (mesh) => {
        const { key, info } = await mesh.keys.create(name, { ratePerSecond: opts.rate, burst: opts.burst })
        if (opts.json === true) json({ ...info, key })
        else process.stdout.write(`${key}\n`)
        process.stderr.write(`key "${name}" created${info.ratePerSecond > 0 ? ` (${info.ratePerSecond}/s, burst ${info.burst})` : ''}: keep it now, it is not shown again; send it as the x-api-key header\n`)
      })
    })
  keys.command('list').description('list API keys (names, prefixes, rates; never the keys)').option('--json', 'print JSON').addOption(natsOption())
    .action(async (opts) => {
      await withMesh(opts, async (mesh) => {
        const list = await mesh.keys.list()
        if (opts.json === true) { json(list); return }
        process.stdout.write(table(['NAME', 'PREFIX', 'RATE', 'BURST', 'CREATED'], list.map(k => [k.name, `${k.prefix}...`, k.ratePerSecond > 0 ? `${k.ratePerSecond}/s` : '-', k.ratePerSecond > 0 ? k.burst : '-', k.createdAt])) + '\n')
      })
    })
  keys.command('revoke').argument('<name>').description('revoke an API key: every gateway refuses it at once').addOption(natsOption())
    .action(async (name: string, opts) => {
      await withMesh(opts, async (mesh) => {
        await mesh.keys.revoke(name)
        process.stdout.write(`revoked ${name}\n`)
      })
    })

  const deployer = keys.command('deployer').description('ed25519 keys that sign deploys (agents with --trust run only signed code)')
  deployer.command('create').description('make a deployer key: writes the private key (PEM, mode 0600), prints the public key for agents\' trust lists')
    .requiredOption('--out <file>', 'where to write the private key')
    .option('--force', 'overwrite the file')
    .action(async (opts) => {
      const { privatePem, publicKey } = generateDeployerKey()
      await writeSecret(opts.out, privatePem, opts.force === true)
      process.stdout.write(`${publicKey}\n`)
      process.stderr.write(`private key written to ${String(opts.out)}; put the public key above in each agent's --trust file, and deploy with --sign ${String(opts.out)}\n`)
    })
  deployer.command('public').description('print the public key of a deployer private key').argument('<file>')
    .action(async (file: string) => {
      process.stdout.write(`${(await loadDeployerKey(file)).publicKey}\n`)
    })

  keys.command('swarm').description('make a private swarm key (libp2p pre-shared key) for agents\' --swarm-key')
    .requiredOption('--out <file>', 'where to write it (mode 0600)')
    .option('--force', 'overwrite the file')
    .action(async (opts) => {
      const bytes = new Uint8Array(95)
      generateKey(bytes)
      await writeSecret(opts.out, Buffer.from(bytes).toString('utf8') + '\n', opts.force === true)
      process.stderr.write(`swarm key written to ${String(opts.out)}: give every agent of the mesh the same file with --swarm-key\n`)
    })
}
