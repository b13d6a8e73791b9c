import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { credentials, InterceptingCall, Server, ServerCredentials, type Interceptor, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import { digestKey, digestOf, EMPTY_DIGEST } from '../../cas/digest.js';
import type { Digest } from '../../cas/types.js';
import { startHead, type Head } from '../../head/head.js';
import {
  ContentAddressableStorageService,
  type BatchReadBlobsRequest,
  type BatchReadBlobsResponse,
  type BatchReadBlobsResponse_Response,
} from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { createGrpcBlobStore, type RemoteBlobStore } from '../../proto/grpc-blob-store.js';

const BATCH_READ = '/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs';
const BYTESTREAM_READ = '/google.bytestream.ByteStream/Read';
const MiB = 1024 * 1024;

/** Every request message the client sends, by method path. */
interface Sent {
  path: string;
  message: unknown;
}

type Batching = RemoteBlobStore & Required<Pick<RemoteBlobStore, 'getMany'>>;

function client(address: string, sent: Sent[]): Batching {
  const recorder: Interceptor = (options, next) =>
    new InterceptingCall(next(options), {
      sendMessage(message, send) {
        sent.push({ path: options.method_definition.path, message });
        send(message);
      },
    });
  const store = createGrpcBlobStore({ address, credentials: credentials.createInsecure(), channelOptions: { interceptors: [recorder] } });
  if (!store.getMany) throw new Error('the gRPC blob store offers no getMany');
  return store as Batching;
}

/** Deterministic content: `n` bytes of a pattern seeded by `seed`. */
function blob(seed: string, n: number): Buffer {
  const b = Buffer.alloc(n);
  const s = Buffer.from(seed);
  for (let i = 0; i < n; i++) b[i] = (s[i % s.length]! + Math.floor(i / s.length)) & 0xff;
  return b;
}

const batchReads = (sent: Sent[]) => sent.filter((s) => s.path === BATCH_READ).map((s) => (s.message as BatchReadBlobsRequest).digests.map((d) => ({ hash: d.hash, sizeBytes: Number(d.sizeBytes) })));
const byteStreamReads = (sent: Sent[]) => sent.filter((s) => s.path === BYTESTREAM_READ).map((s) => (s.message as { resourceName: string }).resourceName);
const keys = (ds: Iterable<Digest>) => [...ds].map(digestKey).sort();

async function rejection(p: Promise<unknown>): Promise<OrionError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OrionError);
  return err as OrionError;
}

/** A head for the tests of one describe block, and a recording client made afresh for each test. */
function useHead(name: string): { head: () => Head; sent: () => Sent[]; cas: () => Batching } {
  let tmp: string;
  let head: Head;
  let sent: Sent[];
  let cas: Batching;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), `orion-${name}-`));
    head = await startHead({ listen: '127.0.0.1:0', dataDir: path.join(tmp, 'head'), heartbeatTimeoutMs: 60_000, log: silentLogger() });
  });
  afterAll(async () => {
    await head.stop();
    await rm(tmp, { recursive: true, force: true });
  });
  beforeEach(() => {
    sent = [];
    cas = client(head.address, sent);
  });
  afterEach(() => cas.close());
  return { head: () => head, sent: () => sent, cas: () => cas };
}

