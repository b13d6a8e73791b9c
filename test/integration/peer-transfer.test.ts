/**
 * Peer-to-peer input transfer (issue #4) with a real head and real nodes:
 * a node fetches the outputs another node produced from that node's CAS
 * (its peer endpoint), falls back to the head when the peer cannot be
 * reached, and the build reports the bytes that went each way. The peer
 * endpoint serves reads only, and only to holders of the head's peer token.
 *
 * In the main cluster every node advertises a counting TCP proxy in front of
 * its real peer endpoint (`--peer-address`), so the tests see the bytes each
 * node's endpoint actually served, independently of what the nodes report.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Metadata, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContentAddressableStorageClient, type BatchReadBlobsResponse } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { ByteStreamClient } from '../../proto/gen/google/bytestream/bytestream.js';
import { BuildEvent_Kind, BuildRequest, BuildsClient, DagAction, type BuildEvent, type BuildSummary } from '../../proto/gen/orion/v1/build.js';
import { WorkerClient, type RegisterResponse } from '../../proto/gen/orion/v1/worker.js';
import { digestOf } from '../../cas/digest.js';
import type { Digest } from '../../cas/types.js';
import type { RemoteBlobStore } from '../../proto/grpc-blob-store.js';
import { formatBytes } from '../../cli/build/build-report.js';
import { copyFixture, orionBuild, run, scratch } from '../helpers/build.js';
import { listNodes, startHeadProcess, startNodeProcess, tempDir, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';
import { casClient, uploadCommand, uploadTree } from '../helpers/reapi.js';
import { bearer, streamOutcome, unaryOutcome } from '../security/helpers.js';

const { STARTED, FINISHED, BUILD_FINISHED } = BuildEvent_Kind;

/**
 * Objects of known, clearly measurable sizes: each holds a read-only array of
 * `bytes` bytes (only its ends set, so it compiles fast). `big` is over 2 MiB,
 * which peers serve through ByteStream rather than BatchReadBlobs.
 */
const PARTS: Record<string, number> = { alpha: 150_000, beta: 180_000, big: 2_600_000 };
const COMPILES = ['main', ...Object.keys(PARTS)];

function sources(salt: string): Record<string, string> {
  const files: Record<string, string> = {
    'parts.h': Object.keys(PARTS).map((p) => `int part_${p}(void);\n`).join(''),
    'main.c': `#include <stdio.h>\n#include "parts.h"\nconst char build_salt[] = "${salt}";\nint main(void) { printf("parts %d %d %d\\n", ${Object.keys(PARTS).map((p) => `part_${p}()`).join(', ')}); return 0; }\n`,
  };
  for (const [p, n] of Object.entries(PARTS)) {
    files[`${p}.c`] = `const char ${p}_salt[] = "${salt}";\nconst unsigned char ${p}_data[${n}] = { [0] = 1, [${n - 1}] = 7 };\nint part_${p}(void) { return ${p}_data[0] + ${p}_data[${n - 1}] + ${n}; }\n`;
  }
  return files;
}
const EXPECTED_OUTPUT = `parts ${Object.values(PARTS).map((n) => n + 8).join(' ')}\n`;

/** A TCP proxy in front of a node's peer endpoint that counts the bytes the endpoint sent. */
interface CountingProxy {
  address: string;
  /** The real endpoint (set once the node said where it listens). */
  upstream?: string;
  served: number;
  connections: number;
  /** From now on nothing passes either way, on open connections or new ones: the peer hangs. */
  freeze(): void;
  /** Stops accepting and cuts every connection: the advertised address is dead from then on. */
  close(): Promise<void>;
}

