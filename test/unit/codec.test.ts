import { afterEach, describe, expect, it, vi } from 'vitest'
import { decode, DecodeLimits, encode, Outcome, pb, type Encodable, type MessageMap, type MessageName } from '../../proto/codec.js'
import { FnmeshError, InputError } from '../../proto/errors.js'

/** mulberry32: a tiny seeded PRNG, so a failing random case can be replayed */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const NOW = Date.now()
const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)
const errorInfo = { code: 'FNMESH_ERR_TIMEOUT', errorType: 'Sandbox.Timedout', errorMessage: 'Task timed out after 3.00 seconds', trace: ['at a', 'at b'] }
const advert = {
  nodeId: '12D3KooWPeer', name: 'node-a', slots: 8, inFlight: 3, freeMemMb: 16_384, warm: ['ok@1', 'echo@4'],
  seq: 42, draining: true, startedAtMs: NOW - 60_000, sentAtMs: NOW, invocations: 1234, coldStarts: 5, warmStarts: 1229, refusing: 'disk full'
}

/** One fully populated message of every type the codec decodes */
const SAMPLES: { [K in MessageName]: Encodable<MessageMap[K]> } = {
  ErrorInfo: errorInfo,
  CapacityAdvert: advert,
  PeerAnnounce: { nodeId: '12D3KooWPeer', name: 'node-a', addrs: ['/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWPeer'], sentAtMs: NOW },
  FunctionSpec: {
    name: 'resize', version: 7, handler: 'src/app.handler', memoryMb: 512, timeoutMs: 30_000, concurrency: 4,
    env: { STAGE: 'prod', EMPTY: '' }, triggers: ['cron:*/5 * * * *'], egress: true, bundleObject: 'sha256-ab',
    bundleSha256: 'ab'.repeat(32), bundleSize: 123_456_789, createdAtMs: NOW
  },
  Bundle: { files: [{ path: 'index.js', mode: 0o644, data: bytes('exports.handler = 1') }, { path: 'lib/x.js', mode: 0o755, data: new Uint8Array([0, 1, 255]) }] },
  InvokeRequest: { function: 'resize', payload: bytes('{"n":1}'), idempotencyKey: 'key-1', timeoutMs: 2500 },
  ExecRequest: { invocationId: 'inv-1', function: 'resize', version: 7, payload: bytes('{"n":1}'), attempt: 2, routerId: 'r1', deadlineMs: NOW + 3000, trigger: 'sync', idempotencyKey: 'key-1' },
  InvokeResult: { invocationId: 'inv-1', ok: false, payload: bytes('null'), error: errorInfo, nodeId: 'n1', version: 7, durationMs: 12.75, cold: true, attempts: 2 },
  MeterRecord: {
    invocationId: 'inv-1', function: 'resize', version: 7, nodeId: 'n1', startMs: NOW, durationMs: 99.5, billedMs: 100,
    memoryMb: 512, outcome: Outcome.OUTCOME_TIMEOUT, errorCode: 'FNMESH_ERR_TIMEOUT', cold: true, attempt: 1, trigger: 'sync', eventId: 'evt-1', idempotencyKey: 'key-1'
  },
  MeterProof: { batchId: `${NOW}!n1!0011223344556677`, nodeId: 'n1', signedAtMs: NOW, leaves: [new Uint8Array(32).fill(7)], signature: new Uint8Array(64).fill(9) },
  SignedRecord: { record: bytes('record'), batchId: 'b1', leaf: 3 },
  MeterBundle: { proofs: [{ batchId: 'b1', nodeId: 'n1', signedAtMs: NOW, leaves: [new Uint8Array(32)], signature: new Uint8Array(64) }], records: [{ record: bytes('r'), batchId: 'b1', leaf: 0 }] },
  MeterPush: { seq: 12, bundle: { records: [{ record: bytes('r'), batchId: 'b1', leaf: 1 }] }, seals: [{ digest: { nodeId: 'n1', fromMs: 60_000, toMs: 120_000, count: 1 }, sealedAtMs: NOW }] },
  MeterAck: { seq: 12, stored: 3, known: 1, rejected: 2, reason: 'bad signature' },
  Rollup: { bucketMs: NOW, function: 'resize', nodeId: 'n1', invocations: 9, errors: 2, coldStarts: 1, billedMs: 900, mbMs: 460_800 },
  RollupRegister: { digest: { nodeId: 'n1', fromMs: 60_000, toMs: 120_000, count: 2, hash: new Uint8Array(32).fill(3) }, rows: [{ bucketMs: 60_000, function: 'f', nodeId: 'n1', invocations: 2 }], sealedAtMs: NOW, signature: new Uint8Array(64).fill(4) },
  SyncRequest: { op: 3, ranges: [{ nodeId: 'n1', fromMs: NOW, toMs: NOW + 60_000, count: 4, hash: new Uint8Array(32).fill(1) }], keys: ['k1'], afterKey: 'k0', limit: 100 },
  SyncReply: { digests: [{ nodeId: 'n1', fromMs: NOW, toMs: NOW + 60_000, count: 4, hash: new Uint8Array(32).fill(1) }], keys: ['k1'], more: true, lastKey: 'k1', error: errorInfo },
  ExportQuery: { function: 'resize', sinceMs: NOW - 1000, untilMs: NOW, afterKey: 'k', limit: 500 },
  ExportPage: { records: [{ invocationId: 'inv-1', function: 'resize', nodeId: 'n1', startMs: NOW, billedMs: 5 }], nextKey: 'k2', nodeId: 'n1', error: errorInfo },
  MeterStatusQuery: { resetLag: true },
  MeterStatus: { nodeId: 'n1', replicas: 2, records: 100, ownRecords: 40, underReplicated: 1, lagSamples: 39, lagP50Ms: 1.5, lagP99Ms: 4.25, lagMaxMs: 9, received: 60, rejected: 2, syncRounds: 5, syncPulled: 10, syncPushed: 3, syncedWith: ['n2'], refusing: 'disk full', freeBytes: 1e9, diskBytes: 123_456, recovered: 'repaired' },
  NodesReply: { nodes: [{ advert, lastSeenMs: 250, self: true }], error: errorInfo },
  UsageQuery: { function: 'resize', sinceMs: NOW - 86_400_000, untilMs: NOW, bucket: 2 },
  UsageReply: {
    functions: [{ name: 'resize', invocations: 10, errors: 2, billedMs: 1000, gbSeconds: 0.5, coldStarts: 1, byNode: { n1: 6, n2: 4 } }],
    nodes: [{ nodeId: 'n1', name: 'node-a', invocations: 6, errors: 1, billedMs: 600, gbSeconds: 0.3 }],
    answered: ['n1', 'n2'],
    missing: ['n3'],
    error: errorInfo,
    buckets: [{ bucketMs: NOW, function: 'resize', nodeId: 'n1', invocations: 6, errors: 1, coldStarts: 0, billedMs: 600, mbMs: 307_200 }]
  }
}
const NAMES = Object.keys(SAMPLES) as MessageName[]

