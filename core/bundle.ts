/**
 * Function bundles: a file or folder packed into one `Bundle` message, content-addressed by the
 * SHA-256 of its encoding. Packing refuses paths that escape the folder and bundles over the limit;
 * the agent applies the same path check when it unpacks.
 */
import { createHash } from 'node:crypto'
import { lstat, readdir, readFile, realpath, stat } from 'node:fs/promises'
import { basename, join, sep } from 'node:path'
import { encode, type BundleFile } from '../proto/codec.js'
import { InputError } from '../proto/errors.js'

/** Default cap on a bundle's encoded size (AWS Lambda takes 50 MB zipped) */
export const BUNDLE_LIMIT = 50 * 1024 * 1024
/** Cap on the number of files in a bundle */
export const BUNDLE_MAX_FILES = 20_000

/** Folders never packed */
const SKIP = new Set(['.git', '.hg', '.svn', '.DS_Store'])

export interface PackedBundle {
  bytes: Uint8Array
  sha256: string
  files: number
  /** handler to use when none is given: always index.handler (a single file is stored as index.<ext>) */
  defaultHandler: string
}

/** Checks a bundle-relative path: "/"-separated, no "..", not absolute, no NUL. Returns it or throws */
export function checkBundlePath (path: string): string {
  if (path === '' || path.startsWith('/') || path.includes('\\') || path.includes('\0') ||
      path.split('/').some(part => part === '..' || part === '.' || part === '')) {
    throw new InputError('FNMESH_ERR_BUNDLE_INVALID', `Bundle path "${path}" is not a plain relative path inside the bundle`)
  }
  return path
}

export interface PackOptions {
  /** @default BUNDLE_LIMIT */
  maxBytes?: number
  /**
   * Store a single .js/.mjs/.cjs file as index.<ext>, so that the default handler index.handler
   * finds it (used when no handler is given). @default false
   */
  singleFileAsIndex?: boolean
}

export async function packBundle (path: string, options: PackOptions = {}): Promise<PackedBundle> {
  const maxBytes = options.maxBytes ?? BUNDLE_LIMIT
  let info
  try {
    info = await stat(path)
  } catch (err: any) {
    throw new InputError('FNMESH_ERR_BUNDLE_INVALID', `Cannot read function code at "${path}": ${err.code === 'ENOENT' ? 'no such file or folder' : String(err.message)}`, { cause: err })
  }
  const files: BundleFile[] = []
  let total = 0
  const add = (file: BundleFile): void => {
    total += (file.data as Uint8Array).byteLength + (file.path as string).length
    if (total > maxBytes) {
      throw new InputError('FNMESH_ERR_BUNDLE_TOO_LARGE', `Function code at "${path}" exceeds the bundle limit of ${maxBytes} bytes`)
    }
    if (files.length >= BUNDLE_MAX_FILES) {
      throw new InputError('FNMESH_ERR_BUNDLE_TOO_LARGE', `Function code at "${path}" has more than ${BUNDLE_MAX_FILES} files`)
    }
    files.push(file)
  }
  if (info.isFile()) {
    let name = basename(path)
    const ext = /\.(c|m)?js$/.exec(name)?.[0]
    if (options.singleFileAsIndex === true && ext != null) name = `index${ext}`
    add({ path: checkBundlePath(name), mode: info.mode & 0o777, data: await readFile(path) })
  } else if (info.isDirectory()) {
    const root = await realpath(path)
    await walk(root, root, '', add, new Set([root]))
    if (files.length === 0) throw new InputError('FNMESH_ERR_BUNDLE_INVALID', `Function folder "${path}" is empty`)
  } else {
    throw new InputError('FNMESH_ERR_BUNDLE_INVALID', `Function code at "${path}" is neither a file nor a folder`)
  }
  // Sorted so that the same tree always has the same digest.
  files.sort((a, b) => (a.path as string) < (b.path as string) ? -1 : 1)
  const bytes = encode('Bundle', { files })
  if (bytes.byteLength > maxBytes) {
    throw new InputError('FNMESH_ERR_BUNDLE_TOO_LARGE', `Function code at "${path}" exceeds the bundle limit of ${maxBytes} bytes`)
  }
  return { bytes, sha256: createHash('sha256').update(bytes).digest('hex'), files: files.length, defaultHandler: 'index.handler' }
}

/**
 * Packs `dir` under the bundle path `base`. A link is packed as what it points to, under the
 * link's own name, and only if the target stays inside the folder; `ancestors` holds the real
 * paths of the folders being walked, so a link cycle ends.
 */
async function walk (root: string, dir: string, base: string, add: (f: BundleFile) => void, ancestors: Set<string>): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true })
  for (const entry of entries) {
    if (SKIP.has(entry.name)) continue
    let full = join(dir, entry.name)
    const rel = base === '' ? entry.name : `${base}/${entry.name}`
    let st = await lstat(full)
    if (st.isSymbolicLink()) {
      const target = await realpath(full).catch(() => '')
      if (target === '' || (target !== root && !target.startsWith(root + sep))) {
        throw new InputError('FNMESH_ERR_BUNDLE_INVALID', `Bundle path "${rel}" is a link that points outside the function folder`)
      }
      full = target
      st = await stat(full)
    }
    if (st.isDirectory()) {
      const real = await realpath(full)
      if (ancestors.has(real)) continue
      await walk(root, full, rel, add, new Set([...ancestors, real]))
    } else if (st.isFile()) {
      add({ path: checkBundlePath(rel), mode: st.mode & 0o777, data: await readFile(full) })
    }
  }
}

/**
 * True if `files` holds a module Lambda would load for `handler` ("dir/file.export"): the file
 * without extension or with .js/.mjs/.cjs, or a package of that name in a node_modules folder.
 */
export function bundleHasHandlerModule (paths: Iterable<string>, handler: string): boolean {
  const slash = handler.lastIndexOf('/')
  const root = handler.slice(0, slash + 1)
  const dot = handler.indexOf('.', slash + 1)
  const name = handler.slice(slash + 1, dot < 0 ? undefined : dot)
  const mod = root + name
  const list = [...paths]
  const set = new Set(list)
  if (['', '.js', '.mjs', '.cjs'].some(ext => set.has(mod + ext))) return true
  const packages = [`node_modules/${name}`, `${root}node_modules/${name}`]
  return list.some(p => packages.some(pkg => p === `${pkg}.js` || p.startsWith(`${pkg}/`)))
}
