import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ORION, listNodes, startHeadProcess, startNodeProcess, tempDir, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';
import { NodeStatus } from '../../proto/gen/orion/v1/cluster.js';

// A project whose compiles are slow enough to kill the head in the middle of them.
function writeProject(dir: string, variant: string) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'slow-cc'), '#!/bin/sh\nsleep 1\nexec cc "$@"\n', { mode: 0o755 });
  const names = ['a1', 'a2', 'a3', 'a4', 'a5', 'a6'];
  for (const n of names) writeFileSync(path.join(dir, `${n}.c`), `int ${n}(void) { return ${variant === 'v1' ? 1 : 2}; }\n`);
  writeFileSync(
    path.join(dir, 'main.c'),
    `#include <stdio.h>\n${names.map((n) => `int ${n}(void);`).join('\n')}\nint main(void) { printf("%d\\n", ${names.map((n) => `${n}()`).join(' + ')}); return 0; }\n`,
  );
  writeFileSync(
    path.join(dir, 'Makefile'),
    `CC = ./slow-cc\nOBJS = ${names.map((n) => `${n}.o`).join(' ')} main.o\napp: $(OBJS)\n\t$(CC) -o app $(OBJS)\n%.o: %.c\n\t$(CC) -c $< -o $@\n`,
  );
}

function build(cwd: string, head: string, cache: string, extra: string[] = []): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [ORION, 'build', '--head', head, '--cache-dir', cache, ...extra], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('exit', (code) => resolve({ code, out }));
  });
}

describe('a head killed with -9 in the middle of a build', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let head: Daemon & { address: string };
  const nodes: Daemon[] = [];

  beforeAll(async () => {
    tmp = await tempDir('restart');
    head = await startHeadProcess(path.join(tmp.dir, 'head'), ['--heartbeat-timeout', '2s']);
    for (const id of ['n1', 'n2']) nodes.push(startNodeProcess(head.address, id, path.join(tmp.dir, id), ['--slots', '2']));
    await waitForActiveNodes(head.address, 2);
  });

  afterAll(async () => {
    for (const n of nodes) await n.kill('SIGKILL');
    await head?.kill('SIGKILL');
    await tmp?.cleanup();
  });

  it('comes back with its cache intact, nodes reconnect on their own, and the interrupted build completes', async () => {
    const proj = path.join(tmp.dir, 'proj');
    writeProject(proj, 'v1');
    const first = await build(proj, head.address, path.join(tmp.dir, 'cache1'));
    expect(first.code, first.out).toBe(0);
    expect(execFileSync(path.join(proj, 'app'), { encoding: 'utf8' })).toBe('6\n');

    // Second build of changed sources; kill the head while nodes run its compiles.
    writeProject(proj, 'v2');
    const pending = build(proj, head.address, path.join(tmp.dir, 'cache2'));
    await waitFor('a compile running on a node', async () => (await listNodes(head.address)).some((n) => n.running > 0), 30_000, 20);
    await head.kill('SIGKILL');
    const port = head.address.split(':').at(-1)!;
    await new Promise((r) => setTimeout(r, 500));
    head = await startHeadProcess(path.join(tmp.dir, 'head'), ['--heartbeat-timeout', '2s', '--port', port]);
    await waitFor('both nodes to reconnect', async () => ((await listNodes(head.address, NodeStatus.NODE_STATUS_ACTIVE)).length === 2 ? true : undefined), 30_000);
    const second = await pending;
    expect(second.code, second.out).toBe(0);
    expect(execFileSync(path.join(proj, 'app'), { encoding: 'utf8' })).toBe('12\n');

    // Everything cached before the crash is still a hit: a fresh checkout of v1 at the same path
    // with an empty local cache is served entirely by the restarted head.
    rmSync(proj, { recursive: true, force: true });
    writeProject(proj, 'v1');
    const third = await build(proj, head.address, path.join(tmp.dir, 'cache3'));
    expect(third.code, third.out).toBe(0);
    const lines = third.out.split('\n').filter((l) => /\] (CC|LD) /.test(l));
    expect(lines).toHaveLength(8);
    for (const l of lines) expect(l).toContain('(cached (remote))');
    expect(execFileSync(path.join(proj, 'app'), { encoding: 'utf8' })).toBe('6\n');
  }, 180_000);
});

