/**
 * NATS over mutual TLS with a token: certificates made with openssl for this test, a real
 * nats-server requiring them, an agent started with --nats-ca/--nats-cert/--nats-key and
 * --nats-token, the SDK and the CLI with the same files. Without the client certificate, or with
 * the wrong token, the server refuses.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FnmeshError } from '../../proto/errors.js'
import { connect, type Mesh } from '../../sdk/src/client.js'
import { startDevCluster, type DevCluster } from '../../node/src/dev/cluster.js'
import { runCli } from '../helpers/cli.js'
import { fixture } from '../helpers/fixtures.js'
import { within } from '../helpers/wait.js'

const TOKEN = 'tls-test-token-3f9a'
const hasOpenssl = spawnSync('sh', ['-c', 'command -v openssl']).status === 0

describe.skipIf(!hasOpenssl)('NATS over mutual TLS with a token', () => {
  let dir: string
  let cluster: DevCluster
  let mesh: Mesh
  let files: { ca: string, cert: string, key: string }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fnmesh-tls-'))
    const f = (n: string): string => join(dir, n)
    const ssl = (args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' }) }
    ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=fnmesh test CA'])
    await writeFile(f('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n')
    for (const who of ['server', 'client']) {
      ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who}`])
      ssl(['x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${who}.pem`, '-days', '1', '-extfile', 'san.ext'])
    }
    files = { ca: f('ca.pem'), cert: f('client.pem'), key: f('client.key') }
    cluster = await startDevCluster({
      nodes: 1,
      slots: 2,
      nats: { extraConfig: `authorization { token: "${TOKEN}" }\ntls { cert_file: "${f('server.pem')}", key_file: "${f('server.key')}", ca_file: "${f('ca.pem')}", verify: true, timeout: 2 }` },
      args: ['--nats-ca', files.ca, '--nats-cert', files.cert, '--nats-key', files.key, '--nats-token', TOKEN],
      initAuth: { token: TOKEN, caFile: files.ca, certFile: files.cert, keyFile: files.key }
    })
    mesh = await connect({ servers: cluster.nats.url, auth: { token: TOKEN, caFile: files.ca, certFile: files.cert, keyFile: files.key } })
  })

  afterAll(async () => {
    await mesh?.close()
    await cluster?.stop()
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('runs the mesh: an agent, the SDK and the CLI all on TLS with the token', async () => {
    await mesh.deploy({ name: 'ok', path: fixture('ok.js') })
    expect(await within(mesh.invoke('ok', { tls: true }), 30_000, 'invoke over TLS')).toMatchObject({ ok: true, event: { tls: true } })
    const cli = await runCli(['invoke', 'ok', '--data', '{"cli":1}', '--nats', cluster.nats.url, '--nats-token', TOKEN], { env: { FNMESH_NATS_CA: files.ca, FNMESH_NATS_CERT: files.cert, FNMESH_NATS_KEY: files.key } })
    expect(cli.code, cli.stderr).toBe(0)
    expect(JSON.parse(cli.stdout)).toMatchObject({ event: { cli: 1 } })
  })

  it('is refused without the client certificate or with another token', async () => {
    const noCert = await within(connect({ servers: cluster.nats.url, timeout: 3000, auth: { token: TOKEN, caFile: files.ca } }).then(m => m.close().then(() => 'connected')).catch((e: unknown) => e), 10_000, 'connect without a client certificate')
    expect(noCert).toBeInstanceOf(FnmeshError)
    const badToken = await within(connect({ servers: cluster.nats.url, auth: { token: 'guess', caFile: files.ca, certFile: files.cert, keyFile: files.key } }).then(m => m.close().then(() => 'connected')).catch((e: unknown) => e), 10_000, 'connect with a wrong token')
    expect((badToken as FnmeshError).code).toBe('FNMESH_ERR_FORBIDDEN')
  })
})
