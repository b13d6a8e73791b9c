/**
 * Authentication and role checks of the head, in-process: bearer tokens and
 * mutual TLS, each RPC family per role, and that a refused call has no effect.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ActionCacheClient,
  CapabilitiesClient,
  ContentAddressableStorageClient,
  ExecutionClient,
  type ServerCapabilities,
} from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { ClusterClient } from '../../proto/gen/orion/v1/cluster.js';
import { WorkerClient } from '../../proto/gen/orion/v1/worker.js';
import { HealthClient } from '../../proto/gen/grpc/health/v1/health.js';
import { systemClock } from '../../common/clock.js';
import { Code, OrionError } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import { loadClientAuth, loadServerCredentials, readClientToken, type ClientAuth } from '../../common/credentials.js';
import { digestOf } from '../../cas/digest.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { authorizeHttp, certificateRoles, createHeadAuth, parseTokensFile, UPDATE_ACTION_RESULT } from '../../head/auth.js';
import { startHead, type Head } from '../../head/head.js';
import { createExecutor } from '../../node/executor.js';
import { startWorkerLoop } from '../../node/worker.js';
import { createGrpcBlobStore } from '../../proto/grpc-blob-store.js';
import { createProcessRunner } from '../../sandbox/runner.js';
import { certsInit } from '../../cli/commands/certs.js';
import { tempDir } from '../helpers/daemons.js';
import { makeAction } from '../helpers/reapi.js';
import { TOKENS, streamOutcome, unaryOutcome, type Outcome } from './helpers.js';

type Role = keyof typeof TOKENS;
const asRole = (role: Role | 'none'): ClientAuth => loadClientAuth({}, role === 'none' ? {} : { ORION_TOKEN: TOKENS[role] });

/** One client of each service, with `auth`'s credentials. */
function clients(address: string, auth: ClientAuth) {
  const mk = <C extends grpc.Client>(Ctor: new (a: string, c: grpc.ChannelCredentials, o?: Partial<grpc.ClientOptions>) => C) => new Ctor(address, auth.credentials, auth.channelOptions);
  const c = {
    cas: mk(ContentAddressableStorageClient),
    ac: mk(ActionCacheClient),
    exec: mk(ExecutionClient),
    worker: mk(WorkerClient),
    cluster: mk(ClusterClient),
    health: mk(HealthClient),
    caps: mk(CapabilitiesClient),
    close: () => [c.cas, c.ac, c.exec, c.worker, c.cluster, c.health, c.caps].forEach((x) => x.close()),
  };
  return c;
}
type Clients = ReturnType<typeof clients>;

const deadline = () => ({ deadline: Date.now() + 10_000 });
const findMissing = (c: Clients) => unaryOutcome((cb) => c.cas.findMissingBlobs({ instanceName: '', blobDigests: [digestOf(Buffer.from('x'))], digestFunction: 0 }, new grpc.Metadata(), deadline(), cb));
const batchUpdate = (c: Clients, data: Buffer) => unaryOutcome((cb) => c.cas.batchUpdateBlobs({ instanceName: '', requests: [{ digest: digestOf(data), data, compressor: 0 }], digestFunction: 0 }, new grpc.Metadata(), deadline(), cb));
const getResult = (c: Clients) =>
  unaryOutcome((cb) => c.ac.getActionResult({ instanceName: '', actionDigest: digestOf(Buffer.from('nope')), inlineStdout: false, inlineStderr: false, inlineOutputFiles: [], digestFunction: 0 }, new grpc.Metadata(), deadline(), cb));
const updateResult = (c: Clients, actionDigest = digestOf(Buffer.from('an action'))) =>
  unaryOutcome((cb) => c.ac.updateActionResult({ instanceName: '', actionDigest, actionResult: { exitCode: 0, outputFiles: [], outputSymlinks: [], outputFileSymlinks: [], outputDirectories: [], outputDirectorySymlinks: [], stdoutRaw: Buffer.alloc(0), stderrRaw: Buffer.alloc(0) } as never, digestFunction: 0 }, new grpc.Metadata(), deadline(), cb));
