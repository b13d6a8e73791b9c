import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ORION, listNodes, startHeadProcess, startNodeProcess, tempDir, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';
import { processesMatching } from '../helpers/processes.js';

const MARKER = '47.25';

describe('Ctrl-C on orion build --head', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let head: Daemon & { address: string };
  const nodes: Daemon[] = [];

  beforeAll(async () => {
    tmp = await tempDir('cancel');
    head = await startHeadProcess(path.join(tmp.dir, 'head'), ['--heartbeat-timeout', '2s']);
    for (const id of ['n1', 'n2']) nodes.push(startNodeProcess(head.address, id, path.join(tmp.dir, id), ['--slots', '2']));
    await waitForActiveNodes(head.address, 2);
  });

  afterAll(async () => {
    for (const n of nodes) await n.kill('SIGKILL');
    await head?.kill('SIGKILL');
    await tmp?.cleanup();
  });

  it('cancels its running actions on the nodes within a second, leaving no process and no action directory', async () => {
    const proj = path.join(tmp.dir, 'proj');
    mkdirSync(proj, { recursive: true });
    // Compiles that would take a long time: each runs a long sleep first.
    writeFileSync(path.join(proj, 'slow-cc'), `#!/bin/sh\nsleep ${MARKER}\nexec cc "$@"\n`, { mode: 0o755 });
    for (const n of ['a', 'b', 'c']) writeFileSync(path.join(proj, `${n}.c`), `int ${n}(void) { return 1; }\n`);
    writeFileSync(path.join(proj, 'Makefile'), 'CC = ./slow-cc\nall: a.o b.o c.o\n%.o: %.c\n\t$(CC) -c $< -o $@\n');
    const build = spawn(process.execPath, [ORION, 'build', '--head', head.address, '--cache-dir', path.join(tmp.dir, 'cache')], { cwd: proj, stdio: 'ignore' });
    const exited = new Promise<number | null>((r) => build.on('exit', (code) => r(code)));
    await waitFor('compiles running on the nodes', async () => ((await listNodes(head.address)).reduce((n, x) => n + x.running, 0) >= 3 ? true : undefined), 30_000, 20);
    await waitFor('the compiles to be sleeping in their sandboxes', () => (processesMatching(`sleep ${MARKER}`).length >= 3 ? true : undefined), 30_000, 20);

    const interruptedAt = Date.now();
    build.kill('SIGINT');
    await waitFor('the nodes to run nothing', async () => ((await listNodes(head.address)).every((n) => n.running === 0) ? true : undefined), 5_000, 20);
    await waitFor('the sandboxed sleeps to be gone', () => (processesMatching(`sleep ${MARKER}`).length === 0 ? true : undefined), 5_000, 20);
    expect(Date.now() - interruptedAt).toBeLessThan(1_500);
    expect(await exited).not.toBe(0);
    for (const id of ['n1', 'n2']) {
      await waitFor(`${id}'s action directories to be removed`, () => (readdirSync(path.join(tmp.dir, id, 'actions')).length === 0 ? true : undefined), 5_000, 20);
    }
  }, 90_000);
});
