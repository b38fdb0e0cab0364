import { describe, expect, it } from 'vitest'
import { DEPLOY_DEFAULTS, validateDeploy, type DeployOptions } from '../../core/deploy-options.js'
import { InputError, UsageError } from '../../proto/errors.js'

const base: DeployOptions = { name: 'resize', path: './fn' }

function thrown (fn: () => unknown): any {
  try {
    fn()
  } catch (err) {
    return err
  }
  throw new Error('expected a throw')
}

/** Asserts that `opts` is refused as an invalid argument and returns the message */
function refused (opts: Partial<DeployOptions>): string {
  const err = thrown(() => validateDeploy({ ...base, ...opts }))
  expect(err).toBeInstanceOf(UsageError)
  expect(err.code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
  return err.message
}

describe('deploy options', () => {
  it('checks --reserved and --provisioned, and refuses more provisioned than reserved', () => {
    expect(validateDeploy({ ...base, reserved: 4, provisioned: 2 })).toMatchObject({ reserved: 4, provisioned: 2 })
    expect(validateDeploy({ ...base, provisioned: 3 })).toMatchObject({ reserved: 0, provisioned: 3 })
    for (const bad of [{ reserved: -1 }, { reserved: 1.5 }, { provisioned: 1001 }, { reserved: 1, provisioned: 2 }]) {
      expect(() => validateDeploy({ ...base, ...bad }), JSON.stringify(bad)).toThrow(/reserved|provisioned/)
    }
  })

  it('applies the defaults: 128 MB, 3000 ms, concurrency 0, no env, no egress, Lambda\'s async retries', () => {
    const v = validateDeploy(base)
    expect(v).toEqual({
      name: 'resize', path: './fn', handler: undefined, memoryMb: 128, timeoutMs: 3000, concurrency: 0, env: {}, triggers: [], egress: false,
      retries: 2, retryBackoffMs: 1000, maxEventAgeMs: 21_600_000, routes: [], bindings: [], runtime: '', constraints: [], prefer: [], reserved: 0, provisioned: 0, target: '', onSuccess: '', onFailure: ''
    })
    expect(DEPLOY_DEFAULTS).toEqual({ memoryMb: 128, timeoutMs: 3000, concurrency: 0, retries: 2, retryBackoffMs: 1000, maxEventAgeMs: 21_600_000, reserved: 0, provisioned: 0 })
  })

  it('returns a frozen object', () => {
    const v = validateDeploy(base)
    expect(Object.isFrozen(v)).toBe(true)
    expect(() => { (v as { memoryMb: number }).memoryMb = 1 }).toThrow(TypeError)
  })

  it('keeps given values', () => {
    const v = validateDeploy({ ...base, handler: 'src/app.main', memoryMb: 1024, timeoutMs: 900_000, concurrency: 3, env: { STAGE: 'prod' }, egress: true })
    expect(v).toMatchObject({ handler: 'src/app.main', memoryMb: 1024, timeoutMs: 900_000, concurrency: 3, env: { STAGE: 'prod' }, egress: true })
  })

  it('only turns egress on for true', () => {
    expect(validateDeploy({ ...base, egress: 'yes' as never }).egress).toBe(false)
  })

  it.each([
    ['memoryMb', 128], ['memoryMb', 10_240], ['timeoutMs', 1], ['timeoutMs', 900_000], ['concurrency', 0], ['concurrency', 10_000]
  ] as const)('accepts %s at its bound %i', (key, value) => {
    expect(validateDeploy({ ...base, [key]: value })[key]).toBe(value)
  })

  it.each([
    ['memoryMb', 127], ['memoryMb', 10_241], ['memoryMb', 256.5], ['memoryMb', Number.NaN],
    ['timeoutMs', 0], ['timeoutMs', 900_001], ['timeoutMs', -1],
    ['concurrency', -1], ['concurrency', 10_001], ['concurrency', 1.5]
  ] as const)('refuses %s of %d', (key, value) => {
    expect(refused({ [key]: value })).toMatch(new RegExp(`^Option ${key} of "resize" is .*: expected a whole number from \\d+ to \\d+$`))
  })

  it('refuses a numeric option given as a string', () => {
    expect(refused({ memoryMb: '256' as never })).toBe('Option memoryMb of "resize" is 256: expected a whole number from 128 to 10240')
  })

  it.each(['a', 'A-1_b', 'x'.repeat(64), '9lives'])('accepts the name %j', (name) => {
    expect(validateDeploy({ ...base, name }).name).toBe(name)
  })

  it.each(['my.fn', 'my fn', 'x'.repeat(65), '', '-lead', '_lead', 'a/b', 'a*', 'a>', 'ünï'])('refuses the name %j', (name) => {
    expect(refused({ name })).toBe(`Function name "${name}" is invalid: use 1-64 letters, digits, "-" or "_", starting with a letter or digit`)
  })

  it('refuses a missing name or options', () => {
    expect(refused({ name: undefined as never })).toMatch(/^Function name "undefined" is invalid/)
    const err = thrown(() => validateDeploy(undefined as never))
    expect(err.code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
  })

  it('refuses an empty path', () => {
    expect(refused({ path: '' })).toBe('Cannot deploy "resize": no path to its code')
  })

  it.each(['index.handler', 'src/app.main', 'a-b/c_d.e$', '@scope/pkg/index.handler', 'dir.v2/file.fn'])('accepts the handler %j', (handler) => {
    expect(validateDeploy({ ...base, handler }).handler).toBe(handler)
  })

  it.each(['..', 'index', 'a/../b.handler', './index.handler', '../index.handler', '/abs/index.handler', 'index.', '.handler', 'index.9x', 'a//b.handler', 'dir/./b.handler', 'dir/.handler', 'a b.handler'])(
    'refuses the malformed handler %j', (handler) => {
      expect(refused({ handler })).toBe(`Handler "${handler}" is malformed: expected "file.export" or "dir/file.export" inside the bundle`)
    })

  it.each(['AWS_LAMBDA_FUNCTION_NAME', 'AWS_LAMBDA_ANYTHING', '_HANDLER', 'LAMBDA_TASK_ROOT', 'LAMBDA_RUNTIME_DIR', 'FNMESH_LOG_LEVEL', 'AWS_EXECUTION_ENV', '_X_AMZN_TRACE_ID'])(
    'refuses the reserved environment variable %s', (key) => {
      expect(refused({ env: { [key]: 'x' } })).toBe(`Environment variable "${key}" is reserved by the runtime`)
    })

  it('accepts names that only look like reserved ones', () => {
    const env = { AWS_REGION: 'eu', MY_FNMESH_X: '1', NODE_ENV: 'production', HANDLER: 'h' }
    expect(validateDeploy({ ...base, env }).env).toEqual(env)
  })

  it.each(['1ABC', 'A-B', 'A B', ''])('refuses the environment variable name %j', (key) => {
    expect(refused({ env: { [key]: 'x' } })).toBe(`Environment variable name "${key}" is invalid`)
  })

  it('refuses a non-string environment value', () => {
    expect(refused({ env: { N: 1 as never } })).toBe('Environment variable "N" must be a string')
  })

  it('accepts an environment of exactly 4096 bytes', () => {
    const env = { K: 'v'.repeat(4095) }
    expect(validateDeploy({ ...base, env }).env.K).toHaveLength(4095)
  })

  it('refuses an environment over 4 KB with FNMESH_ERR_PAYLOAD_TOO_LARGE', () => {
    const env = { A: 'a'.repeat(2000), B: 'b'.repeat(2095) }
    const err = thrown(() => validateDeploy({ ...base, env }))
    expect(err).toBeInstanceOf(InputError)
    expect(err.code).toBe('FNMESH_ERR_PAYLOAD_TOO_LARGE')
    expect(err.message).toBe('Environment of "resize" is 4097 bytes: the limit is 4096 (as Lambda\'s)')
  })

  it('counts the environment in UTF-8 bytes, not characters', () => {
    // 1500 euro signs are 1500 characters but 4500 bytes
    const err = thrown(() => validateDeploy({ ...base, env: { E: '€'.repeat(1500) } }))
    expect(err.code).toBe('FNMESH_ERR_PAYLOAD_TOO_LARGE')
    expect(err.message).toBe('Environment of "resize" is 4501 bytes: the limit is 4096 (as Lambda\'s)')
  })

  it('normalises and deduplicates triggers, and refuses a malformed one with FNMESH_ERR_INVALID_TRIGGER', () => {
    expect(validateDeploy({ ...base, triggers: [' orders.* ', 'orders.*', 'cron:0 * * * *'] }).triggers).toEqual(['orders.*', 'cron:0 * * * *'])
    const err = thrown(() => validateDeploy({ ...base, triggers: ['cron:nope'] }))
    expect(err.code).toBe('FNMESH_ERR_INVALID_TRIGGER')
    expect(thrown(() => validateDeploy({ ...base, triggers: Array.from({ length: 33 }, (_, i) => `t${i}.x`) })).code).toBe('FNMESH_ERR_INVALID_TRIGGER')
  })

  it('bounds the async retry settings', () => {
    expect(validateDeploy({ ...base, retries: 0 }).retries).toBe(0)
    expect(thrown(() => validateDeploy({ ...base, retries: 101 })).code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    expect(thrown(() => validateDeploy({ ...base, retryBackoffMs: 0 })).code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    expect(thrown(() => validateDeploy({ ...base, maxEventAgeMs: 10 })).code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
  })

  it('accepts an empty trigger list', () => {
    expect(validateDeploy({ ...base, triggers: [] }).triggers).toEqual([])
  })

  it('takes runtime nodejs (the default) or provided, with Lambda\'s names for both', () => {
    expect(validateDeploy({ name: 'f', path: '.' }).runtime).toBe('')
    for (const r of ['nodejs', 'nodejs20.x']) expect(validateDeploy({ name: 'f', path: '.', runtime: r }).runtime).toBe('')
    for (const r of ['provided', 'provided.al2', 'provided.al2023']) expect(validateDeploy({ name: 'f', path: '.', runtime: r }).runtime).toBe('provided')
    expect(() => validateDeploy({ name: 'f', path: '.', runtime: 'python3.12' })).toThrow(/Runtime "python3.12" is not supported/)
    expect(() => validateDeploy({ name: 'f', path: '.', runtime: 'provided', bindings: ['cfg=kv:config'] })).toThrow(/only the Node.js runtime gives/)
  })
})
