/**
 * The README's demo: starts `fnmesh dev` (a local nats-server with JetStream and 3 agents),
 * then deploys, invokes, reads usage and logs with the real CLI, printing each command as it goes.
 * Installs nats-server with apt-get when it is missing and that is possible; otherwise says how.
 */
import '../node/src/polyfill.js'
import { spawn, spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { CLI_PATH } from '../node/src/dev/cluster.js'
import { PACKAGE_ROOT } from '../node/src/paths.js'

function ensureNatsServer (): void {
  const res = spawnSync(process.execPath, [join(PACKAGE_ROOT, 'scripts', 'ensure-nats.mjs')], { stdio: 'inherit' })
  if (res.status !== 0) process.exit(1)
}

function fnmesh (args: string[], env: Record<string, string>, quiet = false): string {
  if (!quiet) console.log(`\n$ fnmesh ${args.map(a => /[\s{}"<>*]/.test(a) ? `'${a}'` : a).join(' ')}`)
  const res = spawnSync(process.execPath, [CLI_PATH, ...args], { env: { ...process.env, ...env }, encoding: 'utf8' })
  if (!quiet) {
    process.stdout.write(res.stdout)
    process.stderr.write(res.stderr)
  }
  if (res.status !== 0) throw new Error(`fnmesh ${args[0]} exited with status ${String(res.status)}`)
  return res.stdout
}

async function main (): Promise<void> {
  ensureNatsServer()
  console.log('$ fnmesh dev --nodes 3')
  const dev = spawn(process.execPath, [CLI_PATH, 'dev', '--nodes', '3'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => { reject(new Error(`fnmesh dev did not start within 60 s: ${out}`)) }, 60_000)
    dev.stdout.setEncoding('utf8').on('data', (text: string) => {
      out += text
      process.stdout.write(text)
      const m = /^NATS\s+(\S+)/m.exec(out)
      if (m != null && out.includes('Ctrl-C')) { clearTimeout(timer); resolve(m[1]) }
    })
    dev.on('exit', (code) => { clearTimeout(timer); reject(new Error(`fnmesh dev exited with status ${String(code)}`)) })
  })
  const env = { FNMESH_NATS: url }
  try {
    fnmesh(['deploy', join(PACKAGE_ROOT, 'examples', 'hello'), '--name', 'hello', '--memory', '128', '--timeout', '5'], env)
    for (const name of ['mesh', 'world', 'fnmesh']) fnmesh(['invoke', 'hello', '--data', JSON.stringify({ name })], env)
    fnmesh(['functions'], env)
    fnmesh(['nodes'], env)
    fnmesh(['usage', '--fn', 'hello'], env)
    fnmesh(['logs', 'hello'], env)
    // The same code as an event-driven function: a durable async event runs it once.
    fnmesh(['deploy', join(PACKAGE_ROOT, 'examples', 'hello'), '--name', 'greeter', '--on', 'greetings.>'], env)
    fnmesh(['publish', 'greetings.new', '--data', JSON.stringify({ name: 'events' }), '--id', 'demo-greeting-1'], env)
    const deadline = Date.now() + 15_000
    while (!fnmesh(['logs', 'greeter'], env, true).includes('saying hello to events')) {
      if (Date.now() > deadline) throw new Error('the published event did not run within 15 s')
      spawnSync('sleep', ['0.5'])
    }
    fnmesh(['logs', 'greeter'], env)
    console.log('\nThe demo worked: 3 agents, a deploy, 3 invocations, each metered and logged, and one durable event. Stopping the mesh...')
  } finally {
    const exited = new Promise(resolve => dev.once('exit', resolve))
    dev.kill('SIGINT')
    await exited
  }
}

main().then(() => process.exit(0), (err) => {
  console.error(`error FNMESH_ERR_INTERNAL: demo failed: ${String(err?.message ?? err)}`)
  process.exit(1)
})
