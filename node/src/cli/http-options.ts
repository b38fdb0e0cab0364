/**
 * Command line options of issue 7: NATS credentials (global: before or after any command), and
 * the HTTP route, auth, schema, CORS, rate limit and signing flags of `fnmesh deploy`.
 */
import { readFile } from 'node:fs/promises'
import { Option, type Command } from 'commander'
import { UsageError } from '../../../proto/errors.js'
import type { DeployOptions } from '../../../core/deploy-options.js'
import type { AuthMode } from '../../../core/http-routes.js'
import type { NatsAuth } from '../../../core/nats-auth.js'
import { readable } from './options.js'

const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

/** --nats-user, --nats-password, --nats-token, --nats-nkey, --nats-creds, --nats-ca, --nats-cert, --nats-key */
export function addNatsAuthOptions (program: Command): void {
  program
    .option('--nats-user <user>', 'NATS user (env FNMESH_NATS_USER; password in --nats-password or FNMESH_NATS_PASSWORD)')
    .option('--nats-password <password>', 'NATS password (env FNMESH_NATS_PASSWORD)')
    .option('--nats-token <token>', 'NATS token (env FNMESH_NATS_TOKEN)')
    .option('--nats-nkey <file>', 'file holding a NATS nkey user seed (env FNMESH_NATS_NKEY)')
    .option('--nats-creds <file>', 'NATS .creds file: user JWT and seed (env FNMESH_NATS_CREDS)')
    .option('--nats-ca <file>', 'CA certificates to trust the NATS server\'s TLS certificate (env FNMESH_NATS_CA)')
    .option('--nats-cert <file>', 'client certificate for mutual TLS (env FNMESH_NATS_CERT)')
    .option('--nats-key <file>', 'key of the client certificate (env FNMESH_NATS_KEY)')
    .option('--inbox-prefix <prefix>', 'prefix of this client\'s NATS reply subjects, e.g. _INBOX_agents (env FNMESH_INBOX_PREFIX)')
}

/** The program's options -> NatsAuth (the SDK fills in the rest from FNMESH_NATS_*) */
export function natsAuthOf (o: Record<string, string | undefined>): NatsAuth {
  return { user: o.natsUser, password: o.natsPassword, token: o.natsToken, nkeyFile: o.natsNkey, credsFile: o.natsCreds, caFile: o.natsCa, certFile: o.natsCert, keyFile: o.natsKey, inboxPrefix: o.inboxPrefix }
}

const positive = (name: string) => (value: string): number => {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new UsageError('FNMESH_ERR_BAD_USAGE', `Option ${name} expects a whole number of at least 1, got "${value}"`)
  return n
}

/** Adds the gateway and signing flags to `fnmesh deploy` */
export function deployHttpOptions (cmd: Command): Command {
  return cmd
    .option('--route <route>', 'HTTP route served by every agent\'s gateway, e.g. \'GET /orders/{id}\', \'ANY /files/{proxy+}\' (repeatable)', collect)
    .addOption(new Option('--auth <mode>', 'auth of the routes').choices(['none', 'apikey', 'jwt']))
    .option('--schema <file.json>', 'JSON Schema the JSON body must match before the function runs (400 otherwise)')
    .option('--jwt-secret <file>', 'auth jwt: file holding the HS256 secret (at least 32 bytes)')
    .option('--jwt-jwks <file>', 'auth jwt: JWKS file with the public keys of RS256 / ES256 tokens')
    .option('--jwt-audience <aud>', 'auth jwt: accepted audience (repeatable; at least one)', collect)
    .option('--jwt-issuer <iss>', 'auth jwt: required issuer')
    .option('--cors <origin>', 'allow cross-origin requests from this origin, or * (repeatable)', collect)
    .option('--rate-limit <n>', 'mesh-wide requests per second of each route', positive('--rate-limit'))
    .option('--burst <n>', 'requests admitted at once after a quiet spell (default: the rate limit)', positive('--burst'))
    .option('--sign <key.pem>', 'sign the deploy with this deployer key (env FNMESH_DEPLOYER_KEY)', readable('--sign'))
}

async function readText (what: string, path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err: any) {
    throw new UsageError('FNMESH_ERR_BAD_USAGE', `Cannot read the ${what} "${path}": ${String(err?.code ?? err?.message)}`)
  }
}

/** Deploy flags -> the DeployOptions fields they set */
export async function httpDeployFields (opts: Record<string, any>): Promise<Partial<DeployOptions>> {
  const out: Partial<DeployOptions> = {}
  if (opts.route != null) out.routes = opts.route
  if (opts.auth != null) out.auth = opts.auth as AuthMode
  if (opts.schema != null) out.schema = await readText('JSON Schema', opts.schema)
  if (opts.jwtSecret != null || opts.jwtJwks != null || opts.jwtAudience != null) {
    out.jwt = {
      secret: opts.jwtSecret != null ? (await readText('JWT secret', opts.jwtSecret)).trim() : undefined,
      jwks: opts.jwtJwks != null ? await readText('JWKS', opts.jwtJwks) : undefined,
      audience: opts.jwtAudience ?? [],
      issuer: opts.jwtIssuer
    }
  }
  if (opts.cors != null) out.cors = { origins: opts.cors }
  if (opts.rateLimit != null) out.rateLimit = { perSecond: opts.rateLimit, burst: opts.burst }
  else if (opts.burst != null) throw new UsageError('FNMESH_ERR_BAD_USAGE', 'Option --burst needs --rate-limit')
  const sign = opts.sign ?? process.env.FNMESH_DEPLOYER_KEY
  if (sign != null && sign !== '') out.signingKey = sign
  if (out.routes == null && (out.auth != null || out.schema != null || out.jwt != null || out.cors != null || out.rateLimit != null)) {
    throw new UsageError('FNMESH_ERR_BAD_USAGE', 'Options --auth, --schema, --jwt-*, --cors and --rate-limit apply to HTTP routes: give at least one --route')
  }
  return out
}
