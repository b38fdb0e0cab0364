/**
 * The command line of one sandbox, outermost first:
 *
 *   sh (joins the worker's cgroups, then execs)      when cgroups are in use
 *   prlimit --data --nproc                           when cgroups are missing (rlimit layer)
 *   bwrap ... | setpriv --pdeathsig unshare ...      the namespaces
 *   sh (mounts the tmpfs /tmp, then execs)            under unshare
 *   setpriv --reuid --regid --clear-groups ...       the separate uid (agent is root)
 *   node --max-old-space-size [--experimental-permission --allow-fs-*] <runtime>/main.js
 *
 * Joining the cgroups happens before anything else runs, so every byte the sandbox allocates
 * is counted. The paths the function sees: inside a mount namespace /var/runtime, /var/task and
 * /tmp; without one, the real folders. /tmp is a tmpfs of tmpMb (ENOSPC when full), whose pages
 * count in the sandbox's memory cgroup: bwrap makes it, under unshare the sandbox mounts it on the
 * slot's tmp in its own mount namespace, without namespaces the agent mounts it (workspace.ts).
 */
import { lstatSync, readlinkSync, realpathSync } from 'node:fs'
import { dirname } from 'node:path'
import type { WorkerCgroup } from './cgroup.js'
import type { IsolationPlan } from './detect.js'

export interface SlotPaths {
  /** the function's code, read-only (filled at specialisation) */
  task: string
  /** the sandbox's private writable folder */
  tmp: string
}

export interface SandboxCommand {
  file: string
  args: string[]
  /** working directory of the spawn (outside the sandbox) */
  cwd: string
  /** what the child sees */
  inside: { runtime: string, task: string, tmp: string }
}

export interface CommandInput {
  plan: IsolationPlan
  /** folder of the compiled runtime (main.js) */
  runtimeDir: string
  slot: SlotPaths
  memoryMb: number
  egress: boolean
  cgroup?: WorkerCgroup
  /** uid/gid to run as (uid layer) */
  uid?: number
  /** processes per sandbox uid under RLIMIT_NPROC (rlimit layer) */
  nproc: number
  /** size of /tmp in MB (a tmpfs inside the mount namespace) */
  tmpMb?: number
  /**
   * The runtime's entry, relative to its folder. @default "main.js" (Node functions); a custom
   * runtime's host ("provided/main.js") runs no function code in Node and starts the bootstrap,
   * so it runs without the permission model (which would forbid that, and does not bind native code)
   */
  entry?: string
}

// Inside the sandbox's own mount namespace (unshare): a tmpfs of $1 bytes on $2, owned by $3, then exec.
const TMP_MOUNT = 'mount -t tmpfs -o "size=$1,mode=0700,nosuid,nodev,uid=$3,gid=$3" fnmesh-tmp "$2" || exit 125; shift 4; exec "$@"'

// A new network namespace (unshare) has its loopback down: a custom runtime's host serves the
// Runtime API there, so it comes up first (bwrap brings it up itself).
const LOOPBACK_UP = 'PATH="$PATH:/sbin:/usr/sbin"; ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null || true; '

const CGROUP_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'

/** bwrap arguments that make / a tmpfs holding only what a Node function needs */
function bwrapArgs (input: CommandInput, inside: SandboxCommand['inside']): string[] {
  const { plan, slot, runtimeDir } = input
  const root = process.getuid?.() === 0
  const args = [
    ...(root ? [] : ['--unshare-user']),
    '--unshare-ipc', '--unshare-pid', '--unshare-uts', '--unshare-cgroup-try',
    ...(plan.net && !input.egress ? ['--unshare-net'] : []),
    '--die-with-parent',
    // As root, bwrap keeps only what setpriv needs to switch to the sandbox uid, which then drops it.
    ...(root && input.uid != null ? ['--cap-add', 'CAP_SETUID', '--cap-add', 'CAP_SETGID'] : []),
    '--ro-bind', '/usr', '/usr'
  ]
  for (const dir of ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']) {
    try {
      const st = lstatSync(dir)
      if (st.isSymbolicLink()) args.push('--symlink', readlinkSync(dir), dir)
      else if (st.isDirectory()) args.push('--ro-bind', dir, dir)
    } catch {}
  }
  const node = realpathSync(process.execPath)
  if (!node.startsWith('/usr/')) args.push('--ro-bind', dirname(dirname(node)), dirname(dirname(node)))
  // What a function with egress needs to resolve names and check certificates.
  if (input.egress || !plan.net) {
    args.push('--perms', '0755', '--dir', '/etc')
    for (const f of ['/etc/resolv.conf', '/etc/hosts', '/etc/nsswitch.conf', '/etc/gai.conf', '/etc/ssl', '/etc/ca-certificates']) args.push('--ro-bind-try', f, f)
  }
  args.push(
    '--perms', '0755', '--dir', '/var',
    '--ro-bind', runtimeDir, inside.runtime,
    '--ro-bind', slot.task, inside.task,
    // /tmp is a tmpfs of its own: full at tmpMb (ENOSPC), in RAM charged to the sandbox's memory
    // cgroup, and gone with the mount namespace when the sandbox ends. Never the host's disk.
    '--perms', '1777', '--size', String((input.tmpMb ?? 512) * 1024 * 1024), '--tmpfs', inside.tmp,
    '--proc', '/proc',
    '--dev', '/dev',
    '--chdir', inside.task
  )
  return args
}

