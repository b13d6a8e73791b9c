import { spawn as spawnProcess } from 'node:child_process';
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

export type Spawner = typeof spawnProcess;

/** Output kept per stream; beyond it a command's output is cut (a runaway printer, not a compiler). */
const MAX_OUTPUT = 256 * 1024 * 1024;

function killGroup(pid: number | undefined) {
  if (!pid) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // The group is already gone.
  }
}

/** Collects a stream's bytes up to MAX_OUTPUT. */
function collect(stream: NodeJS.ReadableStream | null): () => Buffer {
  const chunks: Buffer[] = [];
  let size = 0;
  stream?.on('data', (chunk: Buffer) => {
    if (size >= MAX_OUTPUT) return;
    const kept = chunk.subarray(0, MAX_OUTPUT - size);
    chunks.push(kept);
    size += kept.length;
  });
  return () => Buffer.concat(chunks, size);
}

/**
 * Runs the command as the leader of its own process group; on timeout, abort
 * or exit, the whole group is killed so no process of the action outlives it.
 * Plain node:child_process: `orion build` starts every compile through here, and
 * loading execa cost ~25 ms of each build's start-up.
 */
export function createProcessRunner(spawn: Spawner = spawnProcess): ActionRunner {
  return {
    kind: 'process',
    async run(spec) {
      if (spec.argv.length === 0) throw new OrionError(Code.INVALID_ARGUMENT, 'empty command line');
      if (spec.signal?.aborted) throw new OrionError(Code.CANCELLED, 'action cancelled before it started');
      const started = Date.now();
      const child = spawn(spec.argv[0]!, spec.argv.slice(1), {
        cwd: spec.root ? mapToHost(spec.cwd, spec.root) : spec.cwd,
        env: spec.env,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const stdout = collect(child.stdout);
      const stderr = collect(child.stderr);
      // 'close' comes once the process exited and its output pipes are drained; 'error' alone
      // when it could not be started.
      const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
        child.once('error', (error) => resolve({ code: null, signal: null, error }));
        child.once('close', (code, signal) => resolve({ code, signal }));
      });
      let timedOut = false;
      let cancelled = false;
      // The group, plus processes that left it (setsid) but still work in the action's directory:
      // those would otherwise hold the output pipes open and keep `child` from settling.
      let scanned = false;
      let strays = 0;
      const killAll = () => {
        killGroup(child.pid);
        if (spec.root) strays += killProcessesUnder(spec.root.hostDir, child.pid).length;
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
      // When the command exits, whatever it left running in its group goes too (and
      // stops holding its output pipes open, which would keep the action from ending).
      child.once('exit', killAll);
      try {
        const r = await ended;
        if (cancelled) throw new OrionError(Code.CANCELLED, 'action cancelled');
        if (r.error && child.pid === undefined) {
          throw new OrionError(Code.FAILED_PRECONDITION, `cannot run ${JSON.stringify(spec.argv[0])}: ${r.error.message}`);
        }
        return {
          exitCode: r.code ?? (r.signal ? 128 + (signalNumber(r.signal) ?? 9) : 1),
          stdout: stdout(),
          stderr: stderr(),
          timedOut,
          durationMs: Date.now() - started,
        };
      } finally {
        if (timer) clearTimeout(timer);
        spec.signal?.removeEventListener('abort', onAbort);
        killGroup(child.pid);
        // Once more if the exit's scan found stragglers (they may have started others) or never ran.
        if (spec.root && (strays > 0 || !scanned)) killProcessesUnder(spec.root.hostDir, child.pid);
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
