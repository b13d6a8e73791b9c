/** A BlobStore backed by a remote REAPI CAS (BatchRead/Update for small blobs, ByteStream for large ones). */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ChannelCredentials, ClientOptions } from '@grpc/grpc-js';
import {
  type BatchReadBlobsResponse,
  type BatchUpdateBlobsResponse,
  type FindMissingBlobsResponse,
} from './gen/build/bazel/remote/execution/v2/remote_execution.js';
import type { ReadResponse, WriteRequest } from './gen/google/bytestream/bytestream.js';
import { asBuffer, BlobByteStreamClient, BlobCasClient } from './blob-codecs.js';
import { Code, OrionError, statusOf } from '../common/errors.js';
import type { BlobStore } from '../cas/blob-store.js';
import { digestKey, isEmptyDigest, verifyDigest } from '../cas/digest.js';
import type { Digest } from '../cas/types.js';
import { digestToPb } from './convert.js';
import { fromServiceError } from './grpc-status.js';

const BATCH_LIMIT = 2 * 1024 * 1024;
const CHUNK = 1024 * 1024;

export interface GrpcBlobStoreOptions {
  address: string;
  credentials: ChannelCredentials;
  instanceName?: string;
  channelOptions?: Partial<ClientOptions>;
}

export interface RemoteBlobStore extends BlobStore {
  /**
   * Uploads many small blobs (each at most PUT_MANY_MAX_BLOB bytes) in BatchUpdateBlobs
   * requests of up to 2 MiB and 1000 blobs, four at once. Returns the digests the head
   * refused as not matching their bytes; any other refusal throws.
   */
  putMany(blobs: { digest: Digest; data: Buffer }[]): Promise<Digest[]>;
  close(): void;
}

/** Largest blob putMany takes (larger ones go by ByteStream Write). */
export const PUT_MANY_MAX_BLOB = 1024 * 1024;

