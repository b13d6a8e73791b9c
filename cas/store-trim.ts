/**
 * Keeping a disk CAS (disk-blob-store.ts) within a size. Every blob file's
 * mtime says when it was last used: a store opened with `touchAfterMs` sets
 * it again on a read, a presence check (FindMissingBlobs) or a second write,
 * at most once per `touchAfterMs` per blob. A trim lists the store, and when
 * it holds more than `maxBytes` removes the least recently used blobs until
 * it holds `lowWater` of that, never one used within `keepMs` (a build in
 * progress reads what it uploaded a moment ago; without that margin a blob
 * could go between FindMissingBlobs and the Execute that needs it) and never
 * one with other hard links (an exec root or template of a node holds it:
 * removing it would free nothing). Each blob is looked at again just before
 * it is removed, so one a lookup in this process touched meanwhile stays.
 * What references a removed blob turns into a miss: action-cache entries are
 * served only when every blob they name is present (complete-action-cache.ts),
 * and the client's graph and step caches check theirs the same way.
 */
import { lstatSync, unlinkSync, utimesSync } from 'node:fs';
import { lstat, mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { isErrno } from '../common/errors.js';

export interface TrimOptions {
  /** The store holds at most this many bytes after a trim (unless too much of it is recent). */
  maxBytes: number;
  /** A trim that has to remove anything goes down to this share of maxBytes (default 0.9): trims are rare, not one per write. */
  lowWater?: number;
  /** Blobs used within this long are kept whatever the size. */
  keepMs: number;
  now?: () => number;
}

export interface TrimResult {
  /** Blob files found. */
  files: number;
  bytesBefore: number;
  bytesAfter: number;
  removed: number;
  /** Over maxBytes after the trim: what is left was all used within keepMs (or is linked elsewhere). */
  over: boolean;
}

interface BlobFile {
  path: string;
  size: number;
  mtimeMs: number;
  links: number;
}

/** How long a used blob is kept whatever the size, unless the owner says otherwise. */
export const DEFAULT_KEEP_MS = 3_600_000;

/**
 * How old a blob's mtime may get before a use sets it again (DiskCacheOptions.touchAfterMs): a
 * sixth of the keep window, so a blob in use always looks recent to a trim, at a write per blob
 * per that interval at most.
 */
export const touchAfterFor = (keepMs: number): number => keepMs / 6;

const SHARD = /^[0-9a-f]{2}$/;
const HASH = /^[0-9a-f]{64}$/;
/** Recency is kept to the minute: a trim removes whole minutes, oldest first. */
const BUCKET_MS = 60_000;

/**
 * Calls `fn` with each blob file under `dir` (`ab/<hash>` and the executable copies
 * `x/ab/<hash>`), a shard at a time: a store of a million blobs is never listed whole in memory.
 */
async function forEachBlob(dir: string, fn: (b: BlobFile) => void): Promise<void> {
  const shardDirs = async (base: string) => (await readdir(base).catch((err) => (isErrno(err, 'ENOENT') ? [] : Promise.reject(err)))).filter((n) => SHARD.test(n)).map((n) => path.join(base, n));
  for (const shard of [...(await shardDirs(dir)), ...(await shardDirs(path.join(dir, 'x')))]) {
    const names = (await readdir(shard).catch(() => [] as string[])).filter((n) => HASH.test(n));
    // The stats of a shard in parallel (the thread pool), so a large store is read quickly.
    const stats = await Promise.all(names.map((n) => lstat(path.join(shard, n)).catch(() => undefined)));
    names.forEach((n, i) => {
      const st = stats[i];
      if (st?.isFile()) fn({ path: path.join(shard, n), size: st.size, mtimeMs: st.mtimeMs, links: st.nlink });
    });
  }
}

/**
 * Removes least recently used blobs of the disk store at `dir` while it holds more than `maxBytes`
 * (see the header). Two passes: the first sums the bytes by minute of last use, which gives the
 * time before which blobs go; the second removes those.
 */
export async function trimDiskStore(dir: string, opts: TrimOptions): Promise<TrimResult> {
  const now = (opts.now ?? Date.now)();
  const keepBefore = now - opts.keepMs;
  let files = 0;
  let bytesBefore = 0;
  /** Bytes that may go (no other link, not used within keepMs), by minute of last use. */
  const removable = new Map<number, number>();
  await forEachBlob(dir, (b) => {
    files++;
    bytesBefore += b.size;
    if (b.links > 1 || b.mtimeMs > keepBefore) return;
    const minute = Math.floor(b.mtimeMs / BUCKET_MS);
    removable.set(minute, (removable.get(minute) ?? 0) + b.size);
  });
  let bytes = bytesBefore;
  let removed = 0;
  if (bytes > opts.maxBytes) {
    const target = opts.maxBytes * (opts.lowWater ?? 0.9);
    // The oldest minutes whose blobs, removed, bring the store down to the target (or all that may go).
    let cutoff = -Infinity;
    let freed = 0;
    for (const minute of [...removable.keys()].sort((a, b) => a - b)) {
      if (bytes - freed <= target) break;
      freed += removable.get(minute)!;
      cutoff = (minute + 1) * BUCKET_MS;
    }
    if (freed > 0) {
      await forEachBlob(dir, (b) => {
        if (b.links > 1 || b.mtimeMs >= cutoff || b.mtimeMs > keepBefore) return;
        // Looked at again just before it goes, synchronously: a lookup in this process since the
        // listing (which sets the mtime, see touchAfterMs) keeps it, and none can come in between.
        const st = lstatSync(b.path, { throwIfNoEntry: false });
        if (!st || st.nlink > 1 || st.mtimeMs >= cutoff || st.mtimeMs > keepBefore) return;
        try {
          unlinkSync(b.path);
        } catch (err) {
          if (!isErrno(err, 'ENOENT')) throw err;
          return;
        }
        bytes -= b.size;
        removed++;
      });
    }
  }
  return { files, bytesBefore, bytesAfter: bytes, removed, over: bytes > opts.maxBytes };
}

/**
 * For a store no daemon watches (the client's local cache, used by one build process after
 * another): trims it when the last trim was at least `everyMs` ago, as recorded by the mtime of
 * `.last-trim` in `dir`. Undefined when it was not due.
 */
export async function trimDiskStoreIfDue(dir: string, opts: TrimOptions & { everyMs: number }): Promise<TrimResult | undefined> {
  const now = (opts.now ?? Date.now)();
  const stamp = path.join(dir, '.last-trim');
  const last = (await lstat(stamp).catch(() => undefined))?.mtimeMs;
  if (last !== undefined && last > now - opts.everyMs) return undefined;
  await mkdir(dir, { recursive: true });
  await writeFile(stamp, '');
  await utimes(stamp, now / 1000, now / 1000);
  return trimDiskStore(dir, opts);
}

/**
 * How long a file of a client cache's bookkeeping (action-cache entries, step effects, graphs,
 * the per-project stat, history and manifest files) is kept after its last use.
 */
export const METADATA_KEEP_MS = 30 * 24 * 3_600_000;

/** A used bookkeeping file has its mtime set again at most this often (a day: far within METADATA_KEEP_MS). */
export const METADATA_TOUCH_MS = 24 * 3_600_000;

/**
 * Sets the file's mtime to now when it was last set more than `afterMs` ago (its current mtime
 * when the caller has it, else looked up): the file was used (a cache hit), and trimUnusedFiles
 * goes by that. Never throws (the file may be gone).
 */
export function touchIfOlder(file: string, afterMs: number, mtimeMs = lstatSync(file, { throwIfNoEntry: false })?.mtimeMs, now = Date.now()): void {
  if (mtimeMs === undefined || now - mtimeMs <= afterMs) return;
  try {
    utimesSync(file, now / 1000, now / 1000);
  } catch {
    // Gone, or not ours: it is only a hint for trims.
  }
}

/**
 * Removes the files under `dir` (recursively) last used more than `olderThanMs` ago: neither
 * written nor touched (touchIfOlder) nor read (atime, where the mount keeps it) since. For a
 * client's cache, whose bookkeeping grows by a file per action, step, graph or checkout path and
 * is otherwise never removed; what goes turns into a cache miss. Resolves to the files removed.
 */
export async function trimUnusedFiles(dir: string, olderThanMs: number, now = Date.now()): Promise<number> {
  const before = now - olderThanMs;
  let removed = 0;
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        const st = lstatSync(p, { throwIfNoEntry: false });
        if (!st || Math.max(st.mtimeMs, st.atimeMs) >= before) continue;
        try {
          unlinkSync(p);
          removed++;
        } catch {
          // Gone already.
        }
      }
    }
  };
  await walk(dir);
  return removed;
}
