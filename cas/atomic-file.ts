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
import { close, closeSync, fdatasync, mkdirSync, open, openSync, rename, renameSync, rmSync, write, writeSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { basename, dirname, join } from 'node:path';
import { isErrno } from '../common/errors.js';

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
    if (!isErrno(err, 'ENOENT')) throw err;
    madeDirs.delete(dirname(path));
    ensureDirSync(dirname(path));
    return openSync(path, 'wx', mode);
  }
}

/**
 * Writes `data` to the new file `tmp` (mode `mode`) and renames it to `dest`, unflushed, by
 * synchronous calls: small files land in the page cache in microseconds, and the promise API's
 * file handles cost a busy node more CPU than the writes themselves (~5 calls per blob).
 */
export function writeAndRename(tmp: string, dest: string, data: Uint8Array | string, mode: number): void {
  let fd: number | undefined;
  try {
    fd = openMaking(tmp, mode);
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
    closeSync(fd);
    fd = undefined;
    try {
      renameSync(tmp, dest);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
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

const openP = promisify(open);
const writeP = promisify(write);
const fdatasyncP = promisify(fdatasync);
const closeP = promisify(close);
const renameP = promisify(rename);

/**
 * Writes `data` to the new file `tmp` (mode `mode`), flushes it (unless `flush` is false) and
 * renames it to `dest`, on the thread pool through the callback API: a synchronous create or
 * rename on ext4 can wait for the journal commit another thread's flush started (~0.5 ms per
 * entry measured on a head writing results), which would stall the event loop, and the promise
 * API's file handles cost the main thread more than the calls (~0.4 ms per file measured on a
 * head taking uploads).
 */
export async function writeDurableAndRename(tmp: string, dest: string, data: Uint8Array | string, mode: number, flush = true): Promise<void> {
  let fd: number | undefined;
  try {
    fd = await openP(tmp, 'wx', mode);
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < bytes.length; ) off += (await writeP(fd, bytes, off, bytes.length - off)).bytesWritten;
    if (flush) await fdatasyncP(fd);
    const done = fd;
    fd = undefined;
    await closeP(done);
    await renameP(tmp, dest);
  } catch (err) {
    if (fd !== undefined) await closeP(fd).catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Writes `path` atomically: flushed first when durable (writeDurableAndRename), else by synchronous calls (writeAndRename). */
export async function writeFileAtomic(path: string, data: Uint8Array | string, opts: AtomicWriteOptions = {}): Promise<void> {
  const { mode = 0o644, durable = true } = opts;
  if (!durable) {
    ensureDirSync(dirname(path));
    return writeAndRename(tempPathFor(path), path, data, mode);
  }
  await ensureDir(dirname(path));
  try {
    await writeDurableAndRename(tempPathFor(path), path, data, mode);
  } catch (err) {
    // The directory was removed since it was made: make it again, once.
    if (!isErrno(err, 'ENOENT')) throw err;
    ensureDir.forget(dirname(path));
    await ensureDir(dirname(path));
    await writeDurableAndRename(tempPathFor(path), path, data, mode);
  }
}

/** mkdir -p through the thread pool, once per directory; `forget` makes the next call make it again. */
export interface DirMaker {
  (dir: string): Promise<unknown>;
  forget(dir: string): void;
}

/** A DirMaker with its own memory of the directories it made (or is making); a failed mkdir is retried next time. */
export function createDirMaker(): DirMaker {
  const making = new Map<string, Promise<unknown>>();
  const ensure = (dir: string) => {
    let made = making.get(dir);
    if (!made) {
      made = mkdir(dir, { recursive: true }).catch((err: unknown) => {
        making.delete(dir);
        throw err;
      });
      if (making.size > 10_000) making.clear();
      making.set(dir, made);
    }
    return made;
  };
  return Object.assign(ensure, { forget: (dir: string) => void making.delete(dir) });
}

/** The directories of durable writeFileAtomic calls (a head writes an action cache entry per action). */
const ensureDir = createDirMaker();