const register = (c: Clients, nodeId: string) => unaryOutcome((cb) => c.worker.register({ nodeId, address: '', slots: 1, platform: undefined, metadata: {} }, new grpc.Metadata(), deadline(), cb));
const listNodes = (c: Clients) => unaryOutcome((cb) => c.cluster.listNodes({ status: 0 }, new grpc.Metadata(), deadline(), cb));
const listBuilds = (c: Clients) => unaryOutcome((cb) => c.cluster.listBuilds({ includeFinished: true }, new grpc.Metadata(), deadline(), cb));
const health = (c: Clients) => unaryOutcome((cb) => c.health.check({ service: '' }, new grpc.Metadata(), deadline(), cb));
const capabilities = (c: Clients) => unaryOutcome<ServerCapabilities>((cb) => c.caps.getCapabilities({ instanceName: '' }, new grpc.Metadata(), deadline(), cb));
const execute = (c: Clients, actionDigest: ReturnType<typeof digestOf>) =>
  streamOutcome(c.exec.execute({ instanceName: '', skipCacheLookup: true, actionDigest, digestFunction: 0, inlineStdout: false, inlineStderr: false, inlineOutputFiles: [] }, new grpc.Metadata(), deadline()));

function expectCode(o: Outcome | { err?: grpc.ServiceError }, code: Code, message?: string | RegExp) {
  expect(o.err?.code, o.err?.details ?? 'the call succeeded').toBe(code);
  if (typeof message === 'string') expect(o.err!.details).toBe(message);
  else if (message) expect(o.err!.details).toMatch(message);
}

