import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { decode } from '../../proto/codec.js'
import { InputError } from '../../proto/errors.js'
import { bundleHasHandlerModule, checkBundlePath, packBundle, type PackedBundle } from '../../core/bundle.js'

let tmp: string

/** Writes `files` (path -> content) under `root`, creating folders */
async function tree (root: string, files: Record<string, string>): Promise<string> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true })
    await writeFile(join(root, path), content)
  }
  return root
}

/** Paths and texts of the files in a packed bundle, as the agent would unpack them */
function unpack (packed: PackedBundle): Record<string, string> {
  const { files } = decode('Bundle', packed.bytes, { maxBytes: Infinity })
  return Object.fromEntries(files.map(f => [f.path, Buffer.from(f.data).toString('utf8')]))
}

async function rejection (p: Promise<unknown>): Promise<any> {
  return await p.then(() => { throw new Error('expected a rejection') }, (err: unknown) => err)
}

describe('bundle packing', () => {
  beforeEach(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'fnmesh-bundle-'))
  })

  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true })
  })

  it('packs a folder with every file under its relative path, sorted', async () => {
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'exports.handler = 1', 'lib/util.js': 'u', 'lib/deep/x.json': '{}', 'README': 'r' })
    const packed = await packBundle(dir)
    expect(packed.files).toBe(4)
    expect(packed.defaultHandler).toBe('index.handler')
    expect(packed.sha256).toMatch(/^[0-9a-f]{64}$/)
    const files = decode('Bundle', packed.bytes, { maxBytes: Infinity }).files
    expect(files.map(f => f.path)).toEqual(['README', 'index.js', 'lib/deep/x.json', 'lib/util.js'])
    expect(unpack(packed)['lib/util.js']).toBe('u')
  })

  it('packs the same folder to the same digest twice', async () => {
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'a', 'b/c.js': 'c', 'b/a.js': 'a2' })
    const one = await packBundle(dir)
    const two = await packBundle(dir)
    expect(two.sha256).toBe(one.sha256)
    expect(Buffer.from(two.bytes).equals(Buffer.from(one.bytes))).toBe(true)
  })

  it('packs equal trees written in a different order to the same digest', async () => {
    const a = await tree(join(tmp, 'a'), { 'z.js': 'z', 'm/n.js': 'n', 'a.js': 'a' })
    const b = await tree(join(tmp, 'b'), { 'a.js': 'a', 'm/n.js': 'n', 'z.js': 'z' })
    expect((await packBundle(b)).sha256).toBe((await packBundle(a)).sha256)
  })

  it('changes the digest when a file changes', async () => {
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'one' })
    const before = await packBundle(dir)
    await writeFile(join(dir, 'index.js'), 'two')
    expect((await packBundle(dir)).sha256).not.toBe(before.sha256)
  })

  it('keeps unix permission bits', async () => {
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'x', 'run.sh': '#!/bin/sh' })
    const { chmod } = await import('node:fs/promises')
    await chmod(join(dir, 'run.sh'), 0o755)
    await chmod(join(dir, 'index.js'), 0o640)
    const files = decode('Bundle', (await packBundle(dir)).bytes, { maxBytes: Infinity }).files
    expect(files.map(f => [f.path, f.mode])).toEqual([['index.js', 0o640], ['run.sh', 0o755]])
  })

  it.each(['resize.js', 'echo.mjs', 'legacy.cjs', 'my.fn.js'])('packs the single file %s under its own name, default handler index.handler', async (name) => {
    const file = join(tmp, name)
    await writeFile(file, 'exports.handler = async () => 1')
    const packed = await packBundle(file)
    expect(packed.files).toBe(1)
    expect(packed.defaultHandler).toBe('index.handler')
    expect(unpack(packed)).toEqual({ [name]: 'exports.handler = async () => 1' })
  })

  it.each([['resize.js', 'index.js'], ['echo.mjs', 'index.mjs'], ['legacy.cjs', 'index.cjs'], ['notes.txt', 'notes.txt']])(
    'stores the single file %s as %s when asked to, so index.handler finds it', async (name, stored) => {
      const file = join(tmp, name)
      await writeFile(file, 'exports.handler = async () => 1')
      expect(unpack(await packBundle(file, { singleFileAsIndex: true }))).toEqual({ [stored]: 'exports.handler = async () => 1' })
    })

  it('skips .git, .hg, .svn and .DS_Store at any depth', async () => {
    const dir = await tree(join(tmp, 'fn'), {
      'index.js': 'x', '.git/config': 'c', '.git/objects/ab/cd': 'o', '.hg/store': 's', '.svn/entries': 'e',
      '.DS_Store': 'd', 'lib/.git/HEAD': 'h', 'lib/.DS_Store': 'd', '.env': 'kept', 'lib/a.js': 'a'
    })
    expect(Object.keys(unpack(await packBundle(dir)))).toEqual(['.env', 'index.js', 'lib/a.js'])
  })

  it('refuses a symlink that points outside the folder with FNMESH_ERR_BUNDLE_INVALID', async () => {
    await writeFile(join(tmp, 'secret.txt'), 'do not ship')
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'x' })
    await symlink(join(tmp, 'secret.txt'), join(dir, 'leak.txt'))
    const err = await rejection(packBundle(dir))
    expect(err).toBeInstanceOf(InputError)
    expect(err.code).toBe('FNMESH_ERR_BUNDLE_INVALID')
    expect(err.message).toBe('Bundle path "leak.txt" is a link that points outside the function folder')
  })

  it('refuses a relative symlink that climbs out of the folder', async () => {
    await tree(join(tmp, 'outside'), { 'x.js': 'x' })
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'x', 'lib/keep.js': 'k' })
    await symlink('../../outside', join(dir, 'lib', 'up'))
    const err = await rejection(packBundle(dir))
    expect(err.code).toBe('FNMESH_ERR_BUNDLE_INVALID')
    expect(err.message).toMatch(/"lib\/up"/)
  })

  it('refuses a folder whose name is only a prefix of the link target', async () => {
    // "/tmp/x/fn" must not accept a link into "/tmp/x/fn-other"
    await tree(join(tmp, 'fn-other'), { 'a.js': 'a' })
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'x' })
    await symlink(join(tmp, 'fn-other', 'a.js'), join(dir, 'a.js'))
    expect((await rejection(packBundle(dir))).code).toBe('FNMESH_ERR_BUNDLE_INVALID')
  })

  it('packs a symlink inside the folder as the file it points to', async () => {
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'x', 'lib/real.js': 'real' })
    await symlink('lib/real.js', join(dir, 'alias.js'))
    expect(unpack(await packBundle(dir))).toEqual({ 'alias.js': 'real', 'index.js': 'x', 'lib/real.js': 'real' })
  })

  it('packs a linked folder under the link\'s own name as well as its target', async () => {
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'x', 'node_modules/.pnpm/foo/index.js': 'foo' })
    await symlink('.pnpm/foo', join(dir, 'node_modules', 'foo'))
    expect(unpack(await packBundle(dir))).toEqual({ 'index.js': 'x', 'node_modules/.pnpm/foo/index.js': 'foo', 'node_modules/foo/index.js': 'foo' })
  })

  it('ends a folder symlink cycle and packs each file once', async () => {
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'x', 'a/b/leaf.js': 'l' })
    await symlink('../..', join(dir, 'a', 'b', 'loop'))
    await symlink('..', join(dir, 'a', 'parent'))
    expect(Object.keys(unpack(await packBundle(dir)))).toEqual(['a/b/leaf.js', 'index.js'])
  })

  it('refuses a symlink that points to itself instead of looping', async () => {
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'x' })
    await symlink('self', join(dir, 'self'))
    const err = await rejection(packBundle(dir))
    expect(err.code).toBe('FNMESH_ERR_BUNDLE_INVALID')
    expect(err.message).toMatch(/"self"/)
  })

  it('refuses a dangling symlink', async () => {
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'x' })
    await symlink('missing.js', join(dir, 'gone.js'))
    expect((await rejection(packBundle(dir))).code).toBe('FNMESH_ERR_BUNDLE_INVALID')
  })

  it('refuses code over maxBytes with FNMESH_ERR_BUNDLE_TOO_LARGE', async () => {
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'x'.repeat(600), 'b.js': 'y'.repeat(600) })
    const err = await rejection(packBundle(dir, { maxBytes: 1000 }))
    expect(err).toBeInstanceOf(InputError)
    expect(err.code).toBe('FNMESH_ERR_BUNDLE_TOO_LARGE')
    expect(err.message).toBe(`Function code at "${dir}" exceeds the bundle limit of 1000 bytes`)
  })

  it('refuses a single file over maxBytes', async () => {
    const file = join(tmp, 'big.js')
    await writeFile(file, 'x'.repeat(2048))
    expect((await rejection(packBundle(file, { maxBytes: 2047 }))).code).toBe('FNMESH_ERR_BUNDLE_TOO_LARGE')
  })

  it('counts the encoding overhead against maxBytes', async () => {
    // The file data alone fits; with paths, modes and framing the encoding does not.
    const dir = await tree(join(tmp, 'fn'), { 'index.js': 'x'.repeat(990) })
    const fits = await packBundle(dir)
    expect(fits.bytes.byteLength).toBeGreaterThan(999)
    expect((await rejection(packBundle(dir, { maxBytes: 999 }))).code).toBe('FNMESH_ERR_BUNDLE_TOO_LARGE')
    expect((await packBundle(dir, { maxBytes: fits.bytes.byteLength })).sha256).toBe(fits.sha256)
  })

  it('refuses a missing path with FNMESH_ERR_BUNDLE_INVALID', async () => {
    const missing = join(tmp, 'nope')
    const err = await rejection(packBundle(missing))
    expect(err).toBeInstanceOf(InputError)
    expect(err.code).toBe('FNMESH_ERR_BUNDLE_INVALID')
    expect(err.message).toBe(`Cannot read function code at "${missing}": no such file or folder`)
  })

  it('refuses an empty folder with FNMESH_ERR_BUNDLE_INVALID', async () => {
    await mkdir(join(tmp, 'empty'))
    const err = await rejection(packBundle(join(tmp, 'empty')))
    expect(err.code).toBe('FNMESH_ERR_BUNDLE_INVALID')
    expect(err.message).toMatch(/is empty$/)
  })
})