describe('a machine crash that tore blobs the head had not flushed yet', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  const daemons: Daemon[] = [];

  beforeAll(async () => {
    tmp = await tempDir('crash');
  });

  afterAll(async () => {
    for (const d of daemons) await d.kill('SIGKILL');
    await tmp?.cleanup();
  });

  it('the head rehashes what was written since its last flush, removes the torn blob, and the action that made it runs again', async () => {
    const headDir = path.join(tmp.dir, 'head');
    let head = await startHeadProcess(headDir);
    daemons.push(head);
    // The head records, flushed, that everything before its start is on disk.
    const record = JSON.parse(readFileSync(path.join(headDir, 'synced.json'), 'utf8')) as { bootId: string; syncedBeforeMs: number };
    expect(record.bootId).toBe(readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
    const node = startNodeProcess(head.address, 'c1', path.join(tmp.dir, 'c1'), ['--slots', '2']);
    daemons.push(node);
    await waitForActiveNodes(head.address, 1);

    const proj = path.join(tmp.dir, 'proj');
    writeProject(proj, 'v1');
    const first = await build(proj, head.address, path.join(tmp.dir, 'cache1'), ['--local-max', '0']);
    expect(first.code, first.out).toBe(0);
    const a1 = readFileSync(path.join(proj, 'a1.o'));
    const blob = path.join(headDir, 'cas', createHash('sha256').update(a1).digest('hex').slice(0, 2), createHash('sha256').update(a1).digest('hex'));
    expect(readFileSync(blob)).toEqual(a1);

    // The machine goes down before the head's next flush: the process dies, the record still
    // names the boot before, and one output blob comes back as zeros (what ext4 shows of an
    // unflushed file's blocks).
    await node.kill('SIGKILL');
    await head.kill('SIGKILL');
    writeFileSync(path.join(headDir, 'synced.json'), JSON.stringify({ bootId: 'the-boot-before-the-crash', syncedBeforeMs: record.syncedBeforeMs }));
    chmodSync(blob, 0o644);
    writeFileSync(blob, Buffer.alloc(a1.length));

    head = await startHeadProcess(headDir);
    daemons.push(head);
    expect(existsSync(blob)).toBe(false);
    expect(head.output()).toContain('checking the stored files written since the last flush');
    expect(head.output()).toContain('removed stored files that did not match their digest');
    expect(head.output()).toMatch(/"removed":1\b/);
    const node2 = startNodeProcess(head.address, 'c2', path.join(tmp.dir, 'c2'), ['--slots', '2']);
    daemons.push(node2);
    await waitForActiveNodes(head.address, 1);

    // A fresh checkout with an empty local cache: a1.o's cache entry names a blob that is gone, so
    // a1.c compiles again; everything else is served by the head. Output as before the crash.
    rmSync(proj, { recursive: true, force: true });
    writeProject(proj, 'v1');
    const again = await build(proj, head.address, path.join(tmp.dir, 'cache2'), ['--local-max', '0']);
    expect(again.code, again.out).toBe(0);
    const lines = again.out.split('\n').filter((l) => /\] (CC|LD) /.test(l));
    expect(lines).toHaveLength(8);
    expect(lines.filter((l) => !l.includes('(cached (remote))')).map((l) => l.replace(/^.*\] /, ''))).toEqual([expect.stringMatching(/^CC a1\.o/)]);
    expect(readFileSync(path.join(proj, 'a1.o'))).toEqual(a1);
    expect(readFileSync(blob)).toEqual(a1);
    expect(execFileSync(path.join(proj, 'app'), { encoding: 'utf8' })).toBe('6\n');
  }, 120_000);
});
