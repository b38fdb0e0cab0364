/**
 * `fnmesh alias set|list|delete` (issue 15): aliases of a function, each pointing at a version,
 * optionally with a share of invocations at a second one (`--weight VERSION=FRACTION`).
 */
import type { Command, Option } from 'commander'
import { NotFoundError, UsageError } from '../../../proto/errors.js'
import type { Mesh } from '../../../sdk/src/client.js'
import type { AliasInfo } from '../../../sdk/src/aliases.js'
import { table } from './format.js'
import { readable } from './options.js'

type WithMesh = <T>(opts: { nats: string }, fn: (mesh: Mesh) => Promise<T>) => Promise<T>

const weightsText = (a: AliasInfo): string => Object.entries(a.weights).map(([v, w]) => `${v}=${Number(w.toFixed(6))}`).join(' ')
/** What a registry writer stored reaches the terminal: no control characters */
const safe = (v: string | number): string | number => typeof v === 'string' ? v.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?') : v

export function addAliasCommands (program: Command, withMesh: WithMesh, natsOption: () => Option): void {
  const json = (value: unknown): void => { process.stdout.write(JSON.stringify(value, null, 2) + '\n') }
  const alias = program.command('alias').description('Aliases of a function: invoke NAME:ALIAS; a weighted alias splits invocations between two versions; rollback is setting it again')
  alias.command('set')
    .description('point ALIAS of NAME at VERSION (creating it or moving it)')
    .argument('<name>', 'function name')
    .argument('<alias>', 'alias name: a letter, then letters, digits, "-" or "_"')
    .argument('<version>', 'the version most invocations run')
    .option('--weight <VERSION=FRACTION>', 'send this fraction of invocations to a second version, e.g. 2=0.1')
    .option('--description <text>', 'a note shown by alias list')
    .option('--sign <key.pem>', 'sign the alias with this deployer key (env FNMESH_DEPLOYER_KEY); agents with --trust follow only signed aliases', readable('--sign'))
    .option('--json', 'print JSON')
    .addOption(natsOption())
    .action(async (name: string, aliasName: string, versionText: string, opts) => {
      if (!/^[1-9][0-9]{0,9}$/.test(versionText)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Version "${versionText.slice(0, 40)}" is invalid: expected a whole number from 1`)
      const sign = opts.sign ?? process.env.FNMESH_DEPLOYER_KEY
      await withMesh(opts, async (mesh) => {
        const info = await mesh.aliasSet(name, aliasName, Number(versionText), { weight: opts.weight, description: opts.description, signingKey: sign != null && sign !== '' ? sign : undefined })
        if (opts.json === true) json(info)
        else process.stdout.write(`alias ${info.function}:${info.alias} -> ${weightsText(info)} (serial ${info.serial}${info.signature === 'signed' ? `, signed by ${info.signedBy ?? ''}` : ''})\n`)
      })
    })
  alias.command('list')
    .description('list the aliases of NAME (every function\'s without it), with their versions and weights; invalid ones with the reason agents skip them')
    .argument('[name]', 'function name')
    .option('--json', 'print JSON')
    .addOption(natsOption())
    .action(async (name: string | undefined, opts) => {
      await withMesh(opts, async (mesh) => {
        const list = await mesh.aliasList(name)
        if (opts.json === true) { json(list); return }
        process.stdout.write(table(['FUNCTION', 'ALIAS', 'STATUS', 'VERSIONS', 'SERIAL', 'SIGNED', 'UPDATED', 'DESCRIPTION'],
          list.map(a => [a.function, a.alias, a.status, weightsText(a) || '-', a.serial, a.signature === 'signed' ? a.signedBy ?? 'yes' : a.signature === 'invalid' ? 'INVALID' : 'no', a.updatedAt || '-', a.description || '-'].map(safe))) + '\n')
        for (const a of list) if (a.status !== 'ok') process.stdout.write(`invalid ${String(safe(`${a.function}:${a.alias}`))}: ${a.code}: ${String(safe(a.reason.slice(0, 500)))}\n`)
      })
    })
  alias.command('delete')
    .description('delete ALIAS of NAME (invocations of NAME:ALIAS then fail with FNMESH_ERR_ALIAS_NOT_FOUND)')
    .argument('<name>', 'function name')
    .argument('<alias>', 'alias name')
    .option('--json', 'print JSON')
    .addOption(natsOption())
    .action(async (name: string, aliasName: string, opts) => {
      await withMesh(opts, async (mesh) => {
        const deleted = await mesh.aliasDelete(name, aliasName)
        if (opts.json === true) { json({ function: name, alias: aliasName, deleted }); return }
        if (!deleted) throw new NotFoundError('FNMESH_ERR_ALIAS_NOT_FOUND', `Function "${name}" has no alias "${aliasName}"`)
        process.stdout.write(`deleted alias ${name}:${aliasName}\n`)
      })
    })
}