/** `items` in order, cut into batches of at most `maxCount` items and `maxBytes` bytes (an item larger than that alone). */
function batches<T>(items: T[], sizeOf: (x: T) => number, maxBytes: number, maxCount = 1000): T[][] {
  const out: T[][] = [];
  let batch: T[] = [];
  let bytes = 0;
  for (const x of items) {
    if (batch.length > 0 && (batch.length >= maxCount || bytes + sizeOf(x) > maxBytes)) {
      out.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(x);
    bytes += sizeOf(x);
  }
  if (batch.length > 0) out.push(batch);
  return out;
}

function call<Req, Res>(fn: (req: Req, cb: (err: Error | null, res: Res) => void) => unknown, req: Req, what: string): Promise<Res> {
  return new Promise((resolve, reject) => {
    fn(req, (err, res) => (err ? reject(fromServiceError(err, what)) : resolve(res)));
  });
}

export function createGrpcBlobStore(opts: GrpcBlobStoreOptions): RemoteBlobStore {
  const options = { 'grpc.max_receive_message_length': 16 * 1024 * 1024, 'grpc.max_send_message_length': 16 * 1024 * 1024, ...opts.channelOptions };
  const cas = new BlobCasClient(opts.address, opts.credentials, options);
  const bs = new BlobByteStreamClient(opts.address, opts.credentials, { ...options, channelOverride: cas.getChannel() } as Partial<ClientOptions>);
  const instanceName = opts.instanceName ?? '';
  const prefix = instanceName ? `${instanceName}/` : '';

  async function findMissing(ds: Digest[]): Promise<Digest[]> {
    const unique = new Map<string, Digest>();
    for (const d of ds) if (!isEmptyDigest(d)) unique.set(digestKey(d), d);
    const all = [...unique.values()];
    const out: Digest[] = [];
    for (let i = 0; i < all.length; i += 10_000) {
      const res = await call<unknown, FindMissingBlobsResponse>(cas.findMissingBlobs.bind(cas) as never, { instanceName, blobDigests: all.slice(i, i + 10_000).map(digestToPb), digestFunction: 0 }, 'FindMissingBlobs');
      for (const d of res.missingBlobDigests) out.push({ hash: d.hash, sizeBytes: Number(d.sizeBytes) });
    }
    return out;
  }

  function readStream(d: Digest, offset = 0, limit = 0): Readable {
    const stream = bs.read({ resourceName: `${prefix}blobs/${d.hash}/${d.sizeBytes}`, readOffset: offset, readLimit: limit });
    const out = new Readable({ read() { stream.resume(); } });
    stream.on('data', (r: ReadResponse) => {
      if (!out.push(r.data)) stream.pause();
    });
    stream.on('end', () => out.push(null));
    stream.on('error', (err) => out.destroy(fromServiceError(err, `ByteStream Read ${digestKey(d)}`)));
    return out;
  }

  async function get(d: Digest): Promise<Buffer> {
    if (isEmptyDigest(d)) return Buffer.alloc(0);
    let data: Buffer;
    if (d.sizeBytes <= BATCH_LIMIT) {
      const res = await call<unknown, BatchReadBlobsResponse>(cas.batchReadBlobs.bind(cas) as never, { instanceName, digests: [digestToPb(d)], acceptableCompressors: [], digestFunction: 0 }, 'BatchReadBlobs');
      const r = res.responses[0];
      if (!r || (r.status && r.status.code !== 0)) {
        throw new OrionError((r?.status?.code ?? Code.INTERNAL) as Code, `reading ${digestKey(d)}: ${r?.status?.message ?? 'no response'}`);
      }
      data = r.data;
    } else {
      const chunks: Buffer[] = [];
      for await (const c of readStream(d)) chunks.push(c as Buffer);
      data = Buffer.concat(chunks);
    }
    verifyDigest(d, data);
    return data;
  }

  async function getMany(ds: Digest[]): Promise<{ found: Map<string, Buffer>; missing: Digest[] }> {
    const found = new Map<string, Buffer>();
    const missing: Digest[] = [];
    for (const d of ds) if (isEmptyDigest(d)) found.set(digestKey(d), Buffer.alloc(0));
    const wanted = ds.filter((d) => !isEmptyDigest(d));
    for (const batch of batches(wanted, (d) => d.sizeBytes, BATCH_LIMIT)) {
      if (batch.length === 1 && batch[0]!.sizeBytes > BATCH_LIMIT) {
        try {
          found.set(digestKey(batch[0]!), await get(batch[0]!));
        } catch (err) {
          if (statusOf(err) === Code.NOT_FOUND) missing.push(batch[0]!);
          else throw err;
        }
        continue;
      }
      const res = await call<unknown, BatchReadBlobsResponse>(cas.batchReadBlobs.bind(cas) as never, { instanceName, digests: batch.map(digestToPb), acceptableCompressors: [], digestFunction: 0 }, 'BatchReadBlobs');
      const asked = new Set(batch.map(digestKey));
      for (const r of res.responses) {
        const d = { hash: r.digest?.hash ?? '', sizeBytes: Number(r.digest?.sizeBytes ?? 0) };
        if (!asked.delete(digestKey(d))) continue;
        if (r.status && r.status.code === Code.NOT_FOUND) {
          missing.push(d);
          continue;
        }
        if (r.status && r.status.code !== 0) throw new OrionError(r.status.code as Code, `reading ${digestKey(d)}: ${r.status.message}`);
        const data = r.data;
        verifyDigest(d, data);
        found.set(digestKey(d), data);
      }
      if (asked.size > 0) throw new OrionError(Code.INTERNAL, `BatchReadBlobs answered without ${asked.size} of the blobs asked for`);
    }
    return { found, missing };
  }

  async function putStream(d: Digest, src: AsyncIterable<Uint8Array>): Promise<void> {
    const resourceName = `${prefix}uploads/${randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    await new Promise<void>((resolve, reject) => {
      // The head may answer before the last byte (it already has the blob, or refused it):
      // then stop sending and close `src`, instead of waiting for a drain that never comes.
      let answered = false;
      let wake: (() => void) | undefined;
      const stream = bs.write((err) => {
        answered = true;
        wake?.();
        if (err) reject(fromServiceError(err, `ByteStream Write ${digestKey(d)}`));
        else resolve();
      });
      (async () => {
        let offset = 0;
        let pending: Buffer = Buffer.alloc(0);
        const send = async (data: Buffer, finish: boolean) => {
          const req: WriteRequest = { resourceName: offset === 0 ? resourceName : '', writeOffset: offset, finishWrite: finish, data };
          offset += data.length;
          if (stream.write(req) || answered) return;
          await new Promise<void>((r) => {
            wake = () => {
              stream.off('drain', wake!);
              wake = undefined;
              r();
            };
            stream.on('drain', wake);
          });
        };
        for await (const chunk of src) {
          if (answered) return;
          const b = asBuffer(chunk);
          pending = pending.length ? Buffer.concat([pending, b]) : b;
          while (pending.length >= CHUNK && !answered) {
            await send(pending.subarray(0, CHUNK), false);
            pending = pending.subarray(CHUNK);
          }
        }
        if (answered) return;
        await send(pending, true);
        stream.end();
      })().catch((err) => {
        stream.cancel();
        reject(err);
      });
    });
  }

  async function putMany(blobs: { digest: Digest; data: Buffer }[]): Promise<Digest[]> {
    const large = blobs.find((b) => b.data.length > PUT_MANY_MAX_BLOB);
    if (large) throw new OrionError(Code.INVALID_ARGUMENT, `putMany: blob ${digestKey(large.digest)} is larger than ${PUT_MANY_MAX_BLOB} bytes`);
    // Room is left for the request's framing (digests, field tags) under the head's limit.
    const queue = batches(blobs.filter((b) => !isEmptyDigest(b.digest)), (b) => b.data.length, BATCH_LIMIT - 64 * 1024);
    const refused: Digest[] = [];
    await Promise.all(
      Array.from({ length: Math.min(4, queue.length) }, async () => {
        for (let next = queue.shift(); next; next = queue.shift()) {
          const requests = next.map((b) => ({ digest: digestToPb(b.digest), data: b.data, compressor: 0 }));
          const res = await call<unknown, BatchUpdateBlobsResponse>(cas.batchUpdateBlobs.bind(cas) as never, { instanceName, requests, digestFunction: 0 }, 'BatchUpdateBlobs');
          for (const r of res.responses) {
            if (!r.status || r.status.code === 0) continue;
            const d = { hash: r.digest?.hash ?? '', sizeBytes: Number(r.digest?.sizeBytes ?? 0) };
            if (r.status.code === Code.INVALID_ARGUMENT) refused.push(d);
            else throw new OrionError(r.status.code as Code, `uploading ${digestKey(d)}: ${r.status.message}`);
          }
        }
      }),
    );
    return refused;
  }

  return {
    async has(d) {
      return (await findMissing([d])).length === 0;
    },
    putMany,
    findMissing,
    get,
    getMany,
    getStream: readStream,
    async put(d, data) {
      if (isEmptyDigest(d)) return;
      if (d.sizeBytes <= BATCH_LIMIT) {
        const res = await call<unknown, BatchUpdateBlobsResponse>(cas.batchUpdateBlobs.bind(cas) as never, { instanceName, requests: [{ digest: digestToPb(d), data, compressor: 0 }], digestFunction: 0 }, 'BatchUpdateBlobs');
        const r = res.responses[0];
        if (r?.status && r.status.code !== 0) throw new OrionError(r.status.code as Code, `uploading ${digestKey(d)}: ${r.status.message}`);
        return;
      }
      await putStream(d, Readable.from([data]));
    },
    putStream,
    close() {
      cas.close();
      bs.close();
    },
  };
}
