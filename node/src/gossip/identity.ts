/**
 * The node's libp2p key, kept in the data folder so the node id survives restarts
 * (meter records and peers refer to it).
 */
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { InternalError } from '../../../proto/errors.js'

export async function loadOrCreateKey (dataDir: string): Promise<PrivateKey> {
  const file = join(dataDir, 'node.key')
  let bytes: Uint8Array | undefined
  try {
    bytes = await readFile(file)
  } catch (err: any) {
    if (err.code !== 'ENOENT') throw new InternalError('FNMESH_ERR_INTERNAL', `Cannot read the node key at "${file}": ${String(err.message)}`, { cause: err })
  }
  if (bytes != null) {
    try {
      return privateKeyFromProtobuf(bytes) as unknown as PrivateKey
    } catch (err) {
      throw new InternalError('FNMESH_ERR_INTERNAL', `Node key at "${file}" is corrupt: move it away to start this node with a new id`, { cause: err })
    }
  }
  // @libp2p/crypto 5.1 is typed against @libp2p/interface 3; the keys are the same at run time.
  const key = await generateKeyPair('Ed25519') as unknown as PrivateKey
  await mkdir(dataDir, { recursive: true })
  await writeFile(`${file}.tmp`, privateKeyToProtobuf(key as never), { mode: 0o600 })
  await rename(`${file}.tmp`, file)
  return key
}
