/**
 * Encoding and size-capped decoding of every wire message.
 *
 * Decoders of untrusted bytes check the byte length before decoding and turn any decoder
 * failure into an InputError with FNMESH_ERR_DECODE: garbage never crashes a receiver.
 */
import $protobuf from 'protobufjs/minimal.js'
import { fnmesh } from './gen/fnmesh.js'
import { InputError } from './errors.js'

// 64-bit fields decode to plain numbers instead of Long objects (values stay below 2^53).
$protobuf.util.Long = undefined as never
$protobuf.configure()

export const pb = fnmesh.v1

// The generated prototypes took their 64-bit defaults (Long zeros) when gen/fnmesh.js loaded,
// before the lines above ran; a field left at 0 on the wire would decode as a Long. Make them 0.
for (const type of Object.values(pb)) {
  if (typeof type !== 'function') continue
  const proto = type.prototype as unknown as Record<string, unknown>
  for (const [field, value] of Object.entries(proto)) {
    if (value != null && typeof value === 'object' && 'low' in value && 'high' in value) proto[field] = 0
  }
}

interface LongLike { low: number, high: number }
type Unwrap<V> = V extends Uint8Array ? Uint8Array
  : V extends Array<infer E> ? Array<Unwrap<NonNullable<E>>>
    : V extends number | LongLike ? number
      : V extends object ? Decoded<V> : V
/**
 * A message as decode() returns it: every field present (proto3 defaults), 64-bit fields as
 * numbers (see the configure() call above), nested messages decoded the same way.
 */
export type Decoded<T> = { -readonly [K in keyof T as K extends '$unknowns' ? never : K]-?: Unwrap<NonNullable<T[K]>> }
type EncodableOf<V> = V extends Uint8Array ? Uint8Array
  : V extends Array<infer E> ? Array<EncodableOf<E>>
    : V extends object ? Encodable<V> : V
/** A message (as decode() returns it) in the form encode() takes: any field, at any depth, may be left out */
export type Encodable<T> = { [K in keyof T]?: EncodableOf<T[K]> | null }

export type ErrorInfo = Decoded<fnmesh.v1.IErrorInfo>
export type CapacityAdvert = Decoded<fnmesh.v1.ICapacityAdvert>
export type PeerAnnounce = Decoded<fnmesh.v1.IPeerAnnounce>
export type SignedAdvert = Decoded<fnmesh.v1.ISignedAdvert>
export type MemberUpdate = Decoded<fnmesh.v1.IMemberUpdate>
export type SwimMessage = Decoded<fnmesh.v1.ISwimMessage>
export const MemberState = fnmesh.v1.MemberUpdate.State
export const SwimKind = fnmesh.v1.SwimMessage.Kind
export type FunctionSpec = Decoded<fnmesh.v1.IFunctionSpec>
export type Bundle = Decoded<fnmesh.v1.IBundle>
export type BundleFile = Decoded<fnmesh.v1.IBundleFile>
export type InvokeRequest = Decoded<fnmesh.v1.IInvokeRequest>
export type ExecRequest = Decoded<fnmesh.v1.IExecRequest>
export type LoadProbe = Decoded<fnmesh.v1.ILoadProbe>
export type LoadAnswer = Decoded<fnmesh.v1.ILoadAnswer>
export type InvokeResult = Decoded<fnmesh.v1.IInvokeResult>
export type MeterRecord = Decoded<fnmesh.v1.IMeterRecord>
export type StreamChunk = Decoded<fnmesh.v1.IStreamChunk>
export type StreamAck = Decoded<fnmesh.v1.IStreamAck>
export type DeadLetter = Decoded<fnmesh.v1.IDeadLetter>
export type MeterProof = Decoded<fnmesh.v1.IMeterProof>
export type SignedRecord = Decoded<fnmesh.v1.ISignedRecord>
export type MeterBundle = Decoded<fnmesh.v1.IMeterBundle>
export type MeterPush = Decoded<fnmesh.v1.IMeterPush>
export type MeterAck = Decoded<fnmesh.v1.IMeterAck>
export type Rollup = Decoded<fnmesh.v1.IRollup>
export type RangeDigest = Decoded<fnmesh.v1.IRangeDigest>
export type RollupRegister = Decoded<fnmesh.v1.IRollupRegister>
export type SyncRequest = Decoded<fnmesh.v1.ISyncRequest>
export type SyncReply = Decoded<fnmesh.v1.ISyncReply>
export type ExportQuery = Decoded<fnmesh.v1.IExportQuery>
export type ExportPage = Decoded<fnmesh.v1.IExportPage>
export type MeterStatusQuery = Decoded<fnmesh.v1.IMeterStatusQuery>
export type MeterStatus = Decoded<fnmesh.v1.IMeterStatus>
export type NodeView = Decoded<fnmesh.v1.INodeView>
export type NodesReply = Decoded<fnmesh.v1.INodesReply>
export type UsageQuery = Decoded<fnmesh.v1.IUsageQuery>
export type FunctionUsage = Decoded<fnmesh.v1.IFunctionUsage>
export type NodeUsage = Decoded<fnmesh.v1.INodeUsage>
export type UsageReply = Decoded<fnmesh.v1.IUsageReply>
export type LogLine = Decoded<fnmesh.v1.ILogLine>
export type LogBatch = Decoded<fnmesh.v1.ILogBatch>
export type HttpRoute = Decoded<fnmesh.v1.IHttpRoute>
export type JwtConfig = Decoded<fnmesh.v1.IJwtConfig>
export type CorsConfig = Decoded<fnmesh.v1.ICorsConfig>
export type DeploySignature = Decoded<fnmesh.v1.IDeploySignature>
export type ApiKey = Decoded<fnmesh.v1.IApiKey>
export type RateBucket = Decoded<fnmesh.v1.IRateBucket>
export type FunctionAlias = Decoded<fnmesh.v1.IFunctionAlias>
export type ConcurrencyLeases = Decoded<fnmesh.v1.IConcurrencyLeases>
export const Outcome = fnmesh.v1.Outcome
export type Outcome = fnmesh.v1.Outcome
export const SyncOp = fnmesh.v1.SyncRequest.Op
export type SyncOp = fnmesh.v1.SyncRequest.Op
export const SyncScope = fnmesh.v1.SyncRequest.Scope
export type SyncScope = fnmesh.v1.SyncRequest.Scope
export type UsagePart = Decoded<fnmesh.v1.IUsagePart>
export type MeterRange = Decoded<fnmesh.v1.IMeterRange>
export const UsageBucket = fnmesh.v1.UsageQuery.Bucket
export type UsageBucket = fnmesh.v1.UsageQuery.Bucket

