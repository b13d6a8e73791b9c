/** Writes cached or remote outputs into the project tree, exactly where the build would. */
import { copyFile, lstat, mkdir, readlink, rm, stat, symlink, utimes } from 'node:fs/promises';
import { chmodSync, constants, createWriteStream, lstatSync, mkdirSync, renameSync, statSync } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Code, OrionError } from '../../common/errors.js';
import type { BlobStore } from '../../cas/blob-store.js';
import type { ActionResult, Digest } from '../../cas/types.js';
import type { ProjectFiles } from './project-files.js';
import { confineToRoot } from '../../sandbox/path-guard.js';
import type { StepEffect } from './step-cache.js';

/** Resolves an output path against the action's directory, refusing anything outside the project. */
export function outputPath(root: string, cwd: string, rel: string): string {
  const abs = path.resolve(cwd, rel);
  if (abs !== root && !abs.startsWith(root + '/')) {
    throw new OrionError(Code.PERMISSION_DENIED, `refusing to write output ${JSON.stringify(rel)}: it resolves outside the project (${abs})`);
  }
  return abs;
}

/**
 * Makes the tree hold `result`'s outputs. Files already holding the right
 * content are left alone (a no-op build writes nothing); others are written to
 * a temporary name and renamed into place.
 */
export async function writeOutputs(result: ActionResult, cwd: string, files: ProjectFiles, cas: BlobStore): Promise<number> {
  let written = 0;
  for (const f of result.outputFiles) {
    const abs = outputPath(files.root, cwd, f.path);
    // Never through a symlink (say, an earlier output) that leads out of the project.
    await confineToRoot(files.root, abs, 'output', 'the project');
    const current = await files.state(abs);
    if (current && current.digest.hash === f.digest.hash && current.isExecutable === f.isExecutable) continue;
    // Synchronous metadata calls (microseconds each); the copy itself runs on the thread pool.
    mkdirSync(path.dirname(abs), { recursive: true });
    const tmp = `${abs}.orion-tmp-${process.pid}`;
    await copyFromCas(cas, f.digest, tmp, f.isExecutable ? 0o755 : 0o644);
    renameSync(tmp, abs);
    files.record(abs, f.digest, lstatSync(abs));
    written++;
  }
  for (const s of result.outputSymlinks) {
    const abs = outputPath(files.root, cwd, s.path);
    await confineToRoot(files.root, abs, 'output', 'the project');
    const existing = await lstat(abs).then((st) => (st.isSymbolicLink() ? readlink(abs) : null), () => undefined);
    if (existing === s.target) continue;
    await rm(abs, { force: true, recursive: true });
    await mkdir(path.dirname(abs), { recursive: true });
    await symlink(s.target, abs);
    files.forget(abs);
    written++;
  }
  return written;
}

/**
 * Writes blob `d` to `dest` with `mode`: a kernel copy (a reflink where the file
 * system has them) from a disk store's file, else through a stream.
 */
async function copyFromCas(cas: BlobStore, d: Digest, dest: string, mode: number): Promise<void> {
  const src = cas.localPath?.(d);
  if (src) {
    try {
      await copyFile(src, dest, constants.COPYFILE_FICLONE);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !(await exists(src))) throw new OrionError(Code.NOT_FOUND, `blob ${d.hash}/${d.sizeBytes} not found`);
      throw err;
    }
    // As a stream read would: a stored file of the wrong size is no copy of the blob.
    const st = statSync(dest);
    if (st.size !== d.sizeBytes) {
      await rm(dest, { force: true });
      throw new OrionError(Code.NOT_FOUND, `blob ${d.hash}/${d.sizeBytes} not found (stored file has another size)`);
    }
    if ((st.mode & 0o7777) !== mode) chmodSync(dest, mode);
    return;
  }
  await pipeline(cas.getStream(d), createWriteStream(dest, { mode }));
  chmodSync(dest, mode);
}

const exists = (p: string) => stat(p).then(() => true, () => false);

/** Replays a step's recorded effect on the tree; returns the absolute paths it touched. */
export async function applyStepEffect(effect: StepEffect, files: ProjectFiles, cas: BlobStore): Promise<string[]> {
  const touched: string[] = [];
  for (const rel of effect.deleted) {
    const abs = outputPath(files.root, files.root, rel);
    await rm(abs, { recursive: true, force: true });
    files.forget(abs);
    touched.push(abs);
  }
  for (const rel of effect.dirs) {
    const abs = outputPath(files.root, files.root, rel);
    await mkdir(abs, { recursive: true });
    files.forget(abs);
  }
  const result: ActionResult = {
    outputFiles: effect.written.map((w) => ({ path: w.path, digest: w.digest, isExecutable: w.isExecutable })),
    outputSymlinks: effect.symlinks,
    outputDirectories: [],
    exitCode: 0,
  };
  await writeOutputs(result, files.root, files, cas);
  for (const w of [...effect.written, ...effect.symlinks]) touched.push(path.join(files.root, w.path));
  return touched;
}

/**
 * Make decides by timestamps: an output left untouched because it already held
 * the cached content must still look newer than the inputs it was built from,
 * or a later plain `make` would rebuild it.
 */
export async function freshenOutputs(outputs: string[], inputs: Iterable<string>, files: ProjectFiles): Promise<void> {
  let newest = 0;
  for (const i of inputs) {
    const s = await files.state(i);
    if (s?.mtimeMs !== undefined && s.mtimeMs > newest) newest = s.mtimeMs;
  }
  if (newest === 0) return;
  for (const o of outputs) {
    const s = await files.state(o);
    if (s?.mtimeMs === undefined || s.mtimeMs >= newest) continue;
    // Now, in whole milliseconds, can be older than an input written earlier in the same
    // millisecond (file times have nanoseconds): then a millisecond past the newest input.
    const t = Math.max(Date.now(), Math.floor(newest) + 1) / 1000;
    await utimes(o, t, t);
    files.record(o, s.digest, await lstat(o));
  }
}
