/**
 * A BlobStore on the local filesystem. Layout under `dir`:
 *   ab/<hash>     the blob, read-only (0444), sharded by the first two hex digits
 *   x/ab/<hash>   an executable (0555) copy, made on demand for hard-linking executables
 *   tmp/          writes in progress; each is renamed into place once verified
 * Every write is hashed while streaming and verified against its digest before the
 * rename, so a reader never sees a partial or wrong blob and concurrent writers of
 * the same blob are safe (each renames its own complete copy).
 */
import { createHash, randomUUID } from 'node:crypto';
import { copyFile, lstat, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { closeSync, constants, createReadStream, fstatSync, futimesSync, openSync, readFileSync, readSync, statSync, utimesSync } from 'node:fs';
import { createDirMaker, ensureDirSync, writeAndRename, writeDurableAndRename } from './atomic-file.js';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { isErrno, notFound, wrap } from '../common/errors.js';
import { findMissingWith, readRange, type BlobStore } from './blob-store.js';
import { digestKey, digestMismatch, isEmptyDigest, validateDigest } from './digest.js';
import { createLimiter } from './concurrency.js';
import type { DiskCacheOptions } from './disk-action-cache.js';
import type { Digest } from './types.js';

/**
 * Blobs up to this size are written whole (not streamed), and read by one synchronous call. A
 * read needs no flush, so durable stores read this way too: through the promise API a read is
 * four thread-pool round trips (open, fstat, read, close), ~0.3 ms of a busy head's main thread
 * per blob served, against tens of µs for a blob in the page cache.
 */
const SMALL_BLOB = 256 * 1024;

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  for (let off = 0; off < chunk.length; ) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
    off += bytesWritten;
  }
}

/**
 * Reads a small file as readFileSync does (open, fstat, read, close), setting its mtime to now
 * through the open descriptor when it is older than `touchAfterMs` (see DiskCacheOptions).
 */
function readTouching(file: string, touchAfterMs: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const st = fstatSync(fd);
    const data = Buffer.allocUnsafe(st.size);
    let off = 0;
    while (off < st.size) {
      const n = readSync(fd, data, off, st.size - off, off);
      if (n === 0) break;
      off += n;
    }
    const now = Date.now();
    if (st.mtimeMs < now - touchAfterMs) {
      try {
        futimesSync(fd, now / 1000, now / 1000);
      } catch {
        // Not ours to touch: it only looks older to a trim.
      }
    }
    return off === st.size ? data : data.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}

