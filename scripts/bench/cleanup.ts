/**
 * Everything the benchmark starts (processes, temp folders, connections) registers how to undo
 * itself here; undo runs in reverse order, each step bounded in time, also after a failure or
 * a signal, so that a run never leaves a process or a folder behind.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

interface Step { what: string, undo: () => unknown, timeoutMs: number }

export class Cleanup {
  private readonly steps: Step[] = []
  private running: Promise<void> | undefined

  /** Registers `undo`; returns a function that runs it now (once) and forgets it */
  defer (what: string, undo: () => unknown, timeoutMs = 30_000): () => Promise<void> {
    const step: Step = { what, undo, timeoutMs }
    this.steps.push(step)
    return async () => {
      const i = this.steps.indexOf(step)
      if (i < 0) return
      this.steps.splice(i, 1)
      await runStep(step)
    }
  }

  /** A new temp folder, removed at cleanup */
  async tempDir (prefix: string): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), `fnmesh-bench-${prefix}-`))
    this.defer(`remove ${dir}`, async () => { await rm(dir, { recursive: true, force: true }) })
    return dir
  }

  /** Undoes everything registered, newest first; idempotent */
  async run (): Promise<void> {
    this.running ??= (async () => {
      while (this.steps.length > 0) await runStep(this.steps.pop() as Step)
    })()
    await this.running
  }
}

async function runStep (step: Step): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      Promise.resolve().then(step.undo),
      new Promise((resolve, reject) => { timer = setTimeout(() => { reject(new Error(`did not finish within ${step.timeoutMs} ms`)) }, step.timeoutMs) })
    ])
  } catch (err: any) {
    process.stderr.write(`bench: cleanup step "${step.what}" failed: ${String(err?.message ?? err)}\n`)
  } finally {
    clearTimeout(timer)
  }
}