export function buildCommand (input: CommandInput): SandboxCommand {
  const { plan } = input
  const inside = plan.mount
    ? { runtime: '/var/runtime', task: '/var/task', tmp: '/tmp' }
    : { runtime: input.runtimeDir, task: input.slot.task, tmp: input.slot.tmp }
  const argv: string[] = []
  if (input.cgroup != null) argv.push(plan.tools.sh, '-c', CGROUP_JOIN, 'fnmesh-sandbox', ...input.cgroup.procsFiles, '--')
  if (plan.rlimit && plan.tools.prlimit != null) {
    argv.push(plan.tools.prlimit, `--data=${input.memoryMb * 1024 * 1024}`, ...(input.uid != null ? [`--nproc=${input.nproc}`] : []), '--')
  }
  if (plan.namespaces === 'bwrap' && plan.tools.bwrap != null) {
    argv.push(plan.tools.bwrap, ...bwrapArgs(input, inside), '--')
  } else if (plan.namespaces === 'unshare' && plan.tools.unshare != null) {
    const root = process.getuid?.() === 0
    // unshare --fork waits for the sandbox: it dies with the agent, and takes the sandbox with it.
    if (plan.parentDeathSignal && plan.tools.setpriv != null) argv.push(plan.tools.setpriv, '--pdeathsig', 'KILL', '--')
    argv.push(plan.tools.unshare, ...(root ? [] : ['--user', '--map-root-user']), '--ipc', '--uts', '--mount', '--propagation', 'private',
      ...(plan.pid ? ['--pid', '--fork', '--kill-child', '--mount-proc'] : []),
      ...(plan.net && !input.egress ? ['--net'] : []), '--')
    // The slot's tmp becomes a tmpfs of tmpMb seen only in this namespace: full at tmpMb, in RAM
    // charged to the memory cgroup, gone with the namespace (also when the agent is SIGKILLed).
    const loopback = input.entry != null && input.entry !== 'main.js' && plan.net && !input.egress
    argv.push(plan.tools.sh, '-c', loopback ? LOOPBACK_UP + TMP_MOUNT : TMP_MOUNT, 'fnmesh-tmp', String((input.tmpMb ?? 512) * 1024 * 1024), input.slot.tmp, String(root ? input.uid ?? 0 : 0), '--')
  }
  if (input.uid != null && plan.tools.setpriv != null) {
    argv.push(plan.tools.setpriv, '--reuid', String(input.uid), '--regid', String(input.uid), '--clear-groups', '--no-new-privs', '--inh-caps=-all',
      ...(plan.parentDeathSignal && plan.namespaces == null ? ['--pdeathsig', 'KILL'] : []), '--')
  } else if (plan.parentDeathSignal && plan.namespaces == null && plan.tools.setpriv != null) {
    argv.push(plan.tools.setpriv, '--pdeathsig', 'KILL', '--')
  }
  argv.push(process.execPath, `--max-old-space-size=${input.memoryMb}`)
  const entry = input.entry ?? 'main.js'
  if (plan.permission && entry === 'main.js') {
    argv.push('--experimental-permission', '--disable-warning=ExperimentalWarning',
      `--allow-fs-read=${inside.runtime}/*`, `--allow-fs-read=${inside.task}/*`, `--allow-fs-read=${inside.tmp}/*`, `--allow-fs-write=${inside.tmp}/*`)
  }
  argv.push(`${inside.runtime}/${entry}`)
  return { file: argv[0], args: argv.slice(1), cwd: plan.mount ? '/' : input.slot.task, inside }
}
