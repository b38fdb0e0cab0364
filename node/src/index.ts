/**
 * fnmesh/node: the agent as a library, and the local tools that start real meshes
 * (nats-server and agent processes) for development, tests and benchmarks.
 */
import './polyfill.js'

export { startAgent } from './agent.js'
export type { Agent, AgentState } from './agent.js'
export type { AgentOptions, AgentConfig } from './config.js'
export { createLogger, silentLogger } from './logger.js'
export type { Logger } from './logger.js'
export { choosePeer, better } from './router/choose.js'
export type { Candidate } from './router/choose.js'
export { startNatsServer, findNatsServer } from './dev/nats-server.js'
export type { NatsServer, NatsServerOptions } from './dev/nats-server.js'
export { spawnAgent, startDevCluster, AgentProcess, CLI_PATH } from './dev/cluster.js'
export type { AgentProcessOptions, DevCluster, DevClusterOptions } from './dev/cluster.js'
