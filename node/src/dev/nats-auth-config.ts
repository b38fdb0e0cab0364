/**
 * A nats-server configuration (accounts and users with permissions) that gives admins, agents,
 * deployers and invokers only what each needs, and holds against a hostile holder of each role.
 * The README shows its output; the NATS auth and escalation integration tests run the mesh
 * against it. nats-server 2.9 syntax.
 *
 * Why JetStream API subjects are listed one by one: whoever may create or update a stream can
 * make it republish, mirror or source into another stream's subjects, and whoever may create a
 * consumer can point a push consumer's deliver subject at them: either writes into the function
 * registry (`$KV.fnmesh_functions`, `$O.fnmesh_bundles`) past the publish permissions. So:
 * - admins: `$JS.API.>`; they run `fnmesh init`, which creates every stream, bucket and object
 *   store (and repairs consumers). Nobody else creates streams.
 * - agents: read the registry (stream info, direct gets, a core subscription on
 *   `$KV.fnmesh_functions.>` as a change hint) and their own buckets; pull from the existing
 *   event consumers and ack them; write only the rate limit and schedule buckets and fnmesh.>
 *   subjects, plus the subjects deployed functions publish on (`publishSubjects`: publish
 *   bindings and destinations), and purge the settled prefix of the events stream (what any of them could
 *   ack unrun anyway). No stream or consumer creation, update or delete, no other purge: they cannot deploy code,
 *   purge specs or create API keys. They answer requests through `allow_responses`.
 * - deployers: write the function, bundle and API key buckets (so also delete and purge them),
 *   make the consumers of their functions' triggers, add trigger subjects to FNMESH_EVENTS, read
 *   logs and dead letters, and call the control API. They take no invocations.
 * - invokers: request fnmesh.invoke.<function> and fnmesh.api.nodes (and publish events on the
 *   subjects given), nothing else: no registry (function environments hold secrets), no keys,
 *   no exec subjects. They answer the chunks of a streamed reply (an ack each) through
 *   `allow_responses`; each ack carries their inbox as its reply subject, which renews the
 *   agent's right to answer there, so a long stream never runs out of agent responses.
 * Each role (or user) subscribes only to its own inbox prefix, so none reads another's replies
 * (clients say theirs with --inbox-prefix or FNMESH_INBOX_PREFIX).
 */
import { APIKEYS_BUCKET, BUNDLES_BUCKET, FUNCTIONS_BUCKET, LOGS_STREAM, RATELIMITS_BUCKET } from '../../../proto/subjects.js'
import { DLQ_STREAM, EVENTS_STREAM, SCHEDULES_BUCKET } from '../../../core/events.js'

export interface NatsUser {
  /** user name and password, or an nkey public key (U...) */
  user?: string
  password?: string
  nkey?: string
  /** this user's own inbox prefix (its client passes the same with --inbox-prefix). @default the role's */
  inboxPrefix?: string
}

export type Role = 'admin' | 'agent' | 'deployer' | 'invoker'

/** Default inbox prefix per role */
export const ROLE_INBOX: Record<Role, string> = {
  admin: '_INBOX_admins',
  agent: '_INBOX_agents',
  deployer: '_INBOX_deployers',
  invoker: '_INBOX_invokers'
}

export interface RoleOptions {
  /**
   * Streams of KV or object buckets that functions are triggered by (`KV_<bucket>`,
   * `OBJ_<bucket>`): agents may pull and ack their consumers, deployers create them.
   * @default []
   */
  triggerStreams?: string[]
  /** Subjects deployers and invokers may publish events on (the functions' `--on` subjects). @default [] */
  eventSubjects?: string[]
  /**
   * Buckets that deployed functions declare as bindings (issue 17), as "kv:BUCKET" or
   * "object:BUCKET", with ":ro" when every binding to it is read-only: agents get data-plane
   * rights on exactly these (stream info, direct gets, and unless ":ro" writes on `$KV.B.>` /
   * `$O.B.>` and, for object stores, a purge of their own stream, which replacing or deleting an
   * object needs); deployers may create exactly these streams (`deploy` makes a missing bucket).
   * Never a consumer: agents list keys and objects from stream info. @default []
   */
  bindingBuckets?: string[]
  /**
   * Subjects deployed functions publish on through their agent (issue 17): the patterns of their
   * `publish:` bindings and the subjects of their `--on-success` / `--on-failure` destinations.
   * Agents may publish exactly these (JetStream answers on their own inbox). Invoke bindings
   * need nothing more: they go through the agent's router like any invocation. @default []
   */
  publishSubjects?: string[]
}

