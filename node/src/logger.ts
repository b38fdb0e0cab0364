/**
 * Structured logs: pino JSON lines on stderr (stdout stays free for command output).
 * Each part gets a child logger named after it (`agent:router`).
 */
import { pino, type Logger, type LevelWithSilent } from 'pino'

export type { Logger }

export interface LoggerInit {
  /** @default env FNMESH_LOG_LEVEL, else "info" */
  level?: LevelWithSilent
  /** Fields on every line, e.g. the node name */
  base?: Record<string, unknown>
}

export function createLogger (init: LoggerInit = {}): Logger {
  const level = init.level ?? (process.env.FNMESH_LOG_LEVEL as LevelWithSilent | undefined) ?? 'info'
  return pino({ level, base: init.base ?? {}, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 2, sync: true }))
}

/** A logger that writes nothing, for library users who pass none */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
