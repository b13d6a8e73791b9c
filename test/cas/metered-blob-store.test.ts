import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { digestOf } from '../../cas/digest.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import { createMeteredBlobStore } from '../../cas/metered-blob-store.js';
import type { BlobStore } from '../../cas/blob-store.js';
import type { Digest } from '../../cas/types.js';

const blob = (s: string) => ({ digest: digestOf(Buffer.from(s)), data: Buffer.from(s) });

/** A memory store with the remote stores' batch calls; putMany refuses data that does not match its digest. */
function remoteLike(): BlobStore {
  const inner = createMemoryBlobStore();
  return {
    ...inner,
    async getMany(ds) {
      const found = new Map<string, Buffer>();
      const missing: Digest[] = [];
      for (const d of ds) {
        if (await inner.has(d)) found.set(`${d.hash}/${d.sizeBytes}`, await inner.get(d));
        else missing.push(d);
      }
      return { found, missing };
    },
    async putMany(blobs) {
      const refused: Digest[] = [];
      for (const b of blobs) await inner.put(b.digest, b.data).catch(() => refused.push(b.digest));
      return refused;
    },
  };
}

describe('metered blob store', () => {
  it('counts the bytes of every write (put, putStream, putMany without what was refused) and every read (get, getStream, getMany)', async () => {
    const counted = { read: 0, written: 0 };
    const store = createMeteredBlobStore(remoteLike(), { read: (n) => void (counted.read += n), written: (n) => void (counted.written += n) });
    const [a, b, c, d] = ['aaaa', 'bbbbbbbb', 'cc', 'dddddddddddddddd'].map(blob);
    await store.put(a!.digest, a!.data);
    await store.putStream(b!.digest, Readable.from([b!.data]));
    const wrong = { digest: digestOf(Buffer.from('something else')), data: Buffer.from('not it') };
    expect(await store.putMany!([c!, d!, wrong])).toEqual([wrong.digest]);
    expect(counted.written).toBe(4 + 8 + 2 + 16);
    expect(counted.read).toBe(0);

    expect((await store.get(a!.digest)).toString()).toBe('aaaa');
    for await (const chunk of store.getStream(b!.digest)) void chunk;
    const many = await store.getMany!([c!.digest, d!.digest, wrong.digest]);
    expect(many.missing).toEqual([wrong.digest]);
    expect(counted.read).toBe(4 + 8 + 2 + 16);
  });
});
