import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuildEvent_Kind, BuildRequest, BuildsClient, DagAction, type BuildEvent } from '../../proto/gen/orion/v1/build.js';
import { digestOf } from '../../cas/digest.js';
import type { Digest } from '../../cas/types.js';
import type { RemoteBlobStore } from '../../proto/grpc-blob-store.js';
import { listNodes, startHeadProcess, startNodeProcess, tempDir, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';
import { processesMatching } from '../helpers/processes.js';
import { casClient, uploadCommand, uploadTree } from '../helpers/reapi.js';

const { ACCEPTED, QUEUED, STARTED, CACHE_HIT, FINISHED, FAILED, SKIPPED, BUILD_FINISHED } = BuildEvent_Kind;

const SOURCES: Record<string, string> = {
  'greet.h': 'const char *greeting(void);\nconst char *name(void);\n',
  'greet.c': '#include "greet.h"\nconst char *greeting(void) { return "hello"; }\n',
  'name.c': '#include "greet.h"\nconst char *name(void) { return "orion dag"; }\n',
  'main.c': '#include <stdio.h>\n#include "greet.h"\nint main(void) { printf("%s from %s\\n", greeting(), name()); return 0; }\n',
  'broken.c': 'int broken(void) { return missing_symbol; }\n',
};
const COMPILES = ['main', 'greet', 'name'];

interface Outcome {
  events: BuildEvent[];
  error?: ServiceError;
}

const kindOf = (events: BuildEvent[], id: string) => events.filter((e) => e.actionId === id).map((e) => e.kind);
const eventOf = (events: BuildEvent[], id: string, kind: BuildEvent_Kind) => events.find((e) => e.actionId === id && e.kind === kind);
const pbDigest = (d: Digest | undefined) => ({ hash: d!.hash, sizeBytes: Number(d!.sizeBytes) });

describe('whole-DAG builds through a real head and two real nodes', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let head: Daemon & { address: string };
  let limitedHead: Daemon & { address: string };
  const nodes: Daemon[] = [];
  let cas: RemoteBlobStore;
  let client: BuildsClient;
  let sourceRoot: Digest;
  const workDirs = ['n1', 'n2'];



  /** cc -c X.c -o X.o, keyed on X.c and the header it includes. */
  async function compile(id: string): Promise<DagAction> {
    return DagAction.fromPartial({
      id,
      label: `CC ${id}.o`,
      commandDigest: await uploadCommand(cas, ['cc', '-c', `${id}.c`, '-o', `${id}.o`], [`${id}.o`]),
      inputRootDigest: await uploadTree(cas, { [`${id}.c`]: SOURCES[`${id}.c`]!, 'greet.h': SOURCES['greet.h']! }),
    });
  }

  async function link(objects: string[]): Promise<DagAction> {
    return DagAction.fromPartial({
      id: 'link',
      label: 'LD hello',
      commandDigest: await uploadCommand(cas, ['cc', ...objects.map((o) => `${o}.o`), '-o', 'hello'], ['hello']),
      inputRootDigest: await uploadTree(cas, {}),
      producedInputs: objects.map((o) => ({ path: `${o}.o`, producer: o })),
    });
  }

  async function program(): Promise<DagAction[]> {
    return [...(await Promise.all(COMPILES.map(compile))), await link(COMPILES)];
  }

  /** Runs one Build call to its end; `onEvent` may cancel it. */
  function build(address: string, actions: DagAction[], more: Partial<BuildRequest> = {}, onEvent?: (ev: BuildEvent, cancel: () => void) => void): Promise<Outcome> {
    const c = address === head.address ? client : new BuildsClient(address, credentials.createInsecure());
    const outcome: Outcome = { events: [] };
    return new Promise((resolve) => {
      const call = c.build(BuildRequest.fromPartial({ sourceRoot, actions, ...more }));
      call.on('data', (ev: BuildEvent) => {
        outcome.events.push(ev);
        onEvent?.(ev, () => call.cancel());
      });
      call.on('error', (err: ServiceError) => {
        outcome.error = err;
      });
      call.on('close', () => {
        if (c !== client) c.close();
        resolve(outcome);
      });
    });
  }

  beforeAll(async () => {
    tmp = await tempDir('dag');
    [head, limitedHead] = await Promise.all([
      startHeadProcess(path.join(tmp.dir, 'head'), ['--heartbeat-timeout', '2s']),
      startHeadProcess(path.join(tmp.dir, 'limited-head'), ['--max-dag-actions', '2']),
    ]);
    for (const id of workDirs) nodes.push(startNodeProcess(head.address, id, path.join(tmp.dir, id), ['--slots', '2']));
    await waitForActiveNodes(head.address, 2);
    cas = casClient(head.address);
    client = new BuildsClient(head.address, credentials.createInsecure());
    sourceRoot = await uploadTree(cas, SOURCES);
  });

  afterAll(async () => {
    client?.close();
    cas?.close();
    for (const n of nodes) await n.kill('SIGKILL');
    await head?.kill('SIGKILL');
    await limitedHead?.kill('SIGKILL');
    await tmp?.cleanup();
  });

  it('compiles and links a C program on the nodes, the binary byte-identical to a local build and printing its greeting', async () => {
    const out = await build(head.address, await program());
    expect(out.error).toBeUndefined();
    const { events } = out;
    expect(events[0]!.kind).toBe(ACCEPTED);
    expect(events[0]!.buildId).not.toBe('');
    expect(events.at(-1)!.kind).toBe(BUILD_FINISHED);
    expect(events.at(-1)!.summary).toMatchObject({ ok: true, total: 4, executed: 4, cacheHits: 0, failed: 0, skipped: 0 });
    for (const id of [...COMPILES, 'link']) {
      expect(kindOf(events, id)).toEqual([QUEUED, STARTED, FINISHED]);
      expect(workDirs).toContain(eventOf(events, id, STARTED)!.nodeId);
    }
    // The link started only after every object was made.
    const at = (id: string, kind: BuildEvent_Kind) => events.findIndex((e) => e.actionId === id && e.kind === kind);
    for (const id of COMPILES) expect(at(id, FINISHED)).toBeLessThan(at('link', QUEUED));

    const linked = eventOf(events, 'link', FINISHED)!.result!;
    expect(linked.exitCode).toBe(0);
    const binary = await cas.get(pbDigest(linked.outputFiles.find((f) => f.path === 'hello')!.digest));
    const dir = path.join(tmp.dir, 'local');
    mkdirSync(dir);
    for (const [name, content] of Object.entries(SOURCES)) writeFileSync(path.join(dir, name), content);
    writeFileSync(path.join(dir, 'remote-hello'), binary, { mode: 0o755 });
    expect(execFileSync(path.join(dir, 'remote-hello'), { encoding: 'utf8' })).toBe('hello from orion dag\n');
    // The same commands run locally give the same bytes (cc and ld on Debian are deterministic).
    for (const id of COMPILES) execFileSync('cc', ['-c', `${id}.c`, '-o', `${id}.o`], { cwd: dir });
    execFileSync('cc', [...COMPILES.map((o) => `${o}.o`), '-o', 'hello'], { cwd: dir });
    expect(digestOf(binary)).toEqual(digestOf(readFileSync(path.join(dir, 'hello'))));
  });

  it('serves a resubmitted build entirely from the action cache, starting nothing', async () => {
    const { events, error } = await build(head.address, await program());
    expect(error).toBeUndefined();
    for (const id of [...COMPILES, 'link']) expect(kindOf(events, id)).toEqual([CACHE_HIT]);
    expect(events.filter((e) => e.kind === STARTED || e.kind === QUEUED)).toEqual([]);
    expect(events.at(-1)!.summary).toMatchObject({ ok: true, total: 4, executed: 0, cacheHits: 4 });
  });

  it("fails a compile error with the compiler's stderr, skips the link and ends the build not ok", async () => {
    const actions = [await compile('main'), await compile('broken'), await link(['main', 'broken'])];
    const { events, error } = await build(head.address, actions);
    expect(error).toBeUndefined();
    const failed = eventOf(events, 'broken', FAILED)!;
    expect(failed.result!.exitCode).not.toBe(0);
    const stderr = (await cas.get(pbDigest(failed.result!.stderrDigest))).toString('utf8');
    expect(stderr).toContain('broken.c');
    expect(stderr).toContain('missing_symbol');
    expect(kindOf(events, 'link')).toEqual([SKIPPED]);
    expect(events.at(-1)!.kind).toBe(BUILD_FINISHED);
    expect(events.at(-1)!.summary).toMatchObject({ ok: false, failed: 1 });
  });

  it('refuses a DAG larger than --max-dag-actions with INVALID_ARGUMENT naming the limit', async () => {
    const { events, error } = await build(limitedHead.address, await program());
    expect(events).toEqual([]);
    expect(error?.code).toBe(status.INVALID_ARGUMENT);
    expect(error?.details).toBe('the build has 4 actions; this head accepts at most 2 per build (--max-dag-actions)');
  });

  it('refuses a DAG with a cycle with INVALID_ARGUMENT', async () => {
    const [a, b] = [await compile('main'), await compile('greet')];
    const { events, error } = await build(head.address, [{ ...a!, deps: ['greet'] }, { ...b!, deps: ['main'] }]);
    expect(events).toEqual([]);
    expect(error?.code).toBe(status.INVALID_ARGUMENT);
    expect(error?.details).toBe("the build's dependencies form a cycle through 2 actions (e.g. main, greet)");
  });

  async function sleeper(id: string, marker: string): Promise<DagAction> {
    return DagAction.fromPartial({ id, commandDigest: await uploadCommand(cas, ['sleep', marker], []), inputRootDigest: await uploadTree(cas, {}) });
  }

  async function expectNodesIdle(marker: string, cancelledAt: number) {
    await waitFor('the sleeping action to be killed', () => (processesMatching(`sleep ${marker}`).length === 0 ? true : undefined), 5_000, 20);
    expect(Date.now() - cancelledAt).toBeLessThan(2_500);
    await waitFor('the head to count nothing running', async () => ((await listNodes(head.address)).every((n) => n.running === 0) ? true : undefined), 5_000, 20);
    for (const id of workDirs) {
      await waitFor(`${id}'s action directories to be removed`, () => (readdirSync(path.join(tmp.dir, id, 'actions')).length === 0 ? true : undefined), 5_000, 20);
    }
  }

  it("kills the node's process and removes its action directory when the client cancels the Build stream", async () => {
    const marker = '30.0417';
    let cancelledAt = 0;
    const out = await build(head.address, [await sleeper('nap', marker)], {}, (ev, cancel) => {
      if (ev.kind !== STARTED) return;
      void waitFor('the action to be sleeping on its node', () => (processesMatching(`sleep ${marker}`).length > 0 ? true : undefined), 10_000, 20).then(() => {
        cancelledAt = Date.now();
        cancel();
      });
    });
    expect(out.error?.code).toBe(status.CANCELLED);
    expect(cancelledAt).toBeGreaterThan(0);
    await expectNodesIdle(marker, cancelledAt);
  });

  it('cancels a build by id through CancelBuild: the stream ends with BUILD_FINISHED not ok and the node stops the action', async () => {
    const marker = '30.0418';
    let cancelledAt = 0;
    let answer: boolean | undefined;
    const out = await build(head.address, [await sleeper('nap', marker)], { buildId: 'dag-cancel-by-id' }, (ev) => {
      if (ev.kind !== STARTED) return;
      void waitFor('the action to be sleeping on its node', () => (processesMatching(`sleep ${marker}`).length > 0 ? true : undefined), 10_000, 20).then(() => {
        cancelledAt = Date.now();
        client.cancelBuild({ buildId: 'dag-cancel-by-id' }, (err, res) => (answer = err ? undefined : res.cancelled));
      });
    });
    expect(out.error).toBeUndefined();
    expect(answer).toBe(true);
    expect(kindOf(out.events, 'nap')).toEqual([QUEUED, STARTED, SKIPPED]);
    expect(out.events.at(-1)!.kind).toBe(BUILD_FINISHED);
    expect(out.events.at(-1)!.summary).toMatchObject({ ok: false, skipped: 1 });
    await expectNodesIdle(marker, cancelledAt);
    // Nothing of that build is left to cancel.
    const again = await new Promise<boolean>((resolve, reject) => client.cancelBuild({ buildId: 'dag-cancel-by-id' }, (err, res) => (err ? reject(err) : resolve(res.cancelled))));
    expect(again).toBe(false);
  });
});
