import { execa } from 'execa';
import { OrionError, Code } from '../common/errors.js';
import { killProcessesUnder } from './stragglers.js';

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
  run(spec: RunSpec): Promise<RunResult>;
}

export type Spawner = typeof execa;

function killGroup(pid: number | undefined) {
  if (!pid) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // The group is already gone.
  }
}

/**
 * Runs the command as the leader of its own process group; on timeout, abort
 * or exit, the whole group is killed so no process of the action outlives it.
 */
export function createProcessRunner(spawn: Spawner = execa): ActionRunner {
  return {
    kind: 'process',
    async run(spec) {
      if (spec.argv.length === 0) throw new OrionError(Code.INVALID_ARGUMENT, 'empty command line');
      if (spec.signal?.aborted) throw new OrionError(Code.CANCELLED, 'action cancelled before it started');
      const started = Date.now();
      const child = spawn(spec.argv[0]!, spec.argv.slice(1), {
        cwd: spec.root ? mapToHost(spec.cwd, spec.root) : spec.cwd,
        env: spec.env,
        extendEnv: false,
        reject: false,
        detached: true,
        stdin: 'ignore',
        encoding: 'buffer',
        stripFinalNewline: false,
        maxBuffer: 256 * 1024 * 1024,
      });
      let timedOut = false;
      let cancelled = false;
      // The group, plus processes that left it (setsid) but still work in the action's directory:
      // those would otherwise hold the output pipes open and keep `child` from settling.
      const killAll = () => {
        killGroup(child.pid);
        if (spec.root) void killProcessesUnder(spec.root.hostDir);
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
      // When the command exits, whatever it left running in its group goes too (and
      // stops holding its output pipes open, which would keep the action from ending).
      child.once('exit', killAll);
      try {
        const r = await child;
        if (cancelled) throw new OrionError(Code.CANCELLED, 'action cancelled');
        if (r.failed && r.exitCode === undefined && !timedOut && !r.signal) {
          throw new OrionError(Code.FAILED_PRECONDITION, `cannot run ${JSON.stringify(spec.argv[0])}: ${r.shortMessage ?? r.message}`);
        }
        return {
          exitCode: r.exitCode ?? (r.signal ? 128 + (signalNumber(r.signal) ?? 9) : 1),
          stdout: Buffer.from(r.stdout as Uint8Array),
          stderr: Buffer.from(r.stderr as Uint8Array),
          timedOut,
          durationMs: Date.now() - started,
        };
      } finally {
        if (timer) clearTimeout(timer);
        spec.signal?.removeEventListener('abort', onAbort);
        killGroup(child.pid);
        if (spec.root) await killProcessesUnder(spec.root.hostDir);
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
