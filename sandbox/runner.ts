import { OrionError, Code } from '../common/errors.js';
import { killCgroupMembers, killProcessesUnder } from './stragglers.js';
import { createNodeLauncher, type Launcher } from './launcher.js';
import { createHelperLauncher, findSpawnHelper } from './spawn-helper.js';

export { MAX_OUTPUT } from './launcher.js';

export interface RunSpec {
  argv: string[];
  /** Absolute directory the command runs in, as the command sees it. */
  cwd: string;
  /**
   * The action's input root: hostDir on disk, seen by the command at sandboxDir
   * (the project's own path, so paths embedded in outputs match a local build).
   * A runner that cannot remap paths runs at hostDir.
   */
  root?: { hostDir: string; sandboxDir: string };
  /** The complete environment (nothing is inherited). */
  env: Record<string, string>;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** A cgroup.procs file the command joins before exec; only for a runner whose `joinsCgroup` is true. */
  cgroupProcs?: string;
}

export interface RunResult {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  /** Set when the command was killed because it ran past timeoutMs. */
  timedOut: boolean;
  durationMs: number;
}

/** Runs one command. Implementations: plain process, bubblewrap sandbox. */
export interface ActionRunner {
  readonly kind: string;
  /** Whether it honours `RunSpec.cgroupProcs`. */
  readonly joinsCgroup?: boolean;
  /** A process of the runner's own that stays in that cgroup between commands (Launcher.keeperOf). */
  keeperOf?(cgroupProcs: string): number | undefined;
  run(spec: RunSpec): Promise<RunResult>;
}

function killGroup(pid: number | undefined) {
  if (!pid) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // The group is already gone.
  }
}

/**
 * The launcher daemons and `orion build` use: the orion-spawn helper when it was built
 * (dist/orion-spawn), else Node's own spawn. One per process, started on first use.
 */
let defaultLauncher: Launcher | undefined;
export function getDefaultLauncher(): Launcher {
  if (defaultLauncher) return defaultLauncher;
  const helper = findSpawnHelper();
  defaultLauncher = helper ? createHelperLauncher(helper) : createNodeLauncher();
  return defaultLauncher;
}

/**
 * A command run to its end through `runner` (default: the process's launcher), with this
 * process's PATH (or `path`): for a daemon's own helper commands (the head's `sync -f`).
 * exitCode -1 with the reason in stderr when it timed out.
 */
export function commandRunner(runner?: ActionRunner, path = process.env.PATH || '/usr/bin:/bin'): (argv: string[], timeoutMs: number) => Promise<{ exitCode: number; stderr: string }> {
  const using = runner ?? createProcessRunner();
  return async (argv, timeoutMs) => {
    const r = await using.run({ argv, cwd: '/', env: { PATH: path }, timeoutMs });
    return r.timedOut ? { exitCode: -1, stderr: `timed out after ${timeoutMs / 1000} s` } : { exitCode: r.exitCode, stderr: r.stderr.toString() };
  };
}

/**
 * Runs the command as the leader of its own process group; on timeout, abort
 * or exit, the whole group is killed so no process of the action outlives it.
 */
export function createProcessRunner(launcher: Launcher = getDefaultLauncher()): ActionRunner {
  return {
    kind: 'process',
    joinsCgroup: launcher.joinsCgroup,
    keeperOf: launcher.keeperOf ? (procs) => launcher.keeperOf!(procs) : undefined,
    async run(spec) {
      if (spec.argv.length === 0) throw new OrionError(Code.INVALID_ARGUMENT, 'empty command line');
      if (spec.signal?.aborted) throw new OrionError(Code.CANCELLED, 'action cancelled before it started');
      const started = Date.now();
      let child;
      try {
        child = await launcher.launch({
          file: spec.argv[0]!,
          args: spec.argv.slice(1),
          cwd: spec.root ? mapToHost(spec.cwd, spec.root) : spec.cwd,
          env: spec.env,
          cgroupProcs: spec.cgroupProcs,
        });
      } catch (err) {
        if (err instanceof OrionError) throw err;
        throw new OrionError(Code.FAILED_PRECONDITION, `cannot run ${JSON.stringify(spec.argv[0])}: ${(err as Error).message}`);
      }
      const pid = child.pid;
      let timedOut = false;
      let cancelled = false;
      // The group, plus processes that left it (setsid) but still work in the action's directory:
      // those would otherwise hold the output pipes open and keep the output from ending.
      let scanned = false;
      let strays = 0;
      // In a cgroup of its own, the group's members are the action's (one read); else a scan of
      // the processes started since, by working directory.
      const killStrays = () => (spec.cgroupProcs ? killCgroupMembers(spec.cgroupProcs, launcher.keeperOf?.(spec.cgroupProcs)) : spec.root ? killProcessesUnder(spec.root.hostDir, pid) : []).length;
      // A cgroup holds the process group's members too: no kill of a group that is usually gone
      // already (a failed kill costs an exception).
      const killAll = () => {
        if (!spec.cgroupProcs) killGroup(pid);
        strays += killStrays();
        scanned = true;
      };
      const timer = spec.timeoutMs
        ? setTimeout(() => {
            timedOut = true;
            killAll();
          }, spec.timeoutMs)
        : undefined;
      const onAbort = () => {
        cancelled = true;
        killAll();
      };
      spec.signal?.addEventListener('abort', onAbort, { once: true });
      // An abort while the launcher was starting it.
      if (spec.signal?.aborted) onAbort();
      try {
        // When the command exits, whatever it left running in its group goes too (and
        // stops holding its output pipes open, which would keep the action from ending).
        const exit = await child.exit;
        killAll();
        const { stdout, stderr } = await child.output;
        if (cancelled) throw new OrionError(Code.CANCELLED, 'action cancelled');
        return {
          exitCode: exit.code ?? (exit.signal ? 128 + (signalNumber(exit.signal) ?? 9) : 1),
          stdout,
          stderr,
          timedOut,
          durationMs: Date.now() - started,
        };
      } finally {
        if (timer) clearTimeout(timer);
        spec.signal?.removeEventListener('abort', onAbort);
        if (!spec.cgroupProcs) killGroup(pid);
        // Once more if the exit's scan found stragglers (they may have started others) or never ran.
        if (strays > 0 || !scanned) killStrays();
      }
    },
  };
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGABRT: 6, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGTERM: 15 };
function signalNumber(sig: string): number | undefined {
  return SIGNALS[sig];
}

/** Maps a path seen inside the sandbox to the host path (identity outside the root). */
export function mapToHost(p: string, root: { hostDir: string; sandboxDir: string }): string {
  if (p === root.sandboxDir) return root.hostDir;
  if (p.startsWith(root.sandboxDir + '/')) return root.hostDir + p.slice(root.sandboxDir.length);
  return p;
}
