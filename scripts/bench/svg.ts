/**
 * Small hand-written SVG charts for the benchmark results (no dependency): line charts for
 * latency CDFs and scaling curves, grouped bars for per-node spreads.
 */

export interface Series { name: string, points: Array<[number, number]> }

const W = 640
const H = 400
const M = { left: 64, right: 160, top: 40, bottom: 52 }
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf']

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const fmt = (v: number): string => Math.abs(v) >= 1000 ? `${+(v / 1000).toFixed(1)}k` : Math.abs(v) >= 10 ? String(Math.round(v)) : String(+v.toFixed(2))

function ticks (min: number, max: number, log: boolean): number[] {
  if (log) {
    const out: number[] = []
    for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) out.push(10 ** e)
    return out.filter(v => v >= min / 1.0001 && v <= max * 1.0001)
  }
  const step = 10 ** Math.floor(Math.log10((max - min) / 4 || 1))
  const nice = [1, 2, 5, 10].map(k => k * step).find(s => (max - min) / s <= 6) ?? step * 10
  const out: number[] = []
  for (let v = Math.ceil(min / nice) * nice; v <= max + 1e-9; v += nice) out.push(+v.toFixed(10))
  return out
}

function frame (title: string, xLabel: string, yLabel: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - M.right / 2 + M.left / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`,
    `<text x="${M.left + (W - M.left - M.right) / 2}" y="${H - 10}" text-anchor="middle">${esc(xLabel)}</text>`,
    `<text transform="translate(16 ${M.top + (H - M.top - M.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`,
    ...body,
    '</svg>'
  ].join('\n')
}

export function lineChart (opts: { title: string, xLabel: string, yLabel: string, series: Series[], logX?: boolean, logY?: boolean }): string {
  const pts = opts.series.flatMap(s => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.logX || x > 0) && (!opts.logY || y > 0))
  if (pts.length === 0) return frame(opts.title, opts.xLabel, opts.yLabel, ['<text x="200" y="200">no data</text>'])
  let [x0, x1] = [Math.min(...pts.map(p => p[0])), Math.max(...pts.map(p => p[0]))]
  let [y0, y1] = [Math.min(...pts.map(p => p[1])), Math.max(...pts.map(p => p[1]))]
  if (!opts.logY) y0 = Math.min(0, y0)
  if (x0 === x1) { x0 -= 1; x1 += 1 }
  if (y0 === y1) { y1 = y0 + 1 }
  const tx = (v: number): number => opts.logX ? Math.log10(v) : v
  const ty = (v: number): number => opts.logY ? Math.log10(v) : v
  const px = (x: number): number => M.left + (tx(x) - tx(x0)) / (tx(x1) - tx(x0)) * (W - M.left - M.right)
  const py = (y: number): number => H - M.bottom - (ty(y) - ty(y0)) / (ty(y1) - ty(y0)) * (H - M.top - M.bottom)
  const body: string[] = [`<rect x="${M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" fill="none" stroke="#999"/>`]
  for (const t of ticks(x0, x1, opts.logX === true)) body.push(`<line x1="${px(t)}" y1="${H - M.bottom}" x2="${px(t)}" y2="${H - M.bottom + 4}" stroke="#999"/><text x="${px(t)}" y="${H - M.bottom + 16}" text-anchor="middle">${fmt(t)}</text>`)
  for (const t of ticks(y0, y1, opts.logY === true)) body.push(`<line x1="${M.left}" y1="${py(t)}" x2="${W - M.right}" y2="${py(t)}" stroke="#eee"/><text x="${M.left - 6}" y="${py(t) + 4}" text-anchor="end">${fmt(t)}</text>`)
  opts.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]
    const ok = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.logX || x > 0) && (!opts.logY || y > 0))
    if (ok.length > 0) body.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${ok.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ')}"/>`)
    if (ok.length <= 12) for (const [x, y] of ok) body.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${color}"/>`)
    body.push(`<rect x="${W - M.right + 12}" y="${M.top + i * 20}" width="12" height="12" fill="${color}"/><text x="${W - M.right + 30}" y="${M.top + i * 20 + 11}">${esc(s.name)}</text>`)
  })
  return frame(opts.title, opts.xLabel, opts.yLabel, body)
}

export function barChart (opts: { title: string, yLabel: string, groups: string[], series: Array<{ name: string, values: number[] }> }): string {
  const max = Math.max(1e-9, ...opts.series.flatMap(s => s.values).filter(Number.isFinite))
  const gw = (W - M.left - M.right) / Math.max(1, opts.groups.length)
  const bw = gw * 0.8 / Math.max(1, opts.series.length)
  const py = (y: number): number => H - M.bottom - y / max * (H - M.top - M.bottom)
  const body: string[] = [`<line x1="${M.left}" y1="${H - M.bottom}" x2="${W - M.right}" y2="${H - M.bottom}" stroke="#999"/>`]
  for (const t of ticks(0, max, false)) body.push(`<line x1="${M.left}" y1="${py(t)}" x2="${W - M.right}" y2="${py(t)}" stroke="#eee"/><text x="${M.left - 6}" y="${py(t) + 4}" text-anchor="end">${fmt(t)}</text>`)
  opts.groups.forEach((g, gi) => {
    body.push(`<text x="${M.left + gi * gw + gw / 2}" y="${H - M.bottom + 16}" text-anchor="middle">${esc(g)}</text>`)
    opts.series.forEach((s, si) => {
      const v = s.values[gi] ?? 0
      const x = M.left + gi * gw + gw * 0.1 + si * bw
      body.push(`<rect x="${x.toFixed(1)}" y="${py(v).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(H - M.bottom - py(v)).toFixed(1)}" fill="${COLORS[si % COLORS.length]}"/>`)
    })
  })
  opts.series.forEach((s, i) => body.push(`<rect x="${W - M.right + 12}" y="${M.top + i * 20}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/><text x="${W - M.right + 30}" y="${M.top + i * 20 + 11}">${esc(s.name)}</text>`))
  return frame(opts.title, '', opts.yLabel, body)
}

/** A latency CDF series from a summary's 101 quantiles: x = latency, y = fraction */
export function cdfSeries (name: string, cdf: number[]): Series {
  return { name, points: cdf.map((v, i) => [v, i / 100]) }
}
