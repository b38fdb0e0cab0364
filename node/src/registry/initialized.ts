/**
 * Agents never create JetStream assets (an agent credential that could would be able to write
 * into the registry): they wait for `fnmesh init` to have made every stream and bucket, saying
 * so in one log line with FNMESH_ERR_NOT_INITIALIZED, and retry until it has.
 */
import { jetstreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { FnmeshError } from '../../../proto/errors.js'
import { MESH_STREAMS, requireStreams } from '../../../core/init.js'
import type { Logger } from '../logger.js'

export interface WaitForInitOptions {
  /** @default 2000 */
  retryMs?: number
  /** Stop waiting (the agent is stopping) */
  signal?: AbortSignal
}

/** Resolves once every stream of the mesh exists */
export async function waitForInit (nc: NatsConnection, logger: Logger, options: WaitForInitOptions = {}): Promise<void> {
  const jsm = await jetstreamManager(nc, { checkAPI: false })
  let reported = ''
  let attempt = 0
  for (;;) {
    try {
      await requireStreams(jsm, MESH_STREAMS)
      if (reported !== '') logger.info('JetStream streams and buckets of the mesh found: starting')
      return
    } catch (err) {
      if (!(err instanceof FnmeshError) || err.code !== 'FNMESH_ERR_NOT_INITIALIZED') throw err
      // One line when it starts or the missing stream changes, then once a minute.
      if (reported !== err.message || attempt % 30 === 0) logger.error({ code: err.code }, err.message)
      reported = err.message
    }
    attempt++
    if (options.signal?.aborted === true) throw options.signal.reason
    await new Promise(resolve => setTimeout(resolve, options.retryMs ?? 2000))
  }
}
