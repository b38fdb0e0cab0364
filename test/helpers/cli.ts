import { spawn } from 'node:child_process'
import { CLI_PATH } from '../../node/src/dev/cluster.js'

export interface CliResult { code: number | null, stdout: string, stderr: string }

/** Runs the compiled `fnmesh` CLI and collects its output */
export async function runCli (args: string[], opts: { env?: Record<string, string>, timeoutMs?: number } = {}): Promise<CliResult> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (t: string) => { stdout += t })
    child.stderr.setEncoding('utf8').on('data', (t: string) => { stderr += t })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`fnmesh ${args.join(' ')} did not exit within ${opts.timeoutMs ?? 30_000} ms; stderr: ${stderr}`)) }, opts.timeoutMs ?? 30_000)
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}
