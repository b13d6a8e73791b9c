/**
 * REAPI edge cases against a head started in-process, called through the generated clients.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  ActionCacheClient,
  ActionResult as PbActionResult,
  BatchReadBlobsRequest,
  BatchUpdateBlobsRequest,
  CapabilitiesClient,
  ContentAddressableStorageClient,
  DigestFunction_Value,
  ExecutionClient,
  FindMissingBlobsRequest,
  GetActionResultRequest,
  GetTreeRequest,
  UpdateActionResultRequest,
  type BatchReadBlobsResponse,
  type DeepPartial,
  type BatchUpdateBlobsResponse,
  type Directory as PbDirectory,
  type FindMissingBlobsResponse,
  type GetTreeResponse,
  type ServerCapabilities,
} from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { ByteStreamClient, type ReadResponse, type WriteResponse } from '../../proto/gen/google/bytestream/bytestream.js';
import { HealthCheckResponse_ServingStatus, HealthClient, type HealthCheckResponse } from '../../proto/gen/grpc/health/v1/health.js';
import { Status } from '../../proto/gen/google/rpc/status.js';
import { Code, OrionError } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import { EMPTY_DIGEST, digestKey, digestOf } from '../../cas/digest.js';
import { encodeDirectory } from '../../cas/directory.js';
import { buildTreeFromDisk } from '../../cas/merkle.js';
import type { Digest, Directory } from '../../cas/types.js';
import { startHead, type Head } from '../../head/head.js';
import { missingFromStatus } from '../../proto/convert.js';
import type { RemoteBlobStore } from '../../proto/grpc-blob-store.js';
import { tempDir } from '../helpers/daemons.js';
import { casClient, makeAction } from '../helpers/reapi.js';

async function putEmptyRoot(cas: RemoteBlobStore): Promise<Digest> {
  const dir = encodeDirectory({ files: [], directories: [], symlinks: [] });
  await cas.put(digestOf(dir), dir);
  return digestOf(dir);
}

const creds = grpc.credentials.createInsecure();

interface Reply<Res> {
  err?: grpc.ServiceError;
  res?: Res;
}

function rpc<Res>(start: (cb: (err: grpc.ServiceError | null, res: Res) => void) => unknown): Promise<Reply<Res>> {
  return new Promise((resolve) => start((err, res) => resolve(err ? { err } : { res })));
}

function collect<T>(stream: grpc.ClientReadableStream<T>): Promise<{ items: T[]; err?: grpc.ServiceError }> {
  const items: T[] = [];
  return new Promise((resolve) => {
    stream.on('data', (x: T) => items.push(x));
    stream.on('error', (err: grpc.ServiceError) => resolve({ items, err }));
    stream.on('end', () => resolve({ items }));
  });
}

const blob = (s: string) => Buffer.from(s);
async function* once(data: Buffer): AsyncGenerator<Buffer> {
  yield data;
}
const pbDigest = (d: Digest) => ({ hash: d.hash, sizeBytes: d.sizeBytes });
const fromPb = (d: { hash: string; sizeBytes: number } | undefined): Digest => ({ hash: d!.hash, sizeBytes: Number(d!.sizeBytes) });

/** `total` deterministic pseudo-random bytes (AES-CTR keystream), in chunks, never held whole. */
async function* deterministicBytes(total: number, chunk = 1024 * 1024): AsyncGenerator<Buffer> {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0));
  const zeros = Buffer.alloc(chunk);
  for (let sent = 0; sent < total; sent += chunk) {
    yield cipher.update(zeros.subarray(0, Math.min(chunk, total - sent)));
  }
}

async function digestOfStream(src: AsyncIterable<Uint8Array>): Promise<Digest> {
  const h = createHash('sha256');
  let size = 0;
  for await (const c of src) {
    h.update(c);
    size += c.length;
  }
  return { hash: h.digest('hex'), sizeBytes: size };
}

