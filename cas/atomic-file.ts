/**
 * Crash-safe file replacement: write a temp file next to the target, flush it
 * (unless `durable` is false), rename it over.
 *
 * `durable: false` is for caches that may lose an entry but must never read a
 * torn one: readers see the old file or the whole new one (rename is atomic),
 * and after a power loss an entry whose data never reached the disk comes back
 * short or empty (ext4, xfs and btrfs do not expose unwritten blocks), which
 * its reader rejects. Skipping the flush matters on ext4: a flush also writes
 * out every other file written since the last journal commit, so right after a
 * build it waited ~50 ms for the outputs just copied into the tree.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, fdatasync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomUUID()}.tmp`);
}

export interface AtomicWriteOptions {
  mode?: number;
  /** Flush the data to disk before the rename (default true). */
  durable?: boolean;
}

/** Directories this process made (or found), so each is made once. */
const madeDirs = new Set<string>();

/** mkdir -p, once per directory per process (the caller must not remove it meanwhile). */
export function ensureDirSync(dir: string): void {
  if (madeDirs.has(dir)) return;
  mkdirSync(dir, { recursive: true });
  if (madeDirs.size > 10_000) madeDirs.clear();
  madeDirs.add(dir);
}

/** Opens the new file `path`, making its directory again if it was removed since ensureDirSync saw it. */
function openMaking(path: string, mode: number): number {
  try {
    return openSync(path, 'wx', mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    madeDirs.delete(dirname(path));
    ensureDirSync(dirname(path));
    return openSync(path, 'wx', mode);
  }
}

const flush = (fd: number) => new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));

/**
 * Writes `data` to the new file `tmp` (mode `mode`), flushes it when `durable`, and renames it
 * to `dest`. The calls are synchronous except the flush: small files land in the page cache in
 * microseconds, and the promise API's file handles cost a busy head and node more CPU than the
 * writes themselves (~5 calls per blob).
 */
export async function writeAndRename(tmp: string, dest: string, data: Uint8Array | string, mode: number, durable: boolean): Promise<void> {
  let fd: number | undefined;
  try {
    fd = openMaking(tmp, mode);
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
    if (durable) await flush(fd);
    closeSync(fd);
    fd = undefined;
    try {
      renameSync(tmp, dest);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      madeDirs.delete(dirname(dest));
      ensureDirSync(dirname(dest));
      renameSync(tmp, dest);
    }
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
}

export async function writeFileAtomic(path: string, data: Uint8Array | string, opts: AtomicWriteOptions = {}): Promise<void> {
  const { mode = 0o644, durable = true } = opts;
  ensureDirSync(dirname(path));
  await writeAndRename(tempPathFor(path), path, data, mode, durable);
}
