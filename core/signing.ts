/**
 * Signed deploys: a deployer's ed25519 key signs the exact bytes of the function spec it stores
 * (which hold the bundle's SHA-256), and agents with a trust list run only specs signed by a key
 * on it. Keys come from node:crypto; nothing here is hand-written cryptography.
 *
 * Stored value = S || T, where S is the spec encoded without its signature and T the encoding of
 * a spec holding only `signature`. Protobuf concatenation is a merge, so the value decodes as one
 * spec; a verifier re-encodes T from the decoded signature, checks the value ends with it, and
 * verifies the signature over the bytes S before it, exactly as received.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { encode, type DeploySignature } from '../proto/codec.js'
import { UsageError } from '../proto/errors.js'

/** Domain separation: a signature over a spec is never valid for anything else (an alias included) */
const SIGNED_PREFIX = Buffer.from('fnmesh-deploy-v1\n', 'utf8')
const ALIAS_PREFIX = Buffer.from('fnmesh-alias-v1\n', 'utf8')

/** What a signature covers: a function spec (FunctionSpec) or an alias (FunctionAlias, issue 15) */
export type SignedKind = 'spec' | 'alias'

function prefixOf (kind: SignedKind): Buffer {
  return kind === 'alias' ? ALIAS_PREFIX : SIGNED_PREFIX
}

/** T: the encoding of a value holding only its signature (field 31 in both messages) */
function signatureTail (kind: SignedKind, signature: DeploySignature): Uint8Array {
  return kind === 'alias' ? encode('FunctionAlias', { signature }) : encode('FunctionSpec', { signature })
}
const PUBLIC_PREFIX = 'ed25519:'

export interface DeployerKey {
  privateKey: KeyObject
  /** "ed25519:<base64url of the raw 32-byte key>": what goes in an agent's trust list */
  publicKey: string
}

/** A new deployer key pair; the private key as PKCS#8 PEM */
export function generateDeployerKey (): { privatePem: string, publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicKey: publicKeyText(publicKey) }
}

/** Reads a deployer's private key: PEM text, or a path to a PEM file */
export async function loadDeployerKey (pemOrPath: string | KeyObject): Promise<DeployerKey> {
  let key: KeyObject
  if (typeof pemOrPath !== 'string') key = pemOrPath
  else {
    const pem = pemOrPath.includes('-----BEGIN') ? pemOrPath : await readFile(pemOrPath, 'utf8').catch((err: any) => { throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot read the deployer key "${pemOrPath}": ${String(err?.code ?? err?.message)}`) })
    try { key = createPrivateKey(pem) } catch (err: any) { throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `The deployer key is not a PEM private key: ${String(err?.message)}`) }
  }
  if (key.asymmetricKeyType !== 'ed25519' || key.type !== 'private') throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', 'The deployer key must be an ed25519 private key (make one with "fnmesh keys deployer create")')
  return { privateKey: key, publicKey: publicKeyText(createPublicKey(key)) }
}

export function publicKeyText (key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' }) as { x: string }
  return PUBLIC_PREFIX + jwk.x
}

/** "ed25519:<base64url>" -> the raw 32 bytes, or an error saying what is wrong */
export function parsePublicKey (text: string): Uint8Array {
  const t = text.trim()
  const raw = t.startsWith(PUBLIC_PREFIX) ? Buffer.from(t.slice(PUBLIC_PREFIX.length), 'base64url') : Buffer.alloc(0)
  if (raw.byteLength !== 32) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `"${t.slice(0, 80)}" is not a deployer public key: expected "ed25519:" and 43 base64url characters`)
  return raw
}

export function publicKeyFromRaw (raw: Uint8Array): string {
  return PUBLIC_PREFIX + Buffer.from(raw).toString('base64url')
}

/** Signs the unsigned spec bytes S and returns S || T, the value to store */
export function signSpecBytes (key: DeployerKey, unsigned: Uint8Array, kind: SignedKind = 'spec'): Uint8Array {
  const signature: DeploySignature = {
    publicKey: parsePublicKey(key.publicKey),
    signature: sign(null, Buffer.concat([prefixOf(kind), unsigned]), key.privateKey)
  }
  return Buffer.concat([unsigned, signatureTail(kind, signature)])
}

export type SignatureCheck =
  | { ok: true, publicKey: string }
  | { ok: false, reason: 'unsigned' | 'untrusted' | 'invalid', publicKey?: string }

/**
 * Checks the stored value `raw` of a spec whose decoded signature is `signature` against the
 * trusted public keys ("ed25519:..." texts).
 */
export function checkSpecSignature (raw: Uint8Array | undefined, signature: DeploySignature | null | undefined, trusted: ReadonlySet<string>, kind: SignedKind = 'spec'): SignatureCheck {
  if (raw == null || signature == null || signature.publicKey.byteLength === 0) return { ok: false, reason: 'unsigned' }
  if (signature.publicKey.byteLength !== 32 || signature.signature.byteLength !== 64) return { ok: false, reason: 'invalid' }
  const publicKey = publicKeyFromRaw(signature.publicKey)
  if (!trusted.has(publicKey)) return { ok: false, reason: 'untrusted', publicKey }
  const tail = signatureTail(kind, { publicKey: signature.publicKey, signature: signature.signature })
  if (raw.byteLength < tail.byteLength || !Buffer.from(raw.subarray(raw.byteLength - tail.byteLength)).equals(tail)) return { ok: false, reason: 'invalid', publicKey }
  const unsigned = raw.subarray(0, raw.byteLength - tail.byteLength)
  let good = false
  try {
    const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(signature.publicKey).toString('base64url') }, format: 'jwk' })
    good = verify(null, Buffer.concat([prefixOf(kind), unsigned]), key, signature.signature)
  } catch {
    good = false
  }
  return good ? { ok: true, publicKey } : { ok: false, reason: 'invalid', publicKey }
}
