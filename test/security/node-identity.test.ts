/**
 * Identities bound to what they may touch, on a real head over gRPC: a node
 * credential (certificate CN, or a token's NAME) may only register and connect
 * as its own node id, another identity cannot take over a live registration,
 * and an operation can only be watched (WaitExecution) by the identities that
 * Executed it. Without authentication nothing of this applies.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecutionClient } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import type { Operation } from '../../proto/gen/google/longrunning/operations.js';
import { WorkerClient, type HeadMessage, type WorkerMessage } from '../../proto/gen/orion/v1/worker.js';
import { createManualClock } from '../../common/clock.js';
import { Code } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import { certificateCommonName, defaultNodeId, loadClientAuth, loadServerCredentials, type ClientAuth } from '../../common/credentials.js';
import { digestOf } from '../../cas/digest.js';
import type { Digest } from '../../cas/types.js';
import { createHeadAuth, nodeIdAllowed, parseTokensFile } from '../../head/auth.js';
import { startHead, type Head } from '../../head/head.js';
import { createGrpcBlobStore } from '../../proto/grpc-blob-store.js';
import { certsInit } from '../../cli/commands/certs.js';
import { tempDir } from '../helpers/daemons.js';
import { makeAction } from '../helpers/reapi.js';
import { unaryOutcome, type Outcome } from './helpers.js';

const HEARTBEAT_TIMEOUT_MS = 10_000;
const deadline = () => ({ deadline: Date.now() + 10_000 });

/** The RPCs these tests make, as one caller. */
function caller(address: string, auth: ClientAuth) {
  const worker = new WorkerClient(address, auth.credentials, auth.channelOptions);
  const exec = new ExecutionClient(address, auth.credentials, auth.channelOptions);
  const open: grpc.ClientReadableStream<unknown>[] = [];
  return {
    register: (nodeId: string) => unaryOutcome<{ sessionId: string }>((cb) => worker.register({ nodeId, address: '', slots: 1, platform: undefined, metadata: {} }, new grpc.Metadata(), deadline(), cb)),
    /** Opens a Connect stream (for at most 10 s) and says hello; `refused` settles with the stream's error. */
    connect(nodeId: string, sessionId: string) {
      const stream: grpc.ClientDuplexStream<WorkerMessage, HeadMessage> = worker.connect(new grpc.Metadata(), deadline());
      const refused = new Promise<grpc.ServiceError | undefined>((resolve) => {
        stream.on('error', (err: grpc.ServiceError) => resolve(err.code === Code.CANCELLED ? undefined : err));
        stream.on('end', () => resolve(undefined));
      });
      stream.on('data', () => undefined);
      stream.write({ hello: { nodeId, sessionId } });
      return { refused, close: () => stream.cancel() };
    },
    /** Starts an Execute and returns its operation name once the head has sent the first operation. */
    async execute(actionDigest: Digest): Promise<string> {
      const stream = exec.execute({ instanceName: '', skipCacheLookup: true, actionDigest, digestFunction: 0, inlineStdout: false, inlineStderr: false, inlineOutputFiles: [] }, new grpc.Metadata());
      open.push(stream);
      return (await first(stream)).op!.name;
    },
    /** The first thing a WaitExecution stream yields: an operation or an error. */
    async wait(name: string) {
      const stream = exec.waitExecution({ name }, new grpc.Metadata());
      open.push(stream);
      return first(stream);
    },
    close() {
      for (const s of open) s.cancel();
      worker.close();
      exec.close();
    },
  };
}
type Caller = ReturnType<typeof caller>;

function first(stream: grpc.ClientReadableStream<Operation>): Promise<{ op?: Operation; err?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    stream.on('data', (op: Operation) => resolve({ op }));
    stream.on('error', (err: grpc.ServiceError) => resolve({ err }));
    stream.on('end', () => resolve({}));
  });
}

function expectCode(o: Outcome | { err?: grpc.ServiceError }, code: Code, message?: string) {
  expect(o.err?.code, o.err?.details ?? 'the call succeeded').toBe(code);
  if (message !== undefined) expect(o.err!.details).toBe(message);
}

