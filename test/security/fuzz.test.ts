/**
 * Hostile bytes at every RPC of a running head (a real `orion head` process):
 * tens of thousands of random and mutated protobuf requests (bit flips,
 * truncation, random bytes, huge varints, over-long lengths, repeats), sent
 * raw through identity serializers, 32 at a time, plus malformed gRPC framing
 * over bare HTTP/2. The head must never crash, must answer every request with a
 * well-formed gRPC status, must keep its memory bounded, and must still serve
 * normal requests afterwards.
 *
 * A node serves gRPC only for health checks (it dials the head for work): those
 * and its HTTP endpoints get the same treatment; its input from the head
 * (HeadMessages) is covered by the node's executor tests.
 */
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Action,
  ActionCacheService,
  BatchReadBlobsRequest,
  BatchUpdateBlobsRequest,
  CapabilitiesService,
  Command,
  ContentAddressableStorageService,
  ExecuteRequest,
  ExecutionService,
  FindMissingBlobsRequest,
  GetActionResultRequest,
  GetCapabilitiesRequest,
  GetTreeRequest,
  UpdateActionResultRequest,
  WaitExecutionRequest,
} from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { ByteStreamService, QueryWriteStatusRequest, ReadRequest, WriteRequest } from '../../proto/gen/google/bytestream/bytestream.js';
import { HealthCheckRequest, HealthService } from '../../proto/gen/grpc/health/v1/health.js';
import { ClusterService, GetNodeRequest, ListBuildsRequest, ListNodesRequest } from '../../proto/gen/orion/v1/cluster.js';
import { RegisterRequest, WorkerMessage, WorkerService } from '../../proto/gen/orion/v1/worker.js';
import { digestOf } from '../../cas/digest.js';
import { encodeDirectory } from '../../cas/directory.js';
import type { RemoteBlobStore } from '../../proto/grpc-blob-store.js';
import { silentLogger } from '../../common/logger.js';
import { createHeadAuth, parseTokensFile } from '../../head/auth.js';
import { startHead } from '../../head/head.js';
import { startOrion, tempDir, waitFor, type Daemon } from '../helpers/daemons.js';
import { casClient } from '../helpers/reapi.js';

// ORION_FUZZ_REQUESTS runs a longer campaign (e.g. 200000) by hand.
const REQUESTS = Number(process.env.ORION_FUZZ_REQUESTS) || 20_000;
const CONCURRENCY = 32;
const SEED = 20240611;
const HEAP_MIB = 64;

interface Method {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
}

const SERVICES = [CapabilitiesService, ContentAddressableStorageService, ByteStreamService, ActionCacheService, ExecutionService, WorkerService, ClusterService, HealthService] as unknown as Record<string, Method>[];
const METHODS: Method[] = SERVICES.flatMap((s) => Object.values(s).map((m) => ({ path: m.path, requestStream: m.requestStream, responseStream: m.responseStream })));

const enc = <T>(type: { encode(m: T): { finish(): Uint8Array }; fromPartial(o: object): T }, partial: object) => Buffer.from(type.encode(type.fromPartial(partial)).finish());