describe('bundle paths', () => {
  it.each(['index.js', 'a/b/c.js', '.env', 'a..b/c', 'x/...'])('accepts %j', (path) => {
    expect(checkBundlePath(path)).toBe(path)
  })

  it.each(['../x', '/abs', 'a//b', 'a/./b', './a', 'a/..', '..', '.', '', 'a/', 'a\\b', 'a\0b'])('refuses %j with FNMESH_ERR_BUNDLE_INVALID', (path) => {
    let err: any
    try {
      checkBundlePath(path)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(InputError)
    expect(err.code).toBe('FNMESH_ERR_BUNDLE_INVALID')
    expect(err.message).toBe(`Bundle path "${path}" is not a plain relative path inside the bundle`)
  })
})

describe('handler modules in a bundle', () => {
  it.each(['.js', '.mjs', '.cjs'])('finds the module of index.handler as index%s', (ext) => {
    expect(bundleHasHandlerModule([`index${ext}`, 'other.js'], 'index.handler')).toBe(true)
  })

  it('finds a module when several extensions are present', () => {
    expect(bundleHasHandlerModule(['index.cjs', 'index.mjs', 'index.js'], 'index.handler')).toBe(true)
  })

  it('accepts an extensionless module file, which Lambda loads first as CommonJS', () => {
    expect(bundleHasHandlerModule(['index'], 'index.handler')).toBe(true)
  })

  it('accepts a package of the module\'s name in node_modules, Lambda\'s last resort', () => {
    expect(bundleHasHandlerModule(['node_modules/mypkg/index.js', 'node_modules/mypkg/package.json'], 'mypkg.handler')).toBe(true)
    expect(bundleHasHandlerModule(['src/node_modules/mypkg/index.js'], 'src/mypkg.handler')).toBe(true)
    expect(bundleHasHandlerModule(['node_modules/other/index.js'], 'mypkg.handler')).toBe(false)
  })

  it('does not accept other extensions or other files', () => {
    expect(bundleHasHandlerModule(['index.ts', 'index.json', 'index.js.map'], 'index.handler')).toBe(false)
    expect(bundleHasHandlerModule(['main.js'], 'index.handler')).toBe(false)
    expect(bundleHasHandlerModule([], 'index.handler')).toBe(false)
  })

  it('takes the module name up to the first dot, as Lambda does: the rest is the (nested) export', () => {
    expect(bundleHasHandlerModule(['src/app.mjs'], 'src/app.main')).toBe(true)
    expect(bundleHasHandlerModule(['app.mjs'], 'src/app.main')).toBe(false)
    expect(bundleHasHandlerModule(['my.js'], 'my.fn.handler')).toBe(true)
    expect(bundleHasHandlerModule(['my.fn.js'], 'my.fn.handler')).toBe(false)
    expect(bundleHasHandlerModule(new Set(['a/b.cjs']).values(), 'a/b.run')).toBe(true)
  })
})
