/**
 * Nodes read each other's outputs directly: each node serves its local CAS,
 * read-only, to callers that present the peer token the head handed out at
 * registration (REAPI FindMissingBlobs, BatchReadBlobs and ByteStream Read;
 * everything else is UNIMPLEMENTED). Blobs are content-addressed and every
 * reader verifies their digest, so a peer can withhold data but not forge it.
 */
import { timingSafeEqual } from 'node:crypto';
import { InterceptingCall, Metadata, Server, ServerCredentials, credentials as grpcCredentials, type ServerUnaryCall, type ServerWritableStream, type ChannelCredentials, type Interceptor } from '@grpc/grpc-js';
import type { BatchReadBlobsRequest, FindMissingBlobsRequest } from '../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import type { ReadRequest, ReadResponse } from '../proto/gen/google/bytestream/bytestream.js';
import { ByteStreamDefinition, CasDefinition } from '../proto/blob-codecs.js';
import { Code, OrionError, statusOf } from '../common/errors.js';
import { AUTHORIZATION_HEADER, bearerTokenInterceptor } from '../common/credentials.js';
import type { BlobStore } from '../cas/blob-store.js';
import { digestKey, parseDigest } from '../cas/digest.js';
import type { Digest } from '../cas/types.js';
import { digestFromPb, digestToPb, statusToPb } from '../proto/convert.js';
import { createGrpcBlobStore, type RemoteBlobStore } from '../proto/grpc-blob-store.js';
import { serverStream, toServiceError, unary } from '../proto/grpc-status.js';
import { shutdownServer } from '../proto/server-shutdown.js';

/** The current peer token (undefined until the node registered). */
export type PeerToken = () => string | undefined;

const MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024;

function authorized(md: Metadata, token: PeerToken): void {
  const want = token();
  const got = String(md.get(AUTHORIZATION_HEADER)[0] ?? '');
  const expected = want ? `Bearer ${want}` : undefined;
  if (!expected || got.length !== expected.length || !timingSafeEqual(Buffer.from(got), Buffer.from(expected))) {
    throw new OrionError(Code.UNAUTHENTICATED, 'a peer endpoint needs the peer token of the head this node is registered with');
  }
}

const unimplemented = (what: string) => (_call: unknown, cb?: (err: unknown) => void) => {
  const err = toServiceError(new OrionError(Code.UNIMPLEMENTED, `a node's peer endpoint only serves reads (not ${what})`));
  if (typeof cb === 'function') cb(err);
  else (_call as { emit(e: string, x: unknown): void }).emit('error', err);
};

export interface PeerEndpoint {
  /** host:port it listens on. */
  address: string;
  close(): Promise<void>;
}

