import type { ServerReadableStream, ServerWritableStream, sendUnaryData } from '@grpc/grpc-js';
import type { ByteStreamServer, WriteRequest, WriteResponse } from '../proto/gen/google/bytestream/bytestream.js';
import { Code, OrionError } from '../common/errors.js';
import type { BlobStore } from '../cas/blob-store.js';
import { parseDigest } from '../cas/digest.js';
import type { Digest } from '../cas/types.js';
import { serverStream, toServiceError, unary } from '../proto/grpc-status.js';

const CHUNK = 64 * 1024;

/** Parses `{instance}/blobs/{hash}/{size}` (reads) or `{instance}/uploads/{uuid}/blobs/{hash}/{size}[/...]` (writes). */
export function parseResourceName(name: string, kind: 'read' | 'write'): { instanceName: string; digest: Digest } {
  const parts = name.split('/');
  const re = kind === 'read' ? ['blobs'] : ['uploads'];
  for (let i = 0; i < parts.length; i++) {
    if (parts[i] !== re[0]) continue;
    const instanceName = parts.slice(0, i).join('/');
    let j = i + 1;
    if (kind === 'write') {
      if (!parts[j] || parts[j + 1] !== 'blobs') break;
      j += 2;
    }
    const hash = parts[j];
    const size = parts[j + 1];
    if (hash === undefined || size === undefined) break;
    if (!/^\d+$/.test(size)) break;
    return { instanceName, digest: parseDigest(hash, Number(size)) };
  }
  const shape = kind === 'read' ? '{instance}/blobs/{hash}/{size}' : '{instance}/uploads/{uuid}/blobs/{hash}/{size}';
  throw new OrionError(Code.INVALID_ARGUMENT, `malformed resource name ${JSON.stringify(name.slice(0, 300))}: expected ${shape}`);
}

async function* writeChunks(call: ServerReadableStream<WriteRequest, WriteResponse>, first: WriteRequest, onFinish: () => void, declaredSize = Number.MAX_SAFE_INTEGER) {
  let offset = 0;
  let finished = false;
  const check = (req: WriteRequest) => {
    if (finished) throw new OrionError(Code.INVALID_ARGUMENT, 'data sent after finish_write');
    if (req.writeOffset !== offset) throw new OrionError(Code.INVALID_ARGUMENT, `write_offset ${req.writeOffset} does not continue at ${offset}`);
    // Refused as soon as the stream passes the size it declared, not after storing it.
    if (offset + req.data.length > declaredSize) throw new OrionError(Code.INVALID_ARGUMENT, `write of ${offset + req.data.length} bytes is longer than the ${declaredSize} bytes its resource name declares`);
    offset += req.data.length;
    if (req.finishWrite) {
      finished = true;
      onFinish();
    }
  };
  check(first);
  if (first.data.length > 0) yield first.data;
  if (first.finishWrite) return;
  for await (const req of call as AsyncIterable<WriteRequest>) {
    check(req);
    if (req.data.length > 0) yield req.data;
    if (req.finishWrite) return;
  }
  if (!finished) throw new OrionError(Code.INVALID_ARGUMENT, 'write stream ended without finish_write');
}

/** Waits until `call` can take more data, or the client went away (it then never drains). */
function drainOrGone(call: ServerWritableStream<unknown, unknown>): Promise<void> {
  if (call.cancelled || call.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const events = ['drain', 'cancelled', 'close', 'error'] as const;
    const done = () => {
      for (const e of events) call.off(e, done);
      resolve();
    };
    for (const e of events) call.on(e, done);
  });
}

export interface ByteStreamLimits {
  /** Largest blob a Write may declare (--max-blob-size). */
  maxBlobBytes: number;
}

export function createByteStreamService(cas: BlobStore, limits: ByteStreamLimits = { maxBlobBytes: Number.MAX_SAFE_INTEGER }): ByteStreamServer {
  return {
    read: serverStream(async (req, call) => {
      const { digest } = parseResourceName(req.resourceName, 'read');
      if (req.readOffset < 0 || req.readLimit < 0) throw new OrionError(Code.OUT_OF_RANGE, 'negative read_offset or read_limit');
      if (req.readOffset > digest.sizeBytes) throw new OrionError(Code.OUT_OF_RANGE, `read_offset ${req.readOffset} is past the end of ${digest.hash}/${digest.sizeBytes}`);
      if (!(await cas.has(digest))) throw new OrionError(Code.NOT_FOUND, `blob ${digest.hash}/${digest.sizeBytes} is not in the CAS`);
      let pending: Buffer = Buffer.alloc(0);
      // Leaving the loop early (client gone) closes the blob's file through the iterator.
      for await (const chunk of cas.getStream(digest, req.readOffset, req.readLimit)) {
        pending = pending.length === 0 ? (chunk as Buffer) : Buffer.concat([pending, chunk as Buffer]);
        while (pending.length >= CHUNK) {
          if (call.cancelled) return;
          const ok = call.write({ data: pending.subarray(0, CHUNK) });
          pending = pending.subarray(CHUNK);
          if (!ok) await drainOrGone(call);
        }
      }
      if (call.cancelled) return;
      if (pending.length > 0 || digest.sizeBytes === 0) call.write({ data: pending });
    }),
    write(call: ServerReadableStream<WriteRequest, WriteResponse>, callback: sendUnaryData<WriteResponse>) {
      const run = async (): Promise<WriteResponse> => {
        const iterator = (call as AsyncIterable<WriteRequest>)[Symbol.asyncIterator]();
        const head = await iterator.next();
        if (head.done) throw new OrionError(Code.INVALID_ARGUMENT, 'empty write stream');
        const { digest } = parseResourceName(head.value.resourceName, 'write');
        if (digest.sizeBytes > limits.maxBlobBytes) {
          throw new OrionError(Code.INVALID_ARGUMENT, `blob ${digest.hash}/${digest.sizeBytes} is larger than this head accepts (${limits.maxBlobBytes} bytes, --max-blob-size)`);
        }
        if (await cas.has(digest)) {
          // Already stored: tell the client so it can stop sending (REAPI allows an early reply).
          return { committedSize: digest.sizeBytes };
        }
        const rest = { [Symbol.asyncIterator]: () => iterator } as unknown as ServerReadableStream<WriteRequest, WriteResponse>;
        await cas.putStream(digest, writeChunks(rest, head.value, () => {}, digest.sizeBytes));
        return { committedSize: digest.sizeBytes };
      };
      run().then(
        (res) => callback(null, res),
        (err) => callback(toServiceError(err)),
      );
    },
    queryWriteStatus: unary(async (req) => {
      const { digest } = parseResourceName(req.resourceName, 'write');
      const complete = await cas.has(digest);
      return { committedSize: complete ? digest.sizeBytes : 0, complete };
    }),
  };
}
