/**
 * Output of `fnmesh usage`: the totals as tables (per function, per node, per bucket, then the
 * grand total), and `--export` streamed to stdout as CSV or a JSON array, page by page.
 */
import { once } from 'node:events'
import { csvHeader, csvRow, type ExportedRecord, type UsageReport, type UsageTotals } from '../../../sdk/src/usage.js'
import { table } from './format.js'

const gbs = (v: number): string => v.toFixed(6)
const money = (v: number | undefined): string => v == null ? '' : v.toFixed(6)

export function usageTables (u: UsageReport): string {
  const priced = u.price != null
  const cols = (t: UsageTotals): Array<string | number> => [t.invocations, t.errors, t.coldStarts, t.billedMs, gbs(t.gbSeconds), ...(priced ? [money(t.cost)] : [])]
  const head = ['INVOCATIONS', 'ERRORS', 'COLD', 'BILLED MS', 'GB-SECONDS', ...(priced ? ['COST'] : [])]
  const parts = [
    table(['FUNCTION', ...head], u.functions.map(f => [f.name, ...cols(f)])),
    table(['NODE', 'NAME', ...head], u.nodes.map(n => [n.id, n.name || '-', ...cols(n)]))
  ]
  if (u.buckets != null) {
    parts.push(table(['BUCKET', 'FUNCTION', 'NODE', ...head], u.buckets.map(b => [b.start, b.function, b.nodeId, ...cols(b)])))
  }
  parts.push(table(['TOTAL', ...head], [['all', ...cols(u.totals)]]))
  return parts.join('\n\n')
}

async function write (text: string): Promise<void> {
  if (!process.stdout.write(text)) await once(process.stdout, 'drain')
}

/** Streams exported records as CSV (header first) or as one JSON array */
export async function writeExport (records: AsyncIterable<ExportedRecord>, format: 'csv' | 'json'): Promise<number> {
  let n = 0
  if (format === 'csv') {
    await write(csvHeader() + '\n')
    for await (const r of records) { await write(csvRow(r) + '\n'); n++ }
    return n
  }
  await write('[')
  for await (const r of records) { await write((n++ === 0 ? '\n' : ',\n') + JSON.stringify(r)) }
  await write(n === 0 ? ']\n' : '\n]\n')
  return n
}
