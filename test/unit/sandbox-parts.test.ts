/**
 * The sandbox's pure parts: the command line each isolation plan produces, the line splitter fed
 * byte by byte, log attribution and the per-invocation cap, and the handler-name parser.
 */
import { describe, expect, it } from 'vitest'
import type { WorkerCgroup } from '../../node/src/sandbox/layers/cgroup.js'
import { buildCommand, type CommandInput } from '../../node/src/sandbox/layers/command.js'
import type { IsolationPlan } from '../../node/src/sandbox/layers/detect.js'
import { InvocationLogs, LineSplitter, type FunctionLogLine } from '../../node/src/sandbox/logs.js'
import { parseHandler } from '../../node/src/sandbox/runtime/handler.js'

const TOOLS = { sh: '/bin/sh', bwrap: '/usr/bin/bwrap', unshare: '/usr/bin/unshare', setpriv: '/usr/bin/setpriv', prlimit: '/usr/bin/prlimit' }

function plan (fields: Partial<IsolationPlan>): IsolationPlan {
  return { mode: 'auto', layers: [], tools: TOOLS, permission: false, namespaces: undefined, net: false, mount: false, pid: false, uidBase: undefined, cgroup: undefined, rlimit: false, parentDeathSignal: true, ...fields }
}

const cgroup: WorkerCgroup = { procsFiles: ['/cg/memory/w/cgroup.procs', '/cg/pids/w/cgroup.procs'], pids: () => [], oomKills: () => 0, remove: () => true }

function command (p: IsolationPlan, fields: Partial<CommandInput> = {}): string[] {
  const c = buildCommand({ plan: p, runtimeDir: '/opt/fnmesh/runtime', slot: { task: '/data/sandbox/3/task', tmp: '/data/sandbox/3/tmp' }, memoryMb: 256, egress: false, nproc: 64, ...fields })
  return [c.file, ...c.args]
}

