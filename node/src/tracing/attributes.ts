/**
 * The span attribute names fnmesh sets: OpenTelemetry's semantic conventions (HTTP, FaaS, errors)
 * where one fits, `fnmesh.*` for the rest. Values stay bounded: ids, names, codes and numbers,
 * never an event, a result or a header value other than the method and route.
 */
import {
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_SERVER_PORT,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME
} from '@opentelemetry/semantic-conventions'
import {
  ATTR_FAAS_COLDSTART,
  ATTR_FAAS_INVOCATION_ID,
  ATTR_FAAS_INVOKED_NAME,
  ATTR_FAAS_NAME,
  ATTR_FAAS_TRIGGER,
  ATTR_FAAS_VERSION
} from '@opentelemetry/semantic-conventions/incubating'

export const A = {
  httpMethod: ATTR_HTTP_REQUEST_METHOD,
  httpRoute: ATTR_HTTP_ROUTE,
  httpStatus: ATTR_HTTP_RESPONSE_STATUS_CODE,
  urlPath: ATTR_URL_PATH,
  urlScheme: ATTR_URL_SCHEME,
  serverPort: ATTR_SERVER_PORT,
  protocolVersion: ATTR_NETWORK_PROTOCOL_VERSION,
  errorType: ATTR_ERROR_TYPE,
  faasTrigger: ATTR_FAAS_TRIGGER,
  faasInvocationId: ATTR_FAAS_INVOCATION_ID,
  faasName: ATTR_FAAS_NAME,
  faasVersion: ATTR_FAAS_VERSION,
  faasColdstart: ATTR_FAAS_COLDSTART,
  faasInvokedName: ATTR_FAAS_INVOKED_NAME,
  /** the FNMESH_ERR_* code of a failed stage */
  errorCode: 'fnmesh.error.code',
  /** the node that ran or is asked to run it */
  nodeId: 'fnmesh.node.id',
  peerId: 'fnmesh.peer.id',
  peerLocal: 'fnmesh.peer.local',
  attempt: 'fnmesh.attempt',
  queueMs: 'fnmesh.queue_ms',
  trigger: 'fnmesh.trigger',
  eventId: 'fnmesh.event.id',
  durationMs: 'fnmesh.duration_ms',
  initMs: 'fnmesh.init_ms'
} as const

/** Longest string value an attribute gets (paths, ids): the rest is cut */
export const MAX_ATTRIBUTE_CHARS = 256

export function bounded (text: string): string {
  return text.length > MAX_ATTRIBUTE_CHARS ? text.slice(0, MAX_ATTRIBUTE_CHARS) : text
}