describe('GrpcBlobStore.getMany against a head', () => {
  const fixture = useHead('getmany');
  let head: Head;
  let sent: Sent[];
  let cas: Batching;
  beforeEach(() => {
    ({ head, sent, cas } = { head: fixture.head(), sent: fixture.sent(), cas: fixture.cas() });
  });

  async function stored(seed: string, n: number): Promise<{ digest: Digest; data: Buffer }> {
    const data = blob(seed, n);
    const digest = digestOf(data);
    await head.cas.put(digest, data);
    return { digest, data };
  }
  const absent = (seed: string, n: number) => digestOf(blob(`absent ${seed}`, n));

  it('returns present, empty and large blobs and lists absent ones: small ones by BatchReadBlobs, large ones by ByteStream, the empty one from nowhere', async () => {
    const small = await Promise.all([1, 2, 3, 4, 5].map((i) => stored(`small ${i}`, 1000 * i)));
    const large = await stored('large', 3 * MiB);
    const gone = [absent('a', 10), absent('b', 2000)];
    const goneLarge = absent('large', 3 * MiB + 1);
    const asked = [small[0]!.digest, gone[0]!, EMPTY_DIGEST, small[1]!.digest, small[2]!.digest, gone[1]!, small[3]!.digest, small[4]!.digest, large.digest, goneLarge];

    const { found, missing } = await cas.getMany(asked);

    expect([...found.keys()].sort()).toEqual(keys([...small.map((s) => s.digest), EMPTY_DIGEST, large.digest]));
    for (const s of [...small, large]) expect(found.get(digestKey(s.digest))!.equals(s.data)).toBe(true);
    expect(found.get(digestKey(EMPTY_DIGEST))!.length).toBe(0);
    expect(keys(missing)).toEqual(keys([...gone, goneLarge]));
    // Every small digest asked once by batch, the large ones by ByteStream, the empty one never.
    expect(keys(batchReads(sent).flat())).toEqual(keys([...small.map((s) => s.digest), ...gone]));
    expect(byteStreamReads(sent).sort()).toEqual([large.digest, goneLarge].map((d) => `blobs/${d.hash}/${d.sizeBytes}`).sort());
  });

  it('splits BatchReadBlobs requests at 2 MiB and at 1000 digests, filling each', async () => {
    const tiny = await Promise.all(Array.from({ length: 2100 }, (_, i) => stored(`tiny ${i}`, 16)));
    const big = await Promise.all(Array.from({ length: 30 }, (_, i) => stored(`big ${i}`, 200 * 1024)));
    const all = [...tiny, ...big];

    const { found, missing } = await cas.getMany(all.map((b) => b.digest));

    expect(missing).toEqual([]);
    expect(found.size).toBe(all.length);
    for (const b of all) expect(found.get(digestKey(b.digest))!.equals(b.data)).toBe(true);
    const batches = batchReads(sent);
    for (const b of batches) {
      expect(b.length).toBeLessThanOrEqual(1000);
      expect(b.reduce((n, d) => n + d.sizeBytes, 0)).toBeLessThanOrEqual(2 * MiB);
    }
    // 1000 + 1000 tiny, then 100 tiny with 10 big, then 10 + 10 big (10 of 200 KiB fit in 2 MiB, 11 do not).
    expect(batches.map((b) => b.length)).toEqual([1000, 1000, 110, 10, 10]);
    expect(keys(batches.flat())).toEqual(keys(all.map((b) => b.digest)));
    expect(byteStreamReads(sent)).toEqual([]);
  });

  it('answers a digest asked for several times, and lists an absent one once', async () => {
    const a = await stored('dup a', 100);
    const b = await stored('dup b', 200);
    const gone = absent('dup', 50);
    const { found, missing } = await cas.getMany([a.digest, a.digest, b.digest, gone, a.digest, gone]);
    expect([...found.keys()].sort()).toEqual(keys([a.digest, b.digest]));
    expect(found.get(digestKey(a.digest))!.equals(a.data)).toBe(true);
    expect(missing).toEqual([gone]);
  });

  it('sends nothing when asked for no digest or only the empty one', async () => {
    expect(await cas.getMany([])).toEqual({ found: new Map(), missing: [] });
    const r = await cas.getMany([EMPTY_DIGEST, EMPTY_DIGEST]);
    expect([...r.found]).toEqual([[digestKey(EMPTY_DIGEST), Buffer.alloc(0)]]);
    expect(r.missing).toEqual([]);
    expect(sent).toEqual([]);
  });
});

