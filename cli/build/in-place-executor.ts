/**
 * Runs an action where make would: in the project tree itself (the embedded
 * default). Outputs are then put in the local CAS so the next build can reuse them.
 */
import { lstat, mkdtemp, readFile, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { putHashedFile, type BlobStore } from '../../cas/blob-store.js';
import { digestOf, digestOfFile } from '../../cas/digest.js';
import type { ActionResult, OutputFile, OutputSymlink } from '../../cas/types.js';
import type { BuildAction } from '../../dag-extractor/types.js';
import type { ActionRunner } from '../../sandbox/runner.js';
import type { ActionKey } from './action-key.js';
import type { ProjectFiles } from './project-files.js';

export interface ExecOutcome {
  result: ActionResult;
  stdout: Buffer;
  stderr: Buffer;
  /** The compiler's dependency output, when it wrote one. */
  depfile?: string;
  /** Where it ran: 'local' or a node id. */
  where: string;
  /** Remote runs: when the Execute request was sent (ms since the epoch), after inputs were uploaded. */
  sentAt?: number;
}

export interface BuildExecutor {
  run(a: BuildAction, key: ActionKey | undefined, signal: AbortSignal): Promise<ExecOutcome>;
}

export interface InPlaceDeps {
  runner: ActionRunner;
  cas: BlobStore;
  files: ProjectFiles;
  env: Record<string, string>;
  /** Where the directory for the compilers' dependency files is made (default: the OS's temporary directory). */
  tmpDir?: string;
}

export interface InPlaceExecutor extends BuildExecutor {
  /** Removes the directory the dependency files went to. Called once the build ends. */
  close(): Promise<void>;
}

export function createInPlaceExecutor(deps: InPlaceDeps): InPlaceExecutor {
  let tmpRoot: Promise<string> | undefined;
  return {
    async close() {
      const dir = await tmpRoot?.catch(() => undefined);
      tmpRoot = undefined;
      if (dir) await rm(dir, { recursive: true, force: true });
    },
    async run(a, key, signal) {
      let argv = a.argv;
      let depfile: string | undefined;
      if (key?.depfileRel) {
        // The dependency file Orion asks for goes outside the project tree.
        const dir = await (tmpRoot ??= mkdtemp(path.join(deps.tmpDir ?? os.tmpdir(), 'orion-deps-')));
        depfile = path.join(dir, `${a.id}.d`);
        argv = [...argv, '-MD', '-MF', depfile];
      }
      const env = { ...deps.env, ...(a.env ?? {}) };
      const run = await deps.runner.run({ argv, cwd: a.cwd, env, signal });
      const outputFiles: OutputFile[] = [];
      const outputSymlinks: OutputSymlink[] = [];
      for (const o of a.outputs) deps.files.forget(o);
      if (run.exitCode === 0) {
        for (const abs of a.outputs) {
          let st;
          try {
            st = await lstat(abs);
          } catch {
            continue;
          }
          const rel = path.relative(a.cwd, abs);
          if (st.isSymbolicLink()) outputSymlinks.push({ path: rel, target: await readlink(abs) });
          else if (st.isFile()) {
            const digest = await digestOfFile(abs);
            await putHashedFile(deps.cas, digest, abs);
            const isExecutable = (st.mode & 0o100) !== 0;
            deps.files.record(abs, digest, st);
            outputFiles.push({ path: rel, digest, isExecutable });
          }
        }
      }
      let depText: string | undefined;
      const depPath = depfile ?? key?.depfileAbs;
      if (depPath && run.exitCode === 0) depText = await readFile(depPath, 'utf8').catch(() => undefined);
      // A failed compile may have written one too.
      if (depfile) await rm(depfile, { force: true });
      const stdoutDigest = digestOf(run.stdout);
      const stderrDigest = digestOf(run.stderr);
      if (run.exitCode === 0) {
        await deps.cas.put(stdoutDigest, run.stdout);
        await deps.cas.put(stderrDigest, run.stderr);
      }
      return {
        result: { outputFiles, outputSymlinks, outputDirectories: [], exitCode: run.exitCode, stdoutDigest, stderrDigest },
        stdout: run.stdout,
        stderr: run.stderr,
        depfile: depText,
        where: 'local',
      };
    },
  };
}