async function startCountingProxy(): Promise<CountingProxy> {
  const sockets = new Set<net.Socket>();
  const pairs = new Set<[net.Socket, net.Socket]>();
  let frozen = false;
  const server = net.createServer((client) => {
    proxy.connections++;
    if (frozen) {
      // Accepted, and never answered.
      sockets.add(client);
      client.on('close', () => sockets.delete(client));
      client.on('error', () => client.destroy());
      return;
    }
    const [host, port] = proxy.upstream ? [proxy.upstream.slice(0, proxy.upstream.lastIndexOf(':')), Number(proxy.upstream.slice(proxy.upstream.lastIndexOf(':') + 1))] : ['127.0.0.1', 1];
    const up = net.connect(port, host);
    for (const s of [client, up]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        up.destroy();
      });
    }
    up.on('data', (d: Buffer) => (proxy.served += d.length));
    client.pipe(up);
    up.pipe(client);
    const pair: [net.Socket, net.Socket] = [client, up];
    pairs.add(pair);
    up.on('close', () => pairs.delete(pair));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy: CountingProxy = {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    served: 0,
    connections: 0,
    freeze() {
      frozen = true;
      for (const [client, up] of pairs) {
        client.unpipe(up);
        up.unpipe(client);
        up.removeAllListeners('data');
        up.pause();
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  return proxy;
}

/** The node's "serving this node's CAS to peers" log line (pino JSON): advertised and bound addresses. */
function peerLogLine(node: Daemon): { address: string; listening: string } | undefined {
  for (const line of node.output().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const rec = JSON.parse(line) as { msg?: string; address?: string; listening?: string };
      if (rec.msg === "serving this node's CAS to peers" && rec.address && rec.listening) return { address: rec.address, listening: rec.listening };
    } catch {
      // Not a log record.
    }
  }
  return undefined;
}

/** Sums a debug-level field over the node's "action finished" log lines after `from` characters of output. */
function loggedBytes(node: Daemon, from: number, field: 'peerBytes' | 'headBytes'): number {
  let n = 0;
  for (const line of node.output().slice(from).split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const rec = JSON.parse(line) as Record<string, unknown>;
      if (rec.msg === 'action finished') n += Number(rec[field] ?? 0);
    } catch {
      // A line cut by the slice, or not a log record.
    }
  }
  return n;
}

interface Cluster {
  head: Daemon & { address: string };
  nodes: Map<string, Daemon>;
  cas: RemoteBlobStore;
  client: BuildsClient;
  stop(): Promise<void>;
}

async function startCluster(dir: string, nodeArgs: Record<string, string[]>): Promise<Cluster> {
  const head = await startHeadProcess(path.join(dir, 'head'), ['--heartbeat-timeout', '2s']);
  const nodes = new Map<string, Daemon>();
  const stop = async () => {
    for (const n of nodes.values()) await n.kill('SIGKILL');
    await head.kill('SIGKILL');
  };
  for (const [id, extra] of Object.entries(nodeArgs)) {
    nodes.set(id, startNodeProcess(head.address, id, path.join(dir, id), ['--slots', '1', '--log-level', 'debug', ...extra]));
  }
  try {
    await waitForActiveNodes(head.address, nodes.size);
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\nhead:\n${head.output()}\nnodes:\n${[...nodes.values()].map((n) => n.output()).join('\n')}`);
  }
  const cas = casClient(head.address);
  const client = new BuildsClient(head.address, credentials.createInsecure());
  return {
    head,
    nodes,
    cas,
    client,
    async stop() {
      client.close();
      cas.close();
      await stop();
    },
  };
}



/**
 * Compiles (each sleeping a little first, so that with one slot per node
 * they spread over both nodes) and a link that consumes every object.
 */
async function program(cas: RemoteBlobStore, salt: string): Promise<{ sourceRoot: Digest; actions: DagAction[] }> {
  const src = sources(salt);
  const actions: DagAction[] = [];
  for (const id of COMPILES) {
    actions.push(
      DagAction.fromPartial({
        id,
        label: `CC ${id}.o`,
        commandDigest: await uploadCommand(cas, ['sh', '-c', `sleep 0.3 && cc -c ${id}.c -o ${id}.o`], [`${id}.o`]),
        inputRootDigest: await uploadTree(cas, { [`${id}.c`]: src[`${id}.c`]!, 'parts.h': src['parts.h']! }),
      }),
    );
  }
  actions.push(
    DagAction.fromPartial({
      id: 'link',
      label: 'LD prog',
      commandDigest: await uploadCommand(cas, ['cc', ...COMPILES.map((o) => `${o}.o`), '-o', 'prog'], ['prog']),
      inputRootDigest: await uploadTree(cas, {}),
      producedInputs: COMPILES.map((o) => ({ path: `${o}.o`, producer: o })),
    }),
  );
  return { sourceRoot: await uploadTree(cas, src), actions };
}

interface Outcome {
  events: BuildEvent[];
  error?: ServiceError;
}

function build(client: BuildsClient, req: { sourceRoot: Digest; actions: DagAction[] }): Promise<Outcome> {
  const outcome: Outcome = { events: [] };
  return new Promise((resolve) => {
    const call = client.build(BuildRequest.fromPartial(req));
    call.on('data', (ev: BuildEvent) => outcome.events.push(ev));
    call.on('error', (err: ServiceError) => (outcome.error = err));
    call.on('close', () => resolve(outcome));
  });
}

/** Where each action ran and the objects the compiles made, from the build's events. */
function analyse(out: Outcome) {
  expect(out.error).toBeUndefined();
  const last = out.events.at(-1)!;
  expect(last.kind).toBe(BUILD_FINISHED);
  const summary = last.summary as BuildSummary;
  expect(summary).toMatchObject({ ok: true, total: COMPILES.length + 1, executed: COMPILES.length + 1, cacheHits: 0, failed: 0 });
  const finished = (id: string) => out.events.find((e) => e.actionId === id && e.kind === FINISHED)!;
  const ranOn = (id: string) => finished(id).nodeId || out.events.filter((e) => e.actionId === id && e.kind === STARTED).at(-1)!.nodeId;
  const objects = COMPILES.map((id) => {
    const f = finished(id).result!.outputFiles.find((o) => o.path === `${id}.o`)!;
    return { id, node: ranOn(id), digest: { hash: f.digest!.hash, sizeBytes: Number(f.digest!.sizeBytes) } };
  });
  const linkNode = out.events.find((e) => e.actionId === 'link' && e.kind === STARTED)!.nodeId;
  expect(ranOn('link')).toBe(linkNode);
  const foreign = objects.filter((o) => o.node !== linkNode);
  const prog = finished('link').result!.outputFiles.find((o) => o.path === 'prog')!.digest!;
  return { summary, objects, linkNode, foreign, foreignBytes: foreign.reduce((n, o) => n + o.digest.sizeBytes, 0), prog: { hash: prog.hash, sizeBytes: Number(prog.sizeBytes) } };
}

async function runProgram(cas: RemoteBlobStore, d: Digest, dir: string): Promise<string> {
  const file = path.join(dir, `prog-${d.hash.slice(0, 12)}`);
  writeFileSync(file, await cas.get(d), { mode: 0o755 });
  return execFileSync(file, { encoding: 'utf8' });
}

describe('nodes fetch inputs made on another node from that node, falling back to the head', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let cluster: Cluster;
  const proxies = new Map<string, CountingProxy>();
  const NODES = ['n1', 'n2'];

  beforeAll(async () => {
    tmp = await tempDir('peer');
    for (const id of NODES) proxies.set(id, await startCountingProxy());
    cluster = await startCluster(tmp.dir, Object.fromEntries(NODES.map((id) => [id, ['--peer-address', proxies.get(id)!.address]])));
    for (const id of NODES) {
      const line = await waitFor(`${id}'s peer endpoint log line`, () => peerLogLine(cluster.nodes.get(id)!));
      expect(line.address).toBe(proxies.get(id)!.address);
      proxies.get(id)!.upstream = line.listening;
    }
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
    for (const p of proxies.values()) await p.close();
    await tmp?.cleanup();
  });

  const served = () => Object.fromEntries([...proxies].map(([id, p]) => [id, p.served]));

  it('registers each node with the peer address it advertises', async () => {
    const nodes = await listNodes(cluster.head.address);
    expect(Object.fromEntries(nodes.map((n) => [n.nodeId, n.address]))).toEqual(Object.fromEntries(NODES.map((id) => [id, proxies.get(id)!.address])));
  });

  it("links on one node with the other node's objects read from that node's CAS, reporting exactly their bytes as peer bytes", async () => {
    const before = served();
    const { summary, objects, linkNode, foreign, foreignBytes, prog } = analyse(await build(cluster.client, await program(cluster.cas, 'peers')));
    // The compiles ran on both nodes (one slot each), so the link needed objects made elsewhere.
    expect(new Set(objects.map((o) => o.node))).toEqual(new Set(NODES));
    expect(foreign.length).toBeGreaterThan(0);
    expect(foreignBytes).toBeGreaterThan(100 * 1024);

    // Only the link had inputs made by another node: its peer bytes are exactly the foreign objects.
    expect(summary.peerBytes).toBe(foreignBytes);
    // The head served the sources and directories, and not the objects again.
    expect(summary.headBytes).toBeGreaterThan(0);
    expect(summary.headBytes).toBeLessThan(Math.min(...Object.values(PARTS)));
    // The nodes' own logs agree with the summary.
    expect(loggedBytes(cluster.nodes.get(linkNode)!, 0, 'peerBytes')).toBe(foreignBytes);

    // The bytes went through the producing node's peer endpoint, and nothing was read from the linking node's.
    const producer = NODES.find((id) => id !== linkNode)!;
    const through = proxies.get(producer)!.served - before[producer]!;
    expect(through).toBeGreaterThanOrEqual(foreignBytes);
    expect(through).toBeLessThan(foreignBytes * 1.05 + 64 * 1024);
    expect(proxies.get(linkNode)!.served - before[linkNode]!).toBe(0);

    expect(await runProgram(cluster.cas, prog, tmp.dir)).toBe(EXPECTED_OUTPUT);
  }, 60_000);

  it('rejects peer reads without the peer token or with a wrong one, refuses writes, and the node keeps working', async () => {
    const target = NODES[0]!;
    const endpoint = peerLogLine(cluster.nodes.get(target)!)!.listening;
    const cas = new ContentAddressableStorageClient(endpoint, credentials.createInsecure());
    const bytestream = new ByteStreamClient(endpoint, credentials.createInsecure());
    const worker = new WorkerClient(cluster.head.address, credentials.createInsecure());
    try {
      // A blob the node holds: the parts header every compile had in its input tree.
      const header = Buffer.from(sources('peers')['parts.h']!);
      const d = digestOf(header);
      const read = (token?: string) =>
        unaryOutcome<BatchReadBlobsResponse>((cb) => cas.batchReadBlobs({ instanceName: '', digests: [d], acceptableCompressors: [], digestFunction: 0 }, token === undefined ? new Metadata() : bearer(token), cb));

      const none = await read();
      expect(none.err?.code).toBe(status.UNAUTHENTICATED);
      expect(none.err?.details).toBe('a peer endpoint needs the peer token of the head this node is registered with');
      // The right length, wrong contents: the comparison is on the whole token.
      const wrong = await read('0'.repeat(64));
      expect(wrong.err?.code).toBe(status.UNAUTHENTICATED);
      expect((await read('')).err?.code).toBe(status.UNAUTHENTICATED);
      const stream = await streamOutcome(bytestream.read({ resourceName: `blobs/${d.hash}/${d.sizeBytes}`, readOffset: 0, readLimit: 0 }));
      expect(stream.err?.code).toBe(status.UNAUTHENTICATED);
      expect(stream.items).toEqual([]);
      const findMissing = await unaryOutcome((cb) => cas.findMissingBlobs({ instanceName: '', blobDigests: [d], digestFunction: 0 }, cb));
      expect(findMissing.err?.code).toBe(status.UNAUTHENTICATED);

      // Writes are refused whatever the token.
      const write = await unaryOutcome((cb) => cas.batchUpdateBlobs({ instanceName: '', requests: [{ digest: d, data: header, compressor: 0 }], digestFunction: 0 }, cb));
      expect(write.err?.code).toBe(status.UNIMPLEMENTED);
      expect(write.err?.details).toBe("a node's peer endpoint only serves reads (not BatchUpdateBlobs)");

      // With the token the head hands out at registration, the same read succeeds: the refusals above were about the token.
      const reg = await unaryOutcome<RegisterResponse>((cb) => worker.register({ nodeId: 'token-probe', address: '', slots: 1, platform: { properties: [] }, metadata: {} }, cb));
      expect(reg.err).toBeUndefined();
      expect(reg.res!.peerToken).toMatch(/^[0-9a-f]{64}$/);
      const ok = await read(reg.res!.peerToken);
      expect(ok.err).toBeUndefined();
      expect(ok.res!.responses.map((r) => [r.status?.code, Buffer.from(r.data).toString()])).toEqual([[0, header.toString()]]);
      const writeWithToken = await unaryOutcome((cb) => cas.batchUpdateBlobs({ instanceName: '', requests: [{ digest: d, data: header, compressor: 0 }], digestFunction: 0 }, bearer(reg.res!.peerToken), cb));
      expect(writeWithToken.err?.code).toBe(status.UNIMPLEMENTED);
    } finally {
      cas.close();
      bytestream.close();
      worker.close();
    }

    // The node is still up and still runs actions (fresh sources: nothing comes from the cache).
    expect(cluster.nodes.get(target)!.proc.exitCode).toBeNull();
    const { summary, objects, linkNode, foreignBytes, prog } = analyse(await build(cluster.client, await program(cluster.cas, 'after-probes')));
    expect([...objects.map((o) => o.node), linkNode]).toContain(target);
    expect(summary.peerBytes).toBe(foreignBytes);
    expect(await runProgram(cluster.cas, prog, tmp.dir)).toBe(EXPECTED_OUTPUT);
  }, 60_000);

  it('`orion build --head` on the Make fixture prints how many input bytes the nodes fetched from each other and from the head', async () => {
    const base = await scratch('peer-make');
    try {
      const dir = await copyFixture('make-project', path.join(base, 'proj'));
      const before = served();
      const logged = new Map([...cluster.nodes].map(([id, n]) => [id, n.output().length]));
      const b = await orionBuild(dir, { head: cluster.head.address, cacheDir: path.join(base, 'cache') });
      expect(b.code, b.stderr).toBe(0);
      expect(b.summary.ok).toBe(true);
      const m = /^orion: nodes fetched (.+) of inputs from each other and (.+) from the head$/m.exec(b.stderr);
      expect(m, b.stderr).not.toBeNull();
      // Every compile and link ran on a node and compiles spread over both (one slot each), so some inputs crossed.
      const peer = [...cluster.nodes].reduce((n, [id, d]) => n + loggedBytes(d, logged.get(id)!, 'peerBytes'), 0);
      const head = [...cluster.nodes].reduce((n, [id, d]) => n + loggedBytes(d, logged.get(id)!, 'headBytes'), 0);
      expect(peer).toBeGreaterThan(0);
      expect(m![1]).toBe(formatBytes(peer));
      expect(m![2]).toBe(formatBytes(head));
      const through = NODES.reduce((n, id) => n + proxies.get(id)!.served - before[id]!, 0);
      expect(through).toBeGreaterThanOrEqual(peer);
      const hello = await run(['./hello'], { cwd: dir });
      expect(hello.stdout).toBe('HELLO FROM THE ORION MAKE FIXTURE (version 1.4.2)\nwords: 6\n');
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  }, 120_000);

  // Last in this cluster: the proxies stay frozen.
  it("falls back to the head when the producing node's peer endpoint accepts connections but stops answering", async () => {
    for (const p of proxies.values()) p.freeze();
    const started = Date.now();
    const { summary, objects, foreignBytes, prog } = analyse(await build(cluster.client, await program(cluster.cas, 'frozen-peer')));
    expect(new Set(objects.map((o) => o.node))).toEqual(new Set(NODES));
    expect(summary.peerBytes).toBe(0);
    expect(summary.headBytes).toBeGreaterThanOrEqual(foreignBytes);
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(await runProgram(cluster.cas, prog, tmp.dir)).toBe(EXPECTED_OUTPUT);
  }, 60_000);
});

