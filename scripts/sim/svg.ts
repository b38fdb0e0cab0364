/**
 * Hand-written SVG line charts (no dependency): panels side by side, each with its own axes
 * (linear or log 10), one polyline with dots per series, a shared legend on top.
 */

export interface Series {
  name: string
  color: string
  points: Array<[number, number]>
  dashed?: boolean
}

export interface Panel {
  title: string
  xLabel: string
  yLabel: string
  xLog?: boolean
  yLog?: boolean
  /** force the y range (else from the data) */
  yMin?: number
  yMax?: number
  series: Series[]
}

export interface Chart {
  title: string
  subtitle?: string
  panels: Panel[]
  columns?: number
}

export const POLICY_COLORS: Record<string, string> = {
  fnmesh: '#1f6feb',
  random: '#d1242f',
  'round-robin': '#9a6700',
  oracle: '#1a7f37'
}

const W = 330
const H = 250
const M = { left: 58, right: 14, top: 30, bottom: 44 }

function esc (s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

function fmt (v: number): string {
  const a = Math.abs(v)
  if (a >= 1e9) return `${+(v / 1e9).toPrecision(3)}G`
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`
  if (a >= 100 || a === 0) return String(Math.round(v))
  return String(+v.toPrecision(3))
}

function ticks (lo: number, hi: number, log: boolean): number[] {
  if (log) {
    const out: number[] = []
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e)
    return out.filter(t => t >= lo * 0.999 && t <= hi * 1.001)
  }
  const span = hi - lo || 1
  const step = 10 ** Math.floor(Math.log10(span / 4))
  const nice = [1, 2, 2.5, 5, 10].map(m => m * step).find(s => span / s <= 6) ?? step * 10
  const out: number[] = []
  for (let t = Math.ceil(lo / nice) * nice; t <= hi + 1e-9; t += nice) out.push(+t.toPrecision(12))
  return out
}

function panel (p: Panel, ox: number, oy: number): string {
  const pts = p.series.flatMap(s => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!p.xLog || x > 0) && (!p.yLog || y > 0))
  if (pts.length === 0) return ''
  let [x0, x1] = [Math.min(...pts.map(q => q[0])), Math.max(...pts.map(q => q[0]))]
  let y0 = p.yMin ?? Math.min(...pts.map(q => q[1]))
  let y1 = p.yMax ?? Math.max(...pts.map(q => q[1]))
  if (p.xLog) { x0 = 10 ** Math.floor(Math.log10(x0)); x1 = 10 ** Math.ceil(Math.log10(x1)) }
  if (p.yLog) { y0 = 10 ** Math.floor(Math.log10(y0)); y1 = 10 ** Math.ceil(Math.log10(y1)) } else if (p.yMin == null) { y0 = Math.min(0, y0) }
  if (x1 === x0) x1 = x0 + 1
  if (y1 === y0) y1 = y0 + 1
  const pw = W - M.left - M.right
  const ph = H - M.top - M.bottom
  const sx = (x: number): number => ox + M.left + (p.xLog ? (Math.log10(x) - Math.log10(x0)) / (Math.log10(x1) - Math.log10(x0)) : (x - x0) / (x1 - x0)) * pw
  const sy = (y: number): number => oy + M.top + ph - (p.yLog ? (Math.log10(y) - Math.log10(y0)) / (Math.log10(y1) - Math.log10(y0)) : (y - y0) / (y1 - y0)) * ph
  const out: string[] = []
  out.push(`<text x="${ox + M.left + pw / 2}" y="${oy + 18}" text-anchor="middle" font-weight="bold">${esc(p.title)}</text>`)
  out.push(`<rect x="${ox + M.left}" y="${oy + M.top}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`)
  for (const t of ticks(x0, x1, p.xLog === true)) {
    const x = sx(t)
    out.push(`<line x1="${x}" y1="${oy + M.top}" x2="${x}" y2="${oy + M.top + ph}" stroke="#eee"/>`)
    out.push(`<text x="${x}" y="${oy + M.top + ph + 14}" text-anchor="middle" font-size="10">${fmt(t)}</text>`)
  }
  for (const t of ticks(y0, y1, p.yLog === true)) {
    const y = sy(t)
    out.push(`<line x1="${ox + M.left}" y1="${y}" x2="${ox + M.left + pw}" y2="${y}" stroke="#eee"/>`)
    out.push(`<text x="${ox + M.left - 4}" y="${y + 3}" text-anchor="end" font-size="10">${fmt(t)}</text>`)
  }
  out.push(`<text x="${ox + M.left + pw / 2}" y="${oy + H - 8}" text-anchor="middle" font-size="11">${esc(p.xLabel)}</text>`)
  out.push(`<text transform="translate(${ox + 13},${oy + M.top + ph / 2}) rotate(-90)" text-anchor="middle" font-size="11">${esc(p.yLabel)}</text>`)
  for (const s of p.series) {
    const ps = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!p.xLog || x > 0) && (!p.yLog || y > 0))
    if (ps.length === 0) continue
    const d = ps.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${sx(x).toFixed(1)},${sy(Math.min(Math.max(y, y0), y1)).toFixed(1)}`).join(' ')
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed === true ? ' stroke-dasharray="5,4"' : ''}/>`)
    for (const [x, y] of ps) out.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(Math.min(Math.max(y, y0), y1)).toFixed(1)}" r="2.5" fill="${s.color}"><title>${esc(s.name)}: ${fmt(x)}, ${fmt(y)}</title></circle>`)
  }
  return out.join('\n')
}

export function lineChart (c: Chart): string {
  const cols = c.columns ?? c.panels.length
  const rows = Math.ceil(c.panels.length / cols)
  const names = new Map<string, Series>()
  for (const p of c.panels) for (const s of p.series) if (!names.has(s.name)) names.set(s.name, s)
  const width = cols * W
  // Subtitle and legend wrap to the chart's width (about 6 px per character at 11 px).
  const lines = (text: string): string[] => {
    const out: string[] = []
    let line = ''
    for (const word of text.split(' ')) {
      if (line !== '' && (line.length + word.length + 1) * 5.8 > width - 20) { out.push(line); line = word } else line = line === '' ? word : `${line} ${word}`
    }
    if (line !== '') out.push(line)
    return out
  }
  const sub = c.subtitle != null ? lines(c.subtitle) : []
  const legend: string[] = []
  let lx = 10
  let ly = 30 + sub.length * 14 + 10
  for (const s of names.values()) {
    const w = 30 + s.name.length * 6.5
    if (lx > 10 && lx + w > width - 10) { lx = 10; ly += 16 }
    legend.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 18}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dashed === true ? ' stroke-dasharray="5,4"' : ''}/>`)
    legend.push(`<text x="${lx + 22}" y="${ly + 4}" font-size="11">${esc(s.name)}</text>`)
    lx += w
  }
  const top = ly + 12
  const height = top + rows * H
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="18" font-size="14" font-weight="bold">${esc(c.title)}</text>`,
    ...sub.map((l, i) => `<text x="10" y="${34 + i * 14}" font-size="11" fill="#555">${esc(l)}</text>`),
    ...legend
  ]
  c.panels.forEach((p, i) => parts.push(panel(p, (i % cols) * W, top + Math.floor(i / cols) * H)))
  parts.push('</svg>')
  return parts.join('\n') + '\n'
}