describe('token authentication and roles', () => {
  let head: Head;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  const c = {} as Record<Role | 'none' | 'wrong', Clients>;

  beforeAll(async () => {
    tmp = await tempDir('auth');
    const tokens = parseTokensFile(`client ${TOKENS.client} alice\nnode ${TOKENS.node}\nadmin ${TOKENS.admin} ops\n`, 'tokens');
    head = await startHead({ listen: '127.0.0.1:0', dataDir: path.join(tmp.dir, 'head'), heartbeatTimeoutMs: 10_000, log: silentLogger(), auth: createHeadAuth({ tokens, allowClientCacheWrites: false }) });
    for (const r of ['client', 'node', 'admin', 'none'] as const) c[r] = clients(head.address, asRole(r));
    c.wrong = clients(head.address, loadClientAuth({}, { ORION_TOKEN: 'not-a-valid-token-at-all-0000' }));
  });
  afterAll(async () => {
    for (const x of Object.values(c)) x.close();
    await head?.stop();
    await tmp?.cleanup();
  });

  it('refuses a call without a credential with UNAUTHENTICATED, naming how to authenticate', async () => {
    expectCode(await findMissing(c.none), Code.UNAUTHENTICATED, 'this head requires authentication: a bearer token (--token-file or ORION_TOKEN)');
  });

  it('refuses a wrong token with UNAUTHENTICATED', async () => {
    expectCode(await findMissing(c.wrong), Code.UNAUTHENTICATED, 'the bearer token is not valid for this head');
  });

  it('refuses a malformed authorization header with UNAUTHENTICATED', async () => {
    const md = new grpc.Metadata();
    md.set('authorization', `Basic ${TOKENS.admin}`);
    const o = await unaryOutcome((cb) => c.none.cas.findMissingBlobs({ instanceName: '', blobDigests: [], digestFunction: 0 }, md, deadline(), cb));
    expectCode(o, Code.UNAUTHENTICATED, 'malformed authorization header: expected "Bearer TOKEN"');
  });

  it('answers health checks without a credential', async () => {
    expect((await health(c.none)).res).toEqual({ status: 1 });
  });

  it('lets a client read and write the CAS, read the action cache, query capabilities and the cluster API', async () => {
    expect((await findMissing(c.client)).res).toBeDefined();
    expect((await batchUpdate(c.client, Buffer.from('from a client'))).res).toBeDefined();
    expectCode(await getResult(c.client), Code.NOT_FOUND);
    expect((await capabilities(c.client)).res!.cacheCapabilities!.actionCacheUpdateCapabilities!.updateEnabled).toBe(false);
    expect((await listNodes(c.client)).res).toEqual({ nodes: [] });
    expect((await listBuilds(c.client)).res).toBeDefined();
  });

  it('lets a node read and write the CAS, but not read the action cache, Execute, or read the cluster API', async () => {
    expect((await findMissing(c.node)).res).toBeDefined();
    expect((await batchUpdate(c.node, Buffer.from('from a node'))).res).toBeDefined();
    expectCode(await getResult(c.node), Code.PERMISSION_DENIED, 'node "node@line2" may not call /build.bazel.remote.execution.v2.ActionCache/GetActionResult');
    expectCode(await execute(c.node, digestOf(Buffer.from('any'))), Code.PERMISSION_DENIED, /may not call \/build\.bazel\.remote\.execution\.v2\.Execution\/Execute$/);
    expectCode(await listNodes(c.node), Code.PERMISSION_DENIED, 'node "node@line2" may not call /orion.v1.Cluster/ListNodes');
    expectCode(await listBuilds(c.node), Code.PERMISSION_DENIED, 'node "node@line2" may not call /orion.v1.Cluster/ListBuilds');
  });

  it('refuses Register and Connect from a client credential, and no node is added', async () => {
    expectCode(await register(c.client, 'impostor'), Code.PERMISSION_DENIED, 'client "alice" may not call /orion.v1.Worker/Register');
    const stream = c.client.worker.connect(new grpc.Metadata(), deadline());
    const ended = new Promise<grpc.ServiceError | undefined>((resolve) => {
      stream.on('error', resolve);
      stream.on('end', () => resolve(undefined));
      stream.on('data', () => undefined);
    });
    stream.write({ hello: { nodeId: 'impostor', sessionId: 'x' } });
    const err = await ended;
    expect(err?.code).toBe(Code.PERMISSION_DENIED);
    expect(err?.details).toBe('client "alice" may not call /orion.v1.Worker/Connect');
    expect(head.registry.list()).toEqual([]);
  });

  it('refuses UpdateActionResult from a client (only nodes\' results enter the cache) but accepts it from an admin', async () => {
    const d = digestOf(Buffer.from('an action'));
    const refused = await updateResult(c.client, d);
    expectCode(refused, Code.PERMISSION_DENIED, /^client "alice" may not call \/build\.bazel\.remote\.execution\.v2\.ActionCache\/UpdateActionResult \(only results produced by the head's own nodes enter the action cache; an operator may start the head with --allow-client-cache-writes\)$/);
    expect(await head.caches.forInstance('').get(d)).toBeUndefined();
    expect((await updateResult(c.admin, d)).res).toBeDefined();
    expect(await head.caches.forInstance('').get(d)).toBeDefined();
  });

  it('runs nothing for an unauthorised Execute, and the same pipeline runs an authorised one', async () => {
    const work = path.join(tmp.dir, 'node');
    await mkdir(path.join(work, 'actions'), { recursive: true });
    const nodeAuth = asRole('node');
    const remote = createGrpcBlobStore({ address: head.address, credentials: nodeAuth.credentials, channelOptions: nodeAuth.channelOptions });
    const controller = new AbortController();
    const loop = startWorkerLoop({
      headAddress: head.address,
      credentials: nodeAuth.credentials,
      channelOptions: nodeAuth.channelOptions,
      nodeId: 'n1',
      slots: 2,
      address: '',
      executor: createExecutor({ local: createDiskBlobStore(path.join(work, 'cas')), remote, runner: createProcessRunner(), workDir: path.join(work, 'actions'), nodeId: 'n1', clock: systemClock, log: silentLogger() }),
      log: silentLogger(),
      signal: controller.signal,
    });
    try {
      const nodeCas = remote;
      const emptyRoot = digestOf(Buffer.alloc(0));
      const markerA = path.join(tmp.dir, 'ran-unauthorised');
      const markerB = path.join(tmp.dir, 'ran-authorised');
      // The node's own credential can upload the action (CAS writes), but not submit it.
      const a = await makeAction(nodeCas, { argv: ['touch', markerA], outputs: [], inputRoot: emptyRoot });
      const b = await makeAction(nodeCas, { argv: ['touch', markerB], outputs: [], inputRoot: emptyRoot });
      await expect.poll(() => head.registry.list('active').length, { timeout: 10_000 }).toBe(1);

      const denied = await execute(c.node, a.actionDigest);
      expectCode(denied, Code.PERMISSION_DENIED);
      expect(denied.items).toEqual([]);
      expect(head.scheduler.queueLength()).toBe(0);
      expect(head.scheduler.runningCount()).toBe(0);

      const ok = await execute(c.client, b.actionDigest);
      expect(ok.err).toBeUndefined();
      expect(existsSync(markerB)).toBe(true);
      // FIFO scheduling: had A been queued, it would have run before B.
      expect(existsSync(markerA)).toBe(false);
    } finally {
      controller.abort();
      await loop.done;
      remote.close();
    }
  });
});

describe('the access policy', () => {
  const tokens = parseTokensFile(`client ${TOKENS.client}\nnode ${TOKENS.node}\nadmin ${TOKENS.admin}\n`, 't');

  it('gives the client role cache writes only with --allow-client-cache-writes', () => {
    expect(createHeadAuth({ tokens, allowClientCacheWrites: false }).allows('client', UPDATE_ACTION_RESULT)).toBe(false);
    expect(createHeadAuth({ tokens, allowClientCacheWrites: true }).allows('client', UPDATE_ACTION_RESULT)).toBe(true);
    expect(createHeadAuth({ tokens, allowClientCacheWrites: false }).allows('node', UPDATE_ACTION_RESULT)).toBe(false);
  });

  it('lets anonymous callers do everything but cache writes when no authentication is configured', () => {
    const open = createHeadAuth({ allowClientCacheWrites: false });
    expect(open.enabled).toBe(false);
    expect(open.authorize({}, '/build.bazel.remote.execution.v2.Execution/Execute').role).toBe('anonymous');
    expect(() => open.authorize({}, UPDATE_ACTION_RESULT)).toThrow(/anonymous "anonymous" may not call/);
    expect(createHeadAuth({ allowClientCacheWrites: true }).authorize({}, UPDATE_ACTION_RESULT).role).toBe('anonymous');
  });

  it('keeps methods no rule names for admins', () => {
    const auth = createHeadAuth({ tokens, allowClientCacheWrites: false });
    expect(auth.allows('client', '/orion.v1.Admin/Drain')).toBe(false);
    expect(auth.allows('node', '/orion.v1.Admin/Drain')).toBe(false);
    expect(auth.allows('admin', '/orion.v1.Admin/Drain')).toBe(true);
  });

  it('authorises HTTP requests with the same credentials (401 without, 403 for a node, ok for a client)', () => {
    const auth = createHeadAuth({ tokens, allowClientCacheWrites: false });
    const req = (authorization?: string) => ({ headers: authorization ? { authorization } : {}, socket: {} }) as unknown as IncomingMessage;
    expect(authorizeHttp(auth, req())).toEqual({ ok: false, status: 401, message: 'this head requires authentication: a bearer token (--token-file or ORION_TOKEN)' });
    expect(authorizeHttp(auth, req(`Bearer ${TOKENS.node}`))).toMatchObject({ ok: false, status: 403 });
    expect(authorizeHttp(auth, req(`Bearer ${TOKENS.client}`))).toMatchObject({ ok: true, principal: { role: 'client', via: 'token' } });
  });

  it('reads roles from a certificate\'s OU and SAN URI, and refuses none or several', () => {
    const cert = (ou: string | string[] | undefined, san?: string) => ({ subject: { CN: 'x', ...(ou ? { OU: ou } : {}) }, subjectaltname: san }) as never;
    expect(certificateRoles(cert('node'))).toEqual(['node']);
    expect(certificateRoles(cert(undefined, 'DNS:x, URI:orion-role:client'))).toEqual(['client']);
    expect(certificateRoles(cert(['admin', 'ops']))).toEqual(['admin']);
    const auth = createHeadAuth({ clientCertificates: true, allowClientCacheWrites: false });
    expect(() => auth.authenticate({ certificate: cert('head') })).toThrow('client certificate "x" names no Orion role');
    expect(() => auth.authenticate({ certificate: cert('node', 'URI:orion-role:client') })).toThrow('client certificate "x" names several roles (client, node)');
  });
});

describe('tokens files and token sources', () => {
  it.each([
    ['client', /tokens:1: expected "ROLE TOKEN \[NAME\]"/],
    [`root ${TOKENS.client}`, /tokens:1: unknown role "root" \(roles: client, node, admin\)/],
    ['client short', /tokens:1: a token must be at least 16 characters long/],
    [`client ${TOKENS.client}\n\nnode ${TOKENS.client}`, /tokens:3: this token is already listed/],
    ['# only a comment\n', /tokens lists no tokens/],
  ])('rejects %j with a message naming the line', (text, message) => {
    let err: unknown;
    try {
      parseTokensFile(text, 'tokens');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OrionError);
    expect((err as OrionError).code).toBe(Code.INVALID_ARGUMENT);
    expect((err as OrionError).message).toMatch(message);
    // The secret itself is never echoed.
    expect((err as OrionError).message).not.toContain(TOKENS.client);
  });

  it('reads a client token from --token-file before ORION_TOKEN, and from ORION_TOKEN otherwise', async () => {
    const t = await tempDir('token');
    try {
      const file = path.join(t.dir, 't');
      await (await import('node:fs/promises')).writeFile(file, `# comment\n${TOKENS.node}\n`);
      expect(readClientToken(file, { ORION_TOKEN: TOKENS.client })).toBe(TOKENS.node);
      expect(readClientToken(undefined, { ORION_TOKEN: ` ${TOKENS.client}\n` })).toBe(TOKENS.client);
      expect(readClientToken(undefined, {})).toBeUndefined();
      expect(() => readClientToken(path.join(t.dir, 'missing'), {})).toThrow(/cannot read --token-file .*missing: ENOENT/);
    } finally {
      await t.cleanup();
    }
  });
});

describe('mutual TLS', () => {
  let head: Head;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let certs: string;
  const mtls = (role: string, caDir = certs) => loadClientAuth({ tlsCert: path.join(caDir, `${role}.crt`), tlsKey: path.join(caDir, `${role}.key`), tlsCa: path.join(certs, 'ca.crt') }, {});

  beforeAll(async () => {
    tmp = await tempDir('mtls');
    certs = path.join(tmp.dir, 'certs');
    await certsInit({ dir: certs, hosts: [], days: 2, force: false });
    const tls = loadServerCredentials({ tlsCert: path.join(certs, 'head.crt'), tlsKey: path.join(certs, 'head.key'), tlsCa: path.join(certs, 'ca.crt') });
    expect(tls).toMatchObject({ tls: true, clientCertificates: true });
    head = await startHead({
      listen: '127.0.0.1:0',
      dataDir: path.join(tmp.dir, 'head'),
      heartbeatTimeoutMs: 10_000,
      log: silentLogger(),
      serverCredentials: tls.credentials,
      auth: createHeadAuth({ clientCertificates: true, allowClientCacheWrites: false }),
    });
  }, 60_000);
  afterAll(async () => {
    await head?.stop();
    await tmp?.cleanup();
  });

  it('takes the role from the client certificate', async () => {
    const client = clients(head.address, mtls('client'));
    const node = clients(head.address, mtls('node'));
    try {
      expect((await listNodes(client)).res).toEqual({ nodes: [] });
      expectCode(await register(client, 'impostor'), Code.PERMISSION_DENIED, 'client "orion-client" may not call /orion.v1.Worker/Register');
      expect(head.registry.list()).toEqual([]);
      // A node certificate registers as the node id of its CN (test/security/node-identity.test.ts).
      expect((await register(node, 'orion-node')).res).toBeDefined();
      expect(head.registry.list().map((n) => n.nodeId)).toEqual(['orion-node']);
      expectCode(await listNodes(node), Code.PERMISSION_DENIED, 'node "orion-node" may not call /orion.v1.Cluster/ListNodes');
    } finally {
      client.close();
      node.close();
    }
  });

  it('refuses, at the handshake, a client without a certificate, one from another CA, an expired one, and plaintext', async () => {
    const other = path.join(tmp.dir, 'other');
    await certsInit({ dir: other, hosts: [], days: 2, force: false });
    // A client certificate from the right CA whose validity ended in 2020.
    const exp = path.join(tmp.dir, 'expired');
    await mkdir(exp, { recursive: true });
    await writeFile(path.join(exp, 'index.txt'), '');
    await writeFile(path.join(exp, 'serial'), '01\n');
    await writeFile(
      path.join(exp, 'ca.cnf'),
      `[ ca ]\ndefault_ca = c\n[ c ]\ndatabase = ${exp}/index.txt\nserial = ${exp}/serial\nnew_certs_dir = ${exp}\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[ p ]\ncommonName = supplied\norganizationalUnitName = optional\n`,
    );
    execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(exp, 'client.key'), '-subj', '/CN=expired/OU=client', '-out', path.join(exp, 'client.csr')], { stdio: 'ignore' });
    execFileSync('openssl', ['ca', '-batch', '-config', path.join(exp, 'ca.cnf'), '-cert', path.join(certs, 'ca.crt'), '-keyfile', path.join(certs, 'ca.key'), '-in', path.join(exp, 'client.csr'), '-out', path.join(exp, 'client.crt'), '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-notext'], { stdio: 'ignore' });
    const cases: ClientAuth[] = [
      loadClientAuth({ tlsCert: path.join(exp, 'client.crt'), tlsKey: path.join(exp, 'client.key'), tlsCa: path.join(certs, 'ca.crt') }, {}),
      loadClientAuth({ tlsCa: path.join(certs, 'ca.crt') }, {}),
      loadClientAuth({ tlsCert: path.join(other, 'client.crt'), tlsKey: path.join(other, 'client.key'), tlsCa: path.join(certs, 'ca.crt') }, {}),
      loadClientAuth({}, {}),
    ];
    for (const auth of cases) {
      const c = clients(head.address, auth);
      try {
        const o = await unaryOutcome((cb) => c.cluster.listNodes({ status: 0 }, new grpc.Metadata(), { deadline: Date.now() + 3_000 }, cb));
        expect([Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED]).toContain(o.err?.code);
      } finally {
        c.close();
      }
    }
  }, 60_000);

  it('writes keys only its owner can read', async () => {
    const { stat } = await import('node:fs/promises');
    for (const k of ['ca', 'head', 'node', 'client', 'admin']) expect((await stat(path.join(certs, `${k}.key`))).mode & 0o077).toBe(0);
    expect(await readFile(path.join(certs, 'ca.crt'), 'utf8')).toMatch(/^-----BEGIN CERTIFICATE-----/);
  });
});