describe('nodes whose peer addresses are dead', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let cluster: Cluster;
  // d1 advertises a port nothing listens on (connection refused); d2 and d3 ports that accept and hang up at once,
  // so that whichever node links, at least one unreachable producer shows the attempt.
  const REFUSED = '127.0.0.1:1';
  const hangUps = new Map<string, CountingProxy>();

  beforeAll(async () => {
    tmp = await tempDir('peer-dead');
    for (const id of ['d2', 'd3']) hangUps.set(id, await startCountingProxy());
    cluster = await startCluster(tmp.dir, { d1: ['--peer-address', REFUSED], d2: ['--peer-address', hangUps.get('d2')!.address], d3: ['--peer-address', hangUps.get('d3')!.address] });
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
    for (const p of hangUps.values()) await p.close();
    await tmp?.cleanup();
  });

  it('have their outputs fetched from the head instead: the build succeeds with no peer bytes and the head bytes covering them', async () => {
    const nodes = await listNodes(cluster.head.address);
    expect(Object.fromEntries(nodes.map((n) => [n.nodeId, n.address]))).toEqual({ d1: REFUSED, d2: hangUps.get('d2')!.address, d3: hangUps.get('d3')!.address });
    const { summary, objects, linkNode, foreign, foreignBytes, prog } = analyse(await build(cluster.client, await program(cluster.cas, 'dead-peer')));
    // Four compiles on three one-slot nodes: every node made objects, so two unreachable nodes made the link's foreign ones.
    expect(new Set(objects.map((o) => o.node))).toEqual(new Set(['d1', 'd2', 'd3']));
    expect(foreignBytes).toBeGreaterThan(100 * 1024);
    expect(summary.peerBytes).toBe(0);
    expect(summary.headBytes).toBeGreaterThanOrEqual(foreignBytes);
    // The linking node itself fetched them from the head.
    expect(loggedBytes(cluster.nodes.get(linkNode)!, 0, 'peerBytes')).toBe(0);
    expect(loggedBytes(cluster.nodes.get(linkNode)!, 0, 'headBytes')).toBeGreaterThanOrEqual(foreignBytes);
    // ... after trying the producers' endpoints first (attempts at 127.0.0.1:1 leave no trace; the hang-ups count them).
    const tried = [...new Set(foreign.map((o) => o.node))].filter((id) => hangUps.has(id));
    expect(tried.length).toBeGreaterThan(0);
    for (const id of tried) expect(hangUps.get(id)!.connections, id).toBeGreaterThan(0);
    for (const p of hangUps.values()) expect(p.served).toBe(0);
    expect(await runProgram(cluster.cas, prog, tmp.dir)).toBe(EXPECTED_OUTPUT);
  }, 60_000);
});