describe('GrpcBlobStore.getMany against a misbehaving server', () => {
  type Answer = (req: BatchReadBlobsRequest) => BatchReadBlobsResponse_Response[] | Error;
  let server: Server;
  let answer: Answer;
  let cas: Batching;
  let sent: Sent[];

  beforeAll(async () => {
    server = new Server();
    // Only BatchReadBlobs; grpc-js answers the other methods UNIMPLEMENTED.
    server.addService(ContentAddressableStorageService, {
      batchReadBlobs(call: ServerUnaryCall<BatchReadBlobsRequest, BatchReadBlobsResponse>, cb: sendUnaryData<BatchReadBlobsResponse>) {
        const r = answer(call.request);
        if (r instanceof Error) cb(r);
        else cb(null, { responses: r });
      },
    } as never);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    sent = [];
    cas = client(`127.0.0.1:${port}`, sent);
  });
  afterAll(async () => {
    cas.close();
    await new Promise<void>((r) => server.tryShutdown(() => r()));
  });

  const ok = (data: Buffer, digest = digestOf(data)): BatchReadBlobsResponse_Response => ({ digest, data, status: { code: 0, message: '', details: [] }, compressor: 0 });
  const failed = (digest: Digest, code: number, message: string): BatchReadBlobsResponse_Response => ({ digest, data: Buffer.alloc(0), status: { code, message, details: [] }, compressor: 0 });
  const contents = ['one', 'two', 'three'].map((s) => Buffer.from(s));
  const digests = contents.map((c) => digestOf(c));
  const byHash = new Map(contents.map((c) => [digestOf(c).hash, c]));
  const honest = (req: BatchReadBlobsRequest) => req.digests.map((d) => ok(byHash.get(d.hash)!));

  it('fails with INTERNAL when the server leaves out some of the blobs asked for', async () => {
    answer = (req) => honest(req).slice(1);
    const err = await rejection(cas.getMany(digests));
    expect(err.code).toBe(Code.INTERNAL);
    expect(err.message).toBe('BatchReadBlobs answered without 1 of the blobs asked for');
  });

  it('fails with INTERNAL when the server answers twice for one blob instead of once for each', async () => {
    answer = (req) => [...honest(req).slice(0, 2), honest(req)[0]!];
    const err = await rejection(cas.getMany(digests));
    expect(err.code).toBe(Code.INTERNAL);
    expect(err.message).toBe('BatchReadBlobs answered without 1 of the blobs asked for');
  });

  it('ignores answers for digests it did not ask for, even wrong ones', async () => {
    const extra = Buffer.from('not asked');
    answer = (req) => [ok(extra), ...honest(req), ok(Buffer.from('garbage'), digestOf(Buffer.from('other'))), failed(digestOf(Buffer.from('x')), Code.PERMISSION_DENIED, 'no')];
    const { found, missing } = await cas.getMany(digests);
    expect([...found.keys()].sort()).toEqual(keys(digests));
    contents.forEach((c, i) => expect(found.get(digestKey(digests[i]!))!.equals(c)).toBe(true));
    expect(missing).toEqual([]);
  });

  it('refuses a blob whose content does not match its digest (INVALID_ARGUMENT)', async () => {
    answer = (req) => req.digests.map((d) => (d.hash === digests[1]!.hash ? ok(Buffer.from('tw0'), digests[1]!) : ok(byHash.get(d.hash)!)));
    const err = await rejection(cas.getMany(digests));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toBe(`digest mismatch: expected ${digestKey(digests[1]!)}, got ${digestKey(digestOf(Buffer.from('tw0')))}`);
  });

  it('lists per-blob NOT_FOUND as missing and fails on any other per-blob error with its code', async () => {
    answer = (req) => req.digests.map((d) => (d.hash === digests[0]!.hash ? failed(digests[0]!, Code.NOT_FOUND, 'gone') : ok(byHash.get(d.hash)!)));
    const r = await cas.getMany(digests);
    expect(r.missing).toEqual([digests[0]]);
    expect([...r.found.keys()].sort()).toEqual(keys(digests.slice(1)));

    answer = (req) => req.digests.map((d) => (d.hash === digests[2]!.hash ? failed(digests[2]!, Code.RESOURCE_EXHAUSTED, 'too busy') : ok(byHash.get(d.hash)!)));
    const err = await rejection(cas.getMany(digests));
    expect(err.code).toBe(Code.RESOURCE_EXHAUSTED);
    expect(err.message).toBe(`reading ${digestKey(digests[2]!)}: too busy`);
  });

  it('fails with the status of a failed BatchReadBlobs call', async () => {
    answer = () => Object.assign(new Error('quota'), { code: Code.RESOURCE_EXHAUSTED, details: 'quota exceeded' });
    const err = await rejection(cas.getMany(digests));
    expect(err.code).toBe(Code.RESOURCE_EXHAUSTED);
    expect(err.message).toBe('BatchReadBlobs: quota exceeded');
  });
});

const BATCH_UPDATE = '/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs';
const BYTESTREAM_WRITE = '/google.bytestream.ByteStream/Write';

describe('GrpcBlobStore.putMany against a head', () => {
  const fixture = useHead('putmany');
  let head: Head;
  let sent: Sent[];
  let cas: Batching;
  beforeEach(() => {
    ({ head, sent, cas } = { head: fixture.head(), sent: fixture.sent(), cas: fixture.cas() });
  });

  it('stores every blob through BatchUpdateBlobs requests under 2 MiB and 1000 blobs each, none by ByteStream', async () => {
    const blobs = [...Array.from({ length: 1500 }, (_, i) => blob(`put tiny ${i}`, 16)), ...Array.from({ length: 25 }, (_, i) => blob(`put big ${i}`, 300 * 1024))].map((data) => ({ digest: digestOf(data), data }));

    expect(await cas.putMany([...blobs, { digest: EMPTY_DIGEST, data: Buffer.alloc(0) }])).toEqual([]);

    for (const b of blobs) expect((await head.cas.get(b.digest)).equals(b.data)).toBe(true);
    const batches = sent.filter((s) => s.path === BATCH_UPDATE).map((s) => (s.message as { requests: { digest: { hash: string; sizeBytes: unknown }; data: Uint8Array }[] }).requests);
    expect(batches.length).toBeGreaterThan(1);
    for (const b of batches) {
      expect(b.length).toBeLessThanOrEqual(1000);
      expect(b.reduce((n, r) => n + r.data.length, 0)).toBeLessThanOrEqual(2 * MiB);
    }
    expect(batches.flat().map((r) => r.digest.hash).sort()).toEqual(blobs.map((b) => b.digest.hash).sort());
    expect(sent.filter((s) => s.path === BYTESTREAM_WRITE)).toEqual([]);
  });

  it('returns the blobs the head refused as not matching their digest, and stores the others', async () => {
    const good = blob('put good', 100);
    const lying = { digest: digestOf(blob('put claimed', 100)), data: blob('put actual', 100) };
    const refused = await cas.putMany([{ digest: digestOf(good), data: good }, lying]);
    expect(refused.map(digestKey)).toEqual([digestKey(lying.digest)]);
    expect((await head.cas.get(digestOf(good))).equals(good)).toBe(true);
    expect(await head.cas.has(lying.digest)).toBe(false);
  });

  it('refuses a blob too large for a batch with a clear error', async () => {
    const data = blob('put huge', 1024 * 1024 + 1);
    const err = await rejection(cas.putMany([{ digest: digestOf(data), data }]));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toMatch(/larger than/);
  });
});
