/**
 * A BlobStore decorator that counts the bytes read from and written to its
 * inner store (CAS bytes out and in), for metrics and build summaries.
 */
import { pipeline, Transform, type Readable } from 'node:stream';
import type { BlobStore } from './blob-store.js';
import { digestKey } from './digest.js';

export interface ByteMeter {
  /** Bytes read from the store (sent to whoever asked); absent: reads go to the inner store as they are. */
  read?(n: number): void;
  /** Bytes written to the store. */
  written(n: number): void;
}

export function createMeteredBlobStore<S extends BlobStore>(inner: S, meter: ByteMeter): S {
  const read = meter.read;
  const metered: Partial<BlobStore> = {
    has: (d) => inner.has(d),
    findMissing: (ds) => inner.findMissing(ds),
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
  if (inner.putHashedFile) {
    metered.putHashedFile = async (d, file) => {
      await inner.putHashedFile!(d, file);
      meter.written(d.sizeBytes);
    };
  }
  if (inner.localPath) metered.localPath = (d) => inner.localPath!(d);
  if (read) {
    metered.get = async (d) => {
      const b = await inner.get(d);
      read(b.length);
      return b;
    };
    metered.getStream = (d, offset, limit): Readable => {
      const counting = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          read(chunk.length);
          cb(null, chunk);
        },
      });
      // pipeline destroys the source when the consumer destroys the result, and passes errors on.
      return pipeline(inner.getStream(d, offset, limit), counting, () => undefined);
    };
    if (inner.getMany) {
      metered.getMany = async (ds) => {
        const r = await inner.getMany!(ds);
        for (const b of r.found.values()) read(b.length);
        return r;
      };
    }
  }
  if (inner.localExecutablePath) metered.localExecutablePath = (d) => inner.localExecutablePath!(d);
  // Whatever else the inner store offers (close(), for remote stores) stays reachable.
  return Object.assign(Object.create(inner) as S, metered);
}