export async function startPeerEndpoint(opts: { host: string; port: number; store: BlobStore; token: PeerToken }): Promise<PeerEndpoint> {
  const server = new Server({ 'grpc.max_send_message_length': 16 * 1024 * 1024, 'grpc.max_receive_message_length': 1024 * 1024 });
  server.addService(CasDefinition, {
    findMissingBlobs: unary(async (req: FindMissingBlobsRequest, call: ServerUnaryCall<FindMissingBlobsRequest, unknown>) => {
      authorized(call.metadata, opts.token);
      const ds = req.blobDigests.slice(0, 100_000).map((d, i) => digestFromPb(d, `blob_digests[${i}]`));
      return { missingBlobDigests: (await opts.store.findMissing(ds)).map(digestToPb) };
    }),
    batchReadBlobs: unary(async (req: BatchReadBlobsRequest, call: ServerUnaryCall<BatchReadBlobsRequest, unknown>) => {
      authorized(call.metadata, opts.token);
      const ds = req.digests.map((d, i) => digestFromPb(d, `digests[${i}]`));
      const total = ds.reduce((n, d) => n + d.sizeBytes, 0);
      if (total > MAX_BATCH_BYTES) throw new OrionError(Code.INVALID_ARGUMENT, `batch of ${total} bytes is over ${MAX_BATCH_BYTES}`);
      const responses = await Promise.all(
        ds.map(async (d) => {
          try {
            return { digest: digestToPb(d), data: await opts.store.get(d), status: statusToPb(Code.OK, ''), compressor: 0 };
          } catch (err) {
            return { digest: digestToPb(d), data: Buffer.alloc(0), status: statusToPb(statusOf(err), (err as Error).message), compressor: 0 };
          }
        }),
      );
      return { responses };
    }),
    batchUpdateBlobs: unimplemented('BatchUpdateBlobs'),
    getTree: unimplemented('GetTree'),
    splitBlob: unimplemented('SplitBlob'),
    spliceBlob: unimplemented('SpliceBlob'),
  } as never);
  server.addService(ByteStreamDefinition, {
    read: serverStream(async (req: ReadRequest, call: ServerWritableStream<ReadRequest, ReadResponse>) => {
      authorized(call.metadata, opts.token);
      const m = /(?:^|\/)blobs\/([0-9a-f]{64})\/(\d+)$/.exec(req.resourceName);
      if (!m) throw new OrionError(Code.INVALID_ARGUMENT, `resource name ${JSON.stringify(req.resourceName.slice(0, 200))} is not blobs/HASH/SIZE`);
      const d = parseDigest(m[1]!, Number(m[2]));
      for await (const chunk of opts.store.getStream(d, Number(req.readOffset), Number(req.readLimit))) {
        if (call.cancelled) return;
        if (!call.write({ data: chunk as Buffer })) await new Promise((r) => call.once('drain', r));
      }
    }),
    write: unimplemented('ByteStream Write'),
    queryWriteStatus: unimplemented('QueryWriteStatus'),
  } as never);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${opts.host}:${opts.port}`, ServerCredentials.createInsecure(), (err, p) => (err ? reject(new OrionError(Code.UNAVAILABLE, `peer endpoint cannot listen on ${opts.host}:${opts.port}: ${err.message}`)) : resolve(p))),
  );
  return {
    address: `${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`,
    close: () => shutdownServer(server, 1000),
  };
}

export interface PeerFetcher {
  /** Reads what it can of `digests` from the node at `address`; blobs it cannot get are simply absent. */
  fetch(address: string, digests: Digest[]): Promise<Map<string, Buffer>>;
  close(): void;
}

/**
 * How long one read from a peer may take. Peer reads are best-effort (the head has every
 * blob), so a peer that accepts connections but stops answering must not hold the action up.
 */
export const PEER_CALL_TIMEOUT_MS = 10_000;

/** Gives every call a deadline (grpc-js calls have none by default and would wait forever). */
function deadlineInterceptor(ms: number): Interceptor {
  return (options, nextCall) => new InterceptingCall(nextCall({ ...options, deadline: options.deadline ?? Date.now() + ms }));
}

export function createPeerFetcher(opts: { token: PeerToken; credentials?: ChannelCredentials; callTimeoutMs?: number }): PeerFetcher {
  const clients = new Map<string, { store: RemoteBlobStore; token: string }>();
  return {
    async fetch(address, digests) {
      const token = opts.token();
      if (!token || digests.length === 0) return new Map();
      let c = clients.get(address);
      if (!c || c.token !== token) {
        c?.store.close();
        c = { token, store: createGrpcBlobStore({ address, credentials: opts.credentials ?? grpcCredentials.createInsecure(), channelOptions: { interceptors: [bearerTokenInterceptor(token), deadlineInterceptor(opts.callTimeoutMs ?? PEER_CALL_TIMEOUT_MS)] } }) };
        clients.set(address, c);
      }
      try {
        const small = digests.filter((d) => d.sizeBytes <= 2 * 1024 * 1024);
        const large = digests.filter((d) => d.sizeBytes > 2 * 1024 * 1024);
        const found = small.length > 0 ? (await c.store.getMany!(small)).found : new Map<string, Buffer>();
        for (const d of large) found.set(digestKey(d), await c.store.get(d));
        return found;
      } catch {
        return new Map();
      }
    },
    close() {
      for (const c of clients.values()) c.store.close();
      clients.clear();
    },
  };
}
