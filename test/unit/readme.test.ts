import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { CATALOGUE } from '../../proto/errors.js'

describe('the README', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')

  it('lists every error code of the catalogue with its meaning', () => {
    for (const [code, { summary }] of Object.entries(CATALOGUE)) {
      expect(readme, code).toContain(`| \`${code}\` | ${summary} |`)
    }
  })

  it('starts with exactly the two quick-start commands', () => {
    const quick = readme.slice(readme.indexOf('## Quick start'), readme.indexOf('## How it fits together'))
    const commands = [...quick.matchAll(/^(npm .+?)\s{2,}#/gm)].map(m => m[1].trim())
    expect(commands).toEqual(['npm install && npm run demo', 'npm install && npm test'])
  })
})
