/**
 * fnmesh.yaml beside the code: the same settings as the deploy flags, so a folder can carry its
 * own configuration. Flags given on the command line (or SDK options) win over the file.
 *
 *   handler: src/app.handler
 *   memory: 256            # MB
 *   timeout: 10            # seconds
 *   concurrency: 4
 *   env: { STAGE: prod }
 *   triggers: [ "orders.*", "cron:0 * * * *" ]
 *   egress: false
 *   retries: 2
 *   retryBackoff: 1s
 *   maxEventAge: 6h
 *   constraints: [ "gpu=1" ]   # or a mapping { gpu: "1" }; "key!=value" excludes
 *   prefer: { zone: a }
 */
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { parse } from 'yaml'
import { UsageError } from '../../proto/errors.js'
import type { DeployOptions } from '../../core/deploy-options.js'
import { parseDuration } from '../../core/duration.js'

const KEYS = new Set(['name', 'handler', 'runtime', 'memory', 'timeout', 'concurrency', 'reserved', 'provisioned', 'env', 'triggers', 'on', 'egress', 'retries', 'retryBackoff', 'maxEventAge', 'bindings', 'constraints', 'prefer', 'onSuccess', 'onFailure', 'routes', 'target'])

export type Manifest = Partial<Omit<DeployOptions, 'path'>>

/** Reads <folder>/fnmesh.yaml (or .yml) if `path` is a folder holding one; {} otherwise */
export async function readManifest (path: string): Promise<Manifest> {
  const isDir = await stat(path).then(s => s.isDirectory(), () => false)
  if (!isDir) return {}
  for (const name of ['fnmesh.yaml', 'fnmesh.yml']) {
    let text: string
    try {
      text = await readFile(join(path, name), 'utf8')
    } catch {
      continue
    }
    return fromYaml(text, join(path, name))
  }
  return {}
}

/** Placement terms: a list of "key=value" / "key!=value", or a mapping key: value (checked by validateDeploy) */
function terms (v: unknown): string[] | undefined {
  if (v == null) return undefined
  if (typeof v === 'object' && !Array.isArray(v)) return Object.entries(v).map(([k, x]) => `${k}=${String(x)}`)
  return v as string[]
}

function fromYaml (text: string, file: string): Manifest {
  let doc: unknown
  try {
    doc = parse(text)
  } catch (err: any) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `${file} is not valid YAML: ${String(err?.message ?? err).split('\n')[0]}`)
  }
  if (doc == null) return {}
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `${file} must be a mapping of settings`)
  const d = doc as Record<string, unknown>
  for (const k of Object.keys(d)) {
    if (!KEYS.has(k)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `${file}: unknown setting "${k}" (known: ${[...KEYS].join(', ')})`)
  }
  const num = (k: string): number | undefined => {
    if (d[k] == null) return undefined
    if (typeof d[k] !== 'number') throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `${file}: ${k} must be a number`)
    return d[k] as number
  }
  const dur = (k: string): number | undefined => d[k] == null ? undefined : typeof d[k] === 'number' ? d[k] as number : parseDuration(String(d[k]))
  const triggers = d.triggers ?? d.on
  if (triggers != null && (!Array.isArray(triggers) || triggers.some(t => typeof t !== 'string'))) {
    throw new UsageError('FNMESH_ERR_INVALID_TRIGGER', `${file}: triggers must be a list of strings`)
  }
  if (d.env != null && (typeof d.env !== 'object' || Array.isArray(d.env))) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `${file}: env must be a mapping`)
  const timeout = num('timeout')
  const out: Manifest = {
    name: d.name != null ? String(d.name) : undefined,
    handler: d.handler != null ? String(d.handler) : undefined,
    memoryMb: num('memory'),
    timeoutMs: timeout != null ? Math.round(timeout * 1000) : undefined,
    concurrency: num('concurrency'),
    reserved: num('reserved'),
    provisioned: num('provisioned'),
    env: d.env != null ? Object.fromEntries(Object.entries(d.env).map(([k, v]) => [k, String(v)])) : undefined,
    triggers: triggers as string[] | undefined,
    egress: d.egress != null ? d.egress === true : undefined,
    retries: num('retries'),
    retryBackoffMs: dur('retryBackoff'),
    maxEventAgeMs: dur('maxEventAge'),
    runtime: d.runtime != null ? String(d.runtime) : undefined,
    // a list of "NAME=KIND:TARGET[:ro]" or a mapping NAME: "KIND:TARGET[:ro]"; checked by validateDeploy
    bindings: d.bindings != null ? d.bindings as string[] | Record<string, string> : undefined,
    constraints: terms(d.constraints),
    prefer: terms(d.prefer),
    // destinations "publish:SUBJECT", and HTTP routes "METHOD /path" (both checked by validateDeploy)
    target: d.target != null ? String(d.target) : undefined,
    onSuccess: d.onSuccess != null ? String(d.onSuccess) : undefined,
    onFailure: d.onFailure != null ? String(d.onFailure) : undefined,
    routes: routes(d.routes, file)
  }
  return Object.fromEntries(Object.entries(out).filter(([, v]) => v !== undefined)) as Manifest
}

function routes (v: unknown, file: string): string[] | undefined {
  if (v == null) return undefined
  if (!Array.isArray(v) || v.some(r => typeof r !== 'string')) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `${file}: routes must be a list of "METHOD /path" strings`)
  return v as string[]
}
