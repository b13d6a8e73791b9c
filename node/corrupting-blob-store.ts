/**
 * A BlobStore decorator that corrupts what is written through it: the fault of
 * `orion node --fault-inject corrupt-outputs`. Every upload has one byte flipped but
 * keeps the true digest, as a node with bad memory or a bad disk would send; the
 * head's CAS then refuses it (digest mismatch), and this store swallows that refusal
 * the way a careless upload path would. The node goes on to report a successful result
 * naming blobs the head never received: the head must notice (DATA_LOSS), re-run the
 * action elsewhere and quarantine the node. Reads pass through unchanged.
 */
import { Code, statusOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BlobStore } from '../cas/blob-store.js';
import { digestKey } from '../cas/digest.js';
import type { Digest } from '../cas/types.js';

/** A copy of `data` with its middle byte inverted (empty data stays empty). */
function flipped(data: Uint8Array): Buffer {
  const copy = Buffer.from(data);
  if (copy.length > 0) copy[copy.length >> 1] ^= 0xff;
  return copy;
}

async function* flipFirstChunk(src: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  let done = false;
  for await (const chunk of src) {
    if (!done && chunk.length > 0) {
      done = true;
      yield flipped(chunk);
    } else {
      yield chunk;
    }
  }
}

export function createCorruptingBlobStore<S extends BlobStore>(inner: S, log: Logger): S {
  const swallowRefusal = async (d: Digest, upload: Promise<void>) => {
    try {
      await upload;
    } catch (err) {
      // The head's verdict on the corrupted bytes; anything else is a real failure.
      if (statusOf(err) !== Code.INVALID_ARGUMENT) throw err;
      log.warn({ digest: digestKey(d), err: (err as Error).message }, 'fault injection: the head refused a corrupted upload; ignoring it');
    }
  };
  const corrupting: BlobStore = {
    has: (d) => inner.has(d),
    findMissing: (ds) => inner.findMissing(ds),
    get: (d) => inner.get(d),
    getStream: (d, offset, limit) => inner.getStream(d, offset, limit),
    ...(inner.getMany ? { getMany: (ds: Digest[]) => inner.getMany!(ds) } : {}),
    put: (d, data) => swallowRefusal(d, inner.put(d, flipped(data))),
    putStream: (d, src) => swallowRefusal(d, inner.putStream(d, flipFirstChunk(src))),
  };
  if (inner.localPath) corrupting.localPath = (d) => inner.localPath!(d);
  if (inner.localExecutablePath) corrupting.localExecutablePath = (d) => inner.localExecutablePath!(d);
  // Whatever else the inner store offers (close(), for remote stores) stays reachable.
  return Object.assign(Object.create(inner) as S, corrupting);
}
