/**
 * NATS credentials and TLS for the SDK, the CLI and the agent: user and password, a token, an
 * nkey seed file, a creds file (user JWT + seed), and TLS files. Also read from the environment
 * (FNMESH_NATS_USER, _PASSWORD, _TOKEN, _NKEY, _CREDS, _CA, _CERT, _KEY), so every `fnmesh`
 * command and agent picks them up the same way.
 */
import { readFileSync } from 'node:fs'
import { credsAuthenticator, nkeyAuthenticator, type NodeConnectionOptions } from '@nats-io/transport-node'
import { UsageError } from '../proto/errors.js'

export interface NatsAuth {
  user?: string
  password?: string
  token?: string
  /** file holding an nkey seed (SU...) */
  nkeyFile?: string
  /** a .creds file (user JWT and nkey seed, as nsc writes it) */
  credsFile?: string
  /** TLS: CA bundle to trust the server, and a client certificate and key for mutual TLS */
  caFile?: string
  certFile?: string
  keyFile?: string
  /**
   * Prefix of this client's reply subjects (nats.js `inboxPrefix`), e.g. `_INBOX_invokers`: with a
   * server config that lets each role subscribe only to its own prefix, no role reads another's
   * replies. @default "_INBOX"
   */
  inboxPrefix?: string
}

const ENV: Record<keyof NatsAuth, string> = {
  user: 'FNMESH_NATS_USER',
  password: 'FNMESH_NATS_PASSWORD',
  token: 'FNMESH_NATS_TOKEN',
  nkeyFile: 'FNMESH_NATS_NKEY',
  credsFile: 'FNMESH_NATS_CREDS',
  caFile: 'FNMESH_NATS_CA',
  certFile: 'FNMESH_NATS_CERT',
  keyFile: 'FNMESH_NATS_KEY',
  inboxPrefix: 'FNMESH_INBOX_PREFIX'
}

/** `given` with whatever it leaves out taken from the environment */
export function natsAuthFromEnv (given: NatsAuth = {}, env: NodeJS.ProcessEnv = process.env): NatsAuth {
  const out: NatsAuth = {}
  for (const k of Object.keys(ENV) as Array<keyof NatsAuth>) {
    const v = given[k] ?? env[ENV[k]]
    if (v != null && v !== '') out[k] = v
  }
  return out
}

function read (what: string, path: string): Uint8Array {
  try {
    return readFileSync(path)
  } catch (err: any) {
    throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Cannot read the NATS ${what} "${path}": ${String(err?.code ?? err?.message)}`)
  }
}

/** Connection options for `auth`; files are read now, so a wrong path fails before connecting */
export function natsAuthOptions (auth: NatsAuth): Partial<NodeConnectionOptions> {
  const kinds = [auth.user != null, auth.token != null, auth.nkeyFile != null, auth.credsFile != null].filter(Boolean).length
  if (kinds > 1) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', 'Give one kind of NATS credentials: user and password, a token, an nkey seed or a creds file')
  if ((auth.certFile == null) !== (auth.keyFile == null)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', 'A NATS client certificate needs its key, and a key its certificate')
  const out: Partial<NodeConnectionOptions> = {}
  if (auth.inboxPrefix != null) {
    if (!/^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$/.test(auth.inboxPrefix)) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `Inbox prefix "${auth.inboxPrefix}" is invalid: use NATS subject tokens without wildcards, e.g. _INBOX_agents`)
    out.inboxPrefix = auth.inboxPrefix
  }
  if (auth.user != null) { out.user = auth.user; out.pass = auth.password ?? '' }
  if (auth.token != null) out.token = auth.token
  if (auth.nkeyFile != null) {
    const seed = new TextDecoder().decode(read('nkey seed', auth.nkeyFile)).trim()
    if (!seed.startsWith('SU')) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `The NATS nkey file "${auth.nkeyFile}" does not hold a user seed (SU...)`)
    out.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed))
  }
  if (auth.credsFile != null) out.authenticator = credsAuthenticator(read('creds file', auth.credsFile))
  if (auth.caFile != null || auth.certFile != null) {
    out.tls = {
      ...(auth.caFile != null ? { caFile: auth.caFile } : {}),
      ...(auth.certFile != null ? { certFile: auth.certFile, keyFile: auth.keyFile } : {})
    }
  }
  return out
}
