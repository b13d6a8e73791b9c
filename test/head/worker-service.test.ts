/**
 * The orion.v1.Worker protocol and the Execute path through an in-process head,
 * with scripted fake nodes speaking the real gRPC protocol.
 */
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  ActionResult,
  ExecuteOperationMetadata,
  ExecuteRequest,
  ExecuteResponse,
  ExecutionClient,
  ExecutionStage_Value,
} from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import type { Operation } from '../../proto/gen/google/longrunning/operations.js';
import { WorkerClient, type AssignAction, type HeadMessage, type PrefetchTree, type RegisterResponse, type WorkerMessage } from '../../proto/gen/orion/v1/worker.js';
import { BuildsClient, type PrefetchResponse } from '../../proto/gen/orion/v1/build.js';
import { Code } from '../../common/errors.js';
import { createManualClock } from '../../common/clock.js';
import { silentLogger } from '../../common/logger.js';
import { digestOf, EMPTY_DIGEST } from '../../cas/digest.js';
import { encodeDirectory } from '../../cas/directory.js';
import type { Digest } from '../../cas/types.js';
import { startHead, type Head } from '../../head/head.js';
import { statusToPb } from '../../proto/convert.js';
import type { RemoteBlobStore } from '../../proto/grpc-blob-store.js';
import { tempDir, waitFor } from '../helpers/daemons.js';
import { casClient, execute, makeAction } from '../helpers/reapi.js';

const creds = grpc.credentials.createInsecure();

interface FakeNode {
  nodeId: string;
  sessionId: string;
  assigns: AssignAction[];
  cancels: string[];
  prefetches: PrefetchTree[];
  /** Resolves with the stream's final error status (undefined when it ended cleanly). */
  ended: Promise<grpc.ServiceError | undefined>;
  nextAssign(): Promise<AssignAction>;
  send(m: Partial<WorkerMessage>): void;
  close(): void;
}

function register(client: WorkerClient, nodeId: string, slots = 1) {
  return new Promise<{ err?: grpc.ServiceError; res?: RegisterResponse }>((resolve) =>
    client.register({ nodeId, address: '', slots, platform: undefined, metadata: {} }, (err, res) => resolve(err ? { err } : { res })),
  );
}

function openStream(client: WorkerClient) {
  const stream = client.connect();
  const messages: HeadMessage[] = [];
  let notify: (() => void) | undefined;
  stream.on('data', (m: HeadMessage) => {
    messages.push(m);
    notify?.();
  });
  const ended = new Promise<grpc.ServiceError | undefined>((resolve) => {
    stream.on('error', (err: grpc.ServiceError) => resolve(err));
    stream.on('end', () => resolve(undefined));
  });
  return { stream, messages, ended, onMessage: (fn: () => void) => (notify = fn) };
}

