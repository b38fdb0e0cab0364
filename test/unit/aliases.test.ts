import { describe, expect, it } from 'vitest'
import { parseQualifier, parseTarget, parseWeight, pickVersion, validateStoredAlias, type StoredAlias } from '../../core/aliases.js'
import { placeProvisioned } from '../../node/src/sandbox/provisioner.js'

const codeOf = (fn: () => unknown): string => { try { fn(); return 'ok' } catch (err: any) { return String(err?.code) } }

const alias = (change: Partial<StoredAlias> = {}): StoredAlias => ({ function: 'fn', name: 'live', version: 1, weightedVersion: 0, weightPpm: 0, serial: 1, updatedAtMs: 1, description: '', ...change })

describe('invoke targets and aliases', () => {
  it('parses NAME, NAME:ALIAS, NAME:VERSION and NAME:$LATEST, and refuses anything else with a code', () => {
    expect(parseTarget('fn')).toEqual({ function: 'fn', qualifier: '' })
    expect(parseTarget('fn:live')).toEqual({ function: 'fn', qualifier: 'live' })
    expect(parseTarget('fn:12')).toEqual({ function: 'fn', qualifier: '12' })
    expect(parseQualifier('fn', '12')).toEqual({ kind: 'version', version: 12 })
    expect(parseQualifier('fn', '$LATEST')).toEqual({ kind: 'latest' })
    expect(parseQualifier('fn', 'blue-2')).toEqual({ kind: 'alias', alias: 'blue-2' })
    for (const bad of ['fn:', 'fn:0', 'fn:01', 'fn:1.5', 'fn:a.b', 'fn:live:2', 'fn:-x', `fn:${'a'.repeat(65)}`, 'f.n:1', ':live', 'fn:99999999999', 'fn: live']) {
      expect(codeOf(() => parseTarget(bad)), bad).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    }
  })

  it('parses weights as parts per million strictly between 0 and 1', () => {
    expect(parseWeight('fn', '2=0.1')).toEqual({ version: 2, weightPpm: 100_000 })
    expect(parseWeight('fn', '3=.000001')).toEqual({ version: 3, weightPpm: 1 })
    for (const bad of ['2=0', '2=1', '2=1.5', '2=-0.1', '0=0.5', '2=0.1234567', '2', '=0.5', 'x=0.5']) {
      expect(codeOf(() => parseWeight('fn', bad)), bad).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    }
  })

  it('checks every stored alias against its key and the rules', () => {
    expect(validateStoredAlias(alias(), 'alias.fn.live')).toBeNull()
    expect(validateStoredAlias(alias({ weightedVersion: 2, weightPpm: 500_000 }), 'alias.fn.live')).toBeNull()
    const bad: Array<[Partial<StoredAlias>, string]> = [
      [{}, 'alias.other.live'], [{}, 'alias.fn.other'], [{}, 'alias.fn'], [{}, 'fn.live'],
      [{ version: 0 }, 'alias.fn.live'], [{ version: 2e9 }, 'alias.fn.live'],
      [{ weightedVersion: 1, weightPpm: 5 }, 'alias.fn.live'], [{ weightedVersion: 2, weightPpm: 0 }, 'alias.fn.live'],
      [{ weightedVersion: 2, weightPpm: 1_000_000 }, 'alias.fn.live'], [{ weightPpm: 7 }, 'alias.fn.live'],
      [{ serial: 0 }, 'alias.fn.live'], [{ description: 'x'.repeat(300) }, 'alias.fn.live']
    ]
    for (const [change, key] of bad) expect(validateStoredAlias(alias(change), key)?.code, JSON.stringify([change, key])).toBe('FNMESH_ERR_INVALID_ALIAS')
  })

  it('picks the weighted version for its share of draws', () => {
    const a = { version: 1, weightedVersion: 2, weightPpm: 250_000 }
    let second = 0
    for (let i = 0; i < 10_000; i++) if (pickVersion(a, () => i / 10_000) === 2) second++
    expect(second).toBe(2500)
    expect(pickVersion({ version: 4, weightedVersion: 0, weightPpm: 0 }, () => 0)).toBe(4)
  })
})

describe('provisioned placement by rendezvous hashing', () => {
  const nodes = ['node-a', 'node-b', 'node-c', 'node-d']
  const total = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0)

  it('places N sandboxes on N distinct nodes, the same answer in any order of the node list', () => {
    const p = placeProvisioned('fn@1', nodes, 3)
    expect(total(p)).toBe(3)
    expect([...p.values()].every(n => n === 1)).toBe(true)
    expect([...placeProvisioned('fn@1', [...nodes].reverse(), 3)]).toEqual([...p])
  })

  it('moves only the share of a node that leaves, and wraps when N is over the nodes', () => {
    const before = placeProvisioned('fn@1', nodes, 2)
    const gone = [...before.keys()][0]
    const after = placeProvisioned('fn@1', nodes.filter(n => n !== gone), 2)
    expect(total(after)).toBe(2)
    expect(after.has(gone)).toBe(false)
    for (const [id] of before) if (id !== gone) expect(after.get(id)).toBe(1)
    const wrapped = placeProvisioned('fn@1', ['x', 'y'], 5)
    expect([...wrapped.values()].sort()).toEqual([2, 3])
    expect(placeProvisioned('fn@1', [], 2).size).toBe(0)
  })
})