function pbDirectoryToDomain(d: PbDirectory): Directory {
  return {
    files: d.files.map((f) => ({ name: f.name, digest: fromPb(f.digest), isExecutable: f.isExecutable })),
    directories: d.directories.map((x) => ({ name: x.name, digest: fromPb(x.digest) })),
    symlinks: d.symlinks.map((s) => ({ name: s.name, target: s.target })),
  };
}

describe('head services (in-process)', () => {
  let head: Head;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let store: RemoteBlobStore;
  let cas: ContentAddressableStorageClient;
  let ac: ActionCacheClient;
  let bs: ByteStreamClient;
  let health: HealthClient;

  beforeAll(async () => {
    tmp = await tempDir('services');
    head = await startHead({ listen: '127.0.0.1:0', dataDir: path.join(tmp.dir, 'head'), heartbeatTimeoutMs: 5_000, log: silentLogger() });
    store = casClient(head.address);
    cas = new ContentAddressableStorageClient(head.address, creds);
    ac = new ActionCacheClient(head.address, creds);
    bs = new ByteStreamClient(head.address, creds, { 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
    health = new HealthClient(head.address, creds);
  });

  afterAll(async () => {
    store?.close();
    for (const c of [cas, ac, bs, health]) c?.close();
    await head?.stop();
    await tmp?.cleanup();
  });

  // After every case, good or bad, the head still answers a valid request.
  afterEach(async () => {
    const r = await rpc<HealthCheckResponse>((cb) => health.check({ service: '' }, cb));
    expect(r.err).toBeUndefined();
    expect(r.res!.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });

  const findMissing = (digests: Digest[], instanceName = '') =>
    rpc<FindMissingBlobsResponse>((cb) => cas.findMissingBlobs(FindMissingBlobsRequest.fromPartial({ instanceName, blobDigests: digests.map(pbDigest) }), cb));
  const batchRead = (digests: Digest[]) => rpc<BatchReadBlobsResponse>((cb) => cas.batchReadBlobs(BatchReadBlobsRequest.fromPartial({ digests: digests.map(pbDigest) }), cb));
  const batchUpdate = (entries: { digest: Digest; data: Buffer }[]) =>
    rpc<BatchUpdateBlobsResponse>((cb) => cas.batchUpdateBlobs(BatchUpdateBlobsRequest.fromPartial({ requests: entries.map((e) => ({ digest: pbDigest(e.digest), data: e.data })) }), cb));
  const getResult = (d: Digest, instanceName = '') => rpc<PbActionResult>((cb) => ac.getActionResult(GetActionResultRequest.fromPartial({ instanceName, actionDigest: pbDigest(d) }), cb));
  const putResult = (d: Digest, result: DeepPartial<PbActionResult>, instanceName = '') =>
    rpc<PbActionResult>((cb) => ac.updateActionResult(UpdateActionResultRequest.fromPartial({ instanceName, actionDigest: pbDigest(d), actionResult: PbActionResult.fromPartial(result) }), cb));

  describe('ContentAddressableStorage', () => {
    it('always holds the empty blob: FindMissingBlobs never lists it and BatchReadBlobs returns it', async () => {
      const absent = digestOf(blob('never uploaded (empty-blob case)'));
      const missing = await findMissing([EMPTY_DIGEST, absent]);
      expect(missing.res!.missingBlobDigests.map(fromPb)).toEqual([absent]);
      const read = await batchRead([EMPTY_DIGEST]);
      expect(read.res!.responses).toHaveLength(1);
      expect(read.res!.responses[0]!.status!.code).toBe(Code.OK);
      expect(read.res!.responses[0]!.data).toEqual(Buffer.alloc(0));
      expect(fromPb(read.res!.responses[0]!.digest)).toEqual(EMPTY_DIGEST);
    });

    it('lists exactly the absent blobs in FindMissingBlobs', async () => {
      const a = blob('present a');
      const b = blob('present b');
      await store.put(digestOf(a), a);
      await store.put(digestOf(b), b);
      const x = digestOf(blob('absent x'));
      const y = digestOf(blob('absent y'));
      const r = await findMissing([digestOf(a), x, digestOf(b), y]);
      expect(r.res!.missingBlobDigests.map(fromPb)).toEqual([x, y]);
      expect((await findMissing([digestOf(a), digestOf(b)])).res!.missingBlobDigests).toEqual([]);
    });

    it('treats a blob with the right hash but another size as absent', async () => {
      const a = blob('sized blob');
      await store.put(digestOf(a), a);
      const wrongSize = { hash: digestOf(a).hash, sizeBytes: a.length + 1 };
      expect((await findMissing([wrongSize])).res!.missingBlobDigests.map(fromPb)).toEqual([wrongSize]);
    });

    it('rejects a malformed digest in FindMissingBlobs with INVALID_ARGUMENT naming the field', async () => {
      const r = await findMissing([digestOf(blob('fine')), { hash: 'XYZ', sizeBytes: 3 }]);
      expect(r.err!.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(r.err!.details).toBe('blob_digests[1]: invalid digest hash "XYZ": expected 64 lowercase hex characters (SHA-256)');
    });

    it('gives INVALID_ARGUMENT to BatchUpdateBlobs entries whose digest does not match their data, stores nothing for them, and stores the rest', async () => {
      const good = blob('good batch entry');
      const sizeLie = blob('size lie');
      const hashLie = blob('hash lie');
      const wrongSize = { hash: digestOf(sizeLie).hash, sizeBytes: sizeLie.length + 5 };
      const wrongHash = { hash: digestOf(blob('hash liE')).hash, sizeBytes: hashLie.length };
      const r = await batchUpdate([
        { digest: digestOf(good), data: good },
        { digest: wrongSize, data: sizeLie },
        { digest: wrongHash, data: hashLie },
      ]);
      expect(r.err).toBeUndefined();
      const statuses = r.res!.responses.map((x) => [fromPb(x.digest), x.status!.code, x.status!.message]);
      expect(statuses).toEqual([
        [digestOf(good), Code.OK, ''],
        [wrongSize, Code.INVALID_ARGUMENT, `digest mismatch: expected ${digestKey(wrongSize)}, got ${digestKey(digestOf(sizeLie))}`],
        [wrongHash, Code.INVALID_ARGUMENT, `digest mismatch: expected ${digestKey(wrongHash)}, got ${digestKey(digestOf(hashLie))}`],
      ]);
      const missing = await findMissing([digestOf(good), wrongSize, wrongHash, digestOf(sizeLie), digestOf(hashLie)]);
      expect(missing.res!.missingBlobDigests.map(fromPb)).toEqual([wrongSize, wrongHash, digestOf(sizeLie), digestOf(hashLie)]);
      const read = await batchRead([digestOf(good)]);
      expect(read.res!.responses[0]!.data).toEqual(good);
    });

    it('answers BatchReadBlobs with a per-entry NOT_FOUND for a missing blob and the data of the others', async () => {
      const here = blob('here for batch read');
      await store.put(digestOf(here), here);
      const gone = digestOf(blob('not here for batch read'));
      const r = await batchRead([gone, digestOf(here)]);
      expect(r.err).toBeUndefined();
      expect(r.res!.responses.map((x) => [fromPb(x.digest), x.status!.code, x.status!.message, x.data.length])).toEqual([
        [gone, Code.NOT_FOUND, `blob ${digestKey(gone)} not found`, 0],
        [digestOf(here), Code.OK, '', here.length],
      ]);
    });

    it('returns every directory of an uploaded tree from GetTree, across pages', async () => {
      const root = path.join(tmp.dir, 'tree');
      for (const d of ['src/lib/deep', 'src/app', 'include', 'empty']) await mkdir(path.join(root, d), { recursive: true });
      await writeFile(path.join(root, 'src/lib/deep/x.c'), 'int x;\n');
      await writeFile(path.join(root, 'src/lib/y.c'), 'int y;\n');
      await writeFile(path.join(root, 'src/app/main.c'), 'int main(void) { return 0; }\n');
      await writeFile(path.join(root, 'include/x.h'), 'extern int x;\n');
      await writeFile(path.join(root, 'build.sh'), '#!/bin/sh\n', { mode: 0o755 });
      const tree = await buildTreeFromDisk(root);
      for (const [key, bytes] of tree.directories) {
        const [hash, size] = key.split('/');
        await store.put({ hash: hash!, sizeBytes: Number(size) }, bytes);
      }
      for (const [key, file] of tree.files) {
        const [hash, size] = key.split('/');
        await store.put({ hash: hash!, sizeBytes: Number(size) }, await readFile(file));
      }
      expect(tree.directories.size).toBe(7);
      for (const pageSize of [0, 2, 100]) {
        const r = await collect(cas.getTree(GetTreeRequest.fromPartial({ rootDigest: pbDigest(tree.rootDigest), pageSize })));
        expect(r.err).toBeUndefined();
        const got = r.items.flatMap((page: GetTreeResponse) => page.directories).map((d) => digestKey(digestOf(encodeDirectory(pbDirectoryToDomain(d)))));
        expect(got[0]).toBe(digestKey(tree.rootDigest));
        expect(new Set(got)).toEqual(new Set(tree.directories.keys()));
        expect(got).toHaveLength(tree.directories.size);
        expect(r.items.at(-1)!.nextPageToken).toBe('');
      }
    });

    it('answers GetTree of a root that is not in the CAS with NOT_FOUND', async () => {
      const ghost = digestOf(blob('no such directory'));
      const r = await collect(cas.getTree(GetTreeRequest.fromPartial({ rootDigest: pbDigest(ghost) })));
      expect(r.err!.code).toBe(grpc.status.NOT_FOUND);
      expect(r.err!.details).toBe(`directory ${digestKey(ghost)} of tree ${digestKey(ghost)} is not in the CAS`);
    });
  });

  describe('ActionCache', () => {
    it('answers GetActionResult for an unknown action with NOT_FOUND', async () => {
      const d = digestOf(blob('unknown action'));
      const r = await getResult(d);
      expect(r.err!.code).toBe(grpc.status.NOT_FOUND);
      expect(r.err!.details).toBe(`no cached result for action ${digestKey(d)}`);
    });

    it('rejects UpdateActionResult referencing blobs not in the CAS with FAILED_PRECONDITION listing them', async () => {
      const out = digestOf(blob('output never uploaded'));
      const stdout = digestOf(blob('stdout never uploaded'));
      const action = digestOf(blob('action with missing outputs'));
      const r = await putResult(action, { exitCode: 0, outputFiles: [{ path: 'a.o', digest: pbDigest(out), isExecutable: false }], stdoutDigest: pbDigest(stdout) });
      expect(r.err!.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(r.err!.details).toBe('action result references 2 blob(s) not in the CAS');
      const details = Status.decode(r.err!.metadata.get('grpc-status-details-bin')[0] as Buffer);
      expect(missingFromStatus(details)).toEqual([out, stdout]);
      expect((await getResult(action)).err!.code).toBe(grpc.status.NOT_FOUND);
    });

    it('returns from GetActionResult what UpdateActionResult stored', async () => {
      const obj = blob('object file');
      const err = blob('warning: something\n');
      await store.put(digestOf(obj), obj);
      await store.put(digestOf(err), err);
      const action = digestOf(blob('round-trip action'));
      const result = { exitCode: 0, outputFiles: [{ path: 'out/a.o', digest: pbDigest(digestOf(obj)), isExecutable: true }], stderrDigest: pbDigest(digestOf(err)) };
      const put = await putResult(action, result);
      expect(put.err).toBeUndefined();
      const got = await getResult(action);
      expect(got.err).toBeUndefined();
      expect(got.res!.exitCode).toBe(0);
      expect(got.res!.outputFiles.map((f) => [f.path, fromPb(f.digest), f.isExecutable])).toEqual([['out/a.o', digestOf(obj), true]]);
      expect(fromPb(got.res!.stderrDigest)).toEqual(digestOf(err));
      const inlined = await rpc<PbActionResult>((cb) => ac.getActionResult(GetActionResultRequest.fromPartial({ actionDigest: pbDigest(action), inlineStderr: true }), cb));
      expect(Buffer.from(inlined.res!.stderrRaw).toString()).toBe('warning: something\n');
    });

    it('keeps separate action caches per instance name', async () => {
      const action = digestOf(blob('instance-scoped action'));
      expect((await putResult(action, { exitCode: 0 }, 'a')).err).toBeUndefined();
      expect((await getResult(action, 'a')).res!.exitCode).toBe(0);
      const other = await getResult(action, 'b');
      expect(other.err!.code).toBe(grpc.status.NOT_FOUND);
      expect((await getResult(action, '')).err!.code).toBe(grpc.status.NOT_FOUND);
    });
  });

  describe('Execution, Capabilities, Health', () => {
    it('queues an Execute with the priority of its ExecutionPolicy (no node is connected, so it stays queued)', async () => {
      const cas = casClient(head.address);
      const client = new ExecutionClient(head.address, creds);
      try {
        const { actionDigest } = await makeAction(cas, { argv: ['true', 'priority-test'], outputs: [], inputRoot: await putEmptyRoot(cas) });
        const stream = client.execute({ instanceName: '', skipCacheLookup: true, actionDigest, executionPolicy: { priority: -7 }, digestFunction: 0, inlineStdout: false, inlineStderr: false, inlineOutputFiles: [] });
        const first = await new Promise<{ name: string }>((resolve, reject) => {
          stream.once('data', resolve);
          stream.once('error', reject);
        });
        expect(head.scheduler.get(first.name)!.request.priority).toBe(-7);
        expect(head.scheduler.get(first.name)!.stage).toBe('queued');
        stream.cancel();
      } finally {
        client.close();
        cas.close();
      }
    });

    it('answers WaitExecution on an unknown operation with NOT_FOUND', async () => {
      const client = new ExecutionClient(head.address, creds);
      try {
        const r = await collect(client.waitExecution({ name: 'operations/does-not-exist' }));
        expect(r.items).toEqual([]);
        expect(r.err!.code).toBe(grpc.status.NOT_FOUND);
        expect(r.err!.details).toBe('unknown operation "operations/does-not-exist"');
      } finally {
        client.close();
      }
    });

    it('reports SHA-256, API 2.0 to 2.3 and execution enabled in GetCapabilities', async () => {
      const client = new CapabilitiesClient(head.address, creds);
      try {
        const r = await rpc<ServerCapabilities>((cb) => client.getCapabilities({ instanceName: '' }, cb));
        const caps = r.res!;
        expect(caps.cacheCapabilities!.digestFunctions).toEqual([DigestFunction_Value.SHA256]);
        expect(caps.executionCapabilities!.digestFunction).toBe(DigestFunction_Value.SHA256);
        expect(caps.executionCapabilities!.execEnabled).toBe(true);
        expect(caps.cacheCapabilities!.actionCacheUpdateCapabilities!.updateEnabled).toBe(true);
        expect(caps.lowApiVersion).toMatchObject({ major: 2, minor: 0 });
        expect(caps.highApiVersion).toMatchObject({ major: 2 });
        expect(Number(caps.cacheCapabilities!.maxBatchTotalSizeBytes)).toBeGreaterThan(0);
      } finally {
        client.close();
      }
    });

    it.each(['', 'build.bazel.remote.execution.v2.Execution', 'build.bazel.remote.execution.v2.ContentAddressableStorage', 'google.bytestream.ByteStream'])(
      'reports SERVING for health service %j',
      async (service) => {
        const r = await rpc<HealthCheckResponse>((cb) => health.check({ service }, cb));
        expect(r.res!.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      },
    );

    it('answers a health check for an unknown service with NOT_FOUND', async () => {
      const r = await rpc<HealthCheckResponse>((cb) => health.check({ service: 'no.such.Service' }, cb));
      expect(r.err!.code).toBe(grpc.status.NOT_FOUND);
      expect(r.err!.details).toBe('unknown service "no.such.Service"');
    });
  });

  describe('ByteStream', () => {
    it('round-trips a 70 MiB blob through Write and Read, streamed, with the right SHA-256', async () => {
      const size = 70 * 1024 * 1024 + 12_345;
      const d = await digestOfStream(deterministicBytes(size));
      await store.putStream(d, deterministicBytes(size));
      expect((await findMissing([d])).res!.missingBlobDigests).toEqual([]);
      const back = await digestOfStream(store.getStream(d));
      expect(back).toEqual(d);
      // Reading a range streams just that range.
      const tail = await digestOfStream(store.getStream(d, size - 10, 0));
      expect(tail.sizeBytes).toBe(10);
    }, 30_000);

    it('closes the blob file when a client cancels a Read half way', async () => {
      const size = 8 * 1024 * 1024;
      const d = await digestOfStream(deterministicBytes(size));
      await store.putStream(d, deterministicBytes(size));
      const blobFile = path.join(tmp.dir, 'head', 'cas', d.hash.slice(0, 2), d.hash);
      const openOnBlob = () => readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`) === blobFile;
        } catch {
          return false;
        }
      }).length;
      for (let i = 0; i < 3; i++) {
        await new Promise<void>((resolve) => {
          // A tiny window so the server fills its send buffer and waits for the client.
          const reader = new ByteStreamClient(head.address, creds, { 'grpc.http2.lookahead_bytes': 1 } as grpc.ClientOptions);
          const call = reader.read({ resourceName: `blobs/${d.hash}/${d.sizeBytes}`, readOffset: 0, readLimit: 0 });
          call.once('data', () => {
            call.pause();
            setTimeout(() => {
              call.cancel();
              reader.close();
              resolve();
            }, 50);
          });
          call.on('error', () => undefined);
        });
      }
      const deadline = Date.now() + 3_000;
      while (openOnBlob() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(openOnBlob()).toBe(0);
    });

    it('stops reading the source of an upload the head already holds', async () => {
      const size = 20 * 1024 * 1024;
      const d = await digestOfStream(deterministicBytes(size));
      await store.putStream(d, deterministicBytes(size));
      let produced = 0;
      let closed = false;
      async function* source() {
        try {
          for await (const c of deterministicBytes(size)) {
            produced += c.length;
            yield c;
          }
        } finally {
          closed = true;
        }
      }
      await store.putStream(d, source());
      const deadline = Date.now() + 3_000;
      while (!closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(closed).toBe(true);
      expect(produced).toBeLessThanOrEqual(size);
    });

    it('fails a Write whose data does not match the resource name digest with INVALID_ARGUMENT, and stores nothing', async () => {
      const data = blob('the bytes actually sent');
      const claimed = { hash: digestOf(blob('the bytes actually SENT')).hash, sizeBytes: data.length };
      const err = await store.putStream(claimed, once(data)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(OrionError);
      expect((err as OrionError).code).toBe(Code.INVALID_ARGUMENT);
      expect((err as OrionError).message).toBe(`ByteStream Write ${digestKey(claimed)}: digest mismatch: expected ${digestKey(claimed)}, got ${digestKey(digestOf(data))}`);
      expect((await findMissing([claimed])).res!.missingBlobDigests.map(fromPb)).toEqual([claimed]);
    });

    it('fails a Write that sends more bytes than the resource name says with INVALID_ARGUMENT', async () => {
      const data = blob('twelve bytes and then some more');
      const claimed = digestOf(data.subarray(0, 12));
      const err = (await store.putStream(claimed, once(data)).catch((e: unknown) => e)) as OrionError;
      expect(err.code).toBe(Code.INVALID_ARGUMENT);
      // Refused as soon as the stream passes the declared size, before the rest is read.
      expect(err.message).toContain(`write of ${data.length} bytes is longer than the 12 bytes its resource name declares`);
      expect((await findMissing([claimed])).res!.missingBlobDigests.map(fromPb)).toEqual([claimed]);
    });

    it.each([
      ['garbage', 'malformed resource name "garbage": expected {instance}/blobs/{hash}/{size}'],
      [`blobs/${'a'.repeat(64)}`, `malformed resource name "blobs/${'a'.repeat(64)}": expected {instance}/blobs/{hash}/{size}`],
      [`blobs/${'a'.repeat(64)}/-1`, `malformed resource name "blobs/${'a'.repeat(64)}/-1": expected {instance}/blobs/{hash}/{size}`],
      ['blobs/NOTHEX/3', 'invalid digest hash "NOTHEX": expected 64 lowercase hex characters (SHA-256)'],
    ])('rejects a Read of malformed resource name %j with INVALID_ARGUMENT', async (resourceName, message) => {
      const r = await collect(bs.read({ resourceName, readOffset: 0, readLimit: 0 }));
      expect(r.err!.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(r.err!.details).toBe(message);
    });

    it('rejects a Write with a malformed resource name with INVALID_ARGUMENT', async () => {
      const data = blob('x');
      const d = digestOf(data);
      const r = await new Promise<Reply<WriteResponse>>((resolve) => {
        const call = bs.write((err, res) => resolve(err ? { err } : { res }));
        // Missing the uploads/{uuid}/ part that writes need.
        call.write({ resourceName: `blobs/${d.hash}/${d.sizeBytes}`, writeOffset: 0, finishWrite: true, data });
        call.end();
      });
      expect(r.err!.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(r.err!.details).toBe(`malformed resource name "blobs/${d.hash}/1": expected {instance}/uploads/{uuid}/blobs/{hash}/{size}`);
    });

    it('answers a Read of a missing blob with NOT_FOUND', async () => {
      const d = digestOf(blob('not in the CAS for read'));
      const r = await collect<ReadResponse>(bs.read({ resourceName: `blobs/${d.hash}/${d.sizeBytes}`, readOffset: 0, readLimit: 0 }));
      expect(r.err!.code).toBe(grpc.status.NOT_FOUND);
      expect(r.err!.details).toBe(`blob ${digestKey(d)} is not in the CAS`);
    });
  });

  describe('robustness', () => {
    it('survives garbage bytes on raw gRPC methods and keeps serving valid calls', async () => {
      const raw = new grpc.Client(head.address, creds);
      try {
        const garbage = [Buffer.from([0xff, 0xff, 0xff]), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), Buffer.from('\x12\x80\x80\x80\x80\x10')];
        const methods = [
          '/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs',
          '/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs',
          '/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult',
          '/orion.v1.Worker/Register',
        ];
        const results = await Promise.all(
          methods.flatMap((m) =>
            garbage.map(
              (g) =>
                new Promise<grpc.ServiceError | null>((resolve) => {
                  raw.makeUnaryRequest(m, (x: Buffer) => x, (x: Buffer) => x, g, (err) => resolve(err));
                }),
            ),
          ),
        );
        for (const err of results) {
          expect(err, 'garbage must get an error status').not.toBeNull();
          expect([grpc.status.INTERNAL, grpc.status.INVALID_ARGUMENT]).toContain(err!.code);
        }
        // Garbage on a server-streaming and a client-streaming method too.
        const read = await collect(raw.makeServerStreamRequest('/google.bytestream.ByteStream/Read', (x: Buffer) => x, (x: Buffer) => x, Buffer.from([0xff, 0xff, 0xff])));
        expect([grpc.status.INTERNAL, grpc.status.INVALID_ARGUMENT]).toContain(read.err!.code);
        const write = await new Promise<grpc.ServiceError | null>((resolve) => {
          const call = raw.makeClientStreamRequest('/google.bytestream.ByteStream/Write', (x: Buffer) => x, (x: Buffer) => x, (err) => resolve(err));
          call.write(Buffer.from([0xff, 0xff, 0xff]));
          call.end();
        });
        expect([grpc.status.INTERNAL, grpc.status.INVALID_ARGUMENT]).toContain(write!.code);
      } finally {
        raw.close();
      }
      const a = blob('still serving after garbage');
      await store.put(digestOf(a), a);
      expect((await findMissing([digestOf(a)])).res!.missingBlobDigests).toEqual([]);
    });
  });
});
