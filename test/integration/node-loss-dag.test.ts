/**
 * Issue #4: a node killed with SIGKILL while it runs several actions of a whole-DAG build.
 * All real processes: a head and two nodes with 3 slots each build 8 objects and link
 * them; once one node has at least two compiles sleeping, it is killed. The build must
 * still complete, its lost actions retried on the other node, no action run more than
 * 3 times, every object byte-identical to a local compile, and the head must live on.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { credentials, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuildEvent_Kind, BuildRequest, BuildsClient, DagAction, type BuildEvent } from '../../proto/gen/orion/v1/build.js';
import { NodeStatus } from '../../proto/gen/orion/v1/cluster.js';
import { digestOf } from '../../cas/digest.js';
import type { Digest } from '../../cas/types.js';
import type { RemoteBlobStore } from '../../proto/grpc-blob-store.js';
import { listNodes, startHeadProcess, startNodeProcess, tempDir, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';
import { isRunning, processesMatching, waitUntilGone } from '../helpers/processes.js';
import { casClient, uploadCommand, uploadTree } from '../helpers/reapi.js';

const { STARTED, FINISHED, FAILED, RETRIED, SKIPPED, BUILD_FINISHED } = BuildEvent_Kind;

/** Unusual enough a duration to find this test's sleeps (and nothing else) among the processes. */
const SLEEP = 'sleep 1.5041';
const N = 8;
const IDS = Array.from({ length: N }, (_, i) => `f${i}`);
const FUNCS = IDS.slice(1);
const SOURCES: Record<string, string> = {
  'f.h': FUNCS.map((f) => `int ${f}(void);\n`).join(''),
  'f0.c': `#include <stdio.h>\n#include "f.h"\nint main(void) {\n  printf("${FUNCS.map(() => '%d').join(' ')}\\n", ${FUNCS.map((f) => `${f}()`).join(', ')});\n  return 0;\n}\n`,
  ...Object.fromEntries(FUNCS.map((f, i) => [`${f}.c`, `#include "f.h"\nint ${f}(void) { return ${i + 1} * ${i + 1} + 1000; }\n`])),
};
const EXPECTED_OUTPUT = `${FUNCS.map((_, i) => (i + 1) * (i + 1) + 1000).join(' ')}\n`;
const BUILD_DEADLINE_MS = 20_000;

const pbDigest = (d: Digest | undefined) => ({ hash: d!.hash, sizeBytes: Number(d!.sizeBytes) });

/** Pids of this test's `sleep` processes whose working directory is under `dir`. */
function sleepersIn(dir: string): number[] {
  return processesMatching(SLEEP).filter((pid) => {
    try {
      const argv0 = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0];
      return argv0 === 'sleep' && readlinkSync(`/proc/${pid}/cwd`).startsWith(dir + path.sep);
    } catch {
      return false;
    }
  });
}

