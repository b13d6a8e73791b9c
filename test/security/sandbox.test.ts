/**
 * Containment of what actions start: a node shutting down mid-action leaves no
 * process and no action directory behind, with and without bubblewrap; a node
 * without a working bubblewrap says so, or refuses to start with --require-sandbox.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ExecutionClient } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { digestOf } from '../../cas/digest.js';
import { REPO, startHeadProcess, startNodeProcess, startOrion, tempDir, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';
import { isRunning, waitUntilGone } from '../helpers/processes.js';
import { casClient, execute, makeAction } from '../helpers/reapi.js';

/** Host pids of live processes with `marker` as an argument (across PID namespaces). */
function pidsWithArg(marker: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').includes(marker) && isRunning(Number(entry))) out.push(Number(entry));
    } catch {
      // Gone while we looked.
    }
  }
  return out;
}

let tmp: { dir: string; cleanup: () => Promise<void> };
const daemons: Daemon[] = [];
beforeEach(async () => {
  tmp = await tempDir('sec-sandbox');
});
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.kill('SIGKILL')));
  await tmp.cleanup();
});

/** Submits an action and keeps its Execute stream open; returns a function that cancels it. */
async function submit(address: string, argv: string[]): Promise<() => void> {
  const cas = casClient(address);
  try {
    const { actionDigest } = await makeAction(cas, { argv, outputs: [], inputRoot: digestOf(Buffer.alloc(0)) });
    const client = new ExecutionClient(address, grpc.credentials.createInsecure());
    const call = client.execute({ instanceName: '', skipCacheLookup: true, actionDigest, digestFunction: 0, inlineStdout: false, inlineStderr: false, inlineOutputFiles: [] });
    call.on('error', () => undefined);
    call.on('data', () => undefined);
    return () => {
      call.cancel();
      client.close();
    };
  } finally {
    cas.close();
  }
}

describe('node shutdown', () => {
  it.each([
    ['under bubblewrap', [] as string[], 'bwrap'],
    ['in plain per-action directories (--no-sandbox)', ['--no-sandbox'], 'process'],
  ])('SIGTERM while an action runs `sleep & sleep` leaves no process and no action directory, %s', async (_how, flags, kind) => {
    const head = await startHeadProcess(path.join(tmp.dir, 'head'));
    daemons.push(head);
    const work = path.join(tmp.dir, 'node');
    const node = startNodeProcess(head.address, 'n1', work, ['--slots', '1', ...flags]);
    daemons.push(node);
    await waitForActiveNodes(head.address, 1);
    expect(node.output()).toContain(`"sandbox":"${kind}"`);
    // Each action is also capped in processes through the pids cgroup (a fork bomb stops there).
    expect(node.output()).toContain('"processLimit":1024');

    // One sleep leaves the action's process group (setsid): it must still go.
    const marker = `${1000 + (process.pid % 1000)}.${kind === 'bwrap' ? 51 : 52}`;
    const cancel = await submit(head.address, ['sh', '-c', `sleep ${marker} & setsid sleep ${marker} & sleep ${marker}`]);
    try {
      const pids = await waitFor('the action\'s three sleeps', () => {
        const p = pidsWithArg(marker);
        return p.length === 3 ? p : undefined;
      });
      expect(await readdir(path.join(work, 'actions'))).toHaveLength(1);

      const code = await node.kill('SIGTERM');
      expect(code).toBe(0);
      expect(await waitUntilGone(pids, 3_000)).toEqual([]);
      expect(pidsWithArg(marker)).toEqual([]);
      expect(await readdir(path.join(work, 'actions'))).toEqual([]);
    } finally {
      cancel();
    }
  });
});

describe('when bubblewrap cannot run', () => {
  it('--require-sandbox refuses to start, saying why', async () => {
    const d = startOrion(['node', '--head', '127.0.0.1:1', '--work-dir', path.join(tmp.dir, 'n'), '--require-sandbox'], { ORION_BWRAP: '/bin/false' });
    const code = await new Promise<number | null>((r) => d.proc.on('exit', (c) => r(c)));
    await new Promise((r) => setTimeout(r, 20));
    expect(code).toBe(1);
    expect(d.output()).toContain('orion: --require-sandbox: bubblewrap cannot run here: Command failed with exit code 1: /bin/false');
  });

  it('without --require-sandbox the node warns at start-up and runs actions in plain directories', async () => {
    const head = await startHeadProcess(path.join(tmp.dir, 'head'));
    daemons.push(head);
    const node = startOrion(['node', '--head', head.address, '--id', 'plain', '--work-dir', path.join(tmp.dir, 'n')], { ORION_BWRAP: '/bin/false' });
    daemons.push(node);
    await waitForActiveNodes(head.address, 1);
    expect(node.output()).toContain('bubblewrap unavailable: running actions in plain per-action directories (use --require-sandbox to refuse)');
    expect(node.output()).toContain('"sandbox":"process"');
    // Without a sandbox, the host's /tmp is the action's /tmp.
    const marker = path.join(tmp.dir, 'ran-unsandboxed');
    const cas = casClient(head.address);
    try {
      const { actionDigest } = await makeAction(cas, { argv: ['touch', marker], outputs: [], inputRoot: digestOf(Buffer.alloc(0)) });
      const o = await execute(head.address, actionDigest, { skipCacheLookup: true });
      expect(o.error).toBeUndefined();
      expect(existsSync(marker)).toBe(true);
    } finally {
      cas.close();
    }
  });
});

describe('bubblewrap --die-with-parent', () => {
  it('ends every sandboxed process when the node process is killed outright (SIGKILL)', async () => {
    const marker = `${1000 + (process.pid % 1000)}.53`;
    const script = path.join(tmp.dir, 'fake-node.mjs');
    const root = path.join(tmp.dir, 'root');
    await writeFile(
      script,
      `import { mkdirSync } from 'node:fs';
       import { createBwrapRunner } from ${JSON.stringify(path.join(REPO, 'dist/sandbox/bwrap-runner.js'))};
       import { createProcessRunner } from ${JSON.stringify(path.join(REPO, 'dist/sandbox/runner.js'))};
       mkdirSync(${JSON.stringify(root)}, { recursive: true });
       await createBwrapRunner(createProcessRunner()).run({ argv: ['sh', '-c', 'sleep ${marker} & sleep ${marker}'], cwd: ${JSON.stringify(root)}, root: { hostDir: ${JSON.stringify(root)}, sandboxDir: ${JSON.stringify(root)} }, env: { PATH: '/usr/bin:/bin' } });`,
    );
    const proc = spawn(process.execPath, [script], { stdio: 'ignore' });
    const exited = new Promise((r) => proc.on('exit', r));
    try {
      const pids = await waitFor('the sandboxed sleeps', () => {
        const p = pidsWithArg(marker);
        return p.length === 2 ? p : undefined;
      });
      proc.kill('SIGKILL');
      await exited;
      expect(await waitUntilGone(pids, 3_000)).toEqual([]);
    } finally {
      proc.kill('SIGKILL');
    }
  });
});
