/** Request limits of the head: each refusal is clear and comes before the payload is read whole. */
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContentAddressableStorageClient } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { ByteStreamClient, type WriteRequest, type WriteResponse } from '../../proto/gen/google/bytestream/bytestream.js';
import { HealthClient, type HealthCheckResponse } from '../../proto/gen/grpc/health/v1/health.js';
import { Code } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import { digestOf } from '../../cas/digest.js';
import { loadExecution } from '../../head/execution-service.js';
import { startHead, type Head } from '../../head/head.js';
import { DEFAULT_HEAD_LIMITS, parseByteSize } from '../../head/limits.js';
import type { RemoteBlobStore } from '../../proto/grpc-blob-store.js';
import { tempDir } from '../helpers/daemons.js';
import { casClient, execute, makeAction } from '../helpers/reapi.js';
import { unaryOutcome } from './helpers.js';

const KiB = 1024;
const LIMITS = { maxBlobBytes: 1024 * KiB, maxMessageBytes: 256 * KiB, maxActionTimeoutMs: 60_000, maxConcurrentStreams: 2 };

describe('head request limits', () => {
  let head: Head;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let bs: ByteStreamClient;
  let cas: RemoteBlobStore;

  beforeAll(async () => {
    tmp = await tempDir('limits');
    head = await startHead({ listen: '127.0.0.1:0', dataDir: path.join(tmp.dir, 'head'), heartbeatTimeoutMs: 10_000, log: silentLogger(), limits: LIMITS });
    bs = new ByteStreamClient(head.address, grpc.credentials.createInsecure());
    cas = casClient(head.address);
  });
  afterAll(async () => {
    bs?.close();
    cas?.close();
    await head?.stop();
    await tmp?.cleanup();
  });

  /** Starts a Write, sends `first` and does NOT end the stream: the answer must come anyway. */
  function openWrite(resourceName: string, data: Buffer) {
    let stream: grpc.ClientWritableStream<WriteRequest>;
    const answer = new Promise<{ err?: grpc.ServiceError; res?: WriteResponse }>((resolve) => {
      stream = bs.write((err, res) => resolve(err ? { err } : { res }));
    });
    stream!.write({ resourceName, writeOffset: 0, finishWrite: false, data });
    return { answer, cancel: () => stream.cancel() };
  }

  it('refuses a ByteStream Write declaring more than --max-blob-size before reading its data', async () => {
    const size = 2 * 1024 * KiB;
    const w = openWrite(`uploads/u1/blobs/${'c'.repeat(64)}/${size}`, Buffer.alloc(64 * KiB));
    const { err } = await w.answer;
    w.cancel();
    expect(err?.code).toBe(Code.INVALID_ARGUMENT);
    expect(err?.details).toBe(`blob ${'c'.repeat(64)}/${size} is larger than this head accepts (${LIMITS.maxBlobBytes} bytes, --max-blob-size)`);
  });

  it('refuses a ByteStream Write as soon as it passes its declared size', async () => {
    const data = Buffer.alloc(200 * KiB, 7);
    const claimed = digestOf(data.subarray(0, 100));
    const w = openWrite(`uploads/u2/blobs/${claimed.hash}/100`, data);
    const { err } = await w.answer;
    w.cancel();
    expect(err?.code).toBe(Code.INVALID_ARGUMENT);
    expect(err?.details).toBe(`write of ${200 * KiB} bytes is longer than the 100 bytes its resource name declares`);
    expect(await head.cas.has(claimed)).toBe(false);
  });

  it('refuses a message larger than the maximum with RESOURCE_EXHAUSTED', async () => {
    const client = new ContentAddressableStorageClient(head.address, grpc.credentials.createInsecure());
    try {
      const data = Buffer.alloc(300 * KiB, 1);
      const o = await unaryOutcome((cb) => client.batchUpdateBlobs({ instanceName: '', requests: [{ digest: digestOf(data), data, compressor: 0 }], digestFunction: 0 }, cb));
      expect(o.err?.code).toBe(Code.RESOURCE_EXHAUSTED);
      expect(o.err?.details).toMatch(/^Received message larger than max \(\d+ vs 262144\)$/);
      expect(await head.cas.has(digestOf(data))).toBe(false);
    } finally {
      client.close();
    }
  });

  it('rejects an action whose timeout exceeds --max-action-timeout, and gives one without a timeout the maximum', async () => {
    const root = digestOf(Buffer.alloc(0));
    const long = await makeAction(cas, { argv: ['true'], outputs: [], inputRoot: root, timeoutSeconds: 61 });
    const o = await execute(head.address, long.actionDigest);
    expect(o.error?.code).toBe(Code.INVALID_ARGUMENT);
    expect(o.error?.details).toBe(`action ${long.actionDigest.hash}/${long.actionDigest.sizeBytes} asks for a timeout of 61000 ms; this head allows at most 60000 ms (--max-action-timeout)`);
    expect(head.scheduler.queueLength()).toBe(0);

    const none = await makeAction(cas, { argv: ['true'], outputs: [], inputRoot: root });
    const req = await loadExecution(head.cas, '', none.actionDigest, new Set(), { ...DEFAULT_HEAD_LIMITS, ...LIMITS });
    expect(req.action.timeoutMs).toBe(60_000);
  });

  it('lets one connection have at most max_concurrent_streams calls open; the next waits for a free one', async () => {
    const client = new HealthClient(head.address, grpc.credentials.createInsecure());
    const watch = () => {
      const call = client.watch({ service: '' });
      const first = new Promise<HealthCheckResponse>((resolve) => call.once('data', resolve));
      call.on('error', () => undefined);
      return { call, first };
    };
    try {
      const a = watch();
      const b = watch();
      await Promise.all([a.first, b.first]);
      const c = watch();
      const early = await Promise.race([c.first.then(() => 'answered'), new Promise((r) => setTimeout(() => r('waiting'), 500))]);
      expect(early).toBe('waiting');
      a.call.cancel();
      expect(await c.first).toEqual({ status: 1 });
      b.call.cancel();
      c.call.cancel();
    } finally {
      client.close();
    }
  });

  it('parses --max-blob-size values', () => {
    expect(parseByteSize('1GiB')).toBe(1024 ** 3);
    expect(parseByteSize('512MiB')).toBe(512 * 1024 ** 2);
    expect(parseByteSize('64k')).toBe(64 * 1024);
    expect(parseByteSize('1000')).toBe(1000);
    expect(parseByteSize('lots')).toBeUndefined();
    expect(parseByteSize('0')).toBeUndefined();
  });
});
