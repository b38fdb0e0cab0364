// Part of `npm run check:deps`. dependency-cruiser parses with swc (TypeScript 7 has no compiler
// API for it), and swc does not report an inline import type such as
// `import('../../node/src/config.js').AgentConfig`: such a type would cross the layers unseen.
// So our sources do not write them for our own files; `import type` is what the cruiser sees.
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'

const ROOTS = ['proto', 'core', 'sdk', 'node', 'scripts', 'test']
const SKIP = /(^|\/)(node_modules|dist|fixtures|gen)(\/|$)/
// import('./x.js').T or import("../x.js")["T"], but not a dynamic import's .then/.catch/.finally
const INLINE_TYPE = /import\(\s*(['"])(\.{1,2}\/[^'"]+)\1\s*\)\s*(\.(?!then\b|catch\b|finally\b)[A-Za-z_$]|\[)/g

function * sources (dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (SKIP.test(path)) continue
    if (statSync(path).isDirectory()) yield * sources(path)
    else if (/\.(m|c)?ts$/.test(name)) yield path
  }
}

const found = []
// Packages are outside what the cruiser sees (node_modules is excluded), so this rule is here:
// parts count into the MetricsSink; only node/src/metrics/prom.ts imports prom-client.
const PROM_IMPORT = /(from\s+|import\s*\(?\s*)(['"])prom-client\2/
const promFound = []
// The OpenTelemetry SDK and exporter load only with --otlp-endpoint (agent.ts imports otel.ts
// dynamically); parts use tracing/tracer.ts, and semantic-convention names come from attributes.ts.
const OTEL_IMPORT = /(from\s+|import\s*\(?\s*)(['"])@opentelemetry\/([\w-]+)/
const OTEL_ALLOWED = { [join('node', 'src', 'tracing', 'otel.ts')]: null, [join('node', 'src', 'tracing', 'attributes.ts')]: ['semantic-conventions'] }
const otelFound = []
for (const root of ROOTS) {
  for (const file of sources(root)) {
    const lines = readFileSync(file, 'utf8').split('\n')
    lines.forEach((line, i) => {
      if (PROM_IMPORT.test(line) && file !== join('node', 'src', 'metrics', 'prom.ts') && !file.startsWith('test')) promFound.push(`${file}:${i + 1}`)
      const otel = OTEL_IMPORT.exec(line)
      if (otel != null && !file.startsWith('test') && !(file in OTEL_ALLOWED && (OTEL_ALLOWED[file] == null || OTEL_ALLOWED[file].includes(otel[3])))) otelFound.push(`${file}:${i + 1}`)
      for (const m of line.matchAll(INLINE_TYPE)) found.push(`${file}:${i + 1}: import('${m[2]}') used as a type`)
    })
  }
}
if (found.length > 0) {
  console.error(`check:deps: ${found.length} inline import type(s) of our own files, which dependency-cruiser cannot see; write \`import type { ... } from '...'\` instead:`)
  for (const f of found) console.error(`  ${f}`)
  process.exit(1)
}
if (promFound.length > 0) {
  console.error(`check:deps: prom-client imported outside node/src/metrics/prom.ts (parts take a MetricsSink from agent.ts):`)
  for (const f of promFound) console.error(`  ${f}`)
  process.exit(1)
}
if (otelFound.length > 0) {
  console.error(`check:deps: @opentelemetry imported outside node/src/tracing/otel.ts (semantic conventions: attributes.ts); parts take a Tracer from agent.ts:`)
  for (const f of otelFound) console.error(`  ${f}`)
  process.exit(1)
}
console.log('check:deps: no inline import types of our own files; prom-client only in node/src/metrics/prom.ts; OpenTelemetry only in node/src/tracing/otel.ts')
