/**
 * An action's key names the client's compiler (its binary's digest). A node whose `cc` is
 * another binary must not run it: its object would be cached under the client's compiler's
 * key. Real head, real nodes, real compiles; the odd node sees another /usr/bin/cc through a
 * bind mount in a mount namespace of its own (a copy of the same gcc with one byte appended:
 * it compiles the same, but it is not the binary the key names).
 */
import { spawn } from 'node:child_process';
import { copyFileSync, appendFileSync, chmodSync, realpathSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFixture, orionBuild, run, sh, snapshot } from '../helpers/build.js';
import { ORION, startHeadProcess, startNodeProcess, tempDir, waitFor, waitForActiveNodes, listNodes, type Daemon } from '../helpers/daemons.js';
import { NodeStatus } from '../../proto/gen/orion/v1/cluster.js';

let work: { dir: string; cleanup: () => Promise<void> };
let head: Daemon & { address: string };
let good: Daemon;
let oddOutput = '';
let odd: ReturnType<typeof spawn>;

beforeAll(async () => {
  work = await tempDir('toolchain');
  const compiler = realpathSync('/usr/bin/cc');
  const other = path.join(work.dir, 'other-cc');
  copyFileSync(compiler, other);
  appendFileSync(other, Buffer.from([0]));
  chmodSync(other, 0o755);
  head = await startHeadProcess(path.join(work.dir, 'head'), ['--heartbeat-timeout', '2s']);
  odd = spawn(
    'unshare',
    ['--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" "$1" && shift && exec "$@"', other, compiler, process.execPath, ORION, 'node', '--head', head.address, '--id', 'odd', '--work-dir', path.join(work.dir, 'odd'), '--slots', '2', '--log-level', 'debug'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  odd.stdout!.on('data', (d) => (oddOutput += d));
  odd.stderr!.on('data', (d) => (oddOutput += d));
  good = startNodeProcess(head.address, 'good', path.join(work.dir, 'good'), ['--slots', '2']);
  await waitForActiveNodes(head.address, 2).catch((err: Error) => {
    throw new Error(`${err.message}\nodd node:\n${oddOutput}\ngood node:\n${good.output()}`);
  });
}, 60_000);

afterAll(async () => {
  odd?.kill('SIGKILL');
  await good?.kill('SIGKILL');
  await head?.kill('SIGKILL');
  await work?.cleanup();
});

describe('nodes with another compiler than the client', () => {
  it('runs every compile on the node whose compiler is the one the key names, with the objects make builds', async () => {
    const project = await copyFixture('make-project', path.join(work.dir, 'p1'));
    const b = await orionBuild(project, { cacheDir: path.join(work.dir, 'cache1'), head: head.address });
    expect(b.stderr).toMatch(/build finished/);
    expect(b.summary.where.good).toBeGreaterThan(0);
    // Steps that run other tools (ar, the generator) may run on the odd node; nothing that runs cc.
    const oddRuns = [...oddOutput.matchAll(/"argv":(\[[^\]]*\]).*"msg":"running action"/g)].map((m) => JSON.parse(m[1]!) as string[]);
    expect(oddRuns.filter((argv) => argv[0] === 'cc')).toEqual([]);
    // The odd node was offered work and refused it, naming both binaries.
    expect(oddOutput).toMatch(/node odd runs cc as \/usr\/bin\/cc \(sha256 [0-9a-f]{12}, with its cc1, as and ld: [0-9a-f]{12}\), not the client's \/usr\/bin\/cc \(sha256 [0-9a-f]{12}\)/);
    // Byte for byte what make builds at the same path.
    const outputs = ['src/hello.o', 'src/calc.o', 'lib/add.o', 'lib/libutil.a', 'hello', 'calc'].map((f) => path.join(project, f));
    const ours = await snapshot(outputs);
    await rm(project, { recursive: true, force: true });
    await copyFixture('make-project', project);
    expect((await sh('make -s', project)).code).toBe(0);
    const theirs = await snapshot(outputs);
    expect(ours.size).toBe(outputs.length);
    expect([...ours.values()]).toEqual([...theirs.values()]);
  }, 120_000);

  it("runs here what no node can run with the right compiler, saying so once; the cluster builds the rest, with make's bytes", async () => {
    await good.kill('SIGKILL');
    await waitFor('the good node to be lost', async () => (await listNodes(head.address, NodeStatus.NODE_STATUS_ACTIVE)).length === 1, 20_000);
    const project = await copyFixture('make-project', path.join(work.dir, 'p3'));
    const b = await orionBuild(project, { cacheDir: path.join(work.dir, 'cache3'), head: head.address });
    expect(b.code, b.stderr).toBe(0);
    const told = b.stderr.match(/runs here, and every action after it that no node can run: .*no node runs the compiler this action's key names \(\/usr\/bin\/cc\).*not the client's \/usr\/bin\/cc/g) ?? [];
    expect(told).toHaveLength(1);
    // The compiles and links ran here; what needs no cc (ar, the generator) may still run on the odd node.
    expect(b.summary.where.local).toBeGreaterThan(0);
    const oddRuns = [...oddOutput.matchAll(/"argv":(\[[^\]]*\]).*"msg":"running action"/g)].map((m) => JSON.parse(m[1]!) as string[]);
    expect(oddRuns.filter((argv) => argv[0] === 'cc')).toEqual([]);
    expect((await run([path.join(project, 'hello')], { cwd: project })).code).toBe(0);
    // Byte for byte what make builds at the same path.
    const outputs = ['src/hello.o', 'lib/libutil.a', 'hello'].map((f) => path.join(project, f));
    const ours = await snapshot(outputs);
    await rm(project, { recursive: true, force: true });
    await copyFixture('make-project', project);
    expect((await sh('make -s', project)).code).toBe(0);
    expect([...(await snapshot(outputs)).values()]).toEqual([...ours.values()]);
  }, 120_000);
});