describe('worker protocol and execution through an in-process head', () => {
  let head: Head;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let cas: RemoteBlobStore;
  let inputRoot: Digest;
  const clients: WorkerClient[] = [];
  const fakes: FakeNode[] = [];

  beforeAll(async () => {
    tmp = await tempDir('worker-service');
    head = await startHead({ listen: '127.0.0.1:0', dataDir: path.join(tmp.dir, 'head'), heartbeatTimeoutMs: 60_000, log: silentLogger() });
    cas = casClient(head.address);
    const src = Buffer.from('int main(void) { return 0; }\n');
    await cas.put(digestOf(src), src);
    const dir = encodeDirectory({ files: [{ name: 'main.c', digest: digestOf(src), isExecutable: false }], directories: [], symlinks: [] });
    inputRoot = digestOf(dir);
    await cas.put(inputRoot, dir);
  });

  afterEach(() => {
    for (const f of fakes.splice(0)) f.close();
  });

  afterAll(async () => {
    cas?.close();
    for (const c of clients) c.close();
    await head?.stop();
    await tmp?.cleanup();
  });

  const newClient = () => {
    const c = new WorkerClient(head.address, creds);
    clients.push(c);
    return c;
  };

  async function fakeNode(nodeId: string, slots = 1): Promise<FakeNode> {
    const client = newClient();
    const reg = await register(client, nodeId, slots);
    expect(reg.err).toBeUndefined();
    const { stream, messages, ended, onMessage } = openStream(client);
    const assigns: AssignAction[] = [];
    const cancels: string[] = [];
    const prefetches: PrefetchTree[] = [];
    let taken = 0;
    let wake: (() => void) | undefined;
    onMessage(() => {
      for (const m of messages.splice(0)) {
        if (m.assign) assigns.push(m.assign);
        if (m.cancel) cancels.push(m.cancel.assignmentId);
        if (m.prefetch) prefetches.push(m.prefetch);
      }
      wake?.();
    });
    stream.write({ hello: { nodeId, sessionId: reg.res!.sessionId } });
    const fake: FakeNode = {
      nodeId,
      sessionId: reg.res!.sessionId,
      assigns,
      cancels,
      prefetches,
      ended,
      async nextAssign() {
        while (assigns.length <= taken) await new Promise<void>((r) => (wake = r));
        return assigns[taken++]!;
      },
      send: (m) => stream.write(m as WorkerMessage),
      close: () => stream.end(),
    };
    fakes.push(fake);
    await waitFor(`${nodeId} to be active`, () => head.registry.get(nodeId)?.status === 'active');
    return fake;
  }

  const finishOk = (node: FakeNode, a: AssignAction, result: { exitCode: number; outputFiles?: { path: string; digest: Digest; isExecutable: boolean }[] }) =>
    node.send({
      finished: {
        assignmentId: a.assignmentId,
        peerBytes: 0,
        headBytes: 0,
        status: undefined,
        result: ActionResult.fromPartial({
          exitCode: result.exitCode,
          outputFiles: result.outputFiles ?? [],
          stdoutDigest: EMPTY_DIGEST,
          stderrDigest: EMPTY_DIGEST,
          executionMetadata: { worker: node.nodeId },
        }),
      },
    });

  describe('Register and Connect', () => {
    it('rejects Register with an invalid node id or slot count with INVALID_ARGUMENT', async () => {
      const client = newClient();
      const badId = await register(client, 'bad id!', 1);
      expect(badId.err!.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(badId.err!.details).toBe('invalid node id "bad id!": use 1-128 characters of [A-Za-z0-9._:@-]');
      const noSlots = await register(client, 'fine-id', 0);
      expect(noSlots.err!.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(noSlots.err!.details).toBe('invalid slot count 0 for node fine-id: must be 1..4096');
      expect(head.registry.get('fine-id')).toBeUndefined();
    });

    it('refuses a Connect stream whose first message is not hello with FAILED_PRECONDITION', async () => {
      const { stream, ended } = openStream(newClient());
      stream.write({ heartbeat: { running: 0, load: 0, assignmentIds: [] } });
      const err = await ended;
      expect(err!.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(err!.details).toBe('the first message on a Connect stream must be hello');
    });

    it('refuses a hello from a session that registered again with FAILED_PRECONDITION, and keeps the new session', async () => {
      const client = newClient();
      const first = await register(client, 'reregistered');
      const second = await register(client, 'reregistered');
      const fresh = openStream(client);
      fresh.stream.write({ hello: { nodeId: 'reregistered', sessionId: second.res!.sessionId } });
      await waitFor('new session active', () => head.registry.get('reregistered')?.status === 'active');
      const stale = openStream(client);
      stale.stream.write({ hello: { nodeId: 'reregistered', sessionId: first.res!.sessionId } });
      const err = await stale.ended;
      expect(err!.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(err!.details).toBe('stale session for node "reregistered": it registered again');
      expect(head.registry.get('reregistered')!.status).toBe('active');
      fresh.stream.end();
      await waitFor('inactive after its stream ends', () => head.registry.get('reregistered')?.status === 'inactive');
    });

    it('refuses a second hello on one stream with INVALID_ARGUMENT', async () => {
      const client = newClient();
      const reg = await register(client, 'double-hello');
      const { stream, ended } = openStream(client);
      stream.write({ hello: { nodeId: 'double-hello', sessionId: reg.res!.sessionId } });
      stream.write({ hello: { nodeId: 'double-hello', sessionId: reg.res!.sessionId } });
      const err = await ended;
      expect(err!.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err!.details).toBe('hello sent twice on one stream');
      await waitFor('inactive after the refused stream', () => head.registry.get('double-hello')?.status === 'inactive');
    });
  });

  describe('Builds.Prefetch', () => {
    const prefetch = (req: { sourceRoot?: Digest; buildId?: string }) => {
      const client = new BuildsClient(head.address, creds);
      return new Promise<{ err?: grpc.ServiceError; res?: PrefetchResponse }>((resolve) =>
        client.prefetch({ instanceName: '', sourceRoot: req.sourceRoot, buildId: req.buildId ?? '', parallelism: 0 }, (err, res) => {
          client.close();
          resolve(err ? { err } : { res });
        }),
      );
    };

    it('asks every active node to fetch the tree, with the build id', async () => {
      const a = await fakeNode('prefetch-a');
      const b = await fakeNode('prefetch-b');
      const { res, err } = await prefetch({ sourceRoot: inputRoot, buildId: 'b-prefetch' });
      expect(err).toBeUndefined();
      expect(res!.nodes).toBe(2);
      await waitFor('both nodes told', () => a.prefetches.length === 1 && b.prefetches.length === 1);
      for (const n of [a, b]) expect(n.prefetches[0]).toEqual({ root: inputRoot, buildId: 'b-prefetch' });
      // A node whose stream ended is not asked.
      b.close();
      await waitFor('b inactive', () => head.registry.get('prefetch-b')?.status === 'inactive');
      expect((await prefetch({ sourceRoot: inputRoot })).res!.nodes).toBe(1);
    });

    it('asks only as many nodes as the client\'s parallelism needs, those with the most free slots first', async () => {
      await waitFor('earlier nodes gone', () => head.registry.list('active').length === 0);
      const small = await fakeNode('prefetch-small', 1);
      const big = await fakeNode('prefetch-big', 4);
      const mid = await fakeNode('prefetch-mid', 2);
      const sent = async (parallelism: number) => {
        const before = [small, big, mid].map((n) => n.prefetches.length);
        const { res, err } = await new Promise<{ err?: grpc.ServiceError; res?: PrefetchResponse }>((resolve) => {
          const client = new BuildsClient(head.address, creds);
          client.prefetch({ instanceName: '', sourceRoot: inputRoot, buildId: 'b-par', parallelism }, (e, r) => {
            client.close();
            resolve(e ? { err: e } : { res: r });
          });
        });
        expect(err).toBeUndefined();
        await waitFor('the asked nodes told', () => [small, big, mid].reduce((n, f, i) => n + f.prefetches.length - before[i]!, 0) === res!.nodes);
        return [small, big, mid].filter((f, i) => f.prefetches.length > before[i]!).map((f) => f.nodeId);
      };
      expect(await sent(3)).toEqual(['prefetch-big']);
      expect(await sent(5)).toEqual(['prefetch-big', 'prefetch-mid']);
      expect(await sent(0)).toEqual(['prefetch-small', 'prefetch-big', 'prefetch-mid']);
      expect(await sent(100)).toEqual(['prefetch-small', 'prefetch-big', 'prefetch-mid']);
    });

    it('refuses a root that is not in the CAS with FAILED_PRECONDITION naming it, and a missing digest with INVALID_ARGUMENT', async () => {
      const a = await fakeNode('prefetch-c');
      const absent = digestOf(Buffer.from('not uploaded'));
      const missing = await prefetch({ sourceRoot: absent });
      expect(missing.err!.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(missing.err!.details).toBe(`source_root ${absent.hash}/${absent.sizeBytes} is not in the CAS`);
      const none = await prefetch({});
      expect(none.err!.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(none.err!.details).toMatch(/source_root/);
      expect(a.prefetches).toEqual([]);
    });
  });

  describe('Execute', () => {
    it('runs an action on a node, returns its result, then serves the same action from the cache', async () => {
      const node = await fakeNode('exec-1');
      const { actionDigest } = await makeAction(cas, { argv: ['cc', '-c', 'main.c'], outputs: ['main.o'], inputRoot });
      const pending = execute(head.address, actionDigest);
      const a = await node.nextAssign();
      expect(a.instanceName).toBe('');
      expect(a.actionDigest).toEqual(actionDigest);
      expect(a.command!.arguments).toEqual(['cc', '-c', 'main.c']);
      const obj = Buffer.from('\x7fELF object');
      await cas.put(digestOf(obj), obj);
      finishOk(node, a, { exitCode: 0, outputFiles: [{ path: 'main.o', digest: digestOf(obj), isExecutable: false }] });
      const out = await pending;
      expect(out.error).toBeUndefined();
      expect(out.stages).toEqual([ExecutionStage_Value.EXECUTING, ExecutionStage_Value.COMPLETED]);
      expect(out.response!.status?.code ?? 0).toBe(0);
      expect(out.response!.result!.outputFiles[0]!.digest).toEqual(digestOf(obj));
      const again = await execute(head.address, actionDigest);
      expect(again.response!.cachedResult).toBe(true);
      expect(node.assigns).toHaveLength(1);
    });

    it('joins two identical Executes in flight to one operation and one assignment', async () => {
      const node = await fakeNode('exec-dedup', 4);
      const { actionDigest } = await makeAction(cas, { argv: ['cc', '-c', 'main.c', '-DDEDUP'], outputs: [], inputRoot });
      const one = execute(head.address, actionDigest);
      const a = await node.nextAssign();
      // The second caller subscribes to the running operation: it sees EXECUTING first.
      const client = new ExecutionClient(head.address, creds);
      const ops: Operation[] = [];
      const stream = client.execute(ExecuteRequest.fromPartial({ actionDigest }));
      stream.on('data', (op: Operation) => ops.push(op));
      const two = new Promise<void>((resolve, reject) => {
        stream.on('end', resolve);
        stream.on('error', reject);
      });
      await waitFor('the second Execute to join', () => ops.length > 0);
      expect(ExecuteOperationMetadata.decode(ops[0]!.metadata!.value).stage).toBe(ExecutionStage_Value.EXECUTING);
      finishOk(node, a, { exitCode: 0 });
      const [r1] = await Promise.all([one, two]);
      client.close();
      expect(ops.at(-1)!.done).toBe(true);
      expect(ops.at(-1)!.name).toBe(r1.operations.at(-1)!.name);
      expect(ExecuteResponse.decode(ops.at(-1)!.response!.value).result!.exitCode).toBe(0);
      expect(node.assigns).toHaveLength(1);
    });

    it('quarantines each node that reports outputs it never uploaded, re-runs the action elsewhere, and gives up after three attempts with UNAVAILABLE', async () => {
      const liars = [await fakeNode('liar1'), await fakeNode('liar2'), await fakeNode('liar3')];
      const { actionDigest } = await makeAction(cas, { argv: ['cc', '-c', 'main.c', '-DLIAR'], outputs: ['main.o'], inputRoot });
      const pending = execute(head.address, actionDigest);
      const ghost = digestOf(Buffer.from('never uploaded'));
      const order: string[] = [];
      for (let i = 1; i <= 3; i++) {
        const node = await waitFor('an assignment on a node not tried yet', () => liars.find((l) => !order.includes(l.nodeId) && l.assigns.length > 0));
        const a = await node.nextAssign();
        expect(a.assignmentId.endsWith(`/${i}`)).toBe(true);
        order.push(node.nodeId);
        finishOk(node, a, { exitCode: 0, outputFiles: [{ path: 'main.o', digest: ghost, isExecutable: false }] });
      }
      const out = await pending;
      expect(out.response!.status!.code).toBe(Code.UNAVAILABLE);
      const attempt = (i: number) => `attempt ${i} on ${order[i - 1]}: result rejected: node ${order[i - 1]} reported 1 output blob(s) it never uploaded`;
      expect(out.response!.status!.message).toBe(`action ${actionDigest.hash}/${actionDigest.sizeBytes} (cc -c main.c ...) failed 3 times, giving up: ${[1, 2, 3].map(attempt).join('; ')}`);
      for (const id of order) expect(head.registry.get(id)!.quarantined).toContain('never uploaded');
      // Nothing was cached, and quarantined nodes get no more work: an honest node runs it.
      const honest = await fakeNode('honest');
      const again = execute(head.address, actionDigest);
      const a4 = await honest.nextAssign();
      finishOk(honest, a4, { exitCode: 0 });
      expect((await again).response!.cachedResult).toBe(false);
      for (const l of liars) l.close();
    });

    it('passes a deterministic node failure (missing input) to the client as FAILED_PRECONDITION with the missing digests', async () => {
      const node = await fakeNode('precondition');
      const { actionDigest } = await makeAction(cas, { argv: ['cc', '-c', 'main.c', '-DMISSING'], outputs: [], inputRoot });
      const pending = execute(head.address, actionDigest);
      const a = await node.nextAssign();
      const gone = digestOf(Buffer.from('evicted input'));
      node.send({ finished: { assignmentId: a.assignmentId, peerBytes: 0, headBytes: 0, result: undefined, status: statusToPb(Code.FAILED_PRECONDITION, '1 input blob(s) are not in the head\'s CAS', [gone]) } });
      const out = await pending;
      expect(out.response!.status!.code).toBe(Code.FAILED_PRECONDITION);
      expect(out.response!.status!.message).toBe("node precondition: 1 input blob(s) are not in the head's CAS");
      expect(out.response!.status!.details).toHaveLength(1);
      expect(node.assigns).toHaveLength(1);
    });

    it('moves the action of a node whose stream closes to another node at once', async () => {
      const first = await fakeNode('dropper');
      const { actionDigest } = await makeAction(cas, { argv: ['cc', '-c', 'main.c', '-DDROP'], outputs: [], inputRoot });
      const pending = execute(head.address, actionDigest);
      await first.nextAssign();
      const second = await fakeNode('catcher');
      first.close();
      const a = await second.nextAssign();
      expect(a.assignmentId.endsWith('/2')).toBe(true);
      finishOk(second, a, { exitCode: 0 });
      const out = await pending;
      expect(out.response!.result!.exitCode).toBe(0);
      expect(out.stages).toEqual([ExecutionStage_Value.EXECUTING, ExecutionStage_Value.QUEUED, ExecutionStage_Value.EXECUTING, ExecutionStage_Value.COMPLETED]);
      expect(head.registry.get('dropper')!.status).toBe('inactive');
    });
  });

  describe('heartbeat timeout (injected clock)', () => {
    it('cancels, over the stream, the assignment of a node that stopped heartbeating, and runs it on another node', async () => {
      const clock = createManualClock(1_000_000);
      const dir = path.join(tmp.dir, 'clocked-head');
      const clocked = await startHead({ listen: '127.0.0.1:0', dataDir: dir, heartbeatTimeoutMs: 60_000, log: silentLogger(), clock });
      const casB = casClient(clocked.address);
      const client = new WorkerClient(clocked.address, creds);
      try {
        const src = Buffer.from('int x;\n');
        await casB.put(digestOf(src), src);
        const rootDir = encodeDirectory({ files: [{ name: 'x.c', digest: digestOf(src), isExecutable: false }], directories: [], symlinks: [] });
        await casB.put(digestOf(rootDir), rootDir);
        const join = async (nodeId: string) => {
          const reg = await register(client, nodeId);
          const s = openStream(client);
          s.stream.write({ hello: { nodeId, sessionId: reg.res!.sessionId } });
          await waitFor(`${nodeId} active`, () => clocked.registry.get(nodeId)?.status === 'active');
          return { ...s, sessionId: reg.res!.sessionId };
        };
        const silent = await join('silent');
        const { actionDigest } = await makeAction(casB, { argv: ['cc', '-c', 'x.c'], outputs: [], inputRoot: digestOf(rootDir) });
        const pending = execute(clocked.address, actionDigest);
        await waitFor('assignment to reach the silent node', () => silent.messages.some((m) => m.assign));
        const assignmentId = silent.messages.find((m) => m.assign)!.assign!.assignmentId;
        const healthy = await join('healthy');
        clock.advance(60_001);
        clocked.registry.heartbeat('healthy', healthy.sessionId, { load: 0 });
        clocked.registry.sweep();
        expect(clocked.registry.get('silent')!.status).toBe('inactive');
        await waitFor('the cancel to reach the silent node', () => silent.messages.some((m) => m.cancel));
        expect(silent.messages.filter((m) => m.cancel).map((m) => m.cancel!.assignmentId)).toEqual([assignmentId]);
        await waitFor('the retry to reach the healthy node', () => healthy.messages.some((m) => m.assign));
        const retry = healthy.messages.find((m) => m.assign)!.assign!;
        expect(retry.assignmentId.endsWith('/2')).toBe(true);
        healthy.stream.write({ finished: { assignmentId: retry.assignmentId, peerBytes: 0, headBytes: 0, status: undefined, result: ActionResult.fromPartial({ exitCode: 0, stdoutDigest: EMPTY_DIGEST, stderrDigest: EMPTY_DIGEST }) } });
        // The silent node's late report of the cancelled assignment is ignored.
        silent.stream.write({ finished: { assignmentId, peerBytes: 0, headBytes: 0, status: undefined, result: ActionResult.fromPartial({ exitCode: 9 }) } });
        const out = await pending;
        expect(out.response!.result!.exitCode).toBe(0);
        silent.stream.end();
        healthy.stream.end();
      } finally {
        client.close();
        casB.close();
        await clocked.stop();
      }
    });
  });
});
