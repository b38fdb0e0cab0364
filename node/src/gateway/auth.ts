/**
 * Auth of one route: none, an API key (x-api-key, looked up by its SHA-256 in the keys this
 * agent watches in KV `fnmesh_apikeys`), or a JWT (Authorization: Bearer, verified with jose:
 * HS256 with the route's secret, RS256/ES256 with its JWKS; exp, nbf, aud and iss checked).
 * Missing or unverifiable credentials are 401, an unknown or revoked API key is 403.
 */
import type { KV } from '@nats-io/kv'
import type { NatsConnection } from '@nats-io/transport-node'
import { createLocalJWKSet, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { decode, type ApiKey, type HttpRoute } from '../../../proto/codec.js'
import { AuthError } from '../../../proto/errors.js'
import { hashApiKey } from '../../../core/apikeys.js'
import { followKv, openBucket } from '../../../core/kv-follow.js'
import { APIKEYS_BUCKET } from '../../../proto/subjects.js'
import type { Logger } from '../logger.js'

/** What the function sees in requestContext.authorizer */
export type Authorizer = { jwt: { claims: JWTPayload, scopes: string[] | null } } | { apiKey: { name: string } }

export interface AuthResult {
  authorizer?: Authorizer
  /** the API key used, for its rate limit */
  key?: ApiKey
}

/** The API keys of the mesh, kept current by a KV watch */
export class KeyStore {
  private readonly byHash = new Map<string, ApiKey>()
  private readonly hashOf = new Map<string, string>()
  private stopWatch: (() => void) | undefined

  constructor (private readonly logger: Logger) {}

  async start (nc: NatsConnection): Promise<void> {
    if (this.stopWatch != null) return
    // Followed without a JetStream consumer (agents may not create any: core/kv-follow.ts).
    const kv: KV = await openBucket(nc, APIKEYS_BUCKET)
    this.stopWatch = await followKv(nc, kv, APIKEYS_BUCKET, (key, e) => {
      const old = this.hashOf.get(key)
      if (old != null) { this.byHash.delete(old); this.hashOf.delete(key) }
      if (e == null) return
      try {
        const k = decode('ApiKey', e.value)
        this.byHash.set(k.sha256, k)
        this.hashOf.set(key, k.sha256)
      } catch (err: any) {
        this.logger.warn({ key, err: String(err?.message) }, 'skipped an API key that does not decode')
      }
    }, { relistMs: 10_000 })
  }

  stop (): void {
    this.stopWatch?.()
    this.stopWatch = undefined
  }

  lookup (presented: string): ApiKey | undefined {
    return this.byHash.get(hashApiKey(presented))
  }

  get size (): number {
    return this.byHash.size
  }
}

interface Verifier { key: Uint8Array | JWTVerifyGetKey, audience: string[], issuer?: string, algorithms: string[] }

export class Authenticator {
  private readonly verifiers = new WeakMap<HttpRoute, Verifier>()

  constructor (private readonly keys: KeyStore) {}

  /** Checks the request's credentials against `route`; throws AuthError (401/403) */
  async check (route: HttpRoute, headers: Record<string, string | string[] | undefined>): Promise<AuthResult> {
    if (route.auth === 'apikey') return this.apiKey(headers['x-api-key'])
    if (route.auth === 'jwt') return await this.jwt(route, headers.authorization)
    if (route.auth === 'none' || route.auth === '') return {}
    throw new AuthError('FNMESH_ERR_UNAUTHORIZED', `Route auth "${route.auth}" is unknown to this agent`)
  }

  private apiKey (header: string | string[] | undefined): AuthResult {
    const presented = Array.isArray(header) ? header[0] : header
    if (presented == null || presented === '') throw new AuthError('FNMESH_ERR_UNAUTHORIZED', 'This route needs an API key in the x-api-key header')
    const key = presented.length <= 256 ? this.keys.lookup(presented) : undefined
    if (key == null) throw new AuthError('FNMESH_ERR_FORBIDDEN', 'The API key is not valid (unknown or revoked)')
    return { authorizer: { apiKey: { name: key.name } }, key }
  }

  private async jwt (route: HttpRoute, header: string | string[] | undefined): Promise<AuthResult> {
    const value = Array.isArray(header) ? header[0] : header
    const m = value != null ? /^Bearer\s+(\S+)\s*$/i.exec(value) : null
    if (m == null) throw new AuthError('FNMESH_ERR_UNAUTHORIZED', 'This route needs a JWT in the Authorization header ("Bearer <token>")')
    const v = this.verifier(route)
    let payload: JWTPayload
    try {
      ({ payload } = await jwtVerify(m[1], v.key as Uint8Array, { audience: v.audience, issuer: v.issuer, algorithms: v.algorithms, clockTolerance: 5 }))
    } catch (err: any) {
      throw new AuthError('FNMESH_ERR_UNAUTHORIZED', `The JWT is not valid: ${jwtReason(err)}`)
    }
    const scope = typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : null
    return { authorizer: { jwt: { claims: payload, scopes: scope } } }
  }

  private verifier (route: HttpRoute): Verifier {
    let v = this.verifiers.get(route)
    if (v != null) return v
    const jwt = route.jwt
    if (jwt == null) throw new AuthError('FNMESH_ERR_UNAUTHORIZED', 'This route has auth "jwt" but no JWT settings')
    const key = jwt.secret.byteLength > 0 ? jwt.secret : createLocalJWKSet(JSON.parse(jwt.jwks))
    v = { key, audience: [...jwt.audience], issuer: jwt.issuer !== '' ? jwt.issuer : undefined, algorithms: jwt.algorithms.length > 0 ? [...jwt.algorithms] : ['HS256', 'RS256', 'ES256'] }
    this.verifiers.set(route, v)
    return v
  }
}

/** jose's error -> a short reason for the client */
function jwtReason (err: any): string {
  switch (err?.code) {
    case 'ERR_JWT_EXPIRED': return 'it has expired'
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': return `claim "${String(err?.claim)}" check failed (${String(err?.reason)})`
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED': return 'the signature does not verify'
    case 'ERR_JOSE_ALG_NOT_ALLOWED': return 'its algorithm is not accepted on this route'
    case 'ERR_JWKS_NO_MATCHING_KEY': return 'no key of the route\'s JWKS matches it'
    case 'ERR_JWS_INVALID': case 'ERR_JWT_INVALID': return 'it is malformed'
    default: return String(err?.code ?? 'it cannot be verified')
  }
}
