import { PassThrough } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { LAYER_BITS, layersToMask, maskToLayers } from '../../core/layers.js'
import { OPTIONAL_LAYERS } from '../../node/src/sandbox/layers/detect.js'
import { quantile, usageSeries } from '../../node/src/metrics/dashboard/data.js'
import { isAsset } from '../../node/src/metrics/dashboard/assets.js'
import { watch } from '../../node/src/cli/watch.js'
import { fnmeshError } from '../../proto/errors.js'

describe('dashboard figures', () => {
  it('takes percentiles by nearest rank, none of an empty list', () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1)
    expect(quantile(xs, 0.5)).toBe(50)
    expect(quantile(xs, 0.99)).toBe(99)
    expect(quantile([7], 0.99)).toBe(7)
    expect(quantile([], 0.5)).toBeNull()
  })

  it('aligns minute rows into one point per minute of the range, summed over nodes', () => {
    const from = 1_800_000_000_000
    const row = (m: number, fn: string, nodeId: string, invocations: number, errors = 0): any => ({ bucketMs: from + m * 60_000, function: fn, nodeId, invocations, errors, coldStarts: 0, billedMs: 0, mbMs: 1024 * 1000 * invocations, bindingCalls: 0, bindingBytes: 0 })
    const u = usageSeries('15m', { functions: [], nodes: [], buckets: [row(0, 'a', 'n1', 2), row(0, 'a', 'n2', 3), row(2, 'b', 'n1', 10, 1), row(99, 'a', 'n1', 5)] }, from + 10, from + 2 * 60_000 + 5)
    expect(u.buckets).toEqual([from, from + 60_000, from + 120_000])
    expect(u.invocations).toEqual([5, 0, 10])
    expect(u.errors).toEqual([0, 0, 1])
    expect(u.gbSeconds).toEqual([5, 0, 10])
    expect(u.functions).toEqual([{ name: 'b', invocations: [0, 0, 10] }, { name: 'a', invocations: [5, 0, 0] }])
  })

  it('carries every isolation layer an agent can have as one bit, and ignores bits it does not know', () => {
    expect([...LAYER_BITS].sort()).toEqual(['process', ...OPTIONAL_LAYERS].sort())
    const all = layersToMask(LAYER_BITS)
    expect(maskToLayers(all)).toEqual([...LAYER_BITS])
    expect(maskToLayers(layersToMask(['mount', 'process', 'bogus']))).toEqual(['process', 'mount'])
    expect(maskToLayers(0xffff_ffff)).toEqual([...LAYER_BITS])
  })

  it('serves only the files on its list', () => {
    expect(isAsset('/')).toBe(true)
    expect(isAsset('/vendor/uPlot.iife.min.js')).toBe(true)
    for (const p of ['/../package.json', '/app.js/..', '/vendor/', '/toString', '/__proto__', '/api/snapshot']) expect(isAsset(p)).toBe(false)
  })
})

describe('--watch', () => {
  const collect = (s: PassThrough): () => string => { let out = ''; s.setEncoding('utf8').on('data', (t: string) => { out += t }); return () => out }

  it('prints each refresh under a --- line when piped, an error as a line, and stops when aborted', async () => {
    const out = new PassThrough()
    const text = collect(out)
    const stop = new AbortController()
    let n = 0
    await watch({
      title: 'fnmesh nodes',
      read: async () => { if (++n === 2) throw fnmeshError('FNMESH_ERR_TIMEOUT', 'Timed out'); if (n === 3) stop.abort(); return n },
      render: (v) => `value ${v}`,
      intervalMs: 1,
      json: false,
      signal: stop.signal,
      out: out as unknown as NodeJS.WriteStream
    })
    const refreshes = text().split(/^--- \S+ fnmesh nodes$/m).slice(1).map(s => s.trim())
    expect(refreshes).toEqual(['value 1', 'error FNMESH_ERR_TIMEOUT: Timed out', 'value 3'])
    expect(text()).not.toContain('\x1b[')
  })

  it('prints one JSON document per line with --json, errors on stderr only', async () => {
    const out = new PassThrough()
    const err = new PassThrough()
    const text = collect(out)
    const errors = collect(err)
    const stop = new AbortController()
    let n = 0
    await watch({
      title: 'fnmesh functions',
      read: async () => { if (++n === 2) throw fnmeshError('FNMESH_ERR_TIMEOUT', 'Timed out'); if (n === 3) stop.abort(); return [{ name: 'f', n }] },
      render: () => 'unused',
      intervalMs: 1,
      json: true,
      signal: stop.signal,
      out: out as unknown as NodeJS.WriteStream,
      err: err as unknown as NodeJS.WriteStream
    })
    expect(text().trim().split('\n').map(l => JSON.parse(l))).toEqual([[{ name: 'f', n: 1 }], [{ name: 'f', n: 3 }]])
    expect(errors()).toBe('error FNMESH_ERR_TIMEOUT: Timed out\n')
  })
})