const MiB = 1024 * 1024

/** Byte caps applied before decoding each message type */
export const DecodeLimits = {
  ErrorInfo: 64 * 1024,
  CapacityAdvert: 64 * 1024,
  PeerAnnounce: 16 * 1024,
  // a sync page is at most ~512 KiB of members (swim.ts SYNC_PAGE_BYTES); NATS's default max payload is 1 MiB
  SwimMessage: 1 * MiB,
  // routes may carry JSON Schemas and JWKS: the SDK keeps them under 512 KiB in all
  FunctionSpec: 1 * MiB,
  Bundle: 64 * MiB,
  InvokeRequest: 8 * MiB,
  ExecRequest: 8 * MiB,
  LoadProbe: 1024,
  LoadAnswer: 1024,
  InvokeResult: 8 * MiB,
  StreamChunk: 512 * 1024,
  StreamAck: 64,
  MeterRecord: 16 * 1024,
  DeadLetter: 8 * MiB,
  MeterProof: 512 * 1024,
  SignedRecord: 20 * 1024,
  MeterBundle: 4 * MiB,
  MeterPush: 4 * MiB,
  MeterAck: 4 * 1024,
  Rollup: 4 * 1024,
  RollupRegister: 1 * MiB,
  SyncRequest: 4 * MiB,
  SyncReply: 4 * MiB,
  ExportQuery: 4 * 1024,
  ExportPage: 8 * MiB,
  MeterStatusQuery: 1024,
  MeterStatus: 64 * 1024,
  NodesReply: 4 * MiB,
  UsageQuery: 4 * 1024,
  UsageReply: 8 * MiB,
  LogBatch: 4 * MiB,
  ApiKey: 4 * 1024,
  RateBucket: 256,
  FunctionAlias: 4 * 1024,
  // at most a few hundred agents' leases of one function
  ConcurrencyLeases: 64 * 1024
} as const

export type MessageName = keyof typeof DecodeLimits

interface MessageType<T> {
  encode: (message: any) => { finish: () => Uint8Array }
  decode: (reader: Uint8Array) => T
}