describe('sandbox command line', () => {
  it('runs node directly, killed with the agent, with only the process layer', () => {
    expect(command(plan({}))).toEqual(['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--', process.execPath, '--max-old-space-size=256', '/opt/fnmesh/runtime/main.js'])
  })

  it('adds the permission model reading only the runtime, the code and tmp, writing only tmp', () => {
    const argv = command(plan({ permission: true }))
    expect(argv).toContain('--experimental-permission')
    expect(argv.filter(a => a.startsWith('--allow-'))).toEqual([
      '--allow-fs-read=/opt/fnmesh/runtime/*', '--allow-fs-read=/data/sandbox/3/task/*', '--allow-fs-read=/data/sandbox/3/tmp/*', '--allow-fs-write=/data/sandbox/3/tmp/*'
    ])
    expect(argv.some(a => a.startsWith('--allow-child-process') || a.startsWith('--allow-worker') || a === '--allow-addons')).toBe(false)
  })

  it('joins the cgroups first, in a shell that execs the rest', () => {
    const argv = command(plan({}), { cgroup })
    expect(argv.slice(0, 2)).toEqual(['/bin/sh', '-c'])
    expect(argv.slice(3, 7)).toEqual(['fnmesh-sandbox', '/cg/memory/w/cgroup.procs', '/cg/pids/w/cgroup.procs', '--'])
  })

  it('puts bubblewrap around the sandbox: /var/runtime, /var/task read-only, /tmp a tmpfs of tmpMb, no network without egress', () => {
    const p = plan({ namespaces: 'bwrap', mount: true, net: true, pid: true, permission: true })
    const argv = command(p)
    const at = (flag: string, from: string): number => argv.findIndex((a, i) => a === flag && argv[i + 1] === from)
    expect(argv[0]).toBe('/usr/bin/bwrap')
    expect(argv).toContain('--unshare-net')
    expect(argv).toContain('--die-with-parent')
    expect(argv[at('--ro-bind', '/opt/fnmesh/runtime') + 2]).toBe('/var/runtime')
    expect(argv[at('--ro-bind', '/data/sandbox/3/task') + 2]).toBe('/var/task')
    expect(argv[argv.indexOf('--tmpfs') + 1]).toBe('/tmp')
    expect(argv[argv.indexOf('--tmpfs') - 2]).toBe('--size')
    expect(argv[argv.indexOf('--tmpfs') - 1]).toBe(String(512 * 1024 * 1024))
    expect(command(p, { tmpMb: 64 })[argv.indexOf('--tmpfs') - 1]).toBe(String(64 * 1024 * 1024))
    // the slot's folder on the data disk is not the sandbox's /tmp
    expect(argv).not.toContain('/data/sandbox/3/tmp')
    expect(argv).toContain('--allow-fs-read=/var/task/*')
    expect(argv.at(-1)).toBe('/var/runtime/main.js')
    expect(command(p, { egress: true })).not.toContain('--unshare-net')
    expect(command(p, { egress: true })).toContain('/etc/resolv.conf')
  })

  it('under unshare, mounts a tmpfs of tmpMb owned by the sandbox uid on the slot\'s tmp, in the sandbox\'s own mount namespace, before dropping privileges', () => {
    const argv = command(plan({ namespaces: 'unshare', net: true, pid: true, uidBase: 1_900_000 }), { uid: 1_900_003, tmpMb: 64 })
    const unshare = argv.indexOf('/usr/bin/unshare')
    const sh = argv.indexOf('/bin/sh', unshare)
    const setpriv = argv.lastIndexOf('/usr/bin/setpriv')
    expect(argv.slice(unshare, sh)).toEqual(expect.arrayContaining(['--mount', '--propagation', 'private']))
    expect(sh).toBeLessThan(setpriv)
    expect(argv[sh + 2]).toMatch(/^mount -t tmpfs /)
    expect(argv.slice(sh + 3, sh + 8)).toEqual(['fnmesh-tmp', String(64 * 1024 * 1024), '/data/sandbox/3/tmp', '1900003', '--'])
    expect(argv[sh + 8]).toBe('/usr/bin/setpriv')
  })

  it('switches to the sandbox uid with no privileges left, inside the namespaces', () => {
    const argv = command(plan({ namespaces: 'unshare', net: true, pid: true, uidBase: 1_900_000 }), { uid: 1_900_003 })
    const unshare = argv.indexOf('/usr/bin/unshare')
    const setpriv = argv.lastIndexOf('/usr/bin/setpriv')
    expect(unshare).toBeGreaterThan(0)
    expect(setpriv).toBeGreaterThan(unshare)
    expect(argv.slice(unshare, setpriv)).toEqual(expect.arrayContaining(['--net', '--pid', '--fork', '--kill-child', '--mount-proc']))
    expect(argv.slice(setpriv, setpriv + 9)).toEqual(['/usr/bin/setpriv', '--reuid', '1900003', '--regid', '1900003', '--clear-groups', '--no-new-privs', '--inh-caps=-all', '--'])
  })

  it('bounds memory and processes with rlimits where cgroups are missing', () => {
    const argv = command(plan({ rlimit: true, uidBase: 1_900_000 }), { uid: 1_900_001 })
    expect(argv.slice(0, 4)).toEqual(['/usr/bin/prlimit', `--data=${256 * 1024 * 1024}`, '--nproc=64', '--'])
  })
})

describe('line splitter', () => {
  it('gives the same lines whatever the chunks, fed byte by byte', () => {
    const text = 'one\ntwo\n\nthree and more\nlast'
    const whole: string[] = []
    const bytes: string[] = []
    const a = new LineSplitter(100, (l) => { whole.push(l) })
    a.push(text)
    a.end()
    const b = new LineSplitter(100, (l) => { bytes.push(l) })
    for (const ch of text) b.push(ch)
    b.end()
    expect(whole).toEqual(['one', 'two', '', 'three and more', 'last'])
    expect(bytes).toEqual(whole)
  })

  it('cuts a line longer than its maximum and drops the rest of that line', () => {
    const out: Array<[string, boolean]> = []
    const s = new LineSplitter(5, (l, cut) => { out.push([l, cut]) })
    s.push('abcdefghij')
    s.push('klm\nok\n')
    expect(out).toEqual([['abcde', true], ['ok', false]])
  })
})

