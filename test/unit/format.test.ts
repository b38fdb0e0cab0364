import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { formatAgo, parseDuration, parseEnv, readData, table } from '../../node/src/cli/format.js'
import { InputError, UsageError } from '../../proto/errors.js'

/** The error `p` rejects with (fails the test if it resolves) */
async function rejection (p: Promise<unknown>): Promise<any> {
  return await p.then(v => { throw new Error(`expected a rejection, got ${JSON.stringify(v)}`) }, (err: unknown) => err)
}

function thrown (fn: () => unknown): any {
  try {
    fn()
  } catch (err) {
    return err
  }
  throw new Error('expected a throw')
}

describe('CLI durations', () => {
  it.each([
    ['250ms', 250],
    ['90s', 90_000],
    ['15m', 900_000],
    ['2h', 7_200_000],
    ['7d', 604_800_000],
    ['1w', 604_800_000],
    ['1.5h', 5_400_000],
    ['0.5s', 500],
    ['0s', 0],
    [' 2m ', 120_000],
    ['0.0015s', 2]
  ])('reads "%s" as %i ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms)
  })

  it.each(['', '10', 's', '-5s', '5 s', '5sec', '5S', '1e3s', '.5s', '5.s', '1h30m', 'NaNs'])('refuses "%s" with FNMESH_ERR_INVALID_ARGUMENT', (text) => {
    const err = thrown(() => parseDuration(text))
    expect(err).toBeInstanceOf(UsageError)
    expect(err.code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    expect(err.message).toBe(`Duration "${text}" is invalid: use a number and a unit, e.g. 90s, 15m, 2h, 7d`)
  })

  it.each([
    [0, '0ms'],
    [999, '999ms'],
    [1000, '1.0s'],
    [1250, '1.3s'],
    [59_999, '60.0s'],
    [60_000, '1m'],
    [3_599_999, '60m'],
    [3_600_000, '1h'],
    [90_000_000, '25h']
  ])('formats %i ms ago as "%s"', (ms, text) => {
    expect(formatAgo(ms)).toBe(text)
  })
})

describe('CLI --data', () => {
  let dir: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-format-'))
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('is an empty object when absent', async () => {
    expect(await readData(undefined)).toEqual({})
  })

  it('parses inline JSON of any type', async () => {
    expect(await readData('{"n":1,"s":"x","a":[true,null]}')).toEqual({ n: 1, s: 'x', a: [true, null] })
    expect(await readData('42')).toBe(42)
    expect(await readData('"text"')).toBe('text')
    expect(await readData('null')).toBeNull()
  })

  it('reads @FILE as JSON', async () => {
    const file = join(dir, 'event.json')
    await writeFile(file, '{\n  "records": [{ "id": 1 }]\n}\n')
    expect(await readData(`@${file}`)).toEqual({ records: [{ id: 1 }] })
  })

  it('refuses a missing @FILE as bad usage (exit 2)', async () => {
    const file = join(dir, 'nope.json')
    const err = await rejection(readData(`@${file}`))
    expect(err.code).toBe('FNMESH_ERR_BAD_USAGE')
    expect(err.message).toBe(`Cannot read --data file "${file}": no such file`)
  })

  it('refuses an @FILE that is a folder as bad usage (exit 2)', async () => {
    const err = await rejection(readData(`@${dir}`))
    expect(err.code).toBe('FNMESH_ERR_BAD_USAGE')
    expect(err.message).toMatch(/^Cannot read --data file ".*": .*EISDIR/)
  })

  it.each(['{n:1}', '{"n":1', "{'n':1}", '', 'undefined'])('refuses inline %j with FNMESH_ERR_INVALID_JSON', async (text) => {
    const err = await rejection(readData(text))
    expect(err).toBeInstanceOf(InputError)
    expect(err.code).toBe('FNMESH_ERR_INVALID_JSON')
    expect(err.message).toMatch(/^--data is not valid JSON: /)
  })

  it('refuses an @FILE holding invalid JSON with FNMESH_ERR_INVALID_JSON', async () => {
    const file = join(dir, 'bad.json')
    await writeFile(file, '{"trailing": 1,}')
    const err = await rejection(readData(`@${file}`))
    expect(err.code).toBe('FNMESH_ERR_INVALID_JSON')
  })
})

describe('CLI --env', () => {
  it('parses KEY=VALUE pairs, splitting at the first "="', () => {
    expect(parseEnv(['A=1', 'URL=postgres://u:p@h/db?x=y', 'EMPTY=', 'SPACE= padded '])).toEqual({
      A: '1', URL: 'postgres://u:p@h/db?x=y', EMPTY: '', SPACE: ' padded '
    })
  })

  it('lets a later pair win', () => {
    expect(parseEnv(['A=1', 'A=2'])).toEqual({ A: '2' })
  })

  it('is empty for no pairs', () => {
    expect(parseEnv([])).toEqual({})
  })

  it.each(['NOEQUALS', '=value', ''])('refuses %j with FNMESH_ERR_INVALID_ARGUMENT', (pair) => {
    const err = thrown(() => parseEnv(['OK=1', pair]))
    expect(err).toBeInstanceOf(UsageError)
    expect(err.code).toBe('FNMESH_ERR_INVALID_ARGUMENT')
    expect(err.message).toBe(`--env "${pair}" is invalid: expected KEY=VALUE`)
  })
})

describe('CLI tables', () => {
  it('aligns columns to the widest cell with two spaces between them', () => {
    const out = table(['NAME', 'SLOTS', 'WARM'], [['node-a', 8, 'ok@1'], ['b', 16, ''], ['node-long-name', 2, 'echo@3, ok@1']])
    expect(out).toBe([
      'NAME            SLOTS  WARM',
      'node-a          8      ok@1',
      'b               16',
      'node-long-name  2      echo@3, ok@1'
    ].join('\n'))
  })

  it('prints only the header for no rows', () => {
    expect(table(['A', 'B'], [])).toBe('A  B')
  })

  it('starts every column at the same offset on every line', () => {
    const lines = table(['X', 'YY', 'Z'], [['aaaa', 'b', 'c'], ['d', 'eeeeee', 'f']]).split('\n')
    // second column: after "aaaa" (the widest first cell) and two spaces
    expect(lines.map(l => l.indexOf(l.split(/\s+/)[1]))).toEqual([6, 6, 6])
    for (const l of lines) expect(l).toBe(l.trimEnd())
  })
})