const TYPES: { [K in MessageName]: MessageType<unknown> } = {
  ErrorInfo: pb.ErrorInfo,
  CapacityAdvert: pb.CapacityAdvert,
  PeerAnnounce: pb.PeerAnnounce,
  SwimMessage: pb.SwimMessage,
  FunctionSpec: pb.FunctionSpec,
  Bundle: pb.Bundle,
  InvokeRequest: pb.InvokeRequest,
  ExecRequest: pb.ExecRequest,
  LoadProbe: pb.LoadProbe,
  LoadAnswer: pb.LoadAnswer,
  InvokeResult: pb.InvokeResult,
  StreamChunk: pb.StreamChunk,
  StreamAck: pb.StreamAck,
  MeterRecord: pb.MeterRecord,
  DeadLetter: pb.DeadLetter,
  MeterProof: pb.MeterProof,
  SignedRecord: pb.SignedRecord,
  MeterBundle: pb.MeterBundle,
  MeterPush: pb.MeterPush,
  MeterAck: pb.MeterAck,
  Rollup: pb.Rollup,
  RollupRegister: pb.RollupRegister,
  SyncRequest: pb.SyncRequest,
  SyncReply: pb.SyncReply,
  ExportQuery: pb.ExportQuery,
  ExportPage: pb.ExportPage,
  MeterStatusQuery: pb.MeterStatusQuery,
  MeterStatus: pb.MeterStatus,
  NodesReply: pb.NodesReply,
  UsageQuery: pb.UsageQuery,
  UsageReply: pb.UsageReply,
  LogBatch: pb.LogBatch,
  ApiKey: pb.ApiKey,
  RateBucket: pb.RateBucket,
  FunctionAlias: pb.FunctionAlias,
  ConcurrencyLeases: pb.ConcurrencyLeases
}

export interface MessageMap {
  ErrorInfo: ErrorInfo
  CapacityAdvert: CapacityAdvert
  PeerAnnounce: PeerAnnounce
  SwimMessage: SwimMessage
  FunctionSpec: FunctionSpec
  Bundle: Bundle
  InvokeRequest: InvokeRequest
  ExecRequest: ExecRequest
  LoadProbe: LoadProbe
  LoadAnswer: LoadAnswer
  InvokeResult: InvokeResult
  StreamChunk: StreamChunk
  StreamAck: StreamAck
  MeterRecord: MeterRecord
  DeadLetter: DeadLetter
  MeterProof: MeterProof
  SignedRecord: SignedRecord
  MeterBundle: MeterBundle
  MeterPush: MeterPush
  MeterAck: MeterAck
  Rollup: Rollup
  RollupRegister: RollupRegister
  SyncRequest: SyncRequest
  SyncReply: SyncReply
  ExportQuery: ExportQuery
  ExportPage: ExportPage
  MeterStatusQuery: MeterStatusQuery
  MeterStatus: MeterStatus
  NodesReply: NodesReply
  UsageQuery: UsageQuery
  UsageReply: UsageReply
  LogBatch: LogBatch
  ApiKey: ApiKey
  RateBucket: RateBucket
  FunctionAlias: FunctionAlias
  ConcurrencyLeases: ConcurrencyLeases
}

export function encode<K extends MessageName> (name: K, message: Encodable<MessageMap[K]>): Uint8Array {
  return TYPES[name].encode(message).finish()
}

export interface DecodeOptions {
  /** Overrides the default cap of DecodeLimits[name] */
  maxBytes?: number
}

/**
 * Decodes untrusted bytes as message `name`. Oversized input fails with FNMESH_ERR_PAYLOAD_TOO_LARGE
 * before any parsing; malformed input fails with FNMESH_ERR_DECODE.
 */
export function decode<K extends MessageName> (name: K, bytes: Uint8Array | null | undefined, options: DecodeOptions = {}): MessageMap[K] {
  const max = options.maxBytes ?? DecodeLimits[name]
  if (bytes == null) {
    throw new InputError('FNMESH_ERR_DECODE', `Cannot decode ${name}: no bytes`)
  }
  if (bytes.byteLength > max) {
    throw new InputError('FNMESH_ERR_PAYLOAD_TOO_LARGE', `Cannot decode ${name}: ${bytes.byteLength} bytes exceeds the limit of ${max}`)
  }
  const type = TYPES[name]
  try {
    // The decoded instance reads proto3 defaults (empty strings, zeros, empty arrays) from its
    // prototype, so callers never see undefined fields. Do not spread it: spreading drops them.
    return type.decode(bytes) as MessageMap[K]
  } catch (err: any) {
    throw new InputError('FNMESH_ERR_DECODE', `Cannot decode ${name}: ${String(err?.message ?? err)}`, { cause: err })
  }
}