describe('invocation logs', () => {
  const make = (limit = 100): { logs: InvocationLogs, lines: FunctionLogLine[] } => {
    const lines: FunctionLogLine[] = []
    return { logs: new InvocationLogs({ function: 'fn', version: 2, limit, sink: (l) => { lines.push(l) } }), lines }
  }
  const rec = (m: string, r?: string): string => JSON.stringify({ t: 1000, l: 'INFO', m, r })

  it('stamps lines with the current invocation, and takes a record\'s own id only if it is this worker\'s', () => {
    const { logs, lines } = make()
    logs.begin('inv-1')
    logs.record(rec('first'), false)
    logs.begin('inv-2')
    logs.record(rec('late line of the first', 'inv-1'), false)
    logs.record(rec('spoofed', 'someone-else'), false)
    logs.raw('stderr', 'raw', false)
    expect(lines.map(l => [l.invocationId, l.level, l.message])).toEqual([
      ['inv-1', 'INFO', 'first'],
      ['inv-1', 'INFO', 'late line of the first'],
      ['inv-2', 'INFO', 'spoofed'],
      ['inv-2', 'STDERR', 'raw']
    ])
    expect(lines[0]).toMatchObject({ function: 'fn', version: 2, timeMs: 1000 })
  })

  it('keeps at most `limit` bytes per invocation and says once that the rest was cut', () => {
    const { logs, lines } = make(10)
    logs.begin('inv-1')
    for (const m of ['12345', '12345', 'x', 'y']) logs.record(rec(m), false)
    logs.raw('stdout', 'z', false)
    logs.record(JSON.stringify({ t: 1, l: 'WARN', m: '', r: 'inv-1', cut: 40 }), false)
    expect(lines.map(l => l.message)).toEqual(['12345', '12345', '[fnmesh] log output cut: this invocation logged more than 10 bytes; the rest is dropped'])
    logs.begin('inv-2')
    logs.record(rec('fresh'), false)
    expect(lines.at(-1)).toMatchObject({ invocationId: 'inv-2', message: 'fresh' })
  })

  it('drops lines before any invocation and reads a line that is not a record as text', () => {
    const { logs, lines } = make()
    logs.record(rec('during boot'), false)
    logs.begin('inv-1')
    logs.record('not json', false)
    expect(lines.map(l => [l.invocationId, l.message])).toEqual([['inv-1', 'not json']])
  })
})

describe('handler names', () => {
  it.each([
    ['index.handler', { moduleRoot: '', moduleName: 'index', handlerPath: 'handler' }],
    ['src/app.handler', { moduleRoot: 'src/', moduleName: 'app', handlerPath: 'handler' }],
    ['a/b/c.nested.deep.fn', { moduleRoot: 'a/b/', moduleName: 'c', handlerPath: 'nested.deep.fn' }],
    ['index.default', { moduleRoot: '', moduleName: 'index', handlerPath: 'default' }]
  ])('splits %j as Lambda does', (handler, want) => {
    expect(parseHandler(handler)).toEqual(want)
  })

  it.each(['index', 'src/index', '../x.handler', 'a/../x.handler', 'x..handler', '/abs/x.handler', 'a\\b.handler'])('refuses %j as Runtime.MalformedHandlerName', (handler) => {
    expect(() => parseHandler(handler)).toThrow(expect.objectContaining({ errorType: 'Runtime.MalformedHandlerName', code: 'FNMESH_ERR_HANDLER_NOT_FOUND' }))
  })
})
