/**
 * A persistent ActionCache: one JSON file per action digest (dir/ab/<hash>-<size>.json,
 * raw stdout/stderr in base64), replaced atomically so a crash never leaves a torn
 * entry. A file that cannot be parsed is treated as a miss and removed.
 */
import { readFileSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { wrap } from '../common/errors.js';
import type { ActionCache } from './action-cache.js';
import { writeFileAtomic } from './atomic-file.js';
import { validateDigest } from './digest.js';
import { touchIfOlder } from './store-trim.js';
import type { ActionResult, Digest } from './types.js';

const FORMAT_VERSION = 1;

/** An entry's JSON text (raw stdout/stderr in base64); the log action cache stores the same. */
export function serializeEntry(r: ActionResult): string {
  const { stdoutRaw, stderrRaw, ...rest } = r;
  return JSON.stringify({
    version: FORMAT_VERSION,
    result: { ...rest, stdoutRaw: stdoutRaw?.toString('base64'), stderrRaw: stderrRaw?.toString('base64') },
  });
}

function check(cond: boolean, what: string): asserts cond {
  if (!cond) throw new Error(`corrupt action cache entry: ${what}`);
}

function decodeRaw(v: unknown, what: string): Buffer | undefined {
  if (v === undefined) return undefined;
  check(typeof v === 'string', what);
  return Buffer.from(v, 'base64');
}

/** Parses and checks an entry's JSON text; throws on anything malformed. */
export function deserializeEntry(text: string): ActionResult {
  const o = JSON.parse(text) as { version?: unknown; result?: unknown } | null;
  check(o?.version === FORMAT_VERSION, 'unknown format version');
  check(typeof o.result === 'object' && o.result !== null, 'no result');
  const { stdoutRaw, stderrRaw, ...r } = o.result as Omit<ActionResult, 'stdoutRaw' | 'stderrRaw'> & { stdoutRaw?: unknown; stderrRaw?: unknown };
  check(Array.isArray(r.outputFiles) && Array.isArray(r.outputSymlinks) && Array.isArray(r.outputDirectories), 'output lists');
  check(Number.isInteger(r.exitCode), 'exit code');
  for (const f of r.outputFiles) check(typeof f.path === 'string' && typeof f.isExecutable === 'boolean' && !!validateDigest(f.digest), 'output file');
  for (const s of r.outputSymlinks) check(typeof s.path === 'string' && typeof s.target === 'string', 'output symlink');
  for (const d of r.outputDirectories) check(typeof d.path === 'string' && !!validateDigest(d.treeDigest), 'output directory');
  if (r.stdoutDigest) validateDigest(r.stdoutDigest);
  if (r.stderrDigest) validateDigest(r.stderrDigest);
  const result: ActionResult = r;
  const out = decodeRaw(stdoutRaw, 'stdoutRaw');
  const err = decodeRaw(stderrRaw, 'stderrRaw');
  if (out) result.stdoutRaw = out;
  if (err) result.stderrRaw = err;
  return result;
}

export interface DiskCacheOptions {
  /**
   * Flush each entry to disk before it becomes visible (default true). False for a client's
   * local cache, as ccache and sccache, and for a head's, whose file system is flushed as a
   * whole every few seconds and checked after a machine crash (sync-checkpoint.ts): a crash may
   * lose recent entries, never tear one (see writeFileAtomic).
   */
  durable?: boolean;
  /**
   * A blob store, and an action cache (an entry read has its mtime set, for trimUnusedFiles): a
   * present blob whose file was last set longer ago than this has its mtime
   * set to now when it is looked for (FindMissingBlobs, a second write, an action-cache entry's
   * completeness check) or read whole (`get` of a small blob), so mtimes say when blobs were last
   * used (store-trim.ts). Default: never.
   */
  touchAfterMs?: number;
  /**
   * A blob store only: read and write small blobs by synchronous calls (default false). For a daemon
   * whose CPU is the limit (a node sharing cores with the builds): the promise API's file
   * handles cost more CPU than the calls. Not for a client restoring many files at once, whose
   * reads and writes the thread pool runs in parallel with its own work, and never for writes
   * that are flushed (durable): see writeFileAtomic.
   */
  syncIo?: boolean;
}

export function createDiskActionCache(dir: string, opts: DiskCacheOptions = {}): ActionCache {
  const durable = opts.durable ?? true;
  const entryPath = (d: Digest) => join(dir, d.hash.slice(0, 2), `${d.hash}-${d.sizeBytes}.json`);

  return {
    async get(actionDigest) {
      const path = entryPath(validateDigest(actionDigest));
      let text: string;
      try {
        // Most lookups miss: a stat that returns nothing costs less than a failed open's exception.
        const st = statSync(path, { throwIfNoEntry: false });
        if (!st) return undefined;
        // Entries are a few hundred bytes: a synchronous read costs microseconds, a file handle ~0.4 ms.
        text = readFileSync(path, 'utf8');
        if (opts.touchAfterMs !== undefined) touchIfOlder(path, opts.touchAfterMs, st.mtimeMs);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw wrap(err, `failed to read action cache entry ${path}`);
      }
      try {
        return deserializeEntry(text);
      } catch {
        await rm(path, { force: true });
        return undefined;
      }
    },
    async put(actionDigest, result) {
      const path = entryPath(validateDigest(actionDigest));
      try {
        await writeFileAtomic(path, serializeEntry(result), { durable });
      } catch (err) {
        throw wrap(err, `failed to write action cache entry ${path}`);
      }
    },
  };
}