/**
 * `decoded` seen through the shape of `sample`: the sample's fields only (a decoded message reads
 * its defaults from the prototype), bytes fields as plain arrays (decoded ones are Buffers)
 */
function project (decoded: unknown, sample: unknown): unknown {
  if (sample instanceof Uint8Array) return decoded instanceof Uint8Array ? [...decoded] : decoded
  if (Array.isArray(sample)) return Array.isArray(decoded) ? decoded.map((d, i) => project(d, sample[i] ?? sample[0])) : decoded
  if (sample != null && typeof sample === 'object') {
    if (decoded == null || typeof decoded !== 'object') return decoded
    return Object.fromEntries(Object.keys(sample).map(k => [k, project((decoded as Record<string, unknown>)[k], (sample as Record<string, unknown>)[k])]))
  }
  return decoded
}
const plain = (v: unknown): unknown => project(v, v)

/** Runs `fn` and returns what it threw (fails the test if it did not throw) */
function thrown (fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  throw new Error('expected a throw')
}

describe('proto codec', () => {
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it.each(NAMES)('decodes an encoded %s back to the same fields', (name) => {
    const decoded = decode(name, encode(name, SAMPLES[name]))
    expect(project(decoded, SAMPLES[name])).toEqual(plain(SAMPLES[name]))
  })

  it.each(NAMES)('decodes an empty %s with proto3 defaults and no Long objects', (name) => {
    const decoded = decode(name, new Uint8Array(0)) as unknown as Record<string, unknown>
    for (const [field, sample] of Object.entries(SAMPLES[name])) {
      const value = decoded[field]
      if (typeof sample === 'number') expect(value, `${name}.${field}`).toBe(0)
      else if (typeof sample === 'string') expect(value, `${name}.${field}`).toBe('')
      else if (typeof sample === 'boolean') expect(value, `${name}.${field}`).toBe(false)
      else if (Array.isArray(sample)) expect(value, `${name}.${field}`).toEqual([])
    }
  })

  it('decodes 64-bit timestamps and counters as JS numbers', () => {
    const big = Number.MAX_SAFE_INTEGER
    const d = decode('CapacityAdvert', encode('CapacityAdvert', { nodeId: 'n', startedAtMs: NOW, sentAtMs: 2 ** 40 + 7, invocations: big, seq: 1 }))
    expect(typeof d.startedAtMs).toBe('number')
    expect(d.startedAtMs).toBe(NOW)
    expect(d.sentAtMs).toBe(2 ** 40 + 7)
    expect(d.invocations).toBe(big)
    // Fields left at zero are not on the wire and come from the prototype: numbers too.
    expect(d.coldStarts).toBe(0)
    expect(typeof d.freeMemMb).toBe('number')
    expect(JSON.stringify({ freeMemMb: d.freeMemMb })).toBe('{"freeMemMb":0}')
    const q = decode('UsageQuery', encode('UsageQuery', { function: 'f' }))
    expect(q.sinceMs).toBe(0)
    const m = decode('MeterRecord', encode('MeterRecord', { invocationId: 'x', startMs: NOW, billedMs: 1 }))
    expect([typeof m.startMs, typeof m.billedMs]).toEqual(['number', 'number'])
  })

  it('decodes map fields with 64-bit values as numbers', () => {
    const d = decode('UsageReply', encode('UsageReply', SAMPLES.UsageReply))
    expect(d.functions[0].byNode).toEqual({ n1: 6, n2: 4 })
    expect(typeof d.functions[0].byNode.n1).toBe('number')
  })

  it('rejects input over the default limit with FNMESH_ERR_PAYLOAD_TOO_LARGE before parsing it', () => {
    const spy = vi.spyOn(pb.PeerAnnounce, 'decode')
    // 0xff bytes are not a valid message: a parse would fail with FNMESH_ERR_DECODE instead.
    const err = thrown(() => decode('PeerAnnounce', new Uint8Array(DecodeLimits.PeerAnnounce + 1).fill(0xff)))
    expect(err).toBeInstanceOf(InputError)
    expect((err as InputError).code).toBe('FNMESH_ERR_PAYLOAD_TOO_LARGE')
    expect((err as InputError).message).toBe(`Cannot decode PeerAnnounce: ${DecodeLimits.PeerAnnounce + 1} bytes exceeds the limit of ${DecodeLimits.PeerAnnounce}`)
    expect(spy).not.toHaveBeenCalled()
  })

  it('applies a maxBytes override in both directions', () => {
    const encoded = encode('ExecRequest', SAMPLES.ExecRequest)
    const err = thrown(() => decode('ExecRequest', encoded, { maxBytes: encoded.byteLength - 1 }))
    expect((err as InputError).code).toBe('FNMESH_ERR_PAYLOAD_TOO_LARGE')
    expect(decode('ExecRequest', encoded, { maxBytes: encoded.byteLength }).invocationId).toBe('inv-1')
    const big = encode('PeerAnnounce', { nodeId: 'n', name: 'x'.repeat(DecodeLimits.PeerAnnounce) })
    expect(decode('PeerAnnounce', big, { maxBytes: big.byteLength }).name).toHaveLength(DecodeLimits.PeerAnnounce)
  })

  it.each([null, undefined])('rejects %s with FNMESH_ERR_DECODE', (input) => {
    const err = thrown(() => decode('InvokeRequest', input))
    expect(err).toBeInstanceOf(InputError)
    expect((err as InputError).code).toBe('FNMESH_ERR_DECODE')
    expect((err as InputError).message).toBe('Cannot decode InvokeRequest: no bytes')
  })

  it('turns a malformed message into FNMESH_ERR_DECODE with the decoder error as cause', () => {
    // field 1, wire type 2 (length-delimited), length 100, but no bytes follow
    const err = thrown(() => decode('InvokeRequest', new Uint8Array([0x0a, 100])))
    expect(err).toBeInstanceOf(InputError)
    expect((err as InputError).code).toBe('FNMESH_ERR_DECODE')
    expect((err as InputError).message).toMatch(/^Cannot decode InvokeRequest: /)
    expect((err as InputError).cause).toBeInstanceOf(Error)
  })

  it('fails random bytes only with FNMESH_ERR_DECODE, never another exception type', () => {
    const rng = prng(0xF17E5)
    let failed = 0
    let decoded = 0
    for (let i = 0; i < 3000; i++) {
      const name = NAMES[i % NAMES.length]
      const input = new Uint8Array(1 + Math.floor(rng() * 64))
      for (let b = 0; b < input.length; b++) input[b] = Math.floor(rng() * 256)
      try {
        decode(name, input)
        decoded++
      } catch (err) {
        if (!(err instanceof InputError) || err.code !== 'FNMESH_ERR_DECODE') {
          throw new Error(`case ${i} (${name}, bytes ${Buffer.from(input).toString('hex')}) threw ${String(err)}`)
        }
        failed++
      }
    }
    expect(failed + decoded).toBe(3000)
    // Most random inputs are not valid protobuf; a fuzzer that never hits the error path tests nothing.
    expect(failed).toBeGreaterThan(1500)
  })

  it.each(NAMES)('fails every truncation of an encoded %s with FNMESH_ERR_DECODE or decodes a prefix of its fields', (name) => {
    const full = encode(name, SAMPLES[name])
    let failed = 0
    for (let n = 0; n < full.length; n++) {
      const prefix = full.subarray(0, n)
      try {
        const d = decode(name, prefix)
        // A cut on a field boundary is a valid shorter message: it re-encodes to exactly the prefix.
        expect(Buffer.from(encode(name, d as never))).toEqual(Buffer.from(prefix))
      } catch (err) {
        if (!(err instanceof InputError) || err.code !== 'FNMESH_ERR_DECODE') {
          throw new Error(`truncation at ${n} of ${full.length} threw ${String(err)}`)
        }
        failed++
      }
    }
    expect(failed).toBeGreaterThan(0)
    expect(project(decode(name, full), SAMPLES[name])).toEqual(plain(SAMPLES[name]))
  })

  it('feeds a message byte by byte without an exception escaping as another type', () => {
    const full = encode('NodesReply', SAMPLES.NodesReply)
    const outcomes: string[] = []
    for (let n = 1; n <= full.length; n++) {
      try {
        decode('NodesReply', full.slice(0, n))
        outcomes.push('ok')
      } catch (err) {
        expect(err).toBeInstanceOf(FnmeshError)
        outcomes.push((err as FnmeshError).code)
      }
    }
    expect(new Set(outcomes)).toEqual(new Set(['ok', 'FNMESH_ERR_DECODE']))
    expect(outcomes.at(-1)).toBe('ok')
  })
})
