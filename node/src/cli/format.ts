/**
 * Output helpers for the CLI: aligned tables, durations, and --data parsing.
 */
import { readFile } from 'node:fs/promises'
import { FnmeshError, FunctionError, InputError, UsageError, fnmeshError, toErrorInfo } from '../../../proto/errors.js'

/** Renders rows as an aligned text table with a header */
export function table (headers: string[], rows: Array<Array<string | number>>): string {
  const cells = [headers, ...rows.map(r => r.map(String))]
  const widths = headers.map((_, i) => Math.max(...cells.map(r => (r[i] ?? '').length)))
  return cells.map(r => r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i])).join('  ').trimEnd()).join('\n')
}

export { parseDuration } from '../../../core/duration.js'

/** ms -> "1.2s", "3m", "2h" */
export function formatAgo (ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)}m`
  return `${Math.round(ms / 3_600_000)}h`
}

/** --data JSON or --data @FILE -> the parsed value ({} when absent) */
export async function readData (data: string | undefined): Promise<unknown> {
  if (data == null) return {}
  let text = data
  if (data.startsWith('@')) {
    try {
      text = await readFile(data.slice(1), 'utf8')
    } catch (err: any) {
      throw new UsageError('FNMESH_ERR_BAD_USAGE', `Cannot read --data file "${data.slice(1)}": ${err.code === 'ENOENT' ? 'no such file' : String(err.message)}`)
    }
  }
  try {
    return JSON.parse(text)
  } catch (err: any) {
    throw new InputError('FNMESH_ERR_INVALID_JSON', `--data is not valid JSON: ${String(err.message)}`)
  }
}

/** Parses KEY=VALUE pairs of --env */
export function parseEnv (pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {}
  for (const p of pairs) {
    const eq = p.indexOf('=')
    if (eq <= 0) throw new UsageError('FNMESH_ERR_INVALID_ARGUMENT', `--env "${p}" is invalid: expected KEY=VALUE`)
    env[p.slice(0, eq)] = p.slice(eq + 1)
  }
  return env
}

/** A progress line on stderr for steps that may take a while (only on a terminal) */
export function progress (text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`${text}\n`)
}

/**
 * A failed `fnmesh invoke`, as the AWS CLI shows Lambda's: with `--json` the whole error payload
 * (errorType, errorMessage, trace, code) goes to stdout; the one line on stderr names the
 * function's errorType before its message. Returns the error to report.
 */
export function invokeFailure (err: unknown, asJson: boolean): unknown {
  if (!(err instanceof FnmeshError)) return err
  const info = toErrorInfo(err)
  if (asJson) {
    const where = err as FnmeshError & { invocationId?: string, nodeId?: string }
    process.stdout.write(JSON.stringify({ errorType: info.errorType, errorMessage: info.errorMessage, trace: info.trace, code: info.code, invocationId: where.invocationId }) + '\n')
  }
  if (!(err instanceof FunctionError) || info.errorType === '') return err
  return fnmeshError(info.code, `${info.errorType}: ${info.errorMessage}`, { errorType: info.errorType, trace: info.trace })
}
