/** A BlobStore held in a Map: for tests and small caches. Verifies every write. */
import { Readable } from 'node:stream';
import { notFound } from '../common/errors.js';
import { findMissingWith, readRange, type BlobStore } from './blob-store.js';
import { digestKey, digestOfStream, digestMismatch, isEmptyDigest, sameDigest, validateDigest, verifyDigest } from './digest.js';
import type { Digest } from './types.js';

export function createMemoryBlobStore(): BlobStore {
  const blobs = new Map<string, Buffer>();

  const lookup = (d: Digest): Buffer | undefined => (isEmptyDigest(d) ? Buffer.alloc(0) : blobs.get(digestKey(d)));

  const get = async (d: Digest): Promise<Buffer> => {
    validateDigest(d);
    const b = lookup(d);
    if (!b) throw notFound(`blob ${digestKey(d)} not found`);
    return b;
  };

  return {
    async has(d) {
      validateDigest(d);
      return lookup(d) !== undefined;
    },
    findMissing(ds) {
      return findMissingWith(ds, async (d) => lookup(validateDigest(d)) !== undefined);
    },
    get,
    getStream(d, offset, limit) {
      return Readable.from(
        (async function* () {
          const b = await get(d);
          const { start, end } = readRange(d, b.length, offset, limit);
          if (end > start) yield b.subarray(start, end);
        })(),
      );
    },
    async put(d, data) {
      validateDigest(d);
      verifyDigest(d, data);
      if (!isEmptyDigest(d)) blobs.set(digestKey(d), Buffer.from(data));
    },
    async putStream(d, src) {
      validateDigest(d);
      const chunks: Uint8Array[] = [];
      const actual = await digestOfStream(
        (async function* () {
          for await (const c of src) {
            chunks.push(Buffer.from(c));
            yield c;
          }
        })(),
      );
      if (!sameDigest(d, actual)) throw digestMismatch(d, actual);
      if (!isEmptyDigest(d)) blobs.set(digestKey(d), Buffer.concat(chunks));
    },
  };
}
