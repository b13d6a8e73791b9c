/**
 * The head against misbehaving nodes, all real processes: a node that returns corrupted
 * outputs (`orion node --fault-inject corrupt-outputs`) and a node frozen mid-action
 * (SIGSTOP). In both cases every action must still complete, with correct bytes, on an
 * honest node.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../cli/cli.js';
import { buildTreeFromDisk } from '../../cas/merkle.js';
import { digestOf } from '../../cas/digest.js';
import type { Digest } from '../../cas/types.js';
import { ActionCacheClient, type ActionResult } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { NodeStatus } from '../../proto/gen/orion/v1/cluster.js';
import type { RemoteBlobStore } from '../../proto/grpc-blob-store.js';
import { listNodes, startHeadProcess, startNodeProcess, tempDir, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';
import { isRunning, waitUntilGone } from '../helpers/processes.js';
import { casClient, execute, makeAction } from '../helpers/reapi.js';

async function uploadTree(cas: RemoteBlobStore, dir: string): Promise<Digest> {
  const tree = await buildTreeFromDisk(dir);
  for (const [key, blob] of tree.directories) {
    const [hash, size] = key.split('/');
    await cas.put({ hash: hash!, sizeBytes: Number(size) }, blob);
  }
  for (const [key, file] of tree.files) {
    const [hash, size] = key.split('/');
    await cas.put({ hash: hash!, sizeBytes: Number(size) }, await readFile(file));
  }
  return tree.rootDigest;
}

/** Writes `files` into a fresh directory and uploads it as an input root. */
async function inputRoot(cas: RemoteBlobStore, dir: string, files: Record<string, string>): Promise<Digest> {
  await mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
  return uploadTree(cas, dir);
}

/** The digest of `cc -c unit.c` run here, in `dir`, to compare with what the cluster returned. */
function localCompile(dir: string): Digest {
  execFileSync('cc', ['-c', 'unit.c', '-o', 'local.o'], { cwd: dir });
  return digestOf(readFileSync(path.join(dir, 'local.o')));
}

const unitSource = (i: number) => `int scale_${i}(int x) { return x * ${i + 3} + ${i * 7}; }\nint offset_${i} = ${1000 + i};\n`;

const toDigest = (d: { hash: string; sizeBytes: number } | undefined): Digest => ({ hash: d!.hash, sizeBytes: Number(d!.sizeBytes) });

async function getActionResult(address: string, actionDigest: Digest): Promise<ActionResult> {
  const client = new ActionCacheClient(address, credentials.createInsecure());
  try {
    return await new Promise((resolve, reject) =>
      client.getActionResult({ instanceName: '', actionDigest, inlineStdout: false, inlineStderr: false, inlineOutputFiles: [], digestFunction: 0 }, (err, r) => (err ? reject(err) : resolve(r))),
    );
  } finally {
    client.close();
  }
}

/** Kills each daemon (resuming it first, should it be stopped) and checks that none is left. */
async function killAll(daemons: Daemon[]) {
  const pids = daemons.map((d) => d.proc.pid!).filter((p) => p !== undefined);
  for (const d of daemons) {
    if (d.proc.exitCode === null && d.proc.signalCode === null) d.proc.kill('SIGCONT');
    await d.kill('SIGKILL');
  }
  expect(await waitUntilGone(pids)).toEqual([]);
}

