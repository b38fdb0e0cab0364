import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createUser } from '@nats-io/nkeys'
import { describe, expect, it } from 'vitest'
import { resolveConfig } from '../../node/src/config.js'
import { natsAuthConfig } from '../../node/src/dev/nats-auth-config.js'
import { natsAuthFromEnv, natsAuthOptions } from '../../core/nats-auth.js'
import { hashApiKey } from '../../core/apikeys.js'

describe('agent options of the gateway and the swarm', () => {
  it('takes --http as a port or HOST:PORT and refuses anything else', () => {
    expect(resolveConfig({ http: 8080 }).http).toEqual({ host: '0.0.0.0', port: 8080 })
    expect(resolveConfig({ http: '127.0.0.1:0' }).http).toEqual({ host: '127.0.0.1', port: 0 })
    expect(resolveConfig({ http: '[::1]:81' }).http).toEqual({ host: '::1', port: 81 })
    expect(resolveConfig({}).http).toBeUndefined()
    expect(() => resolveConfig({ http: 'eighty' })).toThrow(/HOST:PORT/)
    expect(() => resolveConfig({ http: 70000 })).toThrow(/HOST:PORT/)
  })
})

describe('NATS credentials', () => {
  it('reads what is not given from FNMESH_NATS_* and refuses two kinds at once', () => {
    expect(natsAuthFromEnv({ user: 'u' }, { FNMESH_NATS_PASSWORD: 'p', FNMESH_NATS_CA: '/ca.pem' })).toEqual({ user: 'u', password: 'p', caFile: '/ca.pem' })
    expect(natsAuthOptions({ user: 'u', password: 'p' })).toEqual({ user: 'u', pass: 'p' })
    expect(natsAuthOptions({ token: 't' })).toEqual({ token: 't' })
    expect(() => natsAuthOptions({ user: 'u', token: 't' })).toThrow(/one kind/)
    expect(() => natsAuthOptions({ certFile: '/c.pem' })).toThrow(/its key/)
    expect(natsAuthOptions({ caFile: '/ca.pem', certFile: '/c.pem', keyFile: '/k.pem' }).tls).toEqual({ caFile: '/ca.pem', certFile: '/c.pem', keyFile: '/k.pem' })
  })

  it('turns an nkey seed file into an authenticator and refuses a file that is not a user seed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fnmesh-nk-'))
    await writeFile(join(dir, 'ok.nk'), new TextDecoder().decode(createUser().getSeed()) + '\n')
    await writeFile(join(dir, 'bad.nk'), 'not a seed')
    expect(typeof natsAuthOptions({ nkeyFile: join(dir, 'ok.nk') }).authenticator).toBe('function')
    expect(() => natsAuthOptions({ nkeyFile: join(dir, 'bad.nk') })).toThrow(/user seed/)
    expect(() => natsAuthOptions({ nkeyFile: join(dir, 'missing.nk') })).toThrow(/ENOENT/)
  })

  it('writes a server configuration with each role\'s permissions', () => {
    const conf = natsAuthConfig({ agents: [{ user: 'a', password: 'x' }], deployers: [{ user: 'd', password: 'y' }], invokers: [{ nkey: 'UABC' }] })
    expect(conf).toContain('jetstream: enabled')
    expect(conf).toMatch(/user: "a".*\n.*"\$KV\.fnmesh_ratelimits\.>"/)
    expect(conf).toMatch(/nkey: "UABC".*\n.*publish: \{ allow: \["fnmesh\.invoke\.\*","fnmesh\.api\.nodes"\] \}/)
    // agents may not write the registry or the keys, nor use the JetStream API wholesale
    const agentPublish = /user: "a".*\n.*publish: \{ allow: (\[.*?\]) \}/.exec(conf)?.[1] ?? ''
    expect(agentPublish).toContain('$KV.fnmesh_ratelimits.>')
    expect(agentPublish).not.toContain('$KV.fnmesh_functions')
    expect(agentPublish).not.toContain('$KV.fnmesh_apikeys')
    expect(agentPublish).not.toContain('$O.fnmesh_bundles')
    expect(agentPublish).not.toContain('$JS.API.>')
  })

  it('stores API keys as their SHA-256', () => {
    expect(hashApiKey('fnm_abc')).toMatch(/^[0-9a-f]{64}$/)
    expect(hashApiKey('fnm_abc')).not.toBe(hashApiKey('fnm_abd'))
  })
})