/** The data-plane rights of agents and the create right of deployers on declared binding buckets */
export function bindingRights (buckets: readonly string[]): { agent: string[], deployer: string[] } {
  const agent: string[] = []
  const deployer: string[] = []
  for (const text of buckets) {
    const [kind, bucket, ro] = text.split(':')
    if ((kind !== 'kv' && kind !== 'object') || !/^[A-Za-z0-9_-]{1,64}$/.test(bucket ?? '') || /^fnmesh_/i.test(bucket) || (ro !== undefined && ro !== 'ro')) {
      throw new Error(`Binding bucket "${text}" is invalid: expected kv:BUCKET or object:BUCKET, optionally :ro, not one of the mesh's own`)
    }
    const stream = `${kind === 'kv' ? 'KV' : 'OBJ'}_${bucket}`
    deployer.push(`${API}.STREAM.CREATE.${stream}`)
    agent.push(`${API}.STREAM.INFO.${stream}`, `${API}.DIRECT.GET.${stream}`, `${API}.DIRECT.GET.${stream}.>`)
    if (kind === 'object') agent.push(`${API}.STREAM.MSG.GET.${stream}`)
    if (ro === 'ro') continue
    if (kind === 'kv') agent.push(`$KV.${bucket}.>`)
    else agent.push(`$O.${bucket}.>`, `${API}.STREAM.PURGE.${stream}`)
  }
  return { agent, deployer }
}

export interface NatsRoles extends RoleOptions {
  /** run `fnmesh init`; hold `$JS.API.>`. @default [] */
  admins?: NatsUser[]
  agents: NatsUser[]
  deployers: NatsUser[]
  invokers: NatsUser[]
  /** @default "FNMESH" */
  account?: string
}

export interface RolePermissions {
  publish: string[]
  subscribe: string[]
  /** answers to requests received: at most `max` messages within `expires` */
  allowResponses?: { max: number, expires: string }
}

const KV_FUNCTIONS = `KV_${FUNCTIONS_BUCKET}`
const OBJ_BUNDLES = `OBJ_${BUNDLES_BUCKET}`
const KV_APIKEYS = `KV_${APIKEYS_BUCKET}`
const KV_RATELIMITS = `KV_${RATELIMITS_BUCKET}`
const KV_SCHEDULES = `KV_${SCHEDULES_BUCKET}`
const API = '$JS.API'

/** Pull and ack the existing consumers of `stream` (no creation) */
const pull = (stream: string): string[] => [`${API}.CONSUMER.INFO.${stream}.*`, `${API}.CONSUMER.MSG.NEXT.${stream}.*`, `$JS.ACK.${stream}.>`]
/** Create, read, pull from and delete consumers of `stream` */
const consume = (stream: string): string[] => [
  `${API}.CONSUMER.CREATE.${stream}`, `${API}.CONSUMER.CREATE.${stream}.>`, `${API}.CONSUMER.DURABLE.CREATE.${stream}.*`,
  `${API}.CONSUMER.DELETE.${stream}.*`, ...pull(stream)
]