describe('orion node --fault-inject (test only)', () => {
  async function cli(...argv: string[]) {
    let stdout = '';
    let stderr = '';
    const code = await runCli(argv, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
    return { code, stdout, stderr };
  }

  it('rejects an unknown fault with exit 2, naming the flag and the known faults', async () => {
    const r = await cli('node', '--head', '127.0.0.1:50050', '--fault-inject', 'flip-bits');
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('orion: --fault-inject: unknown fault "flip-bits" (known: corrupt-outputs)\n');
  });

  it('is left out of `orion node --help`', async () => {
    const r = await cli('node', '--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--slots <n>');
    expect(r.stdout).not.toContain('--fault-inject');
    expect(r.stdout).not.toContain('corrupt-outputs');
  });
});

describe('a node that returns corrupted outputs', () => {
  const ACTIONS = 8;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let head: Daemon & { address: string };
  let honest: Daemon;
  let corrupt: Daemon;
  let cas: RemoteBlobStore;

  beforeAll(async () => {
    tmp = await tempDir('faulty');
    head = await startHeadProcess(path.join(tmp.dir, 'head'), ['--heartbeat-timeout', '2s']);
    // The corrupting node registers first, so it wins the scheduler's ties: it is sure to get work.
    corrupt = startNodeProcess(head.address, 'corrupt', path.join(tmp.dir, 'corrupt'), ['--slots', '2', '--fault-inject', 'corrupt-outputs']);
    await waitForActiveNodes(head.address, 1);
    honest = startNodeProcess(head.address, 'honest', path.join(tmp.dir, 'honest'), ['--slots', '2']);
    await waitForActiveNodes(head.address, 2);
    cas = casClient(head.address);
  });

  afterAll(async () => {
    cas?.close();
    await killAll([honest, corrupt, head].filter(Boolean));
    await tmp?.cleanup();
  });

  it('is caught: every action completes on the honest node with the bytes of a local compile, the node is quarantined, the cache holds no corrupted blob', async () => {
    expect(corrupt.output()).toContain('FAULT INJECTION ON (--fault-inject corrupt-outputs)');
    const actions = await Promise.all(
      Array.from({ length: ACTIONS }, async (_, i) => {
        const dir = path.join(tmp.dir, `src${i}`);
        const root = await inputRoot(cas, dir, { 'unit.c': unitSource(i) });
        const { actionDigest } = await makeAction(cas, { argv: ['cc', '-c', 'unit.c', '-o', 'unit.o'], outputs: ['unit.o'], inputRoot: root });
        return { dir, actionDigest, expected: localCompile(dir) };
      }),
    );
    // All at once, so both nodes get work.
    const outcomes = await Promise.all(actions.map((a) => execute(head.address, a.actionDigest)));

    for (const [i, out] of outcomes.entries()) {
      expect(out.error, `action ${i}`).toBeUndefined();
      expect(out.response!.status?.code ?? 0, `action ${i}: ${out.response!.status?.message}`).toBe(0);
      const result = out.response!.result!;
      expect(result.exitCode).toBe(0);
      // No result of the corrupting node may be accepted.
      expect(result.executionMetadata?.worker).toBe('honest');
      const obj = result.outputFiles.find((f) => f.path === 'unit.o')!;
      expect(toDigest(obj.digest)).toEqual(actions[i]!.expected);
    }

    // The corrupting node did get work, the head refused its bytes, and the node is quarantined.
    expect(corrupt.output()).toContain('fault injection: the head refused a corrupted upload');
    const nodes = await listNodes(head.address);
    const bad = nodes.find((n) => n.nodeId === 'corrupt')!;
    expect(bad.status).not.toBe(NodeStatus.NODE_STATUS_ACTIVE);
    expect(bad.metadata['orion.quarantined']).toMatch(/^node corrupt reported \d+ output blob\(s\) it never uploaded$/);
    const good = nodes.find((n) => n.nodeId === 'honest')!;
    expect(good.status).toBe(NodeStatus.NODE_STATUS_ACTIVE);
    expect(good.metadata['orion.quarantined']).toBeUndefined();

    // Every action-cache entry names the right bytes, and the CAS holds exactly those bytes.
    for (const a of actions) {
      const cached = await getActionResult(head.address, a.actionDigest);
      const obj = cached.outputFiles.find((f) => f.path === 'unit.o')!;
      expect(toDigest(obj.digest)).toEqual(a.expected);
      const bytes = await cas.get(a.expected);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(a.expected.hash);
    }

    expect(isRunning(head.proc.pid!)).toBe(true);
    expect(head.proc.exitCode).toBeNull();
  });
});

describe('a node frozen mid-action (SIGSTOP)', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let head: Daemon & { address: string };
  const nodes: Daemon[] = [];
  let cas: RemoteBlobStore;

  beforeAll(async () => {
    tmp = await tempDir('frozen');
    // The default 10 s heartbeat timeout: the speculative copy must come well before it.
    head = await startHeadProcess(path.join(tmp.dir, 'head'), ['--straggler-min', '300ms']);
    for (const id of ['n1', 'n2']) nodes.push(startNodeProcess(head.address, id, path.join(tmp.dir, id), ['--slots', '1']));
    await waitForActiveNodes(head.address, 2);
    cas = casClient(head.address);
  });

  afterAll(async () => {
    cas?.close();
    await killAll([...nodes, head].filter(Boolean));
    await tmp?.cleanup();
  });

  it('gets a speculative copy on the other node, which completes long before the frozen node could be declared lost', async () => {
    // The same command (sh build.sh) with different inputs shares the expected duration:
    // a quick run teaches it, then a run that sleeps first is the one that stalls.
    const argv = ['/bin/sh', 'build.sh'];
    const quickDir = path.join(tmp.dir, 'quick');
    const quickRoot = await inputRoot(cas, quickDir, { 'build.sh': 'cc -c unit.c -o unit.o\n', 'unit.c': unitSource(1) });
    const quick = await makeAction(cas, { argv, outputs: ['unit.o'], inputRoot: quickRoot });
    const first = await execute(head.address, quick.actionDigest);
    expect(first.response?.result?.exitCode).toBe(0);

    const slowDir = path.join(tmp.dir, 'slow');
    const slowRoot = await inputRoot(cas, slowDir, { 'build.sh': 'sleep 0.5\ncc -c unit.c -o unit.o\n', 'unit.c': unitSource(2) });
    const slow = await makeAction(cas, { argv, outputs: ['unit.o'], inputRoot: slowRoot });
    expect(slow.commandDigest).toEqual(quick.commandDigest);
    const pending = execute(head.address, slow.actionDigest);
    const busy = await waitFor('the action to be assigned', async () => (await listNodes(head.address)).find((n) => n.running > 0), 10_000, 10);
    const victim = nodes.find((n) => n.proc.spawnargs.includes(busy.nodeId))!;
    victim.proc.kill('SIGSTOP');
    const stoppedAt = Date.now();

    const out = await pending;
    const tookMs = Date.now() - stoppedAt;
    expect(out.error).toBeUndefined();
    const result = out.response!.result!;
    expect(result.exitCode).toBe(0);
    const survivor = busy.nodeId === 'n1' ? 'n2' : 'n1';
    expect(result.executionMetadata?.worker).toBe(survivor);
    expect(toDigest(result.outputFiles.find((f) => f.path === 'unit.o')?.digest)).toEqual(localCompile(slowDir));
    // A speculative copy rescued it, not the heartbeat timeout (10 s, so at least ~6.6 s after the stop).
    expect(tookMs).toBeLessThan(6_000);
    expect(head.output()).toContain('straggler: starting a speculative copy');
    const frozen = (await listNodes(head.address)).find((n) => n.nodeId === busy.nodeId)!;
    expect(frozen.status).toBe(NodeStatus.NODE_STATUS_ACTIVE);

    // Still frozen, its heartbeats stop: the head then stops counting on it.
    await waitFor('the frozen node to be marked inactive', async () => (await listNodes(head.address)).find((n) => n.nodeId === busy.nodeId && n.status !== NodeStatus.NODE_STATUS_ACTIVE), 15_000, 100);
    expect(Date.now() - stoppedAt).toBeGreaterThan(6_000);
    expect(isRunning(head.proc.pid!)).toBe(true);
  });
});
