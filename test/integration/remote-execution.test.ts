import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Status } from '../../proto/gen/google/rpc/status.js';
import { ExecutionStage_Value } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { buildTreeFromDisk } from '../../cas/merkle.js';
import { digestOf } from '../../cas/digest.js';
import { missingFromStatus } from '../../proto/convert.js';
import type { Digest } from '../../cas/types.js';
import { NodeStatus } from '../../proto/gen/orion/v1/cluster.js';
import { listNodes, startHeadProcess, startNodeProcess, tempDir, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';
import { casClient, execute, makeAction } from '../helpers/reapi.js';
import type { RemoteBlobStore } from '../../proto/grpc-blob-store.js';

const HELLO = `#include <stdio.h>\n#include "greet.h"\nint main(void) { printf("%s\\n", GREETING); return 0; }\n`;

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

describe('remote execution through a real head and two real nodes', () => {
  let head: Daemon & { address: string };
  const nodes: Daemon[] = [];
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let cas: RemoteBlobStore;
  let srcDir: string;
  let inputRoot: Digest;

  beforeAll(async () => {
    tmp = await tempDir('reapi');
    head = await startHeadProcess(path.join(tmp.dir, 'head'), ['--heartbeat-timeout', '1s']);
    for (const id of ['n1', 'n2']) nodes.push(startNodeProcess(head.address, id, path.join(tmp.dir, id), ['--slots', '1']));
    await waitForActiveNodes(head.address, 2);
    cas = casClient(head.address);
    srcDir = path.join(tmp.dir, 'src');
    await mkdir(srcDir, { recursive: true });
    await writeFile(path.join(srcDir, 'hello.c'), HELLO);
    await writeFile(path.join(srcDir, 'greet.h'), '#define GREETING "hello from orion"\n');
    inputRoot = await uploadTree(cas, srcDir);
  });

  afterAll(async () => {
    cas?.close();
    for (const n of nodes) await n.kill('SIGKILL');
    await head?.kill('SIGKILL');
    await tmp?.cleanup();
  });

  it('compiles a C file remotely and returns an object byte-identical to a local compile', async () => {
    const { actionDigest } = await makeAction(cas, { argv: ['cc', '-c', 'hello.c', '-o', 'hello.o'], outputs: ['hello.o'], inputRoot });
    const out = await execute(head.address, actionDigest);
    expect(out.error).toBeUndefined();
    expect(out.stages).toContain(ExecutionStage_Value.EXECUTING);
    expect(out.stages.at(-1)).toBe(ExecutionStage_Value.COMPLETED);
    const r = out.response!;
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.cachedResult).toBe(false);
    expect(r.result!.exitCode).toBe(0);
    const file = r.result!.outputFiles.find((f) => f.path === 'hello.o')!;
    const remoteObj = await cas.get({ hash: file.digest!.hash, sizeBytes: Number(file.digest!.sizeBytes) });
    execFileSync('cc', ['-c', 'hello.c', '-o', 'local.o'], { cwd: srcDir });
    const localObj = await readFile(path.join(srcDir, 'local.o'));
    expect(digestOf(remoteObj)).toEqual(digestOf(localObj));
    expect(['n1', 'n2']).toContain(r.result!.executionMetadata?.worker);
  });

  it('serves a second Execute of the same action from the action cache without running anything', async () => {
    const { actionDigest } = await makeAction(cas, { argv: ['cc', '-c', 'hello.c', '-o', 'hello.o'], outputs: ['hello.o'], inputRoot });
    const before = (await listNodes(head.address)).map((n) => n.running);
    const out = await execute(head.address, actionDigest);
    expect(out.response!.cachedResult).toBe(true);
    expect(out.stages).not.toContain(ExecutionStage_Value.EXECUTING);
    expect(out.response!.result!.exitCode).toBe(0);
    expect(before).toEqual([0, 0]);
  });

  it('reports a failing compile with its exit code and diagnostics, and does not cache it', async () => {
    await writeFile(path.join(srcDir, 'bad.c'), 'int main(void) { return missing_symbol; }\n');
    const root = await uploadTree(cas, srcDir);
    const { actionDigest } = await makeAction(cas, { argv: ['cc', '-c', 'bad.c', '-o', 'bad.o'], outputs: ['bad.o'], inputRoot: root });
    const first = await execute(head.address, actionDigest);
    expect(first.response!.result!.exitCode).not.toBe(0);
    const stderr = await cas.get({ hash: first.response!.result!.stderrDigest!.hash, sizeBytes: Number(first.response!.result!.stderrDigest!.sizeBytes) });
    expect(stderr.toString()).toContain("'missing_symbol' undeclared");
    const second = await execute(head.address, actionDigest);
    expect(second.response!.cachedResult).toBe(false);
  });

  it('rejects an Execute whose input root is missing from the CAS with FAILED_PRECONDITION listing the missing digests', async () => {
    const ghost = digestOf(Buffer.from('a directory nobody uploaded'));
    const { actionDigest } = await makeAction(cas, { argv: ['true'], outputs: [], inputRoot: ghost });
    const out = await execute(head.address, actionDigest);
    expect(out.error?.code).toBe(9);
    const bin = out.error!.metadata.get('grpc-status-details-bin')[0] as Buffer;
    expect(missingFromStatus(Status.decode(bin))).toEqual([ghost]);
  });

  it('rejects a malformed action digest with INVALID_ARGUMENT and keeps serving', async () => {
    const out = await execute(head.address, { hash: 'not-a-hash', sizeBytes: 3 });
    expect(out.error?.code).toBe(3);
    expect(out.error?.details).toContain('action_digest');
    const again = await execute(head.address, { hash: 'f'.repeat(64), sizeBytes: -1 });
    expect(again.error?.code).toBe(3);
    const nodesNow = await listNodes(head.address);
    expect(nodesNow).toHaveLength(2);
  });

  it('requeues the action of a node killed mid-run; it completes on the other node', async () => {
    await writeFile(path.join(srcDir, 'slow.sh'), 'sleep 3; echo done > slow.out\n');
    const root = await uploadTree(cas, srcDir);
    const { actionDigest } = await makeAction(cas, { argv: ['/bin/sh', 'slow.sh'], outputs: ['slow.out'], inputRoot: root });
    const pending = execute(head.address, actionDigest);
    const busy = await waitFor('the action to start on a node', async () => (await listNodes(head.address)).find((n) => n.running > 0));
    const victim = nodes.find((n) => n.proc.spawnargs.includes(busy.nodeId))!;
    const killedAt = Date.now();
    await victim.kill('SIGKILL');
    await waitFor('the killed node to be marked inactive', async () => (await listNodes(head.address)).find((n) => n.nodeId === busy.nodeId && n.status !== NodeStatus.NODE_STATUS_ACTIVE), 3_000, 20);
    expect(Date.now() - killedAt).toBeLessThan(1_500);
    const out = await pending;
    expect(out.error).toBeUndefined();
    expect(out.response!.result!.exitCode).toBe(0);
    const survivor = busy.nodeId === 'n1' ? 'n2' : 'n1';
    expect(out.response!.result!.executionMetadata?.worker).toBe(survivor);
    const file = out.response!.result!.outputFiles.find((f) => f.path === 'slow.out')!;
    expect((await cas.get({ hash: file.digest!.hash, sizeBytes: Number(file.digest!.sizeBytes) })).toString()).toBe('done\n');
  });
});
