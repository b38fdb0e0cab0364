import { mkdtemp, writeFile, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { decode, encode } from '../../proto/codec.js'
import { FnmeshError } from '../../proto/errors.js'
import { checkSpecSignature, generateDeployerKey, loadDeployerKey, parsePublicKey, signSpecBytes } from '../../core/signing.js'
import { TrustList } from '../../node/src/registry/trust.js'
import type { StoredSpec } from '../../core/registry.js'

const SPEC = { name: 'pay', version: 3, handler: 'index.handler', memoryMb: 128, timeoutMs: 3000, bundleObject: 'sha256-ab', bundleSha256: 'ab'.repeat(32), bundleSize: 100, env: { A: '1', B: '2' }, routes: [{ method: 'POST', path: '/pay', auth: 'apikey' }] }

const stored = (raw: Uint8Array): StoredSpec => {
  const s = decode('FunctionSpec', raw)
  return { ...(s as any), routes: s.routes, signature: s.signature, raw }
}

describe('signed deploys', () => {
  const a = generateDeployerKey()
  const b = generateDeployerKey()

  it('verifies a spec signed by a trusted key over the exact stored bytes', async () => {
    const key = await loadDeployerKey(a.privatePem)
    expect(key.publicKey).toBe(a.publicKey)
    const raw = signSpecBytes(key, encode('FunctionSpec', SPEC))
    const s = decode('FunctionSpec', raw)
    expect(s.name).toBe('pay')
    expect(s.signature.publicKey.byteLength).toBe(32)
    expect(checkSpecSignature(raw, s.signature, new Set([a.publicKey]))).toEqual({ ok: true, publicKey: a.publicKey })
  })

  it('refuses an unsigned spec, one signed by an untrusted key, and any change after signing', async () => {
    const unsigned = encode('FunctionSpec', SPEC)
    expect(checkSpecSignature(unsigned, decode('FunctionSpec', unsigned).signature, new Set([a.publicKey]))).toMatchObject({ ok: false, reason: 'unsigned' })
    const byB = signSpecBytes(await loadDeployerKey(b.privatePem), unsigned)
    expect(checkSpecSignature(byB, decode('FunctionSpec', byB).signature, new Set([a.publicKey]))).toMatchObject({ ok: false, reason: 'untrusted' })
    const raw = signSpecBytes(await loadDeployerKey(a.privatePem), unsigned)
    const sig = decode('FunctionSpec', raw).signature
    // a different bundle digest with the old signature
    const swapped = Buffer.concat([encode('FunctionSpec', { ...SPEC, bundleSha256: 'cd'.repeat(32) }), encode('FunctionSpec', { signature: sig })])
    expect(checkSpecSignature(swapped, decode('FunctionSpec', swapped).signature, new Set([a.publicKey]))).toMatchObject({ ok: false, reason: 'invalid' })
    // a field appended after the signature (protobuf merges it over the signed value)
    const appended = Buffer.concat([raw, encode('FunctionSpec', { egress: true })])
    expect(checkSpecSignature(appended, decode('FunctionSpec', appended).signature, new Set([a.publicKey]))).toMatchObject({ ok: false, reason: 'invalid' })
    // one flipped byte inside the signed part
    const flipped = Buffer.from(raw)
    flipped[5] ^= 1
    expect(checkSpecSignature(flipped, decode('FunctionSpec', raw).signature, new Set([a.publicKey]))).toMatchObject({ ok: false, reason: 'invalid' })
  })

  it('loads trust lists from files and folders, and the agent\'s check throws the right codes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fnmesh-trust-'))
    await mkdir(join(dir, 'keys'))
    await writeFile(join(dir, 'keys', 'alice.pub'), `# alice\n${a.publicKey} alice@laptop\n`)
    await writeFile(join(dir, 'keys', 'ignored.txt'), b.publicKey)
    const trust = await TrustList.load([join(dir, 'keys')])
    expect([...trust.keys]).toEqual([a.publicKey])
    await expect(TrustList.load([join(dir, 'missing')])).rejects.toThrow(/does not exist/)
    await writeFile(join(dir, 'empty'), '# nothing\n')
    await expect(TrustList.load([join(dir, 'empty')])).rejects.toThrow(/No deployer public key/)
    const code = (s: StoredSpec): string => { try { trust.check(s); return 'ok' } catch (e) { return (e as FnmeshError).code } }
    const unsigned = encode('FunctionSpec', SPEC)
    expect(code(stored(signSpecBytes(await loadDeployerKey(a.privatePem), unsigned)))).toBe('ok')
    expect(code(stored(unsigned))).toBe('FNMESH_ERR_UNSIGNED_DEPLOY')
    expect(code(stored(signSpecBytes(await loadDeployerKey(b.privatePem), unsigned)))).toBe('FNMESH_ERR_UNSIGNED_DEPLOY')
    const raw = signSpecBytes(await loadDeployerKey(a.privatePem), unsigned)
    const tampered = Buffer.concat([encode('FunctionSpec', { ...SPEC, env: { A: 'evil' } }), raw.subarray(unsigned.byteLength)])
    expect(code(stored(tampered))).toBe('FNMESH_ERR_SIGNATURE_INVALID')
  })

  it('refuses malformed public keys and private keys of another kind', async () => {
    expect(() => parsePublicKey('ed25519:short')).toThrow(/not a deployer public key/)
    expect(() => parsePublicKey('ssh-ed25519 AAAA')).toThrow(FnmeshError)
    const { generateKeyPairSync } = await import('node:crypto')
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
    await expect(loadDeployerKey(rsa)).rejects.toThrow(/ed25519/)
  })
})
