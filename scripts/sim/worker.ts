/**
 * A worker thread that runs simulations it is sent, one at a time (runs are independent and
 * deterministic, so spreading them over the cores changes nothing but the wall time).
 */
import { parentPort } from 'node:worker_threads'
import { simulate } from './engine.js'
import type { SimConfig } from './model.js'

parentPort?.on('message', (msg: { id: string, config: SimConfig }) => {
  try {
    parentPort?.postMessage({ id: msg.id, result: simulate(msg.config) })
  } catch (err: any) {
    parentPort?.postMessage({ id: msg.id, error: String(err?.stack ?? err) })
  }
})
