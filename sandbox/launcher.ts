/**
 * Starting an action's process: the one place a runner forks. Two implementations: Node's
 * child_process (createNodeLauncher) and the orion-spawn helper (spawn-helper.ts), which
 * spares a large daemon the fork of its own address space per action.
 */
import { spawn as spawnProcess } from 'node:child_process';
import { Code, OrionError } from '../common/errors.js';

export interface LaunchSpec {
  /** argv[0]: a path, or a name looked up in `env.PATH`. */
  file: string;
  args: string[];
  cwd: string;
  /** The complete environment (nothing is inherited). */
  env: Record<string, string>;
  /** A cgroup.procs file the process writes its pid to before exec (only where `Launcher.joinsCgroup`). */
  cgroupProcs?: string;
}

/** Output kept per stream by default; beyond it a command's output is cut (a runaway printer, not a compiler). */
export const MAX_OUTPUT = 256 * 1024 * 1024;

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * A started process: the leader of a new session (its own process group), stdin from
 * /dev/null, stdout and stderr captured.
 */
export interface Launched {
  pid: number;
  /** Settles when the process exited (its descendants may still hold its output open). */
  exit: Promise<ExitStatus>;
  /** Settles after `exit`, once stdout and stderr reached end of file. */
  output: Promise<{ stdout: Buffer; stderr: Buffer }>;
}

export interface Launcher {
  readonly kind: 'node' | 'helper';
  /** Whether `LaunchSpec.cgroupProcs` is honoured. */
  readonly joinsCgroup: boolean;
  /**
   * The launcher's own process that stays in that cgroup between commands to start them
   * there (spawn-helper.ts: a "keeper"), if any: it is not the command's, so it is neither
   * killed with the command's processes nor a reason to think the cgroup busy.
   */
  keeperOf?(cgroupProcs: string): number | undefined;
  /**
   * Starts one command. Its stdout and stderr are kept up to the launcher's limit; the rest is
   * read and dropped. Rejects with an Error whose `code` is the errno name (ENOENT, EACCES...)
   * when the command cannot start.
   */
  launch(spec: LaunchSpec): Promise<Launched>;
}

/** Collects a stream's bytes up to `max`. */
function collect(stream: NodeJS.ReadableStream | null, max: number): () => Buffer {
  const chunks: Buffer[] = [];
  let size = 0;
  stream?.on('data', (chunk: Buffer) => {
    if (size >= max) return;
    const kept = chunk.subarray(0, max - size);
    chunks.push(kept);
    size += kept.length;
  });
  return () => Buffer.concat(chunks, size);
}

/**
 * Node's child_process.spawn: forks this process (the event loop waits until the child has
 * exec'd). The fallback where the helper is not built.
 */
export function createNodeLauncher(maxOutputBytes = MAX_OUTPUT, spawn: typeof spawnProcess = spawnProcess): Launcher {
  return {
    kind: 'node',
    joinsCgroup: false,
    launch(spec) {
      if (spec.cgroupProcs) return Promise.reject(new OrionError(Code.INTERNAL, 'this launcher cannot start a process in a cgroup'));
      const child = spawn(spec.file, spec.args, { cwd: spec.cwd, env: spec.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      const stdout = collect(child.stdout, maxOutputBytes);
      const stderr = collect(child.stderr, maxOutputBytes);
      // 'close' comes once the process exited and its output pipes are drained; 'error' alone
      // when it could not be started.
      const closed = new Promise<ExitStatus & { error?: Error }>((resolve) => {
        child.once('error', (error) => resolve({ code: null, signal: null, error }));
        child.once('close', (code, signal) => resolve({ code, signal }));
      });
      if (child.pid === undefined) {
        return closed.then((r) => {
          throw r.error ?? new Error(`spawn ${spec.file} failed`);
        });
      }
      const exit = new Promise<ExitStatus>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      const output = closed.then(() => ({ stdout: stdout(), stderr: stderr() }));
      return Promise.resolve({ pid: child.pid, exit, output });
    },
  };
}
