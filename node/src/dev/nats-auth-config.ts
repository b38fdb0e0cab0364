/**
 * A nats-server configuration (accounts and users with permissions) that gives agents,
 * deployers and invokers only what each needs. The README shows its output; the NATS auth
 * integration test runs the mesh against it. nats-server 2.9 syntax.
 *
 * - agents: the fnmesh.> subjects (invocations, exec, discovery, logs, events), JetStream's API
 *   and acks, and writes to the rate limit and schedule buckets only: an agent cannot deploy
 *   code or create API keys.
 * - deployers: JetStream's API, writes to the function, bundle and API key buckets, the control
 *   API (nodes, usage). They take no invocations and cannot reach an agent's exec subject.
 * - invokers: request fnmesh.invoke.<function> and fnmesh.api.nodes, nothing else: no registry
 *   (function environments hold secrets), no keys, no exec subjects.
 */

export interface NatsUser {
  /** user name and password, or an nkey public key (U...) */
  user?: string
  password?: string
  nkey?: string
}

export interface NatsRoles {
  agents: NatsUser[]
  deployers: NatsUser[]
  invokers: NatsUser[]
  /** @default "FNMESH" */
  account?: string
}

export const ROLE_PERMISSIONS = {
  agent: {
    publish: ['fnmesh.>', '_INBOX.>', '$JS.API.>', '$JS.ACK.>', '$JS.FC.>', '$KV.fnmesh_ratelimits.>', '$KV.fnmesh_schedules.>'],
    subscribe: ['fnmesh.>', '_INBOX.>']
  },
  deployer: {
    publish: ['$JS.API.>', '$JS.FC.>', '$KV.fnmesh_functions.>', '$KV.fnmesh_apikeys.>', '$O.fnmesh_bundles.>', 'fnmesh.api.>', '_INBOX.>'],
    subscribe: ['_INBOX.>']
  },
  invoker: {
    publish: ['fnmesh.invoke.*', 'fnmesh.api.nodes'],
    subscribe: ['_INBOX.>']
  }
} as const

function userBlock (u: NatsUser, role: keyof typeof ROLE_PERMISSIONS): string {
  const p = ROLE_PERMISSIONS[role]
  const who = u.nkey != null ? `nkey: ${JSON.stringify(u.nkey)}` : `user: ${JSON.stringify(u.user)}, password: ${JSON.stringify(u.password)}`
  return `      { ${who}, permissions: {\n          publish: { allow: ${JSON.stringify(p.publish)} }\n          subscribe: { allow: ${JSON.stringify(p.subscribe)} } } }`
}

/** The `accounts { ... }` block for these users */
export function natsAuthConfig (roles: NatsRoles): string {
  const users = [
    ...roles.agents.map(u => userBlock(u, 'agent')),
    ...roles.deployers.map(u => userBlock(u, 'deployer')),
    ...roles.invokers.map(u => userBlock(u, 'invoker'))
  ]
  return `accounts {\n  ${roles.account ?? 'FNMESH'} {\n    jetstream: enabled\n    users: [\n${users.join('\n')}\n    ]\n  }\n}\n`
}
