import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { decode, encode, type HttpRoute } from '../../proto/codec.js'
import { buildRoutes } from '../../core/http-routes.js'
import { MAX_SPEC_VERSION, validateStoredSpec, type SpecFields } from '../../core/spec-rules.js'
import { TrustedVersions } from '../../node/src/registry/versions.js'
import { createLogger } from '../../node/src/logger.js'

const sha = 'a'.repeat(64)
const good: SpecFields = {
  name: 'orders',
  version: 3,
  handler: 'index.handler',
  memoryMb: 128,
  timeoutMs: 3000,
  concurrency: 0,
  env: { STAGE: 'prod' },
  triggers: ['orders.*', 'cron:*/5 * * * *', 'rate:5m', 'object:uploads', 'kv:config'],
  egress: false,
  bundleObject: `sha256-${sha}`,
  bundleSha256: sha,
  bundleSize: 1234,
  maxRetries: 2,
  retryBackoffMs: 1000,
  maxEventAgeMs: 21_600_000,
  routes: buildRoutes('orders', [
    { route: 'GET /orders/{id}', auth: 'jwt', jwt: { secret: 'x'.repeat(32), audience: 'api' }, cors: { origins: ['https://app.example'] }, rateLimit: { perSecond: 10, burst: 20 } },
    { route: 'POST /orders', schema: { type: 'object' } }
  ])
}

/** The rule a changed spec breaks, by the code and the text of the reason */
function reason (change: Partial<SpecFields>, key = 'orders'): string {
  const err = validateStoredSpec({ ...good, ...change }, key)
  expect(err, JSON.stringify(change)).not.toBeNull()
  expect(err?.code).toBe('FNMESH_ERR_INVALID_SPEC')
  return err?.message ?? ''
}

const route = (r: Partial<HttpRoute>): HttpRoute[] => [{ ...(good.routes as HttpRoute[])[1], ...r }]

