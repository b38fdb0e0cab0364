import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const dir = fileURLToPath(new URL('../fixtures/functions/', import.meta.url))

/** Absolute path of a fixture function file or folder under test/fixtures/functions */
export const fixture = (name: string): string => join(dir, name)