/** Valid requests to start mutating from, by method path; blobs they name exist in the head's CAS. */
async function makeSeeds(cas: RemoteBlobStore): Promise<Map<string, Buffer[]>> {
  const put = async (data: Buffer) => {
    const d = digestOf(data);
    await cas.put(d, data);
    return d;
  };
  const blob = await put(Buffer.from('a blob the fuzzer may read'));
  const emptyDir = digestOf(encodeDirectory({ files: [], directories: [], symlinks: [] }));
  const dir = await put(encodeDirectory({ files: [{ name: 'f', digest: blob, isExecutable: false }], directories: [{ name: 'd', digest: emptyDir }], symlinks: [{ name: 'l', target: 'f' }] }));
  const command = await put(enc(Command, { arguments: ['true'], outputPaths: ['out'] }));
  // Valid Action and Command, but the input root is absent: Execute fails before queuing anything.
  const action = await put(enc(Action, { commandDigest: command, inputRootDigest: { hash: 'e'.repeat(64), sizeBytes: 77 } }));
  const garbage = await put(Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x12]));
  const missing = { hash: 'f'.repeat(64), sizeBytes: 1234 };
  const data = Buffer.from('payload to upload');
  const seeds: [string, Buffer[]][] = [
    ['/build.bazel.remote.execution.v2.Capabilities/GetCapabilities', [enc(GetCapabilitiesRequest, { instanceName: '' }), enc(GetCapabilitiesRequest, { instanceName: 'x/y' })]],
    ['/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs', [enc(FindMissingBlobsRequest, { blobDigests: [blob, missing, dir] })]],
    ['/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs', [enc(BatchUpdateBlobsRequest, { requests: [{ digest: digestOf(data), data }, { digest: missing, data }] })]],
    ['/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs', [enc(BatchReadBlobsRequest, { digests: [blob, missing] })]],
    ['/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree', [enc(GetTreeRequest, { rootDigest: dir, pageSize: 1 }), enc(GetTreeRequest, { rootDigest: blob, pageToken: '3' })]],
    ['/google.bytestream.ByteStream/Read', [enc(ReadRequest, { resourceName: `blobs/${blob.hash}/${blob.sizeBytes}`, readOffset: 2, readLimit: 5 }), enc(ReadRequest, { resourceName: `i/blobs/${missing.hash}/${missing.sizeBytes}` })]],
    ['/google.bytestream.ByteStream/Write', [enc(WriteRequest, { resourceName: `uploads/u/blobs/${digestOf(data).hash}/${data.length}`, data, finishWrite: true }), enc(WriteRequest, { resourceName: `uploads/u/blobs/${missing.hash}/${missing.sizeBytes}`, data, writeOffset: 0 })]],
    ['/google.bytestream.ByteStream/QueryWriteStatus', [enc(QueryWriteStatusRequest, { resourceName: `uploads/u/blobs/${blob.hash}/${blob.sizeBytes}` })]],
    ['/build.bazel.remote.execution.v2.ActionCache/GetActionResult', [enc(GetActionResultRequest, { actionDigest: action, inlineStdout: true })]],
    ['/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult', [enc(UpdateActionResultRequest, { actionDigest: missing, actionResult: { exitCode: 0, outputFiles: [{ path: 'o', digest: missing }], stdoutDigest: blob } })]],
    ['/build.bazel.remote.execution.v2.Execution/Execute', [enc(ExecuteRequest, { actionDigest: action, skipCacheLookup: true }), enc(ExecuteRequest, { actionDigest: garbage }), enc(ExecuteRequest, { actionDigest: missing })]],
    ['/build.bazel.remote.execution.v2.Execution/WaitExecution', [enc(WaitExecutionRequest, { name: 'operations/0000' })]],
    ['/orion.v1.Worker/Register', [enc(RegisterRequest, { nodeId: 'fuzz', slots: 2, platform: { properties: [{ name: 'OSFamily', value: 'linux' }] }, metadata: { k: 'v' } })]],
    ['/orion.v1.Worker/Connect', [enc(WorkerMessage, { hello: { nodeId: 'fuzz', sessionId: 's' } }), enc(WorkerMessage, { heartbeat: { running: 1, load: 0.5, assignmentIds: ['a'] } }), enc(WorkerMessage, { finished: { assignmentId: 'a', status: { code: 2, message: 'x' } } })]],
    ['/orion.v1.Cluster/ListNodes', [enc(ListNodesRequest, { status: 1 })]],
    ['/orion.v1.Cluster/GetNode', [enc(GetNodeRequest, { nodeId: 'fuzz' })]],
    ['/orion.v1.Cluster/ListBuilds', [enc(ListBuildsRequest, { includeFinished: true })]],
    ['/grpc.health.v1.Health/Check', [enc(HealthCheckRequest, { service: 'orion.v1.Worker' })]],
    ['/grpc.health.v1.Health/Watch', [enc(HealthCheckRequest, { service: '' })]],
  ];
  return new Map(seeds);
}

