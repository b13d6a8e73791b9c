/**
 * Runs the build tools (make, cmake, ninja) the extractors query. Injected so
 * tests can replace it; the default runs real processes with execa.
 */
import { execa } from 'execa';
import { Code, OrionError, failedPrecondition } from '../common/errors.js';

export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd: string;
  /** The complete environment of the process (the ambient one is not added). */
  env: Record<string, string | undefined>;
  signal?: AbortSignal;
}

export interface CommandRunner {
  /**
   * Runs `file` with `args` to completion. A non-zero exit is a result, not an
   * error; a program that cannot be started is FAILED_PRECONDITION and an
   * aborted run is CANCELLED.
   */
  run(file: string, args: readonly string[], options: RunOptions): Promise<CommandResult>;
}

export function createProcessCommandRunner(): CommandRunner {
  return {
    async run(file, args, options) {
      if (options.signal?.aborted) throw new OrionError(Code.CANCELLED, `${file} was cancelled before it started`);
      const result = await execa(file, args, {
        cwd: options.cwd,
        env: options.env,
        extendEnv: false,
        reject: false,
        stdin: 'ignore',
        stripFinalNewline: false,
        ...(options.signal ? { cancelSignal: options.signal } : {}),
      });
      if (result.isCanceled) throw new OrionError(Code.CANCELLED, `${file} was cancelled`);
      if (result.exitCode === undefined) {
        const notFound = result.code === 'ENOENT';
        throw failedPrecondition(notFound ? `${file} was not found on PATH` : `Failed to start ${file}: ${result.message}`, {
          hint: notFound ? `Install ${file} or add it to PATH.` : undefined,
          cause: result.cause,
        });
      }
      return { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr };
    },
  };
}

/** The ambient environment with `overrides` applied (undefined removes a variable). */
export function environmentWith(overrides: Record<string, string | undefined>): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

/** The last lines of a tool's error output, for error messages. */
export function tail(output: string, lines = 20): string {
  const all = output.trimEnd().split('\n');
  return all.slice(-lines).join('\n');
}
