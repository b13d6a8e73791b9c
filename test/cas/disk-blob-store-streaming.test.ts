import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import type { Digest } from '../../cas/types.js';
import { useTempDirs } from './tmpdir.js';

const MiB = 1024 * 1024;
const BLOB_SIZE = 80 * MiB;
const CHUNK_SIZE = MiB;

/** Deterministic pseudo-random chunks (xorshift32, fixed seed); nothing is retained between chunks. */
function* generate(): Generator<Buffer> {
  let x = 0x9e3779b9;
  for (let off = 0; off < BLOB_SIZE; off += CHUNK_SIZE) {
    const chunk = Buffer.allocUnsafe(CHUNK_SIZE);
    for (let i = 0; i < CHUNK_SIZE; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      chunk.writeUInt32LE(x >>> 0, i);
    }
    yield chunk;
  }
}

describe('disk blob store streaming', () => {
  const tempDir = useTempDirs();

  it('streams an 80 MiB blob in and out without holding it in memory', async () => {
    const h = createHash('sha256');
    for (const chunk of generate()) h.update(chunk);
    const digest: Digest = { hash: h.digest('hex'), sizeBytes: BLOB_SIZE };

    const store = createDiskBlobStore(await tempDir());
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sample = () => {
      peak = Math.max(peak, process.memoryUsage().rss);
    };

    await store.putStream(
      digest,
      (async function* () {
        for (const chunk of generate()) {
          sample();
          yield chunk;
        }
      })(),
    );

    const back = createHash('sha256');
    let size = 0;
    for await (const chunk of store.getStream(digest)) {
      back.update(chunk as Buffer);
      size += (chunk as Buffer).length;
      sample();
    }
    expect({ hash: back.digest('hex'), sizeBytes: size }).toEqual(digest);
    expect(peak - baseline).toBeLessThan(40 * MiB);
  });
});
