/**
 * The raw NATS baseline's service: a plain request-reply responder in its own process (as a
 * service would run next to its callers), answering every request on a subject with the bytes
 * it received. Prints "ready" once subscribed; exits when its stdin closes (the benchmark
 * process is gone) or on SIGTERM.
 *
 *   node dist/scripts/bench/echo-responder.js <nats url> <subject>
 */
import { connect } from '@nats-io/transport-node'

async function main (): Promise<void> {
  const [url, subject] = process.argv.slice(2)
  if (url == null || subject == null) throw new Error('usage: echo-responder <nats url> <subject>')
  const nc = await connect({ servers: url, name: 'fnmesh-bench-echo' })
  nc.subscribe(subject, {
    queue: 'fnmesh-bench-echo',
    callback: (err, msg) => { if (err == null) msg.respond(msg.data) }
  })
  await nc.flush()
  process.stdout.write('ready\n')
  const stop = (): void => { void nc.close().finally(() => process.exit(0)) }
  process.stdin.on('end', stop).on('close', stop).resume()
  process.on('SIGTERM', stop)
}

main().catch((err) => {
  process.stderr.write(`echo-responder: ${String(err?.message ?? err)}\n`)
  process.exit(1)
})
