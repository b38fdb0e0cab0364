import { describe, expect, it } from 'vitest'
import { advertLabels, checkStoredTerms, eligible, nodeLabels, parseLabel, parseTerm, parseTerms, preferred, satisfies } from '../../core/placement.js'
import { validateDeploy } from '../../core/deploy-options.js'
import { validateStoredSpec } from '../../core/spec-rules.js'

const terms = (...t: string[]): ReturnType<typeof parseTerm>[] => t.map(x => parseTerm(x))

describe('placement labels and terms', () => {
  it('parses labels and refuses malformed ones with a clear message', () => {
    expect(parseLabel('zone=eu-1a')).toEqual(['zone', 'eu-1a'])
    expect(parseLabel('example.com/gpu=')).toEqual(['example.com/gpu', ''])
    for (const bad of ['zone', '=a', 'Zone=a', 'zone=a b', 'zone=<x>', `k=${'v'.repeat(64)}`, `${'k'.repeat(64)}=v`, 'zone-=a']) {
      expect(() => parseLabel(bad), bad).toThrow(/Label/)
    }
  })

  it('puts --label over the automatic labels and caps how many a node carries', () => {
    expect(nodeLabels(['zone=a', 'memory=4'], { arch: 'x64', os: 'linux', cpus: '2', memory: '23' })).toEqual({ arch: 'x64', os: 'linux', cpus: '2', memory: '4', zone: 'a' })
    expect(() => nodeLabels(Array.from({ length: 40 }, (_, i) => `k${i}=v`), {})).toThrow(/at most 32/)
  })

  it('parses =, !=, >= and <= terms canonically and refuses the rest', () => {
    expect(parseTerm('gpu=1')).toMatchObject({ key: 'gpu', op: '=', value: '1', raw: 'gpu=1' })
    expect(parseTerm('zone!=a')).toMatchObject({ op: '!=', raw: 'zone!=a' })
    expect(parseTerm('memory>=16')).toMatchObject({ op: '>=', value: '16' })
    expect(parseTerm('cpus<=8')).toMatchObject({ op: '<=' })
    for (const bad of ['gpu', 'gpu==1', 'memory>=lots', 'memory>16', 'GPU=1', '=1', 'a=b=c', '']) {
      expect(() => parseTerm(bad), bad).toThrow(/Placement constraint/)
    }
    expect(() => parseTerms('f', ['gpu=1', 'gpu=1'], 'constraint')).toThrow(/twice/)
    expect(() => parseTerms('f', Array.from({ length: 17 }, (_, i) => `k${i}=v`), 'constraint')).toThrow(/at most 16/)
    expect(() => parseTerms('f', { gpu: 1 }, 'constraint')).toThrow(/list/)
  })

  it('matches: every term holds, same-key = terms are alternatives, a missing label fails all but !=', () => {
    const node = { zone: 'b', gpu: '1', cpus: '8', memory: '31' }
    expect(satisfies(node, terms('gpu=1'))).toBe(true)
    expect(satisfies(node, terms('gpu=1', 'zone=a'))).toBe(false)
    expect(satisfies(node, terms('zone=a', 'zone=b'))).toBe(true)
    expect(satisfies(node, terms('zone!=a'))).toBe(true)
    expect(satisfies(node, terms('zone!=b'))).toBe(false)
    expect(satisfies(node, terms('memory>=16', 'cpus<=8'))).toBe(true)
    expect(satisfies(node, terms('memory>=32'))).toBe(false)
    expect(satisfies(node, terms('ssd=1'))).toBe(false)
    expect(satisfies(node, terms('ssd!=1'))).toBe(true)
    expect(satisfies(node, terms('disk>=1'))).toBe(false)
    expect(satisfies({ memory: 'lots' }, terms('memory>=1'))).toBe(false)
    expect(satisfies(undefined, terms('zone!=a'))).toBe(false)
    expect(satisfies(undefined, [])).toBe(true)
    // no own-property confusion: a label named like an Object.prototype member
    expect(satisfies({}, terms('constructor!=x'))).toBe(true)
  })

  it('eligible and preferred read a spec\'s stored terms; a stored term that does not parse holds nowhere', () => {
    const spec = { constraints: ['gpu=1'], prefer: ['zone=a'] }
    expect(eligible({ gpu: '1', zone: 'b' }, spec)).toBe(true)
    expect(preferred({ gpu: '1', zone: 'b' }, spec)).toBe(false)
    expect(eligible({ gpu: '0' }, spec)).toBe(false)
    expect(eligible({ gpu: '1' }, { constraints: ['not a term'] })).toBe(false)
    expect(eligible(undefined, {})).toBe(true)
  })

  it('takes a peer\'s advert labels only when every one is valid', () => {
    expect(advertLabels({ zone: 'a' })).toEqual({ zone: 'a' })
    expect(advertLabels({ zone: 'a', bad: 'x y' })).toBeUndefined()
    expect(advertLabels({ 'A B': 'x' })).toBeUndefined()
    expect(advertLabels(Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v'])))).toBeUndefined()
    expect(advertLabels(null)).toBeUndefined()
  })

  it('deploy validation keeps terms canonical and agents refuse stored terms that are not', () => {
    const d = validateDeploy({ name: 'f', path: '.', constraints: ['gpu=1', 'memory>=16'], prefer: ['zone=a'] })
    expect(d.constraints).toEqual(['gpu=1', 'memory>=16'])
    expect(d.prefer).toEqual(['zone=a'])
    expect(() => validateDeploy({ name: 'f', path: '.', constraints: ['gpu'] })).toThrow(/FNMESH_ERR_INVALID_ARGUMENT|Placement constraint/)
    expect(() => checkStoredTerms('f', ['gpu=1', 'gpu=1'], 'constraint')).toThrow(/twice/)
    const spec = { name: 'f', version: 1, handler: 'index.handler', memoryMb: 128, timeoutMs: 3000, concurrency: 0, env: {}, triggers: [], bundleObject: `sha256-${'a'.repeat(64)}`, bundleSha256: 'a'.repeat(64), bundleSize: 10, maxRetries: 2, retryBackoffMs: 1000, maxEventAgeMs: 60_000 }
    expect(validateStoredSpec({ ...spec, constraints: ['gpu=1'], prefer: ['zone!=a'] }, 'f')).toBeNull()
    const bad = validateStoredSpec({ ...spec, constraints: ['gpu==1'] }, 'f')
    expect(bad?.code).toBe('FNMESH_ERR_INVALID_SPEC')
    expect(bad?.message).toMatch(/Placement constraint/)
  })
})
