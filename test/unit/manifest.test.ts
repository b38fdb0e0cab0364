import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { FnmeshError } from '../../proto/errors.js'
import { readManifest } from '../../sdk/src/manifest.js'

describe('fnmesh.yaml beside the code', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'fnmesh-manifest-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  it('reads every setting, with seconds and durations turned into ms', async () => {
    await writeFile(join(dir, 'fnmesh.yaml'), [
      'handler: src/app.handler', 'memory: 256', 'timeout: 2.5', 'concurrency: 3', 'env: { STAGE: prod, N: 5 }',
      'triggers: ["orders.*", "rate:1m"]', 'egress: true', 'retries: 4', 'retryBackoff: 2s', 'maxEventAge: 1h'
    ].join('\n'))
    expect(await readManifest(dir)).toEqual({
      handler: 'src/app.handler', memoryMb: 256, timeoutMs: 2500, concurrency: 3, env: { STAGE: 'prod', N: '5' },
      triggers: ['orders.*', 'rate:1m'], egress: true, retries: 4, retryBackoffMs: 2000, maxEventAgeMs: 3_600_000
    })
  })

  it('reads bindings, destinations and HTTP routes', async () => {
    await writeFile(join(dir, 'fnmesh.yaml'), [
      'bindings:', '  counts: kv:counter', '  out: publish:orders.>', 'onSuccess: publish:orders.done', 'onFailure: publish:orders.failed',
      'routes:', '  - GET /count/{name}', '  - POST /count/{name}'
    ].join('\n'))
    expect(await readManifest(dir)).toEqual({
      bindings: { counts: 'kv:counter', out: 'publish:orders.>' }, onSuccess: 'publish:orders.done', onFailure: 'publish:orders.failed',
      routes: ['GET /count/{name}', 'POST /count/{name}']
    })
  })

  it('is empty without a file, and for a single-file path', async () => {
    expect(await readManifest(dir)).toEqual({})
    await writeFile(join(dir, 'index.js'), '')
    expect(await readManifest(join(dir, 'index.js'))).toEqual({})
  })

  it.each([
    ['memory: [1]', /memory must be a number/],
    ['memroy: 128', /unknown setting "memroy"/],
    ['triggers: orders.*', /triggers must be a list/],
    ['routes: GET /', /routes must be a list/],
    ['retryBackoff: soon', /Duration "soon" is invalid/],
    ['- a list', /must be a mapping/],
    ['a: [unclosed', /not valid YAML/]
  ])('refuses "%s" with a clear message', async (text, why) => {
    await writeFile(join(dir, 'fnmesh.yml'), text)
    const err = await readManifest(dir).catch(e => e)
    expect(err).toBeInstanceOf(FnmeshError)
    expect(err.message).toMatch(why)
  })
})
