/**
 * Names on the wire: NATS subjects, queue groups, JetStream buckets and the gossip topic.
 * Documented in docs/ARCHITECTURE.md; change both together.
 */

/** Sync invocations: callers request `fnmesh.invoke.<function>`; one agent of the queue group routes it */
export const invokeSubject = (fn: string): string => `fnmesh.invoke.${fn}`
export const INVOKE_WILDCARD = 'fnmesh.invoke.*'

/** Router -> executing agent: each agent listens on its own subject */
export const execSubject = (nodeId: string): string => `fnmesh.exec.${nodeId}`

/** Router -> agent load probes (LoadProbe -> LoadAnswer), routing "probe" */
export const probeSubject = (nodeId: string): string => `fnmesh.probe.${nodeId}`

/** Membership "swim": agent <-> agent SWIM messages (pings, acks, updates, syncs) of one node */
export const swimSubject = (nodeId: string): string => `fnmesh.swim.${nodeId}`
/** Membership "swim": a joining agent asks one random member (queue group SWIM_QUEUE) for the membership */
export const SWIM_JOIN_SUBJECT = 'fnmesh.swim.join'
export const SWIM_QUEUE = 'fnmesh-swim'

/** Agents post their libp2p multiaddrs here so peers find each other without --bootstrap */
export const DISCOVERY_SUBJECT = 'fnmesh.discovery'

/** Control API, answered by one agent of the queue group */
export const API_NODES_SUBJECT = 'fnmesh.api.nodes'
/** Usage from one agent's replica of every record; `.<node id>` asks that agent */
export const API_USAGE_SUBJECT = 'fnmesh.api.usage'
/** Raw records page by page; the first page from any agent, the next ones from `.<node id>` of the one that answered */
export const API_EXPORT_SUBJECT = 'fnmesh.api.export'
/** Metering state: `.<node id>` asks one agent, the bare subject is answered by every agent */
export const API_METER_SUBJECT = 'fnmesh.api.meter'
/** The node-specific form of an API subject */
export const nodeSubject = (subject: string, nodeId: string): string => `${subject}.${nodeId}`

/** Function log lines: the agent that ran an invocation publishes `LogBatch`es here */
export const logSubject = (fn: string): string => `fnmesh.logs.${fn}`
export const LOGS_WILDCARD = 'fnmesh.logs.>'
/** JetStream stream keeping the log lines of every function for a while (`fnmesh logs` without --follow) */
export const LOGS_STREAM = 'fnmesh_logs'

/** Queue group shared by all agents for invocations and the control API */
export const AGENTS_QUEUE = 'fnmesh-agents'

/** JetStream KV bucket of function specs (key = function name) */
export const FUNCTIONS_BUCKET = 'fnmesh_functions'
/** JetStream Object Store bucket of function bundles (object = "<name>/<version>") */
export const BUNDLES_BUCKET = 'fnmesh_bundles'

/** gossipsub topic of capacity adverts */
export const ADVERTS_TOPIC = 'fnmesh/adverts/1'

/** Function names are a single NATS subject token and a KV key: letters, digits, '-' and '_' */
export const FUNCTION_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/

/**
 * Longest id (UTF-8 bytes) the mesh takes: invocation ids, idempotency keys, event ids. They go
 * into the meter record every peer stores, and a record over it is refused, so anything over it
 * is refused before it runs (FNMESH_ERR_INVALID_ARGUMENT on invoke, FNMESH_ERR_INVALID_EVENT on
 * publish, a dead letter for a raw event).
 */
export const MAX_ID_BYTES = 256

/** Default cap on a sync invocation's event and result, as AWS Lambda's 6 MB */
export const SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024

/** Default cap on a streamed response body (awslambda.streamifyResponse), as Lambda's 20 MB soft limit */
export const STREAM_RESULT_LIMIT = 20 * 1024 * 1024

/** Largest data of one StreamChunk message */
export const STREAM_CHUNK_MAX = 256 * 1024
/** A stream sender has at most this many bytes, and this many chunks, sent and not yet acknowledged */
export const STREAM_WINDOW_BYTES = 1024 * 1024
export const STREAM_WINDOW_CHUNKS = 64
/** A stream whose receiver takes nothing for this long ends with FNMESH_ERR_STREAM_STALLED */
export const STREAM_IDLE_MS = 30_000

/** nats-server's max_payload must be at least this for 6 MB payloads (the dev server and tests set 8 MB) */
export const RECOMMENDED_MAX_PAYLOAD = 8 * 1024 * 1024

/** Header names on fnmesh NATS messages */
export const Headers = {
  /** on a router's interim reply to an invoke: "working" means still routing or running it */
  status: 'Fnmesh-Status'
} as const

/** Fnmesh-Status values: interim "working", a StreamChunk of a streamed reply */
export const Status = {
  working: 'working',
  chunk: 'chunk'
} as const

/** A router sends a "working" interim reply to its caller at this interval while an invocation runs */
export const KEEPALIVE_INTERVAL_MS = 1000
/** A caller that hears nothing from its router for this long re-sends the invocation (once) */
export const KEEPALIVE_TIMEOUT_MS = 3500

/** JetStream KV bucket of the HTTP gateway's API keys (key = key name, value = `ApiKey`: a hash, never the key) */
export const APIKEYS_BUCKET = 'fnmesh_apikeys'
/** JetStream KV bucket (memory storage) of the gateway's mesh-wide token buckets (value = `RateBucket`) */
export const RATELIMITS_BUCKET = 'fnmesh_ratelimits'
/** HTTP header carrying the gateway's request id (also the invocation id) on every response */
export const REQUEST_ID_HEADER = 'x-request-id'
