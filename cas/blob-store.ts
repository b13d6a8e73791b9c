/** The content-addressable storage interface. Every implementation verifies content on write. */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { Code, OrionError } from '../common/errors.js';
import { digestKey } from './digest.js';
import type { Digest } from './types.js';

export interface BlobStore {
  has(d: Digest): Promise<boolean>;
  /** The digests of `ds` that are absent, each once, in first-seen order. */
  findMissing(ds: Digest[]): Promise<Digest[]>;
  /** Throws NOT_FOUND when absent. */
  get(d: Digest): Promise<Buffer>;
  /**
   * Streams the blob from `offset`, at most `limit` bytes (0 or undefined: to the end,
   * as in ByteStream Read). The stream errors with NOT_FOUND when the blob is absent
   * and OUT_OF_RANGE when `offset` is past its end.
   */
  getStream(d: Digest, offset?: number, limit?: number): Readable;
  /** Throws INVALID_ARGUMENT "digest mismatch: ..." and stores nothing when `data` does not match `d`. */
  put(d: Digest, data: Buffer): Promise<void>;
  /** As `put`, hashing while consuming `src`, which is never held whole in memory by disk stores. */
  putStream(d: Digest, src: AsyncIterable<Uint8Array>): Promise<void>;
  /**
   * Remote stores: reads many small blobs in one round trip (each verified). Blobs the
   * store lacks are listed in `missing`; other failures throw.
   */
  getMany?(ds: Digest[]): Promise<{ found: Map<string, Buffer>; missing: Digest[] }>;
  /** Remote stores: writes many small blobs in few round trips; resolves to the digests the store refused (data not matching). */
  putMany?(blobs: { digest: Digest; data: Buffer }[]): Promise<Digest[]>;
  /** Disk stores: where the blob's file is (read-only, mode 0444) when present, for hard-linking. */
  localPath?(d: Digest): string | undefined;
  /** Disk stores: the path of an executable (mode 0555) copy of the blob, created on demand; undefined when absent. */
  localExecutablePath?(d: Digest): Promise<string | undefined>;
  /**
   * Disk stores: stores the file at `path`, which the caller has just hashed to `d`, by a
   * kernel copy (a reflink where the file system has them) instead of reading it again.
   * Only its size is checked: the caller vouches for the hash.
   */
  putHashedFile?(d: Digest, path: string): Promise<void>;
}

/** Stores a file just hashed to `d`: by a kernel copy where the store can, else streamed (and verified). */
export function putHashedFile(cas: BlobStore, d: Digest, path: string): Promise<void> {
  return cas.putHashedFile ? cas.putHashedFile(d, path) : cas.putStream(d, createReadStream(path));
}

/** Dedupes `ds` by digest and keeps those for which `present` is false. */
export async function findMissingWith(ds: Digest[], present: (d: Digest) => Promise<boolean>): Promise<Digest[]> {
  const unique = new Map<string, Digest>();
  for (const d of ds) unique.set(digestKey(d), d);
  const candidates = [...unique.values()];
  const flags = await Promise.all(candidates.map(present));
  return candidates.filter((_, i) => !flags[i]);
}

/** Resolves a ByteStream-style read range against a blob of `size` bytes. */
export function readRange(d: Digest, size: number, offset = 0, limit = 0): { start: number; end: number } {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) {
    throw new OrionError(Code.OUT_OF_RANGE, `read offset ${offset} out of range for blob ${digestKey(d)}`);
  }
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new OrionError(Code.INVALID_ARGUMENT, `invalid read limit ${limit} for blob ${digestKey(d)}`);
  }
  return { start: offset, end: limit === 0 ? size : Math.min(size, offset + limit) };
}
