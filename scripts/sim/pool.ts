/**
 * Runs jobs on worker threads, longest first, one job per worker at a time; reports each result
 * as it arrives. A failed run fails the whole pool (every worker is terminated).
 */
import { Worker } from 'node:worker_threads'
import type { RunResult } from './model.js'
import type { Job } from './plan.js'

export async function runJobs (jobs: readonly Job[], threads: number, onDone: (job: Job, result: RunResult, left: number) => void): Promise<Map<string, RunResult>> {
  const results = new Map<string, RunResult>()
  const queue = [...jobs]
  const workers = Array.from({ length: Math.max(1, Math.min(threads, jobs.length)) }, () => new Worker(new URL('./worker.js', import.meta.url), {
    // 10,000 simulated routers each keep a LoadTracker entry per peer they sent to.
    resourceLimits: { maxOldGenerationSizeMb: 8192 }
  }))
  try {
    await Promise.all(workers.map(async (w) => {
      for (;;) {
        const job = queue.shift()
        if (job === undefined) return
        const out = await new Promise<{ result?: RunResult, error?: string }>((resolve, reject) => {
          const onMessage = (m: { id: string, result?: RunResult, error?: string }): void => { cleanup(); resolve(m) }
          const onError = (err: Error): void => { cleanup(); reject(err) }
          const cleanup = (): void => { w.off('message', onMessage); w.off('error', onError) }
          w.on('message', onMessage)
          w.on('error', onError)
          w.postMessage({ id: job.id, config: job.config })
        })
        if (out.result === undefined) throw new Error(`Simulation "${job.id}" failed: ${out.error ?? 'no result'}`)
        results.set(job.id, out.result)
        onDone(job, out.result, jobs.length - results.size)
      }
    }))
  } finally {
    await Promise.all(workers.map(async w => await w.terminate()))
  }
  return results
}
