/**
 * A persistent map from a file's stat (path, size, mtime, inode, ctime) to its
 * digest, like git's index: unchanged files are not re-hashed between builds.
 * As in git, a file modified shortly before it was hashed is not cached, since
 * a later change within the same timestamp tick would go unnoticed. "Shortly"
 * depends on the file system's timestamps: where they have sub-second
 * precision (ext4, xfs, btrfs, tmpfs), a kernel tick is a few milliseconds
 * and FINE_RACY_WINDOW_MS is ample; where every timestamp is a whole second
 * (FAT, some network file systems), RACY_WINDOW_MS. A build that runs right
 * after another (CI steps, an edit moments later) then still finds the
 * outputs it just wrote in the cache instead of hashing them again.
 */
import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { resolve } from 'node:path';
import { systemClock, type Clock } from '../common/clock.js';
import { wrap } from '../common/errors.js';
import { writeFileAtomic } from './atomic-file.js';
import { digestOfFile } from './digest.js';
import type { Digest } from './types.js';

export const RACY_WINDOW_MS = 2000;
export const FINE_RACY_WINDOW_MS = 100;

/** The racy window for a file whose timestamps are these. */
export function racyWindowMs(st: Pick<Stats, 'mtimeMs' | 'ctimeMs'>): number {
  const wholeSeconds = Number.isInteger(st.mtimeMs / 1000) && Number.isInteger(st.ctimeMs / 1000);
  return wholeSeconds ? RACY_WINDOW_MS : FINE_RACY_WINDOW_MS;
}
const FORMAT_VERSION = 1;

/** [size, mtimeMs, ino, ctimeMs, hash] */
type Entry = [number, number, number, number, string];

export interface StatCache {
  /** The file's digest: from the cache when its stat is unchanged, else freshly hashed. */
  digestFileCached(path: string, stats?: Stats): Promise<Digest>;
  /**
   * Records the digest of a file Orion itself just wrote, or a finished action wrote,
   * with the file's stat taken after the write: kept even inside the racy window,
   * since nothing else writes a build's outputs while it runs. The next build then
   * does not hash the outputs of this one again (a cold build's ~60 MB on Redis).
   */
  remember(path: string, stats: Stats, digest: Digest): void;
  /** The cached digest of the file (absolute, normalized path) whose lstat is `stats`, when it is unchanged; nothing is hashed. */
  peek(abs: string, stats: Stats): Digest | undefined;
  /** Writes the cache atomically if anything changed since it was loaded. */
  save(): Promise<void>;
  /** Files this process had to hash (new, or changed since they were cached): what an edit touched. */
  rehashed(): ReadonlySet<string>;
}

export interface StatCacheDeps {
  hashFile?: (path: string) => Promise<Digest>;
  clock?: Clock;
}

/** Synchronous: the cache is read before the tree's first walk, which needs it at once. */
function load(file: string): Map<string, Entry> {
  try {
    const o = JSON.parse(readFileSync(file, 'utf8')) as { version?: number; entries?: Record<string, Entry> };
    if (o.version === FORMAT_VERSION && o.entries && typeof o.entries === 'object') return new Map(Object.entries(o.entries));
  } catch {
    // Missing or corrupt: start empty, the next save replaces it.
  }
  return new Map();
}

export function createStatCache(file: string, deps: StatCacheDeps = {}): StatCache {
  const hashFile = deps.hashFile ?? digestOfFile;
  const clock = deps.clock ?? systemClock;
  let entries: Map<string, Entry> | undefined;
  let dirty = false;
  const loaded = () => (entries ??= load(file));
  /** The entry's digest when it was recorded for this very stat. */
  const unchanged = (e: Entry | undefined, st: Stats): Digest | undefined =>
    e && e[0] === st.size && e[1] === st.mtimeMs && e[2] === st.ino && e[3] === st.ctimeMs ? { hash: e[4], sizeBytes: st.size } : undefined;
  const hashed = new Set<string>();

  return {
    rehashed: () => hashed,
    async digestFileCached(path, stats) {
      const abs = resolve(path);
      const st = stats ?? (await stat(abs));
      const map = loaded();
      const e = map.get(abs);
      const known = unchanged(e, st);
      if (known) return known;
      const hashedAt = clock.now();
      hashed.add(abs);
      const d = await hashFile(abs);
      const racy = Math.max(st.mtimeMs, st.ctimeMs) > hashedAt - racyWindowMs(st);
      if (!racy && d.sizeBytes === st.size) {
        map.set(abs, [st.size, st.mtimeMs, st.ino, st.ctimeMs, d.hash]);
        dirty = true;
      } else if (e) {
        map.delete(abs);
        dirty = true;
      }
      return d;
    },
    remember(path, st, digest) {
      if (!st.isFile() || st.size !== digest.sizeBytes) return;
      loaded().set(resolve(path), [st.size, st.mtimeMs, st.ino, st.ctimeMs, digest.hash]);
      dirty = true;
    },
    peek: (abs, st) => unchanged(loaded().get(abs), st),
    async save() {
      if (!dirty) return;
      const map = loaded();
      dirty = false;
      try {
        await writeFileAtomic(file, JSON.stringify({ version: FORMAT_VERSION, entries: Object.fromEntries(map) }), { durable: false });
      } catch (err) {
        dirty = true;
        throw wrap(err, `failed to save stat cache ${file}`);
      }
    },
  };
}