/** The permissions of each role */
export function rolePermissions (options: RoleOptions = {}): Record<Role, RolePermissions> {
  const triggers = options.triggerStreams ?? []
  const events = options.eventSubjects ?? []
  const bound = bindingRights(options.bindingBuckets ?? [])
  const published = (options.publishSubjects ?? []).map(p => {
    if (typeof p !== 'string' || !/^[A-Za-z0-9_\-:=@+~]+(\.([A-Za-z0-9_\-:=@+~]+|\*))*(\.>)?$/.test(p) || /^(fnmesh|_INBOX|\$)/i.test(p)) throw new Error(`Publish subject "${String(p)}" is invalid: a subject pattern with a literal first token, not one of the mesh's own`)
    return p
  })
  return {
    admin: {
      publish: [`${API}.>`, '$JS.ACK.>', '$JS.FC.>', '$KV.>', '$O.>'],
      subscribe: [`${ROLE_INBOX.admin}.>`]
    },
    agent: {
      publish: [
        'fnmesh.>',
        `${API}.INFO`,
        ...[KV_FUNCTIONS, OBJ_BUNDLES, KV_APIKEYS, KV_RATELIMITS, KV_SCHEDULES, EVENTS_STREAM, DLQ_STREAM, LOGS_STREAM].map(s => `${API}.STREAM.INFO.${s}`),
        ...[KV_FUNCTIONS, KV_APIKEYS, KV_RATELIMITS, KV_SCHEDULES].map(s => `${API}.DIRECT.GET.${s}.>`),
        `${API}.STREAM.MSG.GET.${OBJ_BUNDLES}`, `${API}.DIRECT.GET.${OBJ_BUNDLES}`,
        ...[EVENTS_STREAM, ...triggers].flatMap(pull),
        // The settled prefix of the events stream (core/events.ts purgeSettled): no new power, an
        // agent that may ack any event could already settle it unrun.
        `${API}.CONSUMER.LIST.${EVENTS_STREAM}`, `${API}.STREAM.MSG.GET.${EVENTS_STREAM}`, `${API}.STREAM.PURGE.${EVENTS_STREAM}`,
        `$KV.${RATELIMITS_BUCKET}.>`, `$KV.${SCHEDULES_BUCKET}.>`,
        ...bound.agent,
        ...published
      ],
      subscribe: ['fnmesh.>', `${ROLE_INBOX.agent}.>`, `$KV.${FUNCTIONS_BUCKET}.>`, `$KV.${APIKEYS_BUCKET}.>`, `$KV.${SCHEDULES_BUCKET}.>`],
      // An invocation answers with a "working" message every second until its result (up to 15 min).
      allowResponses: { max: 2000, expires: '20m' }
    },
    deployer: {
      publish: [
        'fnmesh.api.>', 'fnmesh.fn.*.replay', ...events,
        `${API}.INFO`, `${API}.STREAM.INFO.*`,
        `$KV.${FUNCTIONS_BUCKET}.>`, `$O.${BUNDLES_BUCKET}.>`, `$KV.${APIKEYS_BUCKET}.>`,
        // the functions bucket also by sequence: a deploy reads the key's history (next version)
        `${API}.DIRECT.GET.${KV_FUNCTIONS}`, `${API}.DIRECT.GET.${KV_FUNCTIONS}.>`, `${API}.DIRECT.GET.${KV_APIKEYS}.>`,
        `${API}.STREAM.MSG.GET.${OBJ_BUNDLES}`, `${API}.DIRECT.GET.${OBJ_BUNDLES}`, `${API}.STREAM.PURGE.${OBJ_BUNDLES}`,
        `${API}.STREAM.UPDATE.${EVENTS_STREAM}`,
        `${API}.STREAM.MSG.GET.${LOGS_STREAM}`, `${API}.STREAM.MSG.DELETE.${DLQ_STREAM}`, `${API}.STREAM.PURGE.${DLQ_STREAM}`,
        ...[EVENTS_STREAM, DLQ_STREAM, LOGS_STREAM, ...triggers].flatMap(consume),
        ...bound.deployer
      ],
      subscribe: [`${ROLE_INBOX.deployer}.>`, 'fnmesh.logs.>']
    },
    invoker: {
      publish: ['fnmesh.invoke.*', 'fnmesh.api.nodes', ...events],
      subscribe: [`${ROLE_INBOX.invoker}.>`],
      // Acknowledging the chunks of a streamed reply (invokeStream): one ack per chunk received.
      allowResponses: { max: 2, expires: '20m' }
    }
  }
}

export const ROLE_PERMISSIONS = rolePermissions()

function userBlock (u: NatsUser, role: Role, all: Record<Role, RolePermissions>): string {
  const p = all[role]
  const who = u.nkey != null ? `nkey: ${JSON.stringify(u.nkey)}` : `user: ${JSON.stringify(u.user)}, password: ${JSON.stringify(u.password)}`
  const inbox = `${ROLE_INBOX[role]}.>`
  const subscribe = u.inboxPrefix != null ? p.subscribe.map(s => s === inbox ? `${u.inboxPrefix as string}.>` : s) : p.subscribe
  const responses = p.allowResponses != null ? `\n          allow_responses: { max: ${p.allowResponses.max}, expires: "${p.allowResponses.expires}" }` : ''
  return `      { ${who}, permissions: {\n          publish: { allow: ${JSON.stringify(p.publish)} }\n          subscribe: { allow: ${JSON.stringify(subscribe)} }${responses} } }`
}

/** The `accounts { ... }` block for these users */
export function natsAuthConfig (roles: NatsRoles): string {
  const all = rolePermissions(roles)
  const users = [
    ...(roles.admins ?? []).map(u => userBlock(u, 'admin', all)),
    ...roles.agents.map(u => userBlock(u, 'agent', all)),
    ...roles.deployers.map(u => userBlock(u, 'deployer', all)),
    ...roles.invokers.map(u => userBlock(u, 'invoker', all))
  ]
  return `accounts {\n  ${roles.account ?? 'FNMESH'} {\n    jetstream: enabled\n    users: [\n${users.join('\n')}\n    ]\n  }\n}\n`
}