describe('a node killed with SIGKILL in the middle of a whole-DAG build', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let head: Daemon & { address: string };
  const nodes = new Map<string, Daemon>();
  const workDirs = new Map<string, string>();
  let cas: RemoteBlobStore;
  let client: BuildsClient;



  beforeAll(async () => {
    tmp = await tempDir('node-loss');
    head = await startHeadProcess(path.join(tmp.dir, 'head'), ['--heartbeat-timeout', '2s']);
    for (const id of ['n1', 'n2']) {
      const dir = path.join(tmp.dir, id);
      mkdirSync(dir, { recursive: true });
      workDirs.set(id, realpathSync(dir));
      nodes.set(id, startNodeProcess(head.address, id, dir, ['--slots', '3', '--no-sandbox']));
    }
    await waitForActiveNodes(head.address, 2);
    cas = casClient(head.address);
    client = new BuildsClient(head.address, credentials.createInsecure());
  });

  afterAll(async () => {
    client?.close();
    cas?.close();
    const pids = [...nodes.values(), head].filter(Boolean).map((d) => d.proc.pid!);
    for (const n of nodes.values()) await n.kill('SIGKILL');
    await head?.kill('SIGKILL');
    // The killed node's actions ran in their own process groups and outlive it: end them too.
    const orphans = processesMatching(SLEEP);
    for (const pid of orphans) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    expect(await waitUntilGone([...pids, ...orphans])).toEqual([]);
    await tmp?.cleanup();
  });

  it('completes: the lost actions are retried on the other node (at most 3 runs each), every object byte-identical to a local compile, the head alive', async () => {
    const sourceRoot = await uploadTree(cas, SOURCES);
    const compiles = await Promise.all(
      IDS.map(async (id) =>
        DagAction.fromPartial({
          id,
          label: `CC ${id}.o`,
          commandDigest: await uploadCommand(cas, ['sh', '-c', `${SLEEP}; cc -c ${id}.c -o ${id}.o`], [`${id}.o`]),
          inputRootDigest: await uploadTree(cas, { [`${id}.c`]: SOURCES[`${id}.c`]!, 'f.h': SOURCES['f.h']! }),
        }),
      ),
    );
    const link = DagAction.fromPartial({
      id: 'link',
      label: 'LD prog',
      commandDigest: await uploadCommand(cas, ['cc', ...IDS.map((id) => `${id}.o`), '-o', 'prog'], ['prog']),
      inputRootDigest: await uploadTree(cas, {}),
      producedInputs: IDS.map((id) => ({ path: `${id}.o`, producer: id })),
    });

    // What each node runs right now, from the event stream.
    const running = new Map<string, Set<string>>();
    let victim: string | undefined;
    let killIndex = -1;
    let sleepingAtKill = 0;
    let lostAtKill: string[] = [];
    let killing: Promise<void> | undefined;

    const events: BuildEvent[] = [];
    let error: ServiceError | undefined;
    let timedOut = false;
    const startedAt = Date.now();
    await new Promise<void>((resolve) => {
      const call = client.build(BuildRequest.fromPartial({ sourceRoot, actions: [...compiles, link] }));
      // Should requeueing be broken the build never ends: fail fast rather than hang.
      const deadline = setTimeout(() => {
        timedOut = true;
        call.cancel();
      }, BUILD_DEADLINE_MS);
      call.on('data', (ev: BuildEvent) => {
        events.push(ev);
        if (ev.kind === STARTED) {
          if (!running.has(ev.nodeId)) running.set(ev.nodeId, new Set());
          running.get(ev.nodeId)!.add(ev.actionId);
        } else if (ev.kind === FINISHED || ev.kind === FAILED || ev.kind === RETRIED || ev.kind === SKIPPED) {
          for (const set of running.values()) set.delete(ev.actionId);
        }
        if (victim === undefined && ev.kind === STARTED && running.get(ev.nodeId)!.size >= 2) {
          const id = ev.nodeId;
          victim = id;
          killing = (async () => {
            // Assigned is not yet running: wait until at least two of them sleep on that node.
            const dir = workDirs.get(id)!;
            sleepingAtKill = await waitFor(`two actions sleeping on ${id}`, () => (sleepersIn(dir).length >= 2 ? sleepersIn(dir).length : undefined), 5_000, 10).catch(() => sleepersIn(dir).length);
            killIndex = events.length;
            lostAtKill = [...running.get(id)!];
            nodes.get(id)!.proc.kill('SIGKILL');
          })();
        }
      });
      call.on('error', (err: ServiceError) => (error = err));
      call.on('close', () => {
        clearTimeout(deadline);
        resolve();
      });
    });
    const buildMs = Date.now() - startedAt;
    await killing;

    // The kill happened, mid-action, on a node running at least two actions.
    expect(victim, 'no node ever ran two actions at once').toBeDefined();
    const survivor = victim === 'n1' ? 'n2' : 'n1';
    expect(sleepingAtKill).toBeGreaterThanOrEqual(2);
    expect(lostAtKill.length).toBeGreaterThanOrEqual(2);
    const victimExit = await nodes.get(victim!)!.kill('SIGKILL');
    expect(victimExit).toBeNull();
    expect(nodes.get(victim!)!.proc.signalCode).toBe('SIGKILL');

    // The build completed, every action done exactly once, nothing failed.
    expect(timedOut, `the build did not end within ${BUILD_DEADLINE_MS} ms; events: ${events.map((e) => `${BuildEvent_Kind[e.kind]} ${e.actionId} ${e.nodeId}`).join(', ')}`).toBe(false);
    expect(error).toBeUndefined();
    expect(events.at(-1)!.kind).toBe(BUILD_FINISHED);
    expect(events.at(-1)!.summary).toMatchObject({ ok: true, total: N + 1, executed: N + 1, cacheHits: 0, failed: 0, skipped: 0 });
    expect(events.filter((e) => e.kind === FAILED || e.kind === SKIPPED)).toEqual([]);
    for (const id of [...IDS, 'link']) {
      const mine = events.filter((e) => e.actionId === id);
      expect(mine.filter((e) => e.kind === FINISHED), id).toHaveLength(1);
      // No action runs more than 3 times.
      expect(mine.filter((e) => e.kind === STARTED).length, id).toBeLessThanOrEqual(3);
      // Nothing comes back from the dead node, nothing starts on it once killed.
      expect(mine.find((e) => e.kind === FINISHED)!.nodeId, id).toBe(survivor);
    }
    // Once the head has noticed the loss (its first retry), nothing starts on the dead node.
    const noticed = events.findIndex((e, i) => i >= killIndex && e.kind === RETRIED);
    expect(noticed).toBeGreaterThanOrEqual(killIndex);
    expect(events.slice(noticed).filter((e) => e.kind === STARTED && e.nodeId === victim)).toEqual([]);

    // Each action that ran on the killed node was retried, then started and finished on the other.
    const onVictim = [...new Set(events.filter((e) => e.kind === STARTED && e.nodeId === victim).map((e) => e.actionId))];
    for (const id of lostAtKill) expect(onVictim).toContain(id);
    for (const id of onVictim) {
      const seq = events.filter((e) => e.actionId === id && (e.kind === STARTED || e.kind === RETRIED || e.kind === FINISHED));
      seq.forEach((e, i) => {
        if (e.kind === STARTED && e.nodeId === victim) {
          expect(seq[i + 1]?.kind, `${id}: ${seq.map((x) => BuildEvent_Kind[x.kind]).join(' ')}`).toBe(RETRIED);
          expect(seq[i + 1]!.message, id).toMatch(/node lost/);
        }
      });
      const lastStart = seq.filter((e) => e.kind === STARTED).at(-1)!;
      expect(lastStart.nodeId, id).toBe(survivor);
      expect(lastStart.attempt, id).toBeGreaterThanOrEqual(2);
      expect(seq.at(-1)!.kind, id).toBe(FINISHED);
      expect(seq.at(-1)!.result!.executionMetadata?.worker, id).toBe(survivor);
    }
    expect(head.output()).toContain('requeueing action');

    // Every object in the head's CAS is the bytes of the same compile run here.
    const local = path.join(tmp.dir, 'local');
    mkdirSync(local);
    for (const [name, content] of Object.entries(SOURCES)) writeFileSync(path.join(local, name), content);
    for (const id of IDS) {
      const result = events.find((e) => e.actionId === id && e.kind === FINISHED)!.result!;
      expect(result.exitCode, id).toBe(0);
      const file = result.outputFiles.find((f) => f.path === `${id}.o`);
      expect(file, id).toBeDefined();
      const remote = await cas.get(pbDigest(file!.digest));
      expect(digestOf(remote), id).toEqual(pbDigest(file!.digest));
      execFileSync('cc', ['-c', `${id}.c`, '-o', `${id}.o`], { cwd: local, env: { PATH: '/usr/bin:/bin' } });
      expect(remote.equals(readFileSync(path.join(local, `${id}.o`))), `${id}.o differs from a local compile`).toBe(true);
    }

    // The linked program runs and prints what it should, and is what a local link gives.
    const linked = events.find((e) => e.actionId === 'link' && e.kind === FINISHED)!.result!;
    expect(linked.exitCode).toBe(0);
    const binary = await cas.get(pbDigest(linked.outputFiles.find((f) => f.path === 'prog')!.digest));
    writeFileSync(path.join(local, 'remote-prog'), binary, { mode: 0o755 });
    expect(execFileSync(path.join(local, 'remote-prog'), { encoding: 'utf8' })).toBe(EXPECTED_OUTPUT);
    execFileSync('cc', [...IDS.map((id) => `${id}.o`), '-o', 'prog'], { cwd: local, env: { PATH: '/usr/bin:/bin' } });
    expect(binary.equals(readFileSync(path.join(local, 'prog'))), 'the linked program differs from a local link').toBe(true);

    // The head lives on, knows the node is gone, and still counts on the other one.
    expect(isRunning(head.proc.pid!)).toBe(true);
    expect(head.proc.exitCode).toBeNull();
    const known = await listNodes(head.address);
    expect(known.find((n) => n.nodeId === victim)?.status).not.toBe(NodeStatus.NODE_STATUS_ACTIVE);
    expect(known.find((n) => n.nodeId === survivor)?.status).toBe(NodeStatus.NODE_STATUS_ACTIVE);
    expect(buildMs).toBeLessThan(BUILD_DEADLINE_MS);
  });
});
