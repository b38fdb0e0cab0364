/**
 * How Lambda words the end of a runtime process: its runtime API reports the process status as
 * Go prints it ("exit status 3", "signal: killed"). Shared by the agent (worker.ts) and the custom
 * runtime's host inside the sandbox, so it imports nothing.
 */

/** Signals as Go's os/exec names them */
const SIGNAL_WORDS: Partial<Record<string, string>> = {
  SIGKILL: 'killed',
  SIGTERM: 'terminated',
  SIGSEGV: 'segmentation fault',
  SIGABRT: 'aborted',
  SIGINT: 'interrupt',
  SIGBUS: 'bus error',
  SIGFPE: 'floating point exception',
  SIGILL: 'illegal instruction',
  SIGHUP: 'hangup',
  SIGPIPE: 'broken pipe',
  SIGQUIT: 'quit',
  SIGTRAP: 'trace/breakpoint trap',
  SIGUSR1: 'user defined signal 1',
  SIGUSR2: 'user defined signal 2',
  SIGXCPU: 'CPU time limit exceeded',
  SIGXFSZ: 'file size limit exceeded'
}

/** "exit status 3" or "signal: killed" */
export function exitStatus (code: number | null, signal: string | null): string {
  if (signal != null) return `signal: ${SIGNAL_WORDS[signal] ?? signal}`
  return `exit status ${String(code)}`
}
