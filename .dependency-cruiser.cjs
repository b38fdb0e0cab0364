/**
 * `npm run check:deps`: the import rules that keep the architecture visible (docs/ARCHITECTURE.md,
 * "Layout"). dependency-cruiser reads the TypeScript sources (not dist/), so type-only imports
 * count too. TypeScript 7 (the native compiler) has no JavaScript compiler API, so the cruiser
 * parses with swc (`parser: 'swc'`, @swc/core), which keeps `import type` and `export type ... from`.
 * A specifier the cruiser cannot resolve is an error too: a rule that silently stops seeing
 * imports would pass for the wrong reason.
 */
const OURS = '^(proto|core|sdk|node|scripts|test)/'

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'sdk-not-node',
      comment: 'sdk/ is the client: it never imports the agent (node/)',
      severity: 'error',
      from: { path: '^sdk/' },
      to: { path: '^node/' }
    },
    {
      name: 'core-not-node-or-sdk',
      comment: 'core/ is what the agent and the client share: it imports neither of them',
      severity: 'error',
      from: { path: '^core/' },
      to: { path: '^(node|sdk)/' }
    },
    {
      name: 'proto-imports-nothing-ours',
      comment: 'proto/ is the wire format: it takes only proto/ itself and packages',
      severity: 'error',
      from: { path: '^proto/' },
      to: { path: OURS, pathNot: '^proto/' }
    },
    {
      name: 'agent-not-sdk',
      comment: 'node/src takes nothing from sdk/src except the CLI, which is a client (shared types live in core/)',
      severity: 'error',
      from: { path: '^node/src/', pathNot: '^node/src/cli/' },
      to: { path: '^sdk/src/' }
    },
    {
      name: 'parts-see-metrics-sink-only',
      comment: 'parts get a metrics sink from agent.ts; the Prometheus side and the admin listener are wired there',
      severity: 'error',
      from: { path: '^node/src/', pathNot: ['^node/src/agent\\.ts$', '^node/src/metrics/'] },
      to: { path: '^node/src/metrics/', pathNot: '^node/src/metrics/sink\\.ts$' }
    },
    {
      name: 'parts-see-tracer-only',
      comment: 'parts get a Tracer from agent.ts; the OpenTelemetry SDK side (tracing/otel.ts) is loaded there only with --otlp-endpoint',
      severity: 'error',
      from: { path: '^node/src/', pathNot: ['^node/src/agent\\.ts$', '^node/src/tracing/'] },
      to: { path: '^node/src/tracing/', pathNot: '^node/src/tracing/(tracer|attributes)\\.ts$' }
    },
    {
      name: 'sandbox-not-router-or-gossip',
      comment: 'the sandbox runs code; it knows nothing of routing or of the peers',
      severity: 'error',
      from: { path: '^node/src/sandbox/' },
      to: { path: '^node/src/(router|gossip)/' }
    },
    {
      name: 'router-not-executor',
      comment: 'router and executor reach each other only through the interfaces agent.ts wires',
      severity: 'error',
      from: { path: '^node/src/router/' },
      to: { path: '^node/src/executor/' }
    },
    {
      name: 'executor-not-router',
      comment: 'router and executor reach each other only through the interfaces agent.ts wires',
      severity: 'error',
      from: { path: '^node/src/executor/' },
      to: { path: '^node/src/router/' }
    },
    {
      name: 'metering-records-pure',
      comment: 'metering/records/ (keys, record rules, signing, rollup and digest arithmetic) uses no other part of metering',
      severity: 'error',
      from: { path: '^node/src/metering/records/' },
      to: { path: '^node/src/metering/', pathNot: '^node/src/metering/records/' }
    },
    {
      name: 'metering-ledger-below-replication',
      comment: 'metering/ledger/ (the LevelDB ledger) builds on records/ only, never on replication/, queries/ or the entry files',
      severity: 'error',
      from: { path: '^node/src/metering/ledger/' },
      to: { path: '^node/src/metering/', pathNot: '^node/src/metering/(records|ledger)/' }
    },
    {
      name: 'metering-replication-and-queries-apart',
      comment: 'metering/replication/ and metering/queries/ read the ledger, not each other nor the entry files (meter.ts, metering.ts)',
      severity: 'error',
      from: { path: '^node/src/metering/(replication|queries)/' },
      to: { path: '^node/src/metering/', pathNot: ['^node/src/metering/(records|ledger)/', '^node/src/metering/$1/'] }
    },
    {
      name: 'resolvable',
      comment: 'every import resolves: otherwise the rules above would not see it',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true }
    }
  ],
  options: {
    parser: 'swc',
    exclude: { path: ['(^|/)(node_modules|dist)/', '^test/fixtures/'] },
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: {
      extensions: ['.ts', '.js', '.mjs', '.d.ts'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      exportsFields: ['exports'],
      mainFields: ['module', 'main', 'types']
    },
    reporterOptions: { text: { highlightFocused: true } }
  }
}