export function createDiskBlobStore(dir: string, opts: DiskCacheOptions = {}): BlobStore {
  const durable = opts.durable ?? true;
  // Not with durable writes: see writeFileAtomic (a synchronous create can wait for a journal commit).
  const syncIo = (opts.syncIo ?? false) && !durable;
  const tmpDir = join(dir, 'tmp');
  const ensureDir = createDirMaker();
  const statLimit = createLimiter(64);
  const touchAfterMs = opts.touchAfterMs;

  const blobPath = (d: Digest) => join(dir, d.hash.slice(0, 2), d.hash);
  const execPath = (d: Digest) => join(dir, 'x', d.hash.slice(0, 2), d.hash);
  const newTemp = async () => {
    await ensureDir(tmpDir);
    return join(tmpDir, `${process.pid}.${randomUUID()}`);
  };

  /**
   * True when `path` holds a file of the digest's size (a truncated file counts as absent).
   * A synchronous stat that returns nothing for an absent file: most blobs asked about on a
   * put are new, and building an exception for each (the promise API) cost more than the
   * stat itself on a busy head.
   */
  const present = async (path: string, d: Digest): Promise<boolean> => {
    let st;
    try {
      st = statSync(path, { throwIfNoEntry: false });
    } catch (err) {
      throw wrap(err, `failed to stat blob ${digestKey(d)}`);
    }
    if (st?.size !== d.sizeBytes) return false;
    if (touchAfterMs !== undefined) {
      const now = Date.now();
      // Synchronous: a trim in this process must not see the old time once the blob was found here.
      if (st.mtimeMs < now - touchAfterMs) {
        try {
          utimesSync(path, now / 1000, now / 1000);
        } catch {
          // Gone meanwhile, or not ours to touch: it only looks older to a trim.
        }
      }
    }
    return true;
  };
  const has = async (d: Digest) => isEmptyDigest(validateDigest(d)) || present(blobPath(d), d);

  /**
   * Gives a complete temp file `mode`, flushes it (when durable), then renames it into place as
   * `dest`. A blob that is not flushed and lost in a crash comes back short or empty, which
   * every reader here rejects by its size.
   */
  const install = async (fh: FileHandle, tmp: string, dest: string, mode: number) => {
    try {
      await fh.chmod(mode);
      if (durable) await fh.datasync();
    } finally {
      await fh.close();
    }
    await ensureDir(dirname(dest));
    await rename(tmp, dest);
  };

  const putStream = async (d: Digest, src: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> => {
    validateDigest(d);
    const hash = createHash('sha256');
    let size = 0;
    // An existing blob is still verified against the incoming data, just not rewritten.
    const write = !isEmptyDigest(d) && !(await has(d));
    const tmp = write ? await newTemp() : undefined;
    const fh = tmp ? await open(tmp, 'wx', 0o600) : undefined;
    try {
      for await (const chunk of src) {
        hash.update(chunk);
        size += chunk.length;
        if (fh && size <= d.sizeBytes) await writeAll(fh, chunk);
      }
      const actual = { hash: hash.digest('hex'), sizeBytes: size };
      if (actual.hash !== d.hash || actual.sizeBytes !== d.sizeBytes) throw digestMismatch(d, actual);
      if (fh && tmp) await install(fh, tmp, blobPath(d), 0o444);
    } catch (err) {
      await fh?.close().catch(() => undefined);
      if (tmp) await rm(tmp, { force: true });
      throw err;
    }
  };

  /**
   * A blob given whole and small enough: with syncIo (a store that does not flush) written by
   * synchronous calls (writeAndRename); otherwise through the callback API (writeDurableAndRename,
   * flushed when durable), whose plain descriptors cost a head's main thread less than the file
   * handles a stream needs. Larger ones stream.
   */
  const put = async (d: Digest, data: Buffer): Promise<void> => {
    validateDigest(d);
    if (data.length > SMALL_BLOB) return putStream(d, [data]);
    const actual = { hash: createHash('sha256').update(data).digest('hex'), sizeBytes: data.length };
    if (actual.hash !== d.hash || actual.sizeBytes !== d.sizeBytes) throw digestMismatch(d, actual);
    if (isEmptyDigest(d) || (await has(d))) return;
    if (syncIo) return putSync(d, data);
    await ensureDir(tmpDir);
    await ensureDir(dirname(blobPath(d)));
    await writeDurableAndRename(join(tmpDir, `${process.pid}.${randomUUID()}`), blobPath(d), data, 0o444, durable);
  };

  /** Stores verified bytes by synchronous calls (syncIo stores only). */
  const putSync = (d: Digest, data: Buffer): void => {
    ensureDirSync(tmpDir);
    ensureDirSync(dirname(blobPath(d)));
    writeAndRename(join(tmpDir, `${process.pid}.${randomUUID()}`), blobPath(d), data, 0o444);
  };

  /** Sets an open blob's mtime to now when it is older than touchAfterMs: it was just used. */
  const touchOpen = async (fh: FileHandle, mtimeMs: number) => {
    if (touchAfterMs === undefined) return;
    const now = Date.now();
    // Not ours to touch (another user's store): it only looks older to a trim.
    if (mtimeMs < now - touchAfterMs) await fh.utimes(now / 1000, now / 1000).catch(() => undefined);
  };
  /** A large blob, read whole through one descriptor, its last use recorded. */
  const readLarge = async (file: string): Promise<Buffer> => {
    const fh = await open(file, 'r');
    try {
      await touchOpen(fh, (await fh.stat()).mtimeMs);
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  };

  const get = async (d: Digest): Promise<Buffer> => {
    if (isEmptyDigest(validateDigest(d))) return Buffer.alloc(0);
    try {
      // A small blob by one synchronous read (it is almost always in the page cache).
      const data = d.sizeBytes <= SMALL_BLOB ? (touchAfterMs === undefined ? readFileSync(blobPath(d)) : readTouching(blobPath(d), touchAfterMs)) : await readLarge(blobPath(d));
      if (data.length === d.sizeBytes) return data;
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw wrap(err, `failed to read blob ${digestKey(d)}`);
    }
    throw notFound(`blob ${digestKey(d)} not found`);
  };

  async function* read(d: Digest, offset?: number, limit?: number): AsyncGenerator<Buffer> {
    if (isEmptyDigest(validateDigest(d))) {
      readRange(d, 0, offset, limit);
      return;
    }
    let fh: FileHandle;
    try {
      fh = await open(blobPath(d), 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw notFound(`blob ${digestKey(d)} not found`);
      throw wrap(err, `failed to open blob ${digestKey(d)}`);
    }
    try {
      const st = await fh.stat();
      const size = st.size;
      if (size !== d.sizeBytes) throw notFound(`blob ${digestKey(d)} not found (stored file has ${size} bytes)`);
      await touchOpen(fh, st.mtimeMs);
      const { start, end } = readRange(d, size, offset, limit);
      if (end > start) yield* fh.createReadStream({ start, end: end - 1, autoClose: false });
    } finally {
      await fh.close();
    }
  }

  return {
    has,
    findMissing: (ds) => findMissingWith(ds, (d) => statLimit(() => has(d))),
    get,
    getStream: (d, offset, limit) => Readable.from(read(d, offset, limit), { objectMode: false }),
    put,
    putStream,
    localPath: (d) => (isEmptyDigest(validateDigest(d)) ? undefined : blobPath(d)),
    async putHashedFile(d, path) {
      if (isEmptyDigest(validateDigest(d)) || (await has(d))) return;
      if (syncIo && d.sizeBytes <= SMALL_BLOB) {
        // Small: one synchronous read and write (see put).
        const data = readFileSync(path);
        if (data.length !== d.sizeBytes) throw digestMismatch(d, { hash: 'unknown (changed since it was hashed)', sizeBytes: data.length });
        return putSync(d, data);
      }
      const tmp = await newTemp();
      try {
        await copyFile(path, tmp, constants.COPYFILE_FICLONE);
        const { size } = await stat(tmp);
        if (size !== d.sizeBytes) throw digestMismatch(d, { hash: 'unknown (changed since it was hashed)', sizeBytes: size });
        await install(await open(tmp, 'r'), tmp, blobPath(d), 0o444);
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
    },
    async localExecutablePath(d) {
      if (isEmptyDigest(validateDigest(d))) return undefined;
      const dest = execPath(d);
      if (await present(dest, d)) return dest;
      if (!(await present(blobPath(d), d))) return undefined;
      const tmp = await newTemp();
      try {
        await copyFile(blobPath(d), tmp);
        await install(await open(tmp, 'r'), tmp, dest, 0o555);
      } catch (err) {
        await rm(tmp, { force: true });
        if (isErrno(err, 'ENOENT')) return undefined;
        throw wrap(err, `failed to make executable copy of blob ${digestKey(d)}`);
      }
      return dest;
    },
  };
}

/**
 * Checks the blobs of the disk store at `dir` modified at or after `sinceMs` (0: all): each must
 * hash to its name, or it is removed (a machine crash can leave an unflushed file empty, short
 * or holding another file's old blocks). Writes in progress (tmp/) are removed. For
 * sync-checkpoint.ts, at a head's start.
 */
export async function verifyDiskBlobs(dir: string, sinceMs: number): Promise<{ checked: number; removed: number }> {
  let checked = 0;
  let removed = 0;
  const limit = createLimiter(4);
  const shardDirs: string[] = [];
  for (const base of [dir, join(dir, 'x')]) {
    let names: string[];
    try {
      names = await readdir(base);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) continue;
      throw wrap(err, `failed to list ${base}`);
    }
    for (const n of names) if (/^[0-9a-f]{2}$/.test(n)) shardDirs.push(join(base, n));
  }
  const checkOne = async (path: string, name: string) => {
    const st = await lstat(path).catch(() => undefined);
    if (!st?.isFile() || st.mtimeMs < sinceMs) return;
    checked++;
    const hash = createHash('sha256');
    try {
      for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return;
      throw wrap(err, `failed to read ${path}`);
    }
    if (hash.digest('hex') !== name) {
      await rm(path, { force: true });
      removed++;
    }
  };
  for (const shard of shardDirs) {
    const names = await readdir(shard).catch(() => [] as string[]);
    await Promise.all(names.map((n) => limit(() => checkOne(join(shard, n), n))));
  }
  // Its entries, not the directory: a store open on `dir` knows it made it.
  const tmp = join(dir, 'tmp');
  for (const n of await readdir(tmp).catch(() => [] as string[])) await rm(join(tmp, n), { recursive: true, force: true });
  return { checked, removed };
}