type Mutation =
  | { kind: 'none' }
  | { kind: 'flip'; bits: number[] }
  | { kind: 'truncate'; at: number }
  | { kind: 'random'; bytes: Uint8Array }
  | { kind: 'varint'; at: number; tag: number }
  | { kind: 'overlong'; tag: number }
  | { kind: 'splice'; at: number; bytes: Uint8Array }
  | { kind: 'repeat'; times: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ kind: 'none' as const }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('flip' as const), bits: fc.array(fc.nat(), { minLength: 1, maxLength: 8 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('random' as const), bytes: fc.uint8Array({ maxLength: 1024 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('varint' as const), at: fc.nat(), tag: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('overlong' as const), tag: fc.integer({ min: 1, max: 15 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 32 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('repeat' as const), times: fc.integer({ min: 2, max: 64 }) }) },
);

/** A varint of 10 bytes: the largest a protobuf reader may see (2^64 - 1). */
const HUGE_VARINT = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);

function mutate(buf: Buffer, m: Mutation): Buffer {
  switch (m.kind) {
    case 'none':
      return buf;
    case 'flip': {
      if (buf.length === 0) return Buffer.from([m.bits[0]! & 0xff]);
      const out = Buffer.from(buf);
      for (const b of m.bits) out[(b >> 3) % out.length]! ^= 1 << (b & 7);
      return out;
    }
    case 'truncate':
      return buf.subarray(0, buf.length === 0 ? 0 : m.at % buf.length);
    case 'random':
      return Buffer.from(m.bytes);
    case 'varint': {
      // A field (tag byte) whose varint value, or length, is the largest possible.
      const at = buf.length === 0 ? 0 : m.at % (buf.length + 1);
      return Buffer.concat([buf.subarray(0, at), Buffer.from([m.tag]), HUGE_VARINT, buf.subarray(at)]);
    }
    case 'overlong':
      // A length-delimited field claiming ~2 GiB that is not there.
      return Buffer.concat([buf, Buffer.from([(m.tag << 3) | 2, 0xfe, 0xff, 0xff, 0xff, 0x07])]);
    case 'splice': {
      const at = buf.length === 0 ? 0 : m.at % (buf.length + 1);
      return Buffer.concat([buf.subarray(0, at), Buffer.from(m.bytes), buf.subarray(at)]);
    }
    case 'repeat':
      return Buffer.concat(Array.from({ length: m.times }, () => buf));
  }
}

interface Case {
  method: number;
  messages: { seed: number; mutations: Mutation[] }[];
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  method: fc.nat({ max: METHODS.length - 1 }),
  messages: fc.array(fc.record({ seed: fc.nat(), mutations: fc.array(mutationArb, { minLength: 1, maxLength: 3 }) }), { minLength: 1, maxLength: 4 }),
});

interface Reply {
  code: number;
  details: string;
}

const identity = (b: Buffer) => b;

/** Sends one case and resolves with the status the call ended with. */
function send(client: grpc.Client, m: Method, bodies: Buffer[]): Promise<Reply> {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    const opts = { deadline: Date.now() + 10_000 };
    const done = (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details });
    if (!m.requestStream && !m.responseStream) {
      const call = client.makeUnaryRequest(m.path, identity, identity, bodies[0]!, md, opts, () => undefined);
      call.on('status', done);
    } else if (!m.requestStream) {
      const call = client.makeServerStreamRequest(m.path, identity, identity, bodies[0]!, md, opts);
      // Health.Watch stays open by design: one answer is enough.
      call.on('data', () => m.path.endsWith('/Watch') && call.cancel());
      call.on('error', () => undefined);
      call.on('status', done);
    } else if (!m.responseStream) {
      const call = client.makeClientStreamRequest(m.path, identity, identity, md, opts, () => undefined);
      call.on('status', done);
      for (const b of bodies) call.write(b);
      call.end();
    } else {
      const call = client.makeBidiStreamRequest(m.path, identity, identity, md, opts);
      call.on('data', () => undefined);
      call.on('error', () => undefined);
      call.on('status', done);
      for (const b of bodies) call.write(b);
      call.end();
    }
  });
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

