// The fnmesh dashboard: polls /api/snapshot every 2 s and redraws. Everything shown comes from
// the mesh (function names, log lines, error codes...) and is untrusted: it only ever reaches the
// page as text nodes (textContent), never as markup. The admin token, when the listener asks for
// one, stays in this tab's sessionStorage and travels as a bearer header.
'use strict'
;(() => {
  const POLL_MS = 2000
  const TOKEN_KEY = 'fnmesh.adminToken'
  const COLORS = ['#4cc2ff', '#3fb950', '#d29922', '#bc8cff', '#ff7b72', '#39c5cf', '#f778ba', '#a5d6ff']
  const $ = (id) => document.getElementById(id)
  const state = { range: '1h', timer: 0, charts: {}, lastOk: 0, busy: false }

  /** An element with attributes and children; strings become text nodes */
  function el (tag, attrs, ...children) {
    const e = document.createElement(tag)
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue
      if (k === 'class') e.className = v
      else if (k === 'dataset') Object.assign(e.dataset, v)
      else e.setAttribute(k, String(v))
    }
    for (const c of children) {
      if (c == null || c === false) continue
      e.append(c instanceof Node ? c : document.createTextNode(String(c)))
    }
    return e
  }

  const fmt = {
    int: (n) => Number(n).toLocaleString('en-US'),
    rate: (n) => n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2),
    ms: (n) => n == null ? '–' : n >= 10_000 ? `${(n / 1000).toFixed(1)} s` : n >= 100 ? `${Math.round(n)} ms` : `${n.toFixed(1)} ms`,
    ago: (ms) => ms < 1000 ? `${Math.round(ms)} ms` : ms < 60_000 ? `${(ms / 1000).toFixed(1)} s` : ms < 3_600_000 ? `${Math.round(ms / 60_000)} m` : `${Math.round(ms / 3_600_000)} h`,
    time: (ms) => { const d = new Date(ms); return `${d.toLocaleTimeString('en-GB', { hour12: false })}.${String(d.getMilliseconds()).padStart(3, '0')}` },
    gbs: (n) => n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(2) : n.toFixed(4),
    short: (id) => id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id
  }

  function headers () {
    const t = sessionStorage.getItem(TOKEN_KEY)
    return t ? { authorization: `Bearer ${t}` } : {}
  }

  function setStatus (s, text) {
    const e = $('status')
    e.dataset.state = s
    e.textContent = text
  }

  async function poll () {
    if (state.busy) return
    state.busy = true
    try {
      const res = await fetch(`api/snapshot?range=${encodeURIComponent(state.range)}`, { headers: headers(), cache: 'no-store' })
      if (res.status === 401) { showLogin(sessionStorage.getItem(TOKEN_KEY) ? 'The token was refused' : ''); return }
      if (!res.ok) throw new Error(`HTTP ${res.status}`)
      const snap = await res.json()
      showMain()
      render(snap)
      state.lastOk = Date.now()
      setStatus('live', `live · ${fmt.time(snap.at).slice(0, 8)}`)
    } catch (err) {
      setStatus(Date.now() - state.lastOk < 10_000 ? 'stale' : 'down', `no answer (${err && err.message ? err.message : err})`)
    } finally {
      state.busy = false
    }
  }

  function schedule () {
    clearInterval(state.timer)
    state.timer = setInterval(poll, POLL_MS)
    void poll()
  }

  function showLogin (message) {
    clearInterval(state.timer)
    $('main').hidden = true
    $('login').hidden = false
    $('logout').hidden = true
    $('login-error').textContent = message || ''
    setStatus('down', 'token required')
    $('token').focus()
  }

  function showMain () {
    $('login').hidden = true
    $('main').hidden = false
    $('logout').hidden = !sessionStorage.getItem(TOKEN_KEY)
  }

  function render (s) {
    $('agent').textContent = `${s.self.name} · ${fmt.short(s.self.id)}`
    $('agent').title = s.self.id
    renderCards(s)
    renderNodes(s)
    renderFunctions(s)
    renderCharts(s)
    renderRuns(s)
    renderLogs(s)
    $('foot').textContent = `Served by ${s.self.name}. Figures from its gossip table and its replica of the meter ledger; rate, p50/p99 and errors (1 min) over the last ${Math.round(s.recentMs / 1000)} s${s.recentSampled ? ' (sampled)' : ''}.`
  }

  function card (label, value, hint, cls) {
    return el('div', { class: `card ${cls || ''}`, dataset: { card: label } }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value), el('div', { class: 'hint' }, hint || ''))
  }

  function renderCards (s) {
    const slots = s.nodes.reduce((a, n) => a + n.slots, 0)
    const inFlight = s.nodes.reduce((a, n) => a + n.inFlight, 0)
    const rate = s.functions.reduce((a, f) => a + f.recent.ratePerSec, 0)
    const errs = s.functions.reduce((a, f) => a + f.recent.errors, 0)
    const total = s.functions.reduce((a, f) => a + f.invocations, 0)
    const dlq = s.functions.reduce((a, f) => a + (f.dlq || 0), 0)
    const backlog = s.functions.reduce((a, f) => a + (f.backlog || 0), 0)
    $('cards').replaceChildren(
      card('Nodes', fmt.int(s.nodes.length), `${s.nodes.filter(n => n.status === 'ok').length} ok`),
      card('Slots in use', `${fmt.int(inFlight)} / ${fmt.int(slots)}`, slots > 0 ? `${Math.round(inFlight / slots * 100)}% load` : ''),
      card('Invocations /s', fmt.rate(rate), 'last minute, whole mesh'),
      card('Errors', fmt.int(errs), 'last minute', errs > 0 ? 'bad' : ''),
      card('Invocations', fmt.int(total), 'all time, metered'),
      card('Backlog / DLQ', `${fmt.int(backlog)} / ${fmt.int(dlq)}`, 'events waiting / dead letters', dlq > 0 ? 'bad' : '')
    )
  }

  function emptyRow (cols, text) {
    return el('tr', {}, el('td', { class: 'empty', colspan: cols }, text))
  }

  function renderNodes (s) {
    const rows = s.nodes.map(n => {
      const pct = Math.min(1, n.load)
      const bar = el('span', { class: `bar${pct >= 1 ? ' full' : pct >= 0.75 ? ' hot' : ''}` }, el('span'))
      bar.firstChild.style.width = `${Math.round(pct * 100)}%`
      return el('tr', { dataset: { nodeId: n.id } },
        el('td', {}, el('span', { class: 'node-name' }, n.name), n.self ? el('span', { class: 'pill self' }, 'this agent') : null),
        el('td', { class: 'mono', title: n.id }, fmt.short(n.id)),
        el('td', {}, el('span', { class: `pill ${n.status === 'ok' ? 'ok' : n.status.split(':')[0].split(' ')[0]}` }, n.status)),
        el('td', { class: 'num slots' }, fmt.int(n.slots)),
        el('td', { class: 'num in-flight' }, fmt.int(n.inFlight)),
        el('td', {}, bar, el('span', { class: 'pct' }, `${Math.round(n.load * 100)}%`)),
        el('td', { class: 'num invocations' }, fmt.int(n.invocations)),
        el('td', { class: 'num cold' }, fmt.int(n.coldStarts)),
        el('td', { class: 'warm' }, ...(n.warm.length ? n.warm.slice(0, 12).map(w => el('span', { class: 'tag' }, w)) : [el('span', { class: 'muted' }, '–')]), n.warm.length > 12 ? el('span', { class: 'muted' }, ` +${n.warm.length - 12}`) : null),
        el('td', { class: 'layers' }, ...n.layers.map(l => el('span', { class: 'tag' }, l))),
        el('td', { class: 'num' }, n.self ? 'now' : `${fmt.ago(n.lastSeenMs)} ago`)
      )
    })
    $('nodes').tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow(11, 'No nodes')]))
    $('nodes-sub').textContent = `${s.nodes.length} live, as ${s.self.name} sees them over gossip`
  }

  function renderFunctions (s) {
    const rows = s.functions.map(f => el('tr', { dataset: { fn: f.name } },
      el('td', { class: 'fn-name' }, f.name, f.deployed ? null : el('span', { class: 'pill warn self' }, 'deleted')),
      el('td', { class: 'num' }, f.version ? `v${f.version}` : '–'),
      el('td', { class: 'num rate' }, fmt.rate(f.recent.ratePerSec)),
      el('td', { class: 'num p50' }, fmt.ms(f.recent.p50Ms)),
      el('td', { class: 'num p99' }, fmt.ms(f.recent.p99Ms)),
      el('td', { class: `num recent-errors${f.recent.errors > 0 ? ' bad-text' : ''}` }, fmt.int(f.recent.errors)),
      el('td', { class: 'num invocations' }, fmt.int(f.invocations)),
      el('td', { class: 'num errors' }, fmt.int(f.errors), f.invocations > 0 && f.errors > 0 ? el('span', { class: 'muted' }, ` (${(f.errors / f.invocations * 100).toFixed(1)}%)`) : null),
      el('td', { class: 'num cold' }, fmt.int(f.coldStarts)),
      el('td', { class: 'num' }, fmt.gbs(f.gbSeconds)),
      el('td', { class: 'num backlog' }, f.backlog == null ? '–' : fmt.int(f.backlog)),
      el('td', { class: 'num dlq' }, f.dlq == null ? '–' : fmt.int(f.dlq)),
      el('td', {}, ...(f.triggers.length ? f.triggers.map(t => el('span', { class: 'tag' }, t)) : [el('span', { class: 'muted' }, 'sync only')]))
    ))
    $('functions').tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow(13, 'No functions deployed')]))
    $('functions-sub').textContent = `${s.functions.length} · totals from the meter ledger`
  }

  const hhmm = (u, splits) => splits.map(v => v == null ? '' : new Date(v * 1000).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' }))

  function axes (right) {
    const axis = { stroke: '#8b97a8', grid: { stroke: '#222b38', width: 1 }, ticks: { stroke: '#263041', width: 1 }, font: '11px system-ui, sans-serif' }
    const out = [{ ...axis, values: hhmm }, { ...axis, size: 50 }]
    if (right) out.push({ ...axis, scale: right, side: 1, size: 60, grid: { show: false } })
    return out
  }

  function chart (key, target, series, data, right) {
    const names = series.map(x => x.label).join('\u0000')
    const width = Math.max(300, target.clientWidth)
    let c = state.charts[key]
    if (c && c.names === names) {
      c.plot.setData(data)
      if (Math.abs(c.plot.width - width) > 2) c.plot.setSize({ width, height: 220 })
      return
    }
    if (c) c.plot.destroy()
    // uPlot writes series labels into its legend with textContent.
    const plot = new window.uPlot({ width, height: 220, series: [{ value: (u, v) => v == null ? '–' : new Date(v * 1000).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' }) }, ...series], axes: axes(right), legend: { live: true }, cursor: { drag: { x: false, y: false } }, scales: { x: { time: true } } }, data, target)
    state.charts[key] = { plot, names }
  }

  function renderCharts (s) {
    if (typeof window.uPlot !== 'function') return
    const u = s.usage
    const xs = u.buckets.map(b => b / 1000)
    const fns = u.functions.slice(0, 7)
    const rest = u.functions.slice(7)
    const series = fns.map((f, i) => ({ label: f.name, stroke: COLORS[i % COLORS.length], width: 2, fill: `${COLORS[i % COLORS.length]}14`, points: { show: false } }))
    const data = [xs, ...fns.map(f => f.invocations)]
    if (rest.length > 0) {
      series.push({ label: `${rest.length} others`, stroke: '#8b97a8', width: 1.5, points: { show: false } })
      data.push(xs.map((_, i) => rest.reduce((a, f) => a + f.invocations[i], 0)))
    }
    if (series.length === 0) { series.push({ label: 'invocations', stroke: COLORS[0], width: 2 }); data.push(u.invocations) }
    chart('invocations', $('chart-invocations'), series, data)
    chart('cost', $('chart-cost'), [
      { label: 'errors', stroke: '#ff7b72', width: 2, fill: 'rgba(248,81,73,0.08)', points: { show: false } },
      { label: 'GB-seconds', scale: 'gbs', stroke: '#bc8cff', width: 2, points: { show: false }, value: (_, v) => v == null ? '–' : v.toFixed(4) }
    ], [xs, u.errors, u.gbSeconds], 'gbs')
  }

  function renderRuns (s) {
    const rows = s.runs.map(r => el('tr', { dataset: { invocation: r.id } },
      el('td', { class: 'mono' }, fmt.time(r.startMs)),
      el('td', {}, `${r.function}`, el('span', { class: 'muted' }, `@${r.version}`)),
      el('td', { title: r.nodeId }, r.node || fmt.short(r.nodeId)),
      el('td', { class: 'num' }, fmt.ms(r.durationMs)),
      el('td', {}, el('span', { class: `pill ${r.outcome}`, title: r.code || null }, r.outcome !== 'success' && r.code ? r.code.replace(/^FNMESH_ERR_/, '').toLowerCase() : r.outcome), r.cold ? el('span', { class: 'pill cold self' }, 'cold') : null),
      el('td', { class: 'muted' }, r.trigger || '–'),
      el('td', { class: 'mono muted', title: r.id }, r.id.length > 10 ? `…${r.id.slice(-8)}` : r.id)
    ))
    $('runs').tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow(7, 'No invocations in the last minute')]))
    $('runs-sub').textContent = `newest ${s.runs.length} of the last minute, whole mesh`
  }

  function renderLogs (s) {
    const rows = s.logs.slice().reverse().map(l => el('tr', {},
      el('td', { class: 'mono' }, fmt.time(l.timeMs)),
      el('td', {}, l.function),
      el('td', { title: l.nodeId }, l.node || fmt.short(l.nodeId)),
      el('td', {}, el('span', { class: `level ${l.level.replace(/[^A-Z]/g, '')}` }, l.level)),
      el('td', { class: 'msg' }, l.message)
    ))
    $('logs').tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow(5, 'No log lines yet')]))
    $('logs-sub').textContent = `live, whole mesh, since ${fmt.time(s.logsSinceMs).slice(0, 8)}`
  }

  $('range').addEventListener('change', (e) => { state.range = e.target.value; void poll() })
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault()
    sessionStorage.setItem(TOKEN_KEY, $('token').value.trim())
    $('token').value = ''
    schedule()
  })
  $('logout').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); showLogin('') })
  window.addEventListener('resize', () => { for (const c of Object.values(state.charts)) c.plot.setSize({ width: Math.max(300, c.plot.root.parentElement.clientWidth), height: 220 }) })
  schedule()
})()
