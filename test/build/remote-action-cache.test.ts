import { Readable } from 'node:stream';
import { credentials } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { createRemoteActionCache } from '../../cli/build/remote-action-cache.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import { digestOf } from '../../cas/digest.js';
import { Code, OrionError } from '../../common/errors.js';
import type { BlobStore } from '../../cas/blob-store.js';

/** A head's CAS whose first `failures` reads break mid-stream, as when the head is killed. */
function flakyRemote(inner: BlobStore, failures: number): BlobStore & { reads: number } {
  const store = Object.create(inner) as BlobStore & { reads: number };
  store.reads = 0;
  store.getStream = (d) => {
    store.reads++;
    if (store.reads <= failures) {
      return Readable.from((async function* () {
        yield Buffer.from('partial');
        throw new OrionError(Code.UNAVAILABLE, 'ByteStream Read: read ECONNRESET');
      })());
    }
    return inner.getStream(d);
  };
  return store;
}

describe('downloading outputs from the head', () => {
  const data = Buffer.from('object file bytes\n'.repeat(100));
  const d = digestOf(data);
  const result = { outputFiles: [{ path: 'a.o', digest: d, isExecutable: false }], outputSymlinks: [], outputDirectories: [], exitCode: 0 };

  it('retries a download broken by a connection reset and stores the whole blob', async () => {
    const head = createMemoryBlobStore();
    await head.put(d, data);
    const remote = flakyRemote(head, 2);
    const local = createMemoryBlobStore();
    const waits: number[] = [];
    const rac = createRemoteActionCache({ address: '127.0.0.1:1', credentials: credentials.createInsecure(), remote, local, sleep: async (ms) => void waits.push(ms) });
    await rac.fetch(result);
    expect(remote.reads).toBe(3);
    expect(waits).toHaveLength(2);
    expect(await local.get(d)).toEqual(data);
  });

  it('does not retry a blob the head does not have', async () => {
    const remote = flakyRemote(createMemoryBlobStore(), 0);
    const local = createMemoryBlobStore();
    const rac = createRemoteActionCache({ address: '127.0.0.1:1', credentials: credentials.createInsecure(), remote, local, sleep: async () => undefined });
    await expect(rac.fetch(result)).rejects.toMatchObject({ code: Code.NOT_FOUND });
    expect(remote.reads).toBe(1);
    expect(await local.has(d)).toBe(false);
  });
});