describe('fuzzing the head', () => {
  let head: Daemon & { address: string };
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let cas: RemoteBlobStore;
  let seeds: Map<string, Buffer[]>;

  beforeAll(async () => {
    tmp = await tempDir('fuzz');
    // A small V8 heap: were the head to keep what it is sent, it would run out and die.
    const d = startOrion(['head', '--port', '0', '--data-dir', path.join(tmp.dir, 'head'), '--log-level', 'error'], { NODE_OPTIONS: `--max-old-space-size=${HEAP_MIB}` });
    head = { ...d, address: await waitFor('head to listen', () => /orion head listening on (\S+)/.exec(d.output())?.[1]) };
    cas = casClient(head.address);
    seeds = await makeSeeds(cas);
  });
  afterAll(async () => {
    cas?.close();
    await head?.kill();
    await tmp?.cleanup();
  });

  it('seeds every RPC the head serves', () => {
    expect(METHODS.length).toBeGreaterThanOrEqual(19);
    const unseeded = METHODS.filter((m) => !seeds.has(m.path)).map((m) => m.path);
    // A new RPC gets fuzzed from empty and random messages; give it seeds here too.
    expect(unseeded).toEqual([]);
  });

  it(`survives ${REQUESTS} random and mutated requests to every RPC, answering each with a well-formed status, in bounded memory`, async () => {
    const cases = fc.sample(caseArb, { numRuns: REQUESTS, seed: SEED });
    const clients = Array.from({ length: 4 }, () => new grpc.Client(head.address, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': -1 }));
    const byCode = new Map<number, number>();
    const byMethod = new Map<string, number>();
    const malformed: { path: string; reply: Reply }[] = [];
    let next = 0;
    let rssAfterWarmup = 0;
    const pid = head.proc.pid!;
    const rssStart = rssBytes(pid);
    const started = Date.now();
    try {
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async (_, worker) => {
          for (let i = next++; i < cases.length; i = next++) {
            if (i === 2_000) rssAfterWarmup = rssBytes(pid);
            const c = cases[i]!;
            const m = METHODS[c.method]!;
            const pool = seeds.get(m.path) ?? [Buffer.alloc(0)];
            const bodies = c.messages.map((msg) => msg.mutations.reduce((b, mu) => mutate(b, mu), pool[msg.seed % pool.length]!));
            const reply = await send(clients[worker % clients.length]!, m, m.requestStream ? bodies : bodies.slice(0, 1));
            byCode.set(reply.code, (byCode.get(reply.code) ?? 0) + 1);
            byMethod.set(m.path, (byMethod.get(m.path) ?? 0) + 1);
            // Well-formed: a known code, a string message, and never a handler that threw synchronously.
            if (!Number.isInteger(reply.code) || reply.code < 0 || reply.code > 16 || typeof reply.details !== 'string' || reply.details === 'Unknown error') {
              malformed.push({ path: m.path, reply });
            }
          }
        }),
      );
    } finally {
      for (const c of clients) c.close();
    }
    const elapsed = Date.now() - started;
    const rssEnd = rssBytes(pid);
    console.log(
      `fuzz: ${REQUESTS} requests in ${elapsed} ms; codes ${JSON.stringify(Object.fromEntries([...byCode].sort((a, b) => a[0] - b[0])))}; ` +
        `RSS start ${(rssStart / 2 ** 20).toFixed(0)} MiB, after warm-up ${(rssAfterWarmup / 2 ** 20).toFixed(0)} MiB, end ${(rssEnd / 2 ** 20).toFixed(0)} MiB`,
    );
    expect(malformed).toEqual([]);
    expect(head.proc.exitCode).toBeNull();
    expect(head.proc.signalCode).toBeNull();
    // Every RPC was exercised.
    for (const m of METHODS) expect(byMethod.get(m.path) ?? 0, m.path).toBeGreaterThan(REQUESTS / METHODS.length / 2);
    // A connection-level failure would show as UNAVAILABLE: the head kept serving throughout.
    expect(byCode.get(grpc.status.UNAVAILABLE) ?? 0).toBe(0);
    // Bounded memory: past warm-up, the head grows by far less than the ~80 MiB the fuzzer sent it.
    expect(rssEnd - rssAfterWarmup).toBeLessThan(96 * 2 ** 20);

    // And it still does its job.
    const data = Buffer.from(`after the fuzz ${Date.now()}`);
    await cas.put(digestOf(data), data);
    expect(await cas.get(digestOf(data))).toEqual(data);
  }, 120_000);

  it('answers malformed gRPC framing over HTTP/2 with a gRPC status, not a crash', async () => {
    const frames: [string, Record<string, string>, Buffer][] = [
      // Length prefix of 4 GiB - 1 (beyond the receive limit).
      ['huge length prefix', {}, Buffer.from([0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3])],
      // The compressed flag without a grpc-encoding.
      ['compressed without encoding', {}, Buffer.from([1, 0, 0, 0, 2, 0x0a, 0x00])],
      // An unknown compression.
      ['unknown encoding', { 'grpc-encoding': 'zstd-9000' }, Buffer.from([1, 0, 0, 0, 2, 0x0a, 0x00])],
      // Five header bytes claiming 100 bytes, then the stream ends.
      ['truncated message', {}, Buffer.from([0, 0, 0, 0, 100, 1, 2])],
      // A partial header.
      ['partial header', {}, Buffer.from([0, 0])],
      // Two messages for a unary method.
      ['two messages to a unary method', {}, Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
      // Gzip flag with gzip declared but garbage inside.
      ['bad gzip', { 'grpc-encoding': 'gzip' }, Buffer.from([1, 0, 0, 0, 4, 1, 2, 3, 4])],
    ];
    const session = http2.connect(`http://${head.address}`);
    session.on('error', () => undefined);
    try {
      for (const m of METHODS) {
        for (const [what, headers, body] of frames) {
          const status = await new Promise<string | undefined>((resolve) => {
            const req = session.request({ ':method': 'POST', ':path': m.path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
            let s: string | undefined;
            req.on('response', (h) => (s ??= h['grpc-status'] as string | undefined));
            req.on('trailers', (t) => (s = t['grpc-status'] as string | undefined));
            req.on('data', () => undefined);
            req.on('close', () => resolve(s));
            req.on('error', () => resolve(s));
            req.setTimeout(2_000, () => req.close());
            req.end(body);
          });
          if (m.path.endsWith('/Watch') || m.path.endsWith('/Connect')) continue; // May legitimately wait for more.
          expect(status, `${m.path}: ${what}`).toMatch(/^\d+$/);
        }
      }
    } finally {
      session.close();
    }
    expect(head.proc.exitCode).toBeNull();
  }, 60_000);
});

describe('fuzzing the credentials a head with tokens is shown', () => {
  it('refuses every random authorization header with UNAUTHENTICATED and runs nothing', async () => {
    const tmp = await tempDir('fuzz-auth');
    const tokens = parseTokensFile(`client ${'c'.repeat(32)}\nnode ${'n'.repeat(32)}\n`, 'tokens');
    const head = await startHead({ listen: '127.0.0.1:0', dataDir: path.join(tmp.dir, 'head'), heartbeatTimeoutMs: 10_000, log: silentLogger(), auth: createHeadAuth({ tokens, allowClientCacheWrites: false }) });
    const client = new grpc.Client(head.address, grpc.credentials.createInsecure());
    const printable = fc.array(fc.integer({ min: 0x20, max: 0x7e }), { maxLength: 300 }).map((cs) => String.fromCharCode(...cs));
    const headerArb = fc.oneof(printable, printable.map((t) => `Bearer ${t}`), printable.map((t) => `bearer ${'c'.repeat(31)}${t}`), fc.constant('Bearer'), fc.constant(`Bearer ${'c'.repeat(31)}`));
    // (The generator can spell a real token, e.g. 31 c's plus "c": those are not random.)
    const valid = (v: string) => ['c'.repeat(32), 'n'.repeat(32)].includes(/^Bearer\s+(\S+)\s*$/i.exec(v.trim())?.[1] ?? '');
    const values = fc.sample(headerArb, { numRuns: 2_000, seed: SEED }).filter((v) => !valid(v));
    const codes = new Map<number, number>();
    try {
      let next = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          for (let i = next++; i < values.length; i = next++) {
            const md = new grpc.Metadata();
            md.set('authorization', values[i]!);
            const m = METHODS[i % METHODS.length]!;
            if (m.path.startsWith('/grpc.health.v1.Health/')) continue; // Public.
            const code = await new Promise<number>((resolve) => {
              const call = m.requestStream
                ? client.makeBidiStreamRequest(m.path, identity, identity, md, { deadline: Date.now() + 5_000 })
                : client.makeServerStreamRequest(m.path, identity, identity, Buffer.alloc(0), md, { deadline: Date.now() + 5_000 });
              call.on('error', () => undefined);
              call.on('data', () => undefined);
              call.on('status', (st: grpc.StatusObject) => resolve(st.code));
              if (m.requestStream) (call as grpc.ClientDuplexStream<Buffer, Buffer>).end();
            });
            codes.set(code, (codes.get(code) ?? 0) + 1);
          }
        }),
      );
      expect([...codes.keys()]).toEqual([grpc.status.UNAUTHENTICATED]);
      expect(head.registry.list()).toEqual([]);
      expect(head.scheduler.queueLength()).toBe(0);
    } finally {
      client.close();
      await head.stop();
      await tmp.cleanup();
    }
  });
});

