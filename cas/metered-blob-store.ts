/**
 * A BlobStore decorator that counts the bytes read from and written to its
 * inner store (CAS bytes out and in), for metrics and build summaries.
 */
import { pipeline, Transform, type Readable } from 'node:stream';
import type { BlobStore } from './blob-store.js';
import { digestKey } from './digest.js';

export interface ByteMeter {
  /** Bytes read from the store (sent to whoever asked). */
  read(n: number): void;
  /** Bytes written to the store. */
  written(n: number): void;
}

export function createMeteredBlobStore<S extends BlobStore>(inner: S, meter: ByteMeter): S {
  const metered: BlobStore = {
    has: (d) => inner.has(d),
    findMissing: (ds) => inner.findMissing(ds),
    async get(d) {
      const b = await inner.get(d);
      meter.read(b.length);
      return b;
    },
    getStream(d, offset, limit): Readable {
      const counting = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          meter.read(chunk.length);
          cb(null, chunk);
        },
      });
      // pipeline destroys the source when the consumer destroys the result, and passes errors on.
      return pipeline(inner.getStream(d, offset, limit), counting, () => undefined);
    },
    async put(d, data) {
      await inner.put(d, data);
      meter.written(data.length);
    },
    async putStream(d, src) {
      let n = 0;
      async function* count() {
        for await (const chunk of src) {
          n += chunk.length;
          yield chunk;
        }
      }
      await inner.putStream(d, count());
      meter.written(n);
    },
  };
  if (inner.putMany) {
    metered.putMany = async (blobs) => {
      const refused = await inner.putMany!(blobs);
      const no = new Set(refused.map(digestKey));
      for (const b of blobs) if (!no.has(digestKey(b.digest))) meter.written(b.data.length);
      return refused;
    };
  }
  if (inner.localPath) metered.localPath = (d) => inner.localPath!(d);
  if (inner.getMany) {
    metered.getMany = async (ds) => {
      const r = await inner.getMany!(ds);
      for (const b of r.found.values()) meter.read(b.length);
      return r;
    };
  }
  if (inner.localExecutablePath) metered.localExecutablePath = (d) => inner.localExecutablePath!(d);
  // Whatever else the inner store offers (close(), for remote stores) stays reachable.
  return Object.assign(Object.create(inner) as S, metered);
}