describe('validateStoredSpec: the deploy rules applied to a stored spec', () => {
  it('accepts a spec the deploy path builds, also after encoding and decoding it', () => {
    expect(validateStoredSpec(good, 'orders')).toBeNull()
    const decoded = decode('FunctionSpec', encode('FunctionSpec', { ...good, createdAtMs: 1 } as never))
    expect(validateStoredSpec(decoded as unknown as SpecFields, 'orders')).toBeNull()
    expect(validateStoredSpec({ ...good, version: 1, routes: [], triggers: [], env: {} }, 'orders')).toBeNull()
    expect(validateStoredSpec({ ...good, version: MAX_SPEC_VERSION, memoryMb: 10240, timeoutMs: 900_000 }, 'orders')).toBeNull()
  })

  it('refuses a spec stored under another key than its name, or under a malformed key', () => {
    expect(reason({}, 'billing')).toMatch(/stored under key "billing" but names itself "orders"/)
    expect(reason({ name: 'a.b' }, 'a.b')).toMatch(/Function name "a.b" is invalid/)
  })

  it('refuses versions outside 1 to the maximum', () => {
    expect(reason({ version: 0 })).toMatch(/version 0 is outside 1 to 1000000000/)
    expect(reason({ version: 2 ** 32 - 1 })).toMatch(/version 4294967295 is outside/)
    expect(reason({ version: MAX_SPEC_VERSION + 1 })).toMatch(/outside/)
  })

  it('refuses memory, timeout, concurrency, retries, backoff and event age outside the limits', () => {
    expect(reason({ memoryMb: 2 ** 31 })).toMatch(/memoryMb of "orders" is 2147483648/)
    expect(reason({ memoryMb: 0 })).toMatch(/memoryMb/)
    expect(reason({ timeoutMs: 2 ** 31 })).toMatch(/timeoutMs of "orders" is 2147483648/)
    expect(reason({ timeoutMs: 0 })).toMatch(/timeoutMs/)
    expect(reason({ concurrency: 10_001 })).toMatch(/concurrency/)
    expect(reason({ maxRetries: 101 })).toMatch(/retries/)
    expect(reason({ retryBackoffMs: 0 })).toMatch(/retryBackoffMs/)
    expect(reason({ maxEventAgeMs: 999 })).toMatch(/maxEventAgeMs/)
  })

  it('refuses a malformed handler', () => {
    expect(reason({ handler: '' })).toMatch(/Handler "" is malformed/)
    expect(reason({ handler: '../etc/passwd.x' })).toMatch(/malformed/)
    expect(reason({ handler: 'a//b.handler' })).toMatch(/malformed/)
    expect(reason({ handler: 'index' })).toMatch(/malformed/)
  })

  it('refuses reserved, malformed and oversized environments', () => {
    expect(reason({ env: { _X_AMZN_TRACE_ID: 'x' } })).toMatch(/reserved/)
    expect(reason({ env: { AWS_EXECUTION_ENV: 'x' } })).toMatch(/reserved/)
    expect(reason({ env: { AWS_LAMBDA_INITIALIZATION_TYPE: 'x' } })).toMatch(/reserved/)
    expect(reason({ env: { FNMESH_X: '1' } })).toMatch(/reserved/)
    expect(reason({ env: { AWS_LAMBDA_FUNCTION_NAME: 'x' } })).toMatch(/reserved/)
    expect(reason({ env: { '1BAD': 'x' } })).toMatch(/name "1BAD" is invalid/)
    expect(reason({ env: { BIG: 'x'.repeat(4094) } })).toMatch(/4097 bytes: the limit is 4096/)
    expect(validateStoredSpec({ ...good, env: { BIG: 'x'.repeat(4093) } }, 'orders')).toBeNull()
  })

  it('allows what Lambda allows: NODE_OPTIONS, AWS_REGION, NODE_PATH, TZ', () => {
    expect(validateStoredSpec({ ...good, env: { NODE_OPTIONS: '--enable-source-maps  --stack-trace-limit=50 -r ./x.js', AWS_REGION: 'eu-west-1', AWS_DEFAULT_REGION: 'eu-west-1', NODE_PATH: '/var/task/lib', TZ: 'Europe/Paris' } }, 'orders')).toBeNull()
    expect(validateStoredSpec({ ...good, env: { NODE_OPTIONS: '--title="a b"' } }, 'orders')).toBeNull()
    expect(validateStoredSpec({ ...good, env: { AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA: '1' } }, 'orders')).toBeNull()
  })

  it.each(['--inspect', '--inspect-brk=0.0.0.0:9229', '--enable-source-maps --inspect-port=1', '--debug-port=9', '--allow-fs-read=*', '--allow_child_process', '--experimental-permission', '"--allow-worker"'])(
    'refuses NODE_OPTIONS %j: a debugger port or the permission model\'s own switches', (value) => {
      expect(reason({ env: { NODE_OPTIONS: value } })).toMatch(/"NODE_OPTIONS" may not hold "--(inspect|debug|allow|experimental-permission)/)
    })

  it.each(['--require /tmp/evil.js', '-r=/etc/x.js', '--import ../up.mjs', '--env-file=/etc/shadow', '--redirect-warnings=/var/log/x', '--loader file:///x.mjs'])(
    'refuses NODE_OPTIONS %j: a file outside the function\'s own code', (value) => {
      expect(reason({ env: { NODE_OPTIONS: value } })).toMatch(/may name only files of the function's own code/)
    })

  it('allows NODE_OPTIONS naming the function\'s own files and packages', () => {
    expect(validateStoredSpec({ ...good, env: { NODE_OPTIONS: '-r ./setup.js --require dotenv/config --import=./lib/otel.mjs --env-file=.env' } }, 'orders')).toBeNull()
  })

  it('refuses a NODE_OPTIONS with an unterminated string, and a runtime other than Node or provided', () => {
    expect(reason({ env: { NODE_OPTIONS: '--title="x' } })).toMatch(/unterminated/)
    expect(reason({ runtime: 'python3.12' })).toMatch(/runtime "python3.12" is not "" or "provided"/)
    expect(validateStoredSpec({ ...good, runtime: 'provided' }, 'orders')).toBeNull()
  })

  it('refuses triggers the agent\'s parser refuses, and too many', () => {
    expect(reason({ triggers: ['sqs:orders'] })).toMatch(/unknown trigger kind "sqs"/)
    expect(reason({ triggers: ['rate:0m'] })).toMatch(/a rate is at least 1 second/)
    expect(reason({ triggers: ['cron:nope'] })).toMatch(/Trigger "cron:nope" is invalid/)
    expect(reason({ triggers: ['fnmesh.invoke.x'] })).toMatch(/reserved/)
    expect(reason({ triggers: [''] })).toMatch(/empty/)
    expect(reason({ triggers: Array.from({ length: 33 }, (_, i) => `t${i}.x`) })).toMatch(/more than 32 triggers/)
  })

  it('refuses routes the deploy could not have built', () => {
    expect(reason({ routes: route({ method: 'BREW' }) })).toMatch(/method "BREW"/)
    expect(reason({ routes: route({ path: 'no-slash' }) })).toMatch(/must start with "\/"/)
    expect(reason({ routes: route({ auth: 'magic' }) })).toMatch(/Auth "magic"/)
    expect(reason({ routes: route({ auth: 'jwt' }) })).toMatch(/JWT settings/)
    expect(reason({ routes: route({ jwt: { secret: Buffer.from('x'.repeat(32)), jwks: '', audience: ['a'], issuer: '', algorithms: [] } }) })).toMatch(/auth is not "jwt"/)
    expect(reason({ routes: route({ auth: 'jwt', jwt: { secret: Buffer.from('short'), jwks: '', audience: ['a'], issuer: '', algorithms: [] } }) })).toMatch(/at least 32 bytes/)
    expect(reason({ routes: route({ schema: '{not json' }) })).toMatch(/JSON Schema/)
    expect(reason({ routes: route({ schema: '{"type": 12}' }) })).toMatch(/JSON Schema/)
    expect(reason({ routes: route({ ratePerS: 0, burst: 5 }) })).toMatch(/a burst but no rate/)
    expect(reason({ routes: route({ ratePerS: 2 ** 31 }) })).toMatch(/rate limit/)
    const cors = { allowOrigins: ['*'], allowMethods: [], allowHeaders: [], exposeHeaders: [], maxAgeS: 600, allowCredentials: false }
    expect(reason({ routes: route({ cors: { ...cors, allowHeaders: ['x\r\nset-cookie: a=b'] } }) })).toMatch(/CORS/)
    expect(reason({ routes: route({ cors: { ...cors, allowOrigins: ['javascript alert'] } }) })).toMatch(/CORS/)
    expect(reason({ routes: route({ cors: { ...cors, maxAgeS: 2 ** 31 } }) })).toMatch(/max age/)
    expect(reason({ routes: [...route({}), ...route({})] })).toMatch(/given twice/)
    expect(validateStoredSpec({ ...good, routes: route({ cors }) }, 'orders')).toBeNull()
  })

  it('refuses bundle fields that are not a digest, its object name and a size within the limit', () => {
    expect(reason({ bundleSha256: 'A'.repeat(64), bundleObject: `sha256-${'A'.repeat(64)}` })).toMatch(/64 lowercase hex/)
    expect(reason({ bundleSha256: 'a'.repeat(63), bundleObject: `sha256-${'a'.repeat(63)}` })).toMatch(/64 lowercase hex/)
    expect(reason({ bundleObject: 'other-object' })).toMatch(/object name/)
    expect(reason({ bundleObject: `sha256-${'b'.repeat(64)}` })).toMatch(/object name/)
    expect(reason({ bundleSize: 0 })).toMatch(/bundle size 0/)
    expect(reason({ bundleSize: 50 * 1024 * 1024 + 1 })).toMatch(/bundle size/)
  })
})

describe('trusted versions file', () => {
  let dir: string | undefined
  afterEach(async () => { if (dir != null) await rm(dir, { recursive: true, force: true }) })
  const logger = createLogger({ level: 'silent' })

  it('keeps the newest version per function across a restart, only ever raising it', async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-versions-'))
    const path = join(dir, 'trusted-versions.json')
    const a = new TrustedVersions({ path, logger })
    await a.load()
    a.raise('orders', 5)
    a.raise('orders', 3)
    a.raise('billing', 1)
    await a.flush()
    const b = new TrustedVersions({ path, logger })
    await b.load()
    expect(b.newest('orders')).toBe(5)
    expect(b.newest('billing')).toBe(1)
    expect(b.newest('other')).toBe(0)
  })

  it('starts empty from a damaged file and writes a good one on the next raise', async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-versions-'))
    const path = join(dir, 'trusted-versions.json')
    await writeFile(path, '{"orders": 5, "bad name": 7, "x": -1, "y": "9"')
    const a = new TrustedVersions({ path, logger })
    await a.load()
    expect(a.newest('orders')).toBe(0)
    a.raise('orders', 2)
    await a.flush()
    expect(JSON.parse(await readFile(path, 'utf8'))).toEqual({ orders: 2 })
    await writeFile(path, '{"orders": 5, "bad name": 7, "x": -1, "y": "9"}')
    const b = new TrustedVersions({ path, logger })
    await b.load()
    expect([b.newest('orders'), b.newest('bad name'), b.newest('x'), b.newest('y')]).toEqual([5, 0, 0, 0])
  })

  it('holds at most maxEntries names, dropping the least recently raised', async () => {
    const v = new TrustedVersions({ logger, maxEntries: 2 })
    v.raise('a', 1)
    v.raise('b', 1)
    v.raise('a', 2)
    v.raise('c', 1)
    expect([v.newest('a'), v.newest('b'), v.newest('c')]).toEqual([2, 0, 1])
  })
})