describe('fuzzing a node', () => {
  let head: Daemon & { address: string };
  let node: Daemon;
  let tmp: { dir: string; cleanup: () => Promise<void> };

  beforeAll(async () => {
    tmp = await tempDir('fuzz-node');
    const h = startOrion(['head', '--port', '0', '--data-dir', path.join(tmp.dir, 'head'), '--log-level', 'error']);
    head = { ...h, address: await waitFor('head to listen', () => /orion head listening on (\S+)/.exec(h.output())?.[1]) };
    node = startOrion(['node', '--head', head.address, '--id', 'fuzzed', '--work-dir', path.join(tmp.dir, 'node'), '--health-port', '0', '--metrics-port', '0', '--log-level', 'error'], {
      NODE_OPTIONS: `--max-old-space-size=${HEAP_MIB}`,
    });
  });
  afterAll(async () => {
    await node?.kill();
    await head?.kill();
    await tmp?.cleanup();
  });

  it('answers random and mutated requests to every RPC it serves (grpc.health.v1) with a well-formed status, and its HTTP endpoints with HTTP errors', async () => {
    const health = await waitFor('the node health endpoint', () => /orion node health on (\S+)/.exec(node.output())?.[1]);
    const metricsUrl = await waitFor('the node metrics endpoint', () => /orion node metrics on (\S+)\/metrics/.exec(node.output())?.[1]);
    const methods = Object.values(HealthService).map((m) => ({ path: m.path, requestStream: m.requestStream, responseStream: m.responseStream }));
    const seed = Buffer.from(HealthCheckRequest.encode({ service: '' }).finish());
    const cases = fc.sample(
      fc.record({ method: fc.nat({ max: methods.length - 1 }), mutations: fc.array(mutationArb, { maxLength: 4 }) }),
      { numRuns: 5_000, seed: SEED },
    );
    const client = new grpc.Client(health, grpc.credentials.createInsecure());
    const malformed: Reply[] = [];
    let next = 0;
    try {
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          for (let i = next++; i < cases.length; i = next++) {
            const c = cases[i]!;
            const body = c.mutations.reduce((b, mu) => mutate(b, mu), seed);
            const reply = await send(client, methods[c.method]!, [body]);
            if (!Number.isInteger(reply.code) || reply.code < 0 || reply.code > 16 || typeof reply.details !== 'string') malformed.push(reply);
          }
        }),
      );
    } finally {
      client.close();
    }
    expect(malformed).toEqual([]);
    for (const p of ['/', '/metrics/../../etc/passwd', '/%ff%fe', `/${'a'.repeat(10_000)}`]) {
      const res = await fetch(`${metricsUrl}${p}`).catch((err: Error) => ({ status: -1, err }));
      expect([404, 400, 414, 431]).toContain(res.status);
    }
    expect(node.proc.exitCode).toBeNull();
    expect(node.proc.signalCode).toBeNull();
    expect((await fetch(`${metricsUrl}/metrics`)).status).toBe(200);
  }, 120_000);
});