/** Signs a client certificate with the CA `orion certs init` wrote (the way an operator adds one). */
async function issueCertificate(certs: string, name: string, subject: string, role: string): Promise<void> {
  const file = (ext: string) => path.join(certs, `${name}.${ext}`);
  await writeFile(file('ext'), `[v3]\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:orion-role:${role}\n`);
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', file('key'), '-subj', subject, '-out', file('csr')], { stdio: 'ignore' });
  execFileSync('openssl', ['x509', '-req', '-in', file('csr'), '-CA', path.join(certs, 'ca.crt'), '-CAkey', path.join(certs, 'ca.key'), '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '2', '-sha256', '-extfile', file('ext'), '-extensions', 'v3', '-out', file('crt')], { stdio: 'ignore' });
}

/**
 * WaitExecution by another identity is NOT_FOUND, exactly like an unknown name; the
 * owner, an admin, and an identity whose identical Execute joined the execution may watch.
 */
async function checkWaitExecutionScope(head: Head, owner: Caller, other: Caller, admin: Caller, cas: ClientAuth) {
  const store = createGrpcBlobStore({ address: head.address, credentials: cas.credentials, channelOptions: cas.channelOptions });
  try {
    const { actionDigest } = await makeAction(store, { argv: ['echo', randomBytes(8).toString('hex')], outputs: [], inputRoot: digestOf(Buffer.alloc(0)) });
    const name = await owner.execute(actionDigest);

    const unknown = await other.wait('operations/no-such-operation');
    expectCode(unknown, Code.NOT_FOUND, 'unknown operation "operations/no-such-operation"');
    const foreign = await other.wait(name);
    expectCode(foreign, Code.NOT_FOUND, `unknown operation ${JSON.stringify(name)}`);

    expect((await owner.wait(name)).op?.name).toBe(name);
    expect((await admin.wait(name)).op?.name).toBe(name);

    // An identical Execute from the other identity joins the same execution: now it may watch too.
    expect(await other.execute(actionDigest)).toBe(name);
    expect((await other.wait(name)).op?.name).toBe(name);
  } finally {
    store.close();
  }
}

describe('node ids and operations bound to client certificates (mutual TLS)', () => {
  let head: Head;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let certs: string;
  const clock = createManualClock(1_000_000);
  const as: Record<string, Caller> = {};
  const mtls = (name: string) => loadClientAuth({ tlsCert: path.join(certs, `${name}.crt`), tlsKey: path.join(certs, `${name}.key`), tlsCa: path.join(certs, 'ca.crt') }, {});

  beforeAll(async () => {
    tmp = await tempDir('node-identity-mtls');
    certs = path.join(tmp.dir, 'certs');
    await certsInit({ dir: certs, hosts: [], days: 2, force: false, nodes: ['a', 'b'] });
    // Prefix certificates: CN=pool-* may be any pool-ID, CN=* any node id.
    await issueCertificate(certs, 'pool', '/O=Orion/OU=node/CN=pool-*', 'node');
    await issueCertificate(certs, 'fleet', '/O=Orion/OU=node/CN=*', 'node');
    await issueCertificate(certs, 'bob', '/O=Orion/OU=client/CN=bob', 'client');
    const tls = loadServerCredentials({ tlsCert: path.join(certs, 'head.crt'), tlsKey: path.join(certs, 'head.key'), tlsCa: path.join(certs, 'ca.crt') });
    head = await startHead({
      listen: '127.0.0.1:0',
      dataDir: path.join(tmp.dir, 'head'),
      heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
      clock,
      log: silentLogger(),
      serverCredentials: tls.credentials,
      auth: createHeadAuth({ clientCertificates: true, allowClientCacheWrites: false }),
    });
    for (const n of ['node', 'node-a', 'node-b', 'pool', 'fleet', 'client', 'bob', 'admin']) as[n] = caller(head.address, mtls(n));
  }, 60_000);
  afterAll(async () => {
    for (const c of Object.values(as)) c.close();
    await head?.stop();
    await tmp?.cleanup();
  });

  it('writes node certificates whose CN is their node id, and `orion node` takes its default id from it', () => {
    expect(certificateCommonName(path.join(certs, 'node.crt'))).toBe('orion-node');
    expect(certificateCommonName(path.join(certs, 'node-a.crt'))).toBe('a');
    expect(defaultNodeId(path.join(certs, 'node-b.crt'), 'host-1')).toBe('b');
    expect(defaultNodeId(path.join(certs, 'pool.crt'), 'host-1')).toBe('pool-host-1');
    expect(defaultNodeId(undefined, 'host-1')).toBe('host-1');
  });

  it('refuses a node certificate registering as another node id, and registers nothing', async () => {
    expectCode(await as['node-a']!.register('b'), Code.PERMISSION_DENIED, 'node "a" may not register as node id "b": its certificate (its CN) binds it to node id "a"');
    expectCode(await as.node!.register('a'), Code.PERMISSION_DENIED, 'node "orion-node" may not register as node id "a": its certificate (its CN) binds it to node id "orion-node"');
    expectCode(await as.pool!.register('a'), Code.PERMISSION_DENIED, 'node "pool-*" may not register as node id "a": its certificate (its CN) binds it to node id "pool-*"');
    expect(head.registry.get('a')).toBeUndefined();
    expect(head.registry.get('b')).toBeUndefined();
  });

  it('lets a node certificate register and connect as its CN, or under its CN prefix', async () => {
    const a = await as['node-a']!.register('a');
    expect(a.err).toBeUndefined();
    const stream = as['node-a']!.connect('a', a.res!.sessionId);
    await expect.poll(() => head.registry.get('a')?.status, { timeout: 10_000 }).toBe('active');
    expect((await as.pool!.register('pool-7')).err).toBeUndefined();
    expect(head.registry.get('pool-7')?.status).toBe('inactive');
    stream.close();
    await expect.poll(() => head.registry.get('a')?.connected, { timeout: 10_000 }).toBe(false);
  });

  it('refuses another certificate taking over a live registration; the registered node keeps its session', async () => {
    const a = await as['node-a']!.register('a');
    const stream = as['node-a']!.connect('a', a.res!.sessionId);
    await expect.poll(() => head.registry.get('a')?.status, { timeout: 10_000 }).toBe('active');
    try {
      // CN=* may be any node id, but not one another identity holds.
      expectCode(await as.fleet!.register('a'), Code.PERMISSION_DENIED, 'node id "a" is registered by another credential');
      expect(head.registry.get('a')).toMatchObject({ sessionId: a.res!.sessionId, status: 'active', connected: true });
      // Nor connect as it, even knowing its session id.
      expect((await as.fleet!.connect('a', a.res!.sessionId).refused)?.details).toBe('node id "a" is registered by another credential');
      expect((await as['node-b']!.connect('a', a.res!.sessionId).refused)?.details).toBe('node "b" may not connect as node id "a": its certificate (its CN) binds it to node id "b"');
      expect(head.registry.get('a')).toMatchObject({ sessionId: a.res!.sessionId, status: 'active', connected: true });
      // The same certificate registering again (a restarted node) is fine.
      const again = await as['node-a']!.register('a');
      expect(again.err).toBeUndefined();
      expect(again.res!.sessionId).not.toBe(a.res!.sessionId);
    } finally {
      stream.close();
    }
  });

  it('frees a node id once its node has been gone for twice the heartbeat timeout', async () => {
    const pool = await as.pool!.register('pool-9');
    const stream = as.pool!.connect('pool-9', pool.res!.sessionId);
    await expect.poll(() => head.registry.get('pool-9')?.status, { timeout: 10_000 }).toBe('active');
    stream.close();
    await expect.poll(() => head.registry.get('pool-9')?.connected, { timeout: 10_000 }).toBe(false);
    expectCode(await as.fleet!.register('pool-9'), Code.PERMISSION_DENIED, 'node id "pool-9" is registered by another credential');
    clock.advance(2 * HEARTBEAT_TIMEOUT_MS + 1);
    head.registry.sweep();
    expect(head.registry.get('pool-9')?.status).toBe('disconnected');
    expect((await as.fleet!.register('pool-9')).err).toBeUndefined();
    // Now the fleet certificate holds it.
    expectCode(await as.pool!.register('pool-9'), Code.PERMISSION_DENIED, 'node id "pool-9" is registered by another credential');
  });

  it('answers WaitExecution by another client certificate with NOT_FOUND, and lets the owner watch', async () => {
    await checkWaitExecutionScope(head, as.client!, as.bob!, as.admin!, mtls('client'));
  });
});

describe('node ids and operations bound to token names', () => {
  const T = {
    nodeA: 'node-a-token-0123456789abcdef',
    nodeB: 'node-b-token-0123456789abcdef',
    legacy: 'node-legacy-0123456789abcdef',
    alice: 'alice-token-0123456789abcdef',
    bob: 'bob-token-0123456789abcdef000',
    admin: 'admin-token-0123456789abcdef',
  };
  let head: Head;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  const as: Partial<Record<keyof typeof T, Caller>> = {};
  const token = (t: string) => loadClientAuth({}, { ORION_TOKEN: t });

  beforeAll(async () => {
    tmp = await tempDir('node-identity-tokens');
    const tokens = parseTokensFile(
      [`node ${T.nodeA} a`, `node ${T.nodeB} b`, `node ${T.legacy}`, `client ${T.alice} alice`, `client ${T.bob} bob`, `admin ${T.admin} ops`].join('\n'),
      'tokens',
    );
    head = await startHead({ listen: '127.0.0.1:0', dataDir: path.join(tmp.dir, 'head'), heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS, log: silentLogger(), auth: createHeadAuth({ tokens, allowClientCacheWrites: false }) });
    for (const k of Object.keys(T) as (keyof typeof T)[]) as[k] = caller(head.address, token(T[k]));
  });
  afterAll(async () => {
    for (const c of Object.values(as)) c.close();
    await head?.stop();
    await tmp?.cleanup();
  });

  it('binds a named node token to its NAME, and leaves unnamed node tokens free to pick an id', () => {
    const tokens = parseTokensFile(`node ${T.nodeA} a\nnode ${T.legacy}\nnode ${T.nodeB} ci-*\n`, 't');
    const auth = createHeadAuth({ tokens, allowClientCacheWrites: false });
    const named = auth.authenticate({ authorization: `Bearer ${T.nodeA}` });
    expect(named).toMatchObject({ identity: 'token:a', nodeIds: ['a'] });
    expect([nodeIdAllowed(named, 'a'), nodeIdAllowed(named, 'ab')]).toEqual([true, false]);
    const prefix = auth.authenticate({ authorization: `Bearer ${T.nodeB}` });
    expect([nodeIdAllowed(prefix, 'ci-1'), nodeIdAllowed(prefix, 'c')]).toEqual([true, false]);
    const unnamed = auth.authenticate({ authorization: `Bearer ${T.legacy}` });
    expect(unnamed).toMatchObject({ identity: 'token:node@line2' });
    expect(nodeIdAllowed(unnamed, 'anything')).toBe(true);
  });

  it('refuses a named node token registering as another node id', async () => {
    expectCode(await as.nodeA!.register('b'), Code.PERMISSION_DENIED, 'node "a" may not register as node id "b": its token (its NAME in the tokens file) binds it to node id "a"');
    expect(head.registry.get('b')).toBeUndefined();
  });

  it('lets a named node token register and connect as its NAME, and an unnamed one as any free id', async () => {
    const a = await as.nodeA!.register('a');
    expect(a.err).toBeUndefined();
    const stream = as.nodeA!.connect('a', a.res!.sessionId);
    await expect.poll(() => head.registry.get('a')?.status, { timeout: 10_000 }).toBe('active');
    expect((await as.legacy!.register('legacy-1')).err).toBeUndefined();
    stream.close();
  });

  it('refuses another token taking over a live registration, by Register or by Connect', async () => {
    const a = await as.nodeA!.register('a');
    const stream = as.nodeA!.connect('a', a.res!.sessionId);
    await expect.poll(() => head.registry.get('a')?.status, { timeout: 10_000 }).toBe('active');
    try {
      expectCode(await as.legacy!.register('a'), Code.PERMISSION_DENIED, 'node id "a" is registered by another credential');
      expect((await as.legacy!.connect('a', a.res!.sessionId).refused)?.details).toBe('node id "a" is registered by another credential');
      expect((await as.nodeB!.connect('a', a.res!.sessionId).refused)?.details).toBe('node "b" may not connect as node id "a": its token (its NAME in the tokens file) binds it to node id "b"');
      expect(head.registry.get('a')).toMatchObject({ sessionId: a.res!.sessionId, status: 'active', connected: true });
    } finally {
      stream.close();
    }
  });

  it('answers WaitExecution by another client token with NOT_FOUND, and lets the owner watch', async () => {
    await checkWaitExecutionScope(head, as.alice!, as.bob!, as.admin!, token(T.alice));
  });
});

describe('without authentication', () => {
  let head: Head;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let one: Caller;
  let two: Caller;

  beforeAll(async () => {
    tmp = await tempDir('node-identity-open');
    head = await startHead({ listen: '127.0.0.1:0', dataDir: path.join(tmp.dir, 'head'), heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS, log: silentLogger() });
    one = caller(head.address, loadClientAuth({}, {}));
    two = caller(head.address, loadClientAuth({}, {}));
  });
  afterAll(async () => {
    one?.close();
    two?.close();
    await head?.stop();
    await tmp?.cleanup();
  });

  it('lets any caller register any node id, register it again, and watch any operation, as before', async () => {
    const first = await one.register('n1');
    expect(first.err).toBeUndefined();
    const second = await two.register('n1');
    expect(second.err).toBeUndefined();
    expect(head.registry.get('n1')?.sessionId).toBe(second.res!.sessionId);
    const store = createGrpcBlobStore({ address: head.address, credentials: grpc.credentials.createInsecure() });
    try {
      const { actionDigest } = await makeAction(store, { argv: ['true'], outputs: [], inputRoot: digestOf(Buffer.alloc(0)) });
      const name = await one.execute(actionDigest);
      expect((await two.wait(name)).op?.name).toBe(name);
    } finally {
      store.close();
    }
  });
});
