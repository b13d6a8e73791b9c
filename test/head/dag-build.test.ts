import { describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.js';
import { Code, OrionError } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import { MOUNT_PATH_PROPERTY } from '../../common/platform-properties.js';
import { digestKey, digestOf } from '../../cas/digest.js';
import { buildTreeFromEntries, type TreeFileEntry } from '../../cas/merkle.js';
import { createMemoryActionCache } from '../../cas/memory-action-cache.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import { createTreeOverlay } from '../../cas/tree-overlay.js';
import type { ActionResult, Digest, Platform } from '../../cas/types.js';
import { commandToPb } from '../../proto/convert.js';
import { encodeActionMessage } from '../../cas/proto-wire.js';
import { Command as PbCommand } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { createDagBuilds, type ClientActionReport, type DagActionSpec, type DagBuildRequest, type DagEvent, type DagSummary } from '../../head/dag-build.js';
import { createInstanceCaches } from '../../head/instance-caches.js';
import { DEFAULT_HEAD_LIMITS } from '../../head/limits.js';
import { createNodeRegistry } from '../../head/node-registry.js';
import { createScheduler, type Execution, type ExecutionRequest, type NodeCommand } from '../../head/scheduler.js';

type Assign = Extract<NodeCommand, { type: 'assign' }> & { nodeId: string };
type Files = Record<string, string>;

const entries = (files: Files): TreeFileEntry[] => Object.entries(files).map(([path, content]) => ({ path, digest: digestOf(Buffer.from(content)), isExecutable: false }));
const rootOf = (files: Files): Digest => buildTreeFromEntries(entries(files)).rootDigest;

/** Lets every pending promise chain of the builds run (the stores are in memory: no real I/O, no timers). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

async function rejection(p: Promise<unknown>): Promise<OrionError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OrionError);
  return err as OrionError;
}

const SOURCE: Files = { 'a.c': 'int a(void);', 'b.c': 'int b(void);', 'app.h': '#define APP 1', 'main.c': 'int main(void) { return 0; }' };

function harness(opts: { maxDagActions?: number } = {}) {
  const clock = createManualClock(1_000_000);
  const log = silentLogger();
  const registry = createNodeRegistry({ clock, heartbeatTimeoutMs: 3_600_000 });
  const cas = createMemoryBlobStore();
  const caches = createInstanceCaches(() => createMemoryActionCache());
  const sent: { nodeId: string; cmd: NodeCommand }[] = [];
  const scheduler = createScheduler({
    registry,
    clock,
    log,
    send: (nodeId, cmd) => {
      sent.push({ nodeId, cmd });
      return true;
    },
    // As head.ts does: a successful result goes into the instance's action cache.
    acceptResult: async (e, result) => {
      if (result.exitCode === 0 && !e.request.action.doNotCache) await caches.forInstance(e.request.instanceName).put(e.request.actionDigest, result);
      return result;
    },
  });
  const dags = createDagBuilds({
    cas,
    caches,
    scheduler,
    overlay: createTreeOverlay(cas),
    clock,
    log,
    limits: { ...DEFAULT_HEAD_LIMITS, maxDagActions: opts.maxDagActions ?? 1000 },
    defaultDurationMs: 1000,
  });
  const sessions = new Map<string, string>();

  const h = {
    clock,
    registry,
    cas,
    caches,
    scheduler,
    dags,
    sent,
    join(nodeId: string, slots = 1) {
      const rec = registry.register({ nodeId, address: '', slots, metadata: {} });
      sessions.set(nodeId, rec.sessionId);
      registry.attach(nodeId, rec.sessionId);
    },
    leave(nodeId: string) {
      registry.detach(nodeId, sessions.get(nodeId)!, 'test');
    },
    async putTree(files: Files): Promise<Digest> {
      for (const content of Object.values(files)) await cas.put(digestOf(Buffer.from(content)), Buffer.from(content));
      const tree = buildTreeFromEntries(entries(files));
      for (const bytes of tree.directories.values()) await cas.put(digestOf(bytes), bytes);
      return tree.rootDigest;
    },
    /** Stores a Command whose second argument is the action id (how the fake nodes recognise assignments). */
    async putCommand(id: string, outputs: string[], more: { workingDirectory?: string; platform?: Platform; tool?: string } = {}): Promise<Digest> {
      const bytes = Buffer.from(
        PbCommand.encode(
          commandToPb({ arguments: [more.tool ?? 'tool', id], environmentVariables: [], outputPaths: outputs, outputFiles: [], outputDirectories: [], workingDirectory: more.workingDirectory ?? '', platform: more.platform }),
        ).finish(),
      );
      const d = digestOf(bytes);
      await cas.put(d, bytes);
      return d;
    },
    /** One action: `id` writes `outputs`, reads `key` (its key input root) and the produced inputs. */
    async action(id: string, spec: { outputs?: string[]; key?: Files; produced?: { path: string; producer: string }[]; deps?: string[]; workingDirectory?: string; platform?: Platform; depfile?: string }): Promise<DagActionSpec> {
      return {
        id,
        commandDigest: await h.putCommand(id, spec.outputs ?? [`${id}.o`], { workingDirectory: spec.workingDirectory, platform: spec.platform }),
        inputRootDigest: await h.putTree(spec.key ?? {}),
        producedInputs: spec.produced ?? [],
        deps: spec.deps ?? [],
        doNotCache: false,
        depfile: spec.depfile,
      };
    },
    start(req: Partial<DagBuildRequest> & { actions: DagActionSpec[]; sourceRoot: Digest }, signal?: AbortSignal) {
      const events: DagEvent[] = [];
      const controller = new AbortController();
      const done = dags.run({ instanceName: '', buildId: '', keepGoing: false, skipCacheLookup: false, ...req }, (ev) => events.push(ev), signal ?? controller.signal);
      done.catch(() => {});
      return { events, done, abort: () => controller.abort() };
    },
    assigns(): Assign[] {
      return sent.filter((s) => s.cmd.type === 'assign').map((s) => ({ nodeId: s.nodeId, ...(s.cmd as Extract<NodeCommand, { type: 'assign' }>) }));
    },
    /** Action ids in the order they were assigned to nodes. */
    assignedIds(): string[] {
      return h.assigns().map((a) => a.execution.request.command.arguments[1]!);
    },
    cancels(): string[] {
      return sent.filter((s) => s.cmd.type === 'cancel').map((s) => s.cmd.assignmentId);
    },
    /** The latest assignment of action `id`. */
    assignmentOf(id: string): Assign {
      const a = h.assigns().filter((x) => x.execution.request.command.arguments[1] === id).at(-1);
      if (!a) throw new Error(`${id} was never assigned (assigned: ${h.assignedIds().join(', ')})`);
      return a;
    },
    /** The node reports action `id` done: its outputs (relative to its working directory) go into the CAS first. */
    async finish(id: string, outputs: Files = {}, exitCode = 0): Promise<void> {
      const a = h.assignmentOf(id);
      const outputFiles = [];
      for (const [path, content] of Object.entries(outputs)) {
        const digest = digestOf(Buffer.from(content));
        await cas.put(digest, Buffer.from(content));
        outputFiles.push({ path, digest, isExecutable: false });
      }
      const result: ActionResult = { outputFiles, outputSymlinks: [], outputDirectories: [], exitCode, executionMetadata: { worker: a.nodeId } };
      await scheduler.finished(a.nodeId, a.assignmentId, { ok: true, result });
      await settle();
    },
  };
  return h;
}

type Harness = ReturnType<typeof harness>;

const kinds = (events: DagEvent[]) => events.map((e) => (e.actionId ? `${e.kind}:${e.actionId}` : e.kind));
const kindsOf = (events: DagEvent[], id: string) => events.filter((e) => e.actionId === id).map((e) => e.kind);
const eventOf = (events: DagEvent[], id: string, kind: DagEvent['kind']) => events.find((e) => e.actionId === id && e.kind === kind);

/** a.c -> a.o, b.c -> b.o, link(a.o, b.o) -> app. */
async function compileAndLink(h: Harness, sources: Files = SOURCE) {
  const sourceRoot = await h.putTree(sources);
  const actions = [
    await h.action('a', { outputs: ['a.o'], key: { 'a.c': sources['a.c']!, 'app.h': sources['app.h']! } }),
    await h.action('b', { outputs: ['b.o'], key: { 'b.c': sources['b.c']! } }),
    await h.action('link', {
      outputs: ['app'],
      key: { 'main.c': sources['main.c']! },
      produced: [
        { path: 'a.o', producer: 'a' },
        { path: 'b.o', producer: 'b' },
      ],
    }),
  ];
  return { sourceRoot, actions };
}

/** The action cache key the head gives action `spec` over input root `root` (it stores no Action blob). */
function keyFor(spec: DagActionSpec, root: Digest): Digest {
  return digestOf(encodeActionMessage({ commandDigest: spec.commandDigest, inputRootDigest: root, timeoutMs: spec.timeoutMs, doNotCache: spec.doNotCache, platform: spec.platform }));
}

/** A harness with one 2-slot node that has built compileAndLink once (every action ran). */
async function builtOnce() {
  const h = harness();
  h.join('n1', 2);
  const { sourceRoot, actions } = await compileAndLink(h);
  const first = h.start({ sourceRoot, actions });
  await settle();
  await h.finish('a', { 'a.o': 'A-OBJ' });
  await h.finish('b', { 'b.o': 'B-OBJ' });
  await h.finish('link', { app: 'ELF' });
  await first.done;
  return { h, sourceRoot, actions, first };
}

describe('DAG builds: order, inputs and events', () => {
  it('sends ACCEPTED first and BUILD_FINISHED last, with a summary counting every action, and resolves with that summary', async () => {
    const h = harness();
    h.join('n1', 2);
    const { sourceRoot, actions } = await compileAndLink(h);
    const b = h.start({ sourceRoot, actions, buildId: 'build-1' });
    await settle();
    expect(h.assignedIds()).toEqual(['a', 'b']);
    h.clock.advance(200);
    await h.finish('a', { 'a.o': 'A-OBJ' });
    await h.finish('b', { 'b.o': 'B-OBJ' });
    expect(h.assignedIds()).toEqual(['a', 'b', 'link']);
    h.clock.advance(300);
    await h.finish('link', { app: 'ELF' });
    const summary = await b.done;
    const expected: DagSummary = { ok: true, total: 3, executed: 3, cacheHits: 0, failed: 0, skipped: 0, peerBytes: 0, headBytes: 0, wallMs: 500 };
    expect(summary).toEqual(expected);
    expect(b.events[0]).toEqual({ kind: 'accepted', buildId: 'build-1' });
    expect(b.events.at(-1)).toEqual({ kind: 'build-finished', buildId: 'build-1', summary: expected });
    expect(b.events.every((e) => e.buildId === 'build-1')).toBe(true);
    for (const id of ['a', 'b', 'link']) expect(kindsOf(b.events, id)).toEqual(['queued', 'started', 'finished']);
    const started = eventOf(b.events, 'a', 'started')!;
    expect([started.nodeId, started.attempt]).toEqual(['n1', 1]);
    const finished = eventOf(b.events, 'link', 'finished')!;
    expect(finished.nodeId).toBe('n1');
    expect(finished.result!.outputFiles.map((f) => f.path)).toEqual(['app']);
    expect(h.dags.active()).toEqual([]);
  });

  it('picks a build id when the client sends none', async () => {
    const h = harness();
    h.join('n1');
    const sourceRoot = await h.putTree(SOURCE);
    const b = h.start({ sourceRoot, actions: [await h.action('a', {})] });
    await settle();
    await h.finish('a', { 'a.o': 'A' });
    await b.done;
    expect(b.events[0]!.buildId).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Set(b.events.map((e) => e.buildId)).size).toBe(1);
  });

  it('runs an action only after every producer and every listed dependency finished', async () => {
    const h = harness();
    h.join('n1', 4);
    const { sourceRoot, actions } = await compileAndLink(h);
    actions.push(await h.action('test', { outputs: ['log'], deps: ['link'] }));
    const b = h.start({ sourceRoot, actions });
    await settle();
    expect(h.assignedIds()).toEqual(['a', 'b']);
    expect(kindsOf(b.events, 'link')).toEqual([]);
    await h.finish('b', { 'b.o': 'B' });
    expect(h.assignedIds()).toEqual(['a', 'b']);
    expect(kindsOf(b.events, 'link')).toEqual([]);
    await h.finish('a', { 'a.o': 'A' });
    expect(h.assignedIds()).toEqual(['a', 'b', 'link']);
    expect(kindsOf(b.events, 'test')).toEqual([]);
    await h.finish('link', { app: 'ELF' });
    expect(h.assignedIds()).toEqual(['a', 'b', 'link', 'test']);
    await h.finish('test', { log: 'ok' });
    expect((await b.done).ok).toBe(true);
    expect(kinds(b.events).filter((k) => k.startsWith('finished'))).toEqual(['finished:b', 'finished:a', 'finished:link', 'finished:test']);
  });

  it("keys a consumer on its input root plus each producer's output digest at the produced path (working directories included)", async () => {
    const h = harness();
    h.join('n1', 2);
    const sourceRoot = await h.putTree(SOURCE);
    const actions = [
      // Writes out/a.o: the output path is relative to its working directory.
      await h.action('a', { outputs: ['a.o'], workingDirectory: 'out', key: { 'a.c': SOURCE['a.c']! } }),
      await h.action('link', { outputs: ['out/app'], key: { 'main.c': SOURCE['main.c']! }, produced: [{ path: 'out/a.o', producer: 'a' }] }),
    ];
    const b = h.start({ sourceRoot, actions });
    await settle();
    await h.finish('a', { 'a.o': 'A-OBJ' });
    const queued = eventOf(b.events, 'link', 'queued')!;
    expect(queued.actionDigest).toEqual(keyFor(actions[1]!, rootOf({ 'main.c': SOURCE['main.c']!, 'out/a.o': 'A-OBJ' })));
    // The scheduler got that same action, to key its result by.
    const assigned = h.assignmentOf('link').execution.request;
    expect(assigned.actionDigest).toEqual(queued.actionDigest);
    expect(assigned.action.commandDigest).toEqual(actions[1]!.commandDigest);
    expect(assigned.action.inputRootDigest).toEqual(rootOf({ 'main.c': SOURCE['main.c']!, 'out/a.o': 'A-OBJ' }));
    expect(eventOf(b.events, 'link', 'started')!.actionDigest).toEqual(queued.actionDigest);
    // And the action for `a` has its key root as given.
    expect(eventOf(b.events, 'a', 'queued')!.actionDigest).toEqual(keyFor(actions[0]!, actions[0]!.inputRootDigest));
    await h.finish('link', { 'out/app': 'ELF' });
    expect((await b.done).ok).toBe(true);
  });

  it('runs every action in the source tree overlaid with the outputs of its ancestors', async () => {
    const h = harness();
    h.join('n1', 2);
    const { sourceRoot, actions } = await compileAndLink(h);
    const b = h.start({ sourceRoot, actions });
    await settle();
    expect(h.assignmentOf('a').execution.request.execRootDigest).toEqual(sourceRoot);
    expect(h.assignmentOf('b').execution.request.execRootDigest).toEqual(sourceRoot);
    await h.finish('a', { 'a.o': 'A-OBJ' });
    await h.finish('b', { 'b.o': 'B-OBJ' });
    expect(h.assignmentOf('link').execution.request.execRootDigest).toEqual(rootOf({ ...SOURCE, 'a.o': 'A-OBJ', 'b.o': 'B-OBJ' }));
    expect(h.assignmentOf('link').execution.request.buildId).toBe(b.events[0]!.buildId);
    await h.finish('link', { app: 'ELF' });
    await b.done;
  });

  it("leaves out of an exec root the outputs of actions it does not depend on, even those that finished first", async () => {
    const h = harness();
    h.join('n1', 2);
    const sourceRoot = await h.putTree(SOURCE);
    const actions = [
      await h.action('a', { outputs: ['a.o'] }),
      await h.action('b', { outputs: ['b.o'] }),
      await h.action('c', { outputs: ['c.o'], produced: [{ path: 'a.o', producer: 'a' }] }),
      await h.action('d', { outputs: ['d.o'], deps: ['c'] }),
    ];
    const b = h.start({ sourceRoot, actions });
    await settle();
    await h.finish('b', { 'b.o': 'B-OBJ' });
    await h.finish('a', { 'a.o': 'A-OBJ' });
    expect(h.assignmentOf('c').execution.request.execRootDigest).toEqual(rootOf({ ...SOURCE, 'a.o': 'A-OBJ' }));
    await h.finish('c', { 'c.o': 'C-OBJ' });
    // Ancestors of ancestors count too.
    expect(h.assignmentOf('d').execution.request.execRootDigest).toEqual(rootOf({ ...SOURCE, 'a.o': 'A-OBJ', 'c.o': 'C-OBJ' }));
    await h.finish('d', { 'd.o': 'D' });
    expect((await b.done).ok).toBe(true);
  });

  it("applies client steps' deletions and writes to their descendants' exec roots in finishing order, the later write winning", async () => {
    const h = harness();
    h.join('n1', 4);
    const sourceRoot = await h.putTree(SOURCE);
    const client = async (id: string, deps: string[]) => ({ ...(await h.action(id, { outputs: [], deps })), client: true });
    const actions = [
      await client('s1', []),
      await h.action('x', { outputs: ['x.o'], deps: ['s1'] }),
      await client('s2', ['s1']),
      await h.action('y', { outputs: ['y.o'], deps: ['x', 's2'] }),
      await h.action('w', { outputs: ['w.o'], deps: ['s2', 'x'] }),
      await h.action('z', { outputs: ['z.o'], deps: ['s2'] }),
    ];
    const b = h.start({ sourceRoot, actions });
    await settle();
    const buildId = b.events[0]!.buildId;
    const written = async (files: Files) => {
      for (const content of Object.values(files)) await h.cas.put(digestOf(Buffer.from(content)), Buffer.from(content));
      return entries(files);
    };
    await h.dags.reportClientAction({ buildId, actionId: 's1', exitCode: 0, written: await written({ 'gen.h': 'G1' }), deleted: ['a.c'], rekeyed: [] });
    await settle();
    const { 'a.c': _gone, ...withoutA } = SOURCE;
    expect(h.assignmentOf('x').execution.request.execRootDigest).toEqual(rootOf({ ...withoutA, 'gen.h': 'G1' }));
    await h.finish('x', { 'x.o': 'X' });
    await h.dags.reportClientAction({ buildId, actionId: 's2', exitCode: 0, written: await written({ 'gen.h': 'G2', 'a.c': 'again' }), deleted: [], rekeyed: [] });
    await settle();
    // x's tree has s1's gen.h; s2 (finished later) rewrote it and put a.c back.
    const both = rootOf({ ...SOURCE, 'a.c': 'again', 'gen.h': 'G2', 'x.o': 'X' });
    expect(h.assignmentOf('y').execution.request.execRootDigest).toEqual(both);
    expect(h.assignmentOf('w').execution.request.execRootDigest).toEqual(both);
    expect(h.assignmentOf('z').execution.request.execRootDigest).toEqual(rootOf({ ...SOURCE, 'a.c': 'again', 'gen.h': 'G2' }));
    for (const id of ['y', 'w', 'z']) await h.finish(id, { [`${id}.o`]: id });
    expect((await b.done).ok).toBe(true);
  });

  it('settles a client step reported up to date once what its decision waited for is done, without waiting for its other dependencies', async () => {
    const h = harness();
    h.join('n1', 4);
    const sourceRoot = await h.putTree(SOURCE);
    const client = async (id: string, deps: string[], decideAfter?: string[]) => ({ ...(await h.action(id, { outputs: [], deps })), client: true, decideAfter });
    // setup -> slow, quick -> gen (decided after setup only) -> after; the priorities treat gen as skipped.
    const actions = [
      await client('setup', []),
      { ...(await h.action('slow', { outputs: ['slow.o'], deps: ['setup'] })), estimatedMs: 100 },
      { ...(await h.action('quick', { outputs: ['quick.o'], deps: ['setup'] })), estimatedMs: 50 },
      await client('gen', ['setup', 'slow', 'quick'], ['setup']),
      { ...(await h.action('after', { outputs: ['after.o'], deps: ['gen'] })), estimatedMs: 5000 },
    ];
    const priorities = ((): (() => Record<string, number | undefined>) => {
      const seen: Record<string, number | undefined> = {};
      const enqueue = h.scheduler.enqueue.bind(h.scheduler);
      h.scheduler.enqueue = (req: ExecutionRequest) => {
        seen[req.command.arguments[1]!] = req.priority;
        return enqueue(req);
      };
      return () => seen;
    })();
    const b = h.start({ sourceRoot, actions });
    await settle();
    const buildId = b.events[0]!.buildId;
    const report = (r: Partial<ClientActionReport> & { actionId: string }) => h.dags.reportClientAction({ buildId, exitCode: 0, written: [], deleted: [], rekeyed: [], ...r });
    await report({ actionId: 'setup' });
    await settle();
    expect(h.assignedIds().sort()).toEqual(['quick', 'slow']);
    // Not through gen: slow's chain is its own 100 ms, not 100 + after's 5 s.
    expect(priorities()).toMatchObject({ slow: -100, quick: -50 });
    // An up-to-date report changes nothing and names only ancestors.
    await expect(report({ actionId: 'gen', upToDate: { decidedAfter: ['setup'] }, deleted: ['a.c'] })).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });
    await expect(report({ actionId: 'gen', upToDate: { decidedAfter: ['after'] } })).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });
    await report({ actionId: 'gen', upToDate: { decidedAfter: ['setup'] } });
    await settle();
    // slow and quick still run; after starts anyway, in the tree setup left (no slow.o).
    expect(h.assignedIds().sort()).toEqual(['after', 'quick', 'slow']);
    expect(h.assignmentOf('after').execution.request.execRootDigest).toEqual(rootOf(SOURCE));
    for (const id of ['slow', 'quick', 'after']) await h.finish(id, { [`${id}.o`]: id });
    expect(await b.done).toMatchObject({ ok: true, failed: 0, skipped: 0 });
  });

  it('holds an up-to-date report until the actions its decision waited for are done', async () => {
    const h = harness();
    h.join('n1', 4);
    const sourceRoot = await h.putTree(SOURCE);
    const actions = [
      await h.action('first', { outputs: ['first.o'] }),
      await h.action('other', { outputs: ['other.o'] }),
      { ...(await h.action('gen', { outputs: [], deps: ['first', 'other'] })), client: true, decideAfter: ['first'] },
      await h.action('after', { outputs: ['after.o'], deps: ['gen'] }),
    ];
    const b = h.start({ sourceRoot, actions });
    await settle();
    await h.dags.reportClientAction({ buildId: b.events[0]!.buildId, actionId: 'gen', exitCode: 0, written: [], deleted: [], rekeyed: [], upToDate: { decidedAfter: ['first'] } });
    await settle();
    expect(h.assignedIds().sort()).toEqual(['first', 'other']);
    await h.finish('first', { 'first.o': 'F' });
    await settle();
    expect(h.assignedIds().sort()).toEqual(['after', 'first', 'other']);
    expect(h.assignmentOf('after').execution.request.execRootDigest).toEqual(rootOf({ ...SOURCE, 'first.o': 'F' }));
    await h.finish('other', { 'other.o': 'O' });
    await h.finish('after', { 'after.o': 'A' });
    expect(await b.done).toMatchObject({ ok: true });
  });

  it('serves a second identical build entirely from the action cache, running nothing', async () => {
    const { h, sourceRoot, actions, first } = await builtOnce();
    const assigned = h.assigns().length;

    const second = h.start({ sourceRoot, actions });
    await settle();
    const summary = await second.done;
    expect(h.assigns()).toHaveLength(assigned);
    expect(summary).toMatchObject({ ok: true, total: 3, executed: 0, cacheHits: 3, failed: 0, skipped: 0 });
    expect(kinds(second.events)).toEqual(['accepted', 'cache-hit:a', 'cache-hit:b', 'cache-hit:link', 'build-finished']);
    // Same keys as the first build, and the cached results.
    for (const id of ['a', 'b', 'link']) expect(eventOf(second.events, id, 'cache-hit')!.actionDigest).toEqual(eventOf(first.events, id, 'finished')!.actionDigest);
    expect(eventOf(second.events, 'link', 'cache-hit')!.result!.outputFiles.map((f) => f.path)).toEqual(['app']);

    // skip_cache_lookup runs everything again.
    const third = h.start({ sourceRoot, actions, skipCacheLookup: true });
    await settle();
    expect(h.assignedIds().slice(assigned)).toEqual(['a', 'b']);
    await h.finish('a', { 'a.o': 'A-OBJ' });
    await h.finish('b', { 'b.o': 'B-OBJ' });
    await h.finish('link', { app: 'ELF' });
    expect(await third.done).toMatchObject({ ok: true, executed: 3, cacheHits: 0 });
  });

  it('reads each command from the CAS once: a later build with the same commands decodes none again', async () => {
    const h = harness();
    h.join('n1', 2);
    const reads: string[] = [];
    const get = h.cas.get.bind(h.cas);
    h.cas.get = (d) => (reads.push(digestKey(d)), get(d));
    const { sourceRoot, actions } = await compileAndLink(h);
    const commands = actions.map((a) => digestKey(a.commandDigest));
    const first = h.start({ sourceRoot, actions });
    await settle();
    expect(reads.filter((k) => commands.includes(k)).sort()).toEqual([...commands].sort());
    h.dags.cancel(first.events[0]!.buildId, 'done');
    await first.done;
    reads.length = 0;
    const second = h.start({ sourceRoot, actions, buildId: 'again' });
    await settle();
    expect(h.assigns().filter((a) => a.execution.request.buildId === 'again').length).toBeGreaterThan(0);
    expect(reads.filter((k) => commands.includes(k))).toEqual([]);
    h.dags.cancel('again', 'done');
    await second.done;
  });

  it('writes nothing to the CAS for a cache hit', async () => {
    const { h, sourceRoot, actions } = await builtOnce();
    const put = h.cas.put.bind(h.cas);
    const written: Digest[] = [];
    h.cas.put = async (d, data) => {
      written.push(d);
      return put(d, data);
    };
    const second = h.start({ sourceRoot, actions });
    await settle();
    expect(await second.done).toMatchObject({ ok: true, cacheHits: 3 });
    expect(written).toEqual([]);
  });

  it("runs a consumer again when a producer's output changed, and only the producers whose inputs changed", async () => {
    const h = harness();
    h.join('n1', 2);
    const v1 = await compileAndLink(h);
    const first = h.start(v1);
    await settle();
    await h.finish('a', { 'a.o': 'A-OBJ-1' });
    await h.finish('b', { 'b.o': 'B-OBJ' });
    await h.finish('link', { app: 'ELF-1' });
    await first.done;

    const v2 = await compileAndLink(h, { ...SOURCE, 'a.c': 'int a(void) { return 2; }' });
    const second = h.start(v2);
    await settle();
    expect(kindsOf(second.events, 'b')).toEqual(['cache-hit']);
    await h.finish('a', { 'a.o': 'A-OBJ-2' });
    expect(kindsOf(second.events, 'link')).toEqual(['queued', 'started']);
    expect(eventOf(second.events, 'link', 'queued')!.actionDigest).not.toEqual(eventOf(first.events, 'link', 'queued')!.actionDigest);
    await h.finish('link', { app: 'ELF-2' });
    expect(await second.done).toMatchObject({ ok: true, executed: 2, cacheHits: 1 });
  });
});

describe('DAG builds: failures', () => {
  /** a (fails) -> link; b and c independent; a has the longest chain so it goes first. */
  async function failingBuild(h: Harness) {
    const sourceRoot = await h.putTree(SOURCE);
    const actions = [
      await h.action('a', { outputs: ['a.o'] }),
      await h.action('b', { outputs: ['b.o'] }),
      await h.action('c', { outputs: ['c.o'] }),
      await h.action('link', { outputs: ['app'], produced: [{ path: 'a.o', producer: 'a' }] }),
    ];
    return { sourceRoot, actions };
  }

  it('fails an action that exits 1, skips its dependents and the queued work, and lets running work finish (no keep-going)', async () => {
    const h = harness();
    h.join('n1', 2);
    const b = h.start(await failingBuild(h));
    await settle();
    expect(h.assignedIds()).toEqual(['a', 'b']);
    const cQueued = eventOf(b.events, 'c', 'queued')!;
    expect(cQueued).toBeDefined();
    await h.finish('a', {}, 1);
    const failed = eventOf(b.events, 'a', 'failed')!;
    expect(failed.result!.exitCode).toBe(1);
    expect(failed.message).toBe('exit code 1');
    expect(failed.nodeId).toBe('n1');
    expect(eventOf(b.events, 'link', 'skipped')!.message).toBe('a failed');
    expect(eventOf(b.events, 'c', 'skipped')!.message).toBe('a failed');
    // c never ran: it left the queue instead of taking a's slot.
    expect(h.scheduler.queueLength()).toBe(0);
    expect(h.assignedIds()).toEqual(['a', 'b']);
    // b was running: it finishes and is reported.
    await h.finish('b', { 'b.o': 'B' });
    const summary = await b.done;
    expect(kindsOf(b.events, 'b')).toEqual(['queued', 'started', 'finished']);
    expect(summary).toMatchObject({ ok: false, total: 4, executed: 1, cacheHits: 0, failed: 1, skipped: 2 });
    expect(b.events.at(-1)!.kind).toBe('build-finished');
    // A failed result is not cached: the next build runs a again.
    const again = h.start(await failingBuild(h));
    await settle();
    expect(kindsOf(again.events, 'a')).toEqual(['queued', 'started']);
    again.abort();
    await again.done;
  });

  it('with keep-going, skips only the dependents of a failed action and still runs the independent ones', async () => {
    const h = harness();
    h.join('n1', 2);
    const b = h.start({ ...(await failingBuild(h)), keepGoing: true });
    await settle();
    await h.finish('a', {}, 1);
    expect(kindsOf(b.events, 'link')).toEqual(['skipped']);
    expect(h.assignedIds()).toEqual(['a', 'b', 'c']);
    await h.finish('b', { 'b.o': 'B' });
    await h.finish('c', { 'c.o': 'C' });
    const summary = await b.done;
    expect(summary).toMatchObject({ ok: false, total: 4, executed: 2, failed: 1, skipped: 1 });
    expect(kindsOf(b.events, 'c')).toEqual(['queued', 'started', 'finished']);
  });

  it('fails a consumer whose producer finished without writing the produced path (FAILED_PRECONDITION)', async () => {
    const h = harness();
    h.join('n1');
    const sourceRoot = await h.putTree(SOURCE);
    const actions = [await h.action('a', { outputs: ['a.o'] }), await h.action('link', { outputs: ['app'], produced: [{ path: 'a.o', producer: 'a' }] })];
    const b = h.start({ sourceRoot, actions });
    await settle();
    await h.finish('a', { 'other.o': 'X' });
    const summary = await b.done;
    const failed = eventOf(b.events, 'link', 'failed')!;
    expect(failed.status).toMatchObject({ code: Code.FAILED_PRECONDITION, message: 'a finished without writing a.o, which link reads' });
    expect(summary).toMatchObject({ ok: false, executed: 1, failed: 1 });
    expect(h.assignedIds()).toEqual(['a']);
  });

  it('reports an execution that ends with an error status (node-side timeout) as FAILED with that status', async () => {
    const h = harness();
    h.join('n1');
    const sourceRoot = await h.putTree(SOURCE);
    const b = h.start({ sourceRoot, actions: [await h.action('a', {})] });
    await settle();
    const a = h.assignmentOf('a');
    await h.scheduler.finished('n1', a.assignmentId, { ok: false, error: new OrionError(Code.DEADLINE_EXCEEDED, 'action timed out after 100 ms and was killed: tool a') });
    await settle();
    const summary = await b.done;
    expect(eventOf(b.events, 'a', 'failed')!.status).toMatchObject({ code: Code.DEADLINE_EXCEEDED, message: 'action timed out after 100 ms and was killed: tool a' });
    expect(summary).toMatchObject({ ok: false, failed: 1 });
  });

  it('reports RETRIED when a node is lost and STARTED again on the next node', async () => {
    const h = harness();
    h.join('n1');
    const sourceRoot = await h.putTree(SOURCE);
    const b = h.start({ sourceRoot, actions: [await h.action('a', {})] });
    await settle();
    h.leave('n1');
    h.join('n2');
    await settle();
    await h.finish('a', { 'a.o': 'A' });
    await b.done;
    expect(kindsOf(b.events, 'a')).toEqual(['queued', 'started', 'retried', 'started', 'finished']);
    expect(b.events.filter((e) => e.kind === 'started').map((e) => [e.nodeId, e.attempt])).toEqual([
      ['n1', 1],
      ['n2', 2],
    ]);
    expect(eventOf(b.events, 'a', 'finished')!.nodeId).toBe('n2');
  });

  it('runs and skips a DAG in which one generator feeds 150,000 actions (more than a call takes arguments)', async () => {
    const h = harness({ maxDagActions: 200_000 });
    h.join('n1');
    const sourceRoot = await h.putTree(SOURCE);
    const gen = await h.action('gen', { outputs: ['config.h'] });
    const header = await h.action('header', { outputs: ['all.h'], produced: [{ path: 'config.h', producer: 'gen' }] });
    const cc = await h.action('cc', {});
    const wide = Array.from({ length: 150_000 }, (_, i) => ({ ...cc, id: `cc${i}`, deps: ['header'] }));
    const b = h.start({ sourceRoot, actions: [gen, header, ...wide] });
    await settle();
    expect(h.assignedIds()).toEqual(['gen']);
    await h.finish('gen', {}, 1);
    const summary = await b.done;
    expect(summary).toMatchObject({ ok: false, total: 150_002, failed: 1, skipped: 150_001 });
  });

  it("keeps the build's tree when one action's outputs cannot be added to it: only that action fails", async () => {
    const h = harness();
    h.join('n1', 2);
    const sourceRoot = await h.putTree({ ...SOURCE, 'src/x.c': 'x' });
    const actions = [
      await h.action('bad', { outputs: ['src'] }),
      await h.action('good', { outputs: ['g.o'] }),
      await h.action('use', { outputs: ['u'], produced: [{ path: 'g.o', producer: 'good' }] }),
    ];
    const b = h.start({ sourceRoot, actions, keepGoing: true });
    await settle();
    expect(h.assignedIds().sort()).toEqual(['bad', 'good']);
    // Both finish at once: their outputs join the tree concurrently.
    const bad = h.assignmentOf('bad');
    const good = h.assignmentOf('good');
    await h.cas.put(digestOf(Buffer.from('S')), Buffer.from('S'));
    await h.cas.put(digestOf(Buffer.from('G')), Buffer.from('G'));
    const res = (path: string, content: string): ActionResult => ({ outputFiles: [{ path, digest: digestOf(Buffer.from(content)), isExecutable: false }], outputSymlinks: [], outputDirectories: [], exitCode: 0 });
    await Promise.all([h.scheduler.finished('n1', bad.assignmentId, { ok: true, result: res('src', 'S') }), h.scheduler.finished('n1', good.assignmentId, { ok: true, result: res('g.o', 'G') })]);
    await settle();
    expect(eventOf(b.events, 'bad', 'failed')!.status).toMatchObject({ code: Code.INVALID_ARGUMENT, message: 'cannot add the outputs of bad to the build tree: cannot add file src: a directory has that path' });
    expect(kindsOf(b.events, 'good')).toEqual(['queued', 'started', 'finished']);
    expect(h.assignmentOf('use').execution.request.execRootDigest).toEqual(rootOf({ ...SOURCE, 'src/x.c': 'x', 'g.o': 'G' }));
    await h.finish('use', { u: 'U' });
    expect(await b.done).toMatchObject({ ok: false, executed: 2, failed: 1, skipped: 0 });
  });
});

describe('DAG builds: validation', () => {
  async function expectRejected(h: Harness, req: Partial<DagBuildRequest> & { actions: DagActionSpec[]; sourceRoot: Digest }, code: Code, message: string) {
    const b = h.start(req);
    const err = await rejection(b.done);
    expect([err.code, err.message]).toEqual([code, message]);
    // Nothing was accepted, keyed or queued.
    expect(b.events).toEqual([]);
    expect(h.scheduler.queueLength() + h.scheduler.runningCount()).toBe(0);
    expect(h.dags.active()).toEqual([]);
    return err;
  }

  it('refuses a DAG with a cycle', async () => {
    const h = harness();
    const sourceRoot = await h.putTree(SOURCE);
    const actions = [await h.action('x', {}), await h.action('a', { deps: ['c'] }), await h.action('b', { produced: [{ path: 'a.o', producer: 'a' }] }), await h.action('c', { deps: ['b'] })];
    await expectRejected(h, { sourceRoot, actions }, Code.INVALID_ARGUMENT, "the build's dependencies form a cycle through 3 actions (e.g. a, b, c)");
  });

  it('refuses a dependency on an action that is not in the build', async () => {
    const h = harness();
    const sourceRoot = await h.putTree(SOURCE);
    await expectRejected(h, { sourceRoot, actions: [await h.action('a', { deps: ['zz'] })] }, Code.INVALID_ARGUMENT, 'action a depends on "zz", which is not in the build');
    await expectRejected(h, { sourceRoot, actions: [await h.action('a', { produced: [{ path: 'q.o', producer: 'q' }] })] }, Code.INVALID_ARGUMENT, 'action a depends on "q", which is not in the build');
  });

  it('refuses a duplicate action id, an action depending on itself, an empty id and an empty build', async () => {
    const h = harness();
    const sourceRoot = await h.putTree(SOURCE);
    await expectRejected(h, { sourceRoot, actions: [await h.action('a', {}), await h.action('a', {})] }, Code.INVALID_ARGUMENT, 'action id "a" appears twice');
    await expectRejected(h, { sourceRoot, actions: [await h.action('a', { deps: ['a'] })] }, Code.INVALID_ARGUMENT, 'action a depends on itself');
    await expectRejected(h, { sourceRoot, actions: [await h.action('', {})] }, Code.INVALID_ARGUMENT, 'action id "" must be 1 to 1000 characters');
    await expectRejected(h, { sourceRoot, actions: [] }, Code.INVALID_ARGUMENT, 'the build has no actions');
  });

  it('refuses more actions than the head accepts per build, naming the limit', async () => {
    const h = harness({ maxDagActions: 2 });
    const sourceRoot = await h.putTree(SOURCE);
    const actions = [await h.action('a', {}), await h.action('b', {}), await h.action('c', {})];
    await expectRejected(h, { sourceRoot, actions }, Code.INVALID_ARGUMENT, 'the build has 3 actions; this head accepts at most 2 per build (--max-dag-actions)');
  });

  it('refuses a produced input path that is absolute or climbs out of the root, and a timeout above the maximum', async () => {
    const h = harness();
    const sourceRoot = await h.putTree(SOURCE);
    const a = await h.action('a', {});
    await expectRejected(h, { sourceRoot, actions: [a, await h.action('b', { produced: [{ path: '../a.o', producer: 'a' }] })] }, Code.INVALID_ARGUMENT, `action b produced input "../a.o" must be a relative path without '..', empty segments or NUL`);
    await expectRejected(h, { sourceRoot, actions: [{ ...a, timeoutMs: DEFAULT_HEAD_LIMITS.maxActionTimeoutMs + 1 }] }, Code.INVALID_ARGUMENT, `action a asks for a timeout of ${DEFAULT_HEAD_LIMITS.maxActionTimeoutMs + 1} ms; this head allows at most ${DEFAULT_HEAD_LIMITS.maxActionTimeoutMs} ms (--max-action-timeout)`);
  });

  it('refuses a build whose command is not in the CAS with FAILED_PRECONDITION listing it', async () => {
    const h = harness();
    const sourceRoot = await h.putTree(SOURCE);
    const missing = digestOf(Buffer.from('no such command'));
    const a = { ...(await h.action('a', {})), commandDigest: missing };
    const err = await expectRejected(h, { sourceRoot, actions: [a] }, Code.FAILED_PRECONDITION, `command ${digestKey(missing)} is not in the CAS`);
    expect(err.missing).toEqual([missing]);
  });

  it('refuses a build whose source root or key input root is incomplete with FAILED_PRECONDITION', async () => {
    const h = harness();
    const sourceRoot = await h.putTree(SOURCE);
    const a = await h.action('a', {});
    const absentRoot = rootOf({ 'nowhere.c': 'x' });
    expect((await rejection(h.start({ sourceRoot: absentRoot, actions: [a] }).done)).code).toBe(Code.FAILED_PRECONDITION);
    // A directory stored without its file's content.
    const tree = buildTreeFromEntries(entries({ 'lost.c': 'lost content' }));
    for (const bytes of tree.directories.values()) await h.cas.put(digestOf(bytes), bytes);
    const err = await rejection(h.start({ sourceRoot, actions: [{ ...a, inputRootDigest: tree.rootDigest }] }).done);
    expect(err.code).toBe(Code.FAILED_PRECONDITION);
    expect(err.missing).toEqual([digestOf(Buffer.from('lost content'))]);
  });

  it('refuses a second running build with the same id, even while the first is still being validated', async () => {
    const h = harness();
    const sourceRoot = await h.putTree(SOURCE);
    const actions = [await h.action('a', {})];
    const first = h.start({ sourceRoot, actions, buildId: 'same' });
    const second = h.start({ sourceRoot, actions, buildId: 'same' });
    const err = await rejection(second.done);
    expect([err.code, err.message]).toEqual([Code.ALREADY_EXISTS, 'a build with id same is already running']);
    await settle();
    expect(kinds(first.events)).toEqual(['accepted', 'queued:a']);
    expect(h.dags.cancel('same', 'test')).toBe(true);
    expect((await first.done).ok).toBe(false);
  });
});

describe('DAG builds: scheduling', () => {
  /** short; mid1 -> mid2; long1 -> long2 -> long3 (each a plain dependency). */
  async function chains(h: Harness) {
    const sourceRoot = await h.putTree(SOURCE);
    const actions = [
      await h.action('short', {}),
      await h.action('mid1', {}),
      await h.action('mid2', { deps: ['mid1'] }),
      await h.action('long1', {}),
      await h.action('long2', { deps: ['long1'] }),
      await h.action('long3', { deps: ['long2'] }),
    ];
    return { sourceRoot, actions };
  }
  /** Records every execution the DAG builds enqueue; returns the queued request of each action by id. */
  function spy(h: Harness): (events: DagEvent[]) => Record<string, number | undefined> {
    const scheduled: Execution[] = [];
    const enqueue = h.scheduler.enqueue.bind(h.scheduler);
    h.scheduler.enqueue = (req: ExecutionRequest) => {
      const e = enqueue(req);
      scheduled.push(e);
      return e;
    };
    return (events) => {
      const out: Record<string, number | undefined> = {};
      for (const ev of events.filter((x) => x.kind === 'queued')) {
        out[ev.actionId!] = scheduled.find((x) => x.request.actionDigest.hash === ev.actionDigest!.hash && x.request.buildId === ev.buildId)?.request.priority;
      }
      return out;
    };
  }

  it('gives the one free slot to the ready action with the longest remaining chain', async () => {
    const h = harness();
    const priorities = spy(h);
    const b = h.start(await chains(h));
    await settle();
    // No node yet: the three ready actions wait in the queue, resolved longest chain first.
    expect(kinds(b.events).filter((k) => k.startsWith('queued'))).toEqual(['queued:long1', 'queued:mid1', 'queued:short']);
    expect(priorities(b.events)).toEqual({ short: -1000, mid1: -2000, long1: -3000 });
    h.join('n1', 1);
    expect(h.assignedIds()).toEqual(['long1']);
    await h.finish('long1');
    expect(h.assignedIds()).toEqual(['long1', 'mid1']);
    await h.finish('mid1');
    // long2 (2000 left) before mid2 and short (1000 each).
    expect(h.assignedIds()).toEqual(['long1', 'mid1', 'long2']);
    h.dags.cancel(b.events[0]!.buildId, 'done');
    await b.done;
  });

  it('resolves a burst of ready actions longest chain first, a few per turn of the event loop, so the first assignments leave at once', async () => {
    const h = harness();
    h.join('n1', 1);
    const sourceRoot = await h.putTree(SOURCE);
    const roots = [];
    for (let i = 0; i < 40; i++) roots.push(await h.action(`r${i}`, {}));
    // The longest chain comes last in DAG order.
    const actions = [...roots, await h.action('long1', {}), await h.action('long2', { deps: ['long1'] }), await h.action('long3', { deps: ['long2'] })];
    let turn = 0;
    let ticking = true;
    const tick = () => {
      turn++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const queuedInTurn = new Map<number, number>();
    const events: DagEvent[] = [];
    const controller = new AbortController();
    const done = h.dags.run({ instanceName: '', buildId: '', keepGoing: false, skipCacheLookup: false, sourceRoot, actions }, (ev) => {
      events.push(ev);
      if (ev.kind === 'queued') queuedInTurn.set(turn, (queuedInTurn.get(turn) ?? 0) + 1);
    }, controller.signal);
    await settle();
    await settle();
    ticking = false;
    expect(events.filter((e) => e.kind === 'queued')).toHaveLength(41);
    // The one slot went to the head of the longest chain, though it was resolved among 41.
    expect(h.assignedIds()).toEqual(['long1']);
    expect(kinds(events).filter((k) => k.startsWith('queued'))[0]).toBe('queued:long1');
    // Resolved over several turns, at most 16 in each: the loop ran (and sent) between them.
    expect(queuedInTurn.size).toBeGreaterThanOrEqual(3);
    expect(Math.max(...queuedInTurn.values())).toBeLessThanOrEqual(16);
    h.dags.cancel(events[0]!.buildId, 'done');
    await done;
  });

  it('orders by measured durations once the commands have run before', async () => {
    const h = harness();
    const priorities = spy(h);
    const { sourceRoot, actions } = await chains(h);
    // Earlier runs of the same commands: short took 10 s, each long one 100 ms (mid never ran: 1 s by default).
    h.join('feeder', 1);
    const took: Record<string, number> = { short: 10_000, long1: 100, long2: 100, long3: 100 };
    for (const [id, ms] of Object.entries(took)) {
      const spec = actions.find((a) => a.id === id)!;
      const e = h.scheduler.enqueue({
        instanceName: 'earlier',
        actionDigest: digestOf(Buffer.from(`earlier ${id}`)),
        action: { commandDigest: spec.commandDigest, inputRootDigest: spec.inputRootDigest, doNotCache: true },
        command: { arguments: ['tool', id], environmentVariables: [], outputPaths: [], outputFiles: [], outputDirectories: [], workingDirectory: '' },
      });
      h.clock.advance(ms);
      await h.scheduler.finished('feeder', `${e.name}/1`, { ok: true, result: { outputFiles: [], outputSymlinks: [], outputDirectories: [], exitCode: 0 } });
    }
    expect(h.scheduler.expectedDuration(actions[0]!.commandDigest.hash)).toBe(10_000);
    h.leave('feeder');
    const before = h.assigns().length;

    const b = h.start({ sourceRoot, actions });
    await settle();
    expect(priorities(b.events)).toEqual({ short: -10_000, mid1: -2000, long1: -300 });
    h.join('n1', 1);
    expect(h.assignedIds().slice(before)).toEqual(['short']);
    await h.finish('short');
    expect(h.assignedIds().slice(before)).toEqual(['short', 'mid1']);
    h.dags.cancel(b.events[0]!.buildId, 'done');
    await b.done;
  });

  it("uses the client's estimates for actions it has not measured, and its own measurements over them", async () => {
    const h = harness();
    const priorities = spy(h);
    const { sourceRoot, actions } = await chains(h);
    // The client guesses short at 5 s (a big source), long* at 100 ms each; mid1 has no estimate (1 s by default).
    const guess: Record<string, number> = { short: 5000, long1: 100, long2: 100, long3: 100, mid2: 200 };
    const withGuesses = actions.map((a) => ({ ...a, estimatedMs: guess[a.id] }));
    const b = h.start({ sourceRoot, actions: withGuesses });
    await settle();
    expect(priorities(b.events)).toEqual({ short: -5000, mid1: -1200, long1: -300 });
    h.join('n1', 1);
    expect(h.assignedIds()).toEqual(['short']);
    h.clock.advance(40);
    await h.finish('short');
    expect(h.assignedIds()).toEqual(['short', 'mid1']);
    h.dags.cancel(b.events[0]!.buildId, 'done');
    await b.done;
    // Measured now (40 ms): the next build ranks short by that, not by the client's guess.
    const again = h.start({ sourceRoot, actions: withGuesses, skipCacheLookup: true });
    await settle();
    expect(priorities(again.events).short).toBe(-40);
    h.dags.cancel(again.events[0]!.buildId, 'done');
    await again.done;
  });

  it.each(['n1', 'n2'])('places a consumer on the node that produced most of its input bytes (%s)', async (big) => {
    const h = harness();
    h.join('n1', 1);
    h.join('n2', 1);
    const { sourceRoot, actions } = await compileAndLink(h);
    const b = h.start({ sourceRoot, actions });
    await settle();
    const byNode = new Map(h.assigns().map((a) => [a.nodeId, a.execution.request.command.arguments[1]!]));
    expect([...byNode.keys()].sort()).toEqual(['n1', 'n2']);
    const small = big === 'n1' ? 'n2' : 'n1';
    const bigId = byNode.get(big)!;
    const smallId = byNode.get(small)!;
    await h.finish(smallId, { [`${smallId}.o`]: 'x'.repeat(10) });
    await h.finish(bigId, { [`${bigId}.o`]: 'y'.repeat(1000) });
    const link = h.assignmentOf('link');
    expect(link.nodeId).toBe(big);
    expect(link.execution.request.localityBytes).toEqual(new Map([[small, 10], [big, 1000]]));
    await h.finish('link', { app: 'ELF' });
    await b.done;
  });

  it('joins an identical action of another build rather than running it twice, and cancelling one build leaves the other its execution', async () => {
    const h = harness();
    const { sourceRoot, actions } = await compileAndLink(h);
    const x = h.start({ sourceRoot, actions, buildId: 'x' });
    const y = h.start({ sourceRoot, actions, buildId: 'y' });
    await settle();
    expect(eventOf(x.events, 'a', 'queued')!.actionDigest).toEqual(eventOf(y.events, 'a', 'queued')!.actionDigest);
    expect(h.scheduler.queueLength()).toBe(2);
    expect(h.dags.cancel('x', 'changed my mind')).toBe(true);
    expect((await x.done).ok).toBe(false);
    expect(h.scheduler.queueLength()).toBe(2);
    h.join('n1', 2);
    expect(h.assignedIds()).toEqual(['a', 'b']);
    await h.finish('a', { 'a.o': 'A' });
    await h.finish('b', { 'b.o': 'B' });
    await h.finish('link', { app: 'ELF' });
    expect(await y.done).toMatchObject({ ok: true, executed: 3 });
  });
});

describe('DAG builds: cancellation', () => {
  async function cancellable(h: Harness) {
    h.join('n1', 1);
    const built = await compileAndLink(h);
    return built;
  }

  function expectCancelled(h: Harness, events: DagEvent[], summary: DagSummary, why: string) {
    expect(summary).toMatchObject({ ok: false, total: 3, executed: 0, failed: 0, skipped: 3 });
    // a was running: its node is told to stop; b was queued: it leaves the queue.
    expect(h.cancels()).toEqual([h.assignmentOf('a').assignmentId]);
    expect(h.scheduler.queueLength()).toBe(0);
    expect(h.scheduler.runningCount()).toBe(0);
    expect(h.registry.get('n1')!.running.size).toBe(0);
    for (const id of ['a', 'b', 'link']) expect(eventOf(events, id, 'skipped')!.message).toBe(why);
    expect(events.at(-1)).toMatchObject({ kind: 'build-finished', summary: { ok: false } });
    expect(h.dags.active()).toEqual([]);
  }

  it('cancels running and queued executions when the client goes away (abort signal)', async () => {
    const h = harness();
    const b = h.start(await cancellable(h));
    await settle();
    expect(h.assignedIds()).toEqual(['a']);
    expect(h.scheduler.queueLength()).toBe(1);
    b.abort();
    expectCancelled(h, b.events, await b.done, 'cancelled: the client went away');
    // The node's late report changes nothing.
    await h.finish('a', { 'a.o': 'A' });
    expect(b.events.filter((e) => e.kind === 'finished')).toEqual([]);
  });

  it('cancels a build by id, and answers false for an id that is not running', async () => {
    const h = harness();
    const b = h.start({ ...(await cancellable(h)), buildId: 'doomed' });
    await settle();
    expect(h.dags.active()).toEqual(['doomed']);
    expect(h.dags.cancel('nope', 'x')).toBe(false);
    expect(h.dags.cancel('doomed', 'CancelBuild')).toBe(true);
    expectCancelled(h, b.events, await b.done, 'cancelled: CancelBuild');
    expect(h.dags.cancel('doomed', 'again')).toBe(false);
  });

  it('lets only the submitting identity (or an admin, acting as anyone) cancel or report into a build', async () => {
    const h = harness();
    const b = h.start({ ...(await cancellable(h)), buildId: 'alices', owner: 'token:alice' });
    await settle();
    expect(h.dags.cancel('alices', 'x', 'token:bob')).toBe(false);
    await expect(h.dags.reportClientAction({ buildId: 'alices', actionId: 'a', exitCode: 0, written: [], deleted: [], rekeyed: [] }, 'token:bob')).rejects.toMatchObject({ code: Code.NOT_FOUND });
    expect(h.dags.active()).toEqual(['alices']);
    expect(h.cancels()).toEqual([]);
    expect(h.dags.cancel('alices', 'CancelBuild', 'token:alice')).toBe(true);
    expectCancelled(h, b.events, await b.done, 'cancelled: CancelBuild');
  });

  it('starts nothing for a client that went away while its build was being validated', async () => {
    const h = harness();
    const built = await cancellable(h);
    const controller = new AbortController();
    controller.abort();
    const b = h.start(built, controller.signal);
    const summary = await b.done;
    expect(summary).toMatchObject({ ok: false, skipped: 3 });
    expect(h.assigns()).toEqual([]);
    expect(h.scheduler.queueLength()).toBe(0);
  });

  it('honours a CancelBuild that arrives while the build is being validated', async () => {
    const h = harness();
    const built = await cancellable(h);
    const b = h.start({ ...built, buildId: 'early' });
    expect(h.dags.active()).toEqual(['early']);
    expect(h.dags.cancel('early', 'CancelBuild')).toBe(true);
    const summary = await b.done;
    expect(summary).toMatchObject({ ok: false, skipped: 3 });
    expect(eventOf(b.events, 'a', 'skipped')!.message).toBe('cancelled: CancelBuild');
    expect(h.assigns()).toEqual([]);
    expect(h.dags.active()).toEqual([]);
  });
});

describe('DAG builds: trusting cached results', () => {
  const MOUNT = '/home/dev/proj';
  /** Compiles a.c with a dependency file; the key input root holds only a.c. */
  async function compileWithDepfile(h: Harness) {
    const sourceRoot = await h.putTree({ ...SOURCE, 'gen.h': '#define GEN 1' });
    const a = await h.action('a', { outputs: ['a.o', 'a.d'], key: { 'a.c': SOURCE['a.c']! }, depfile: 'a.d', platform: { properties: [{ name: MOUNT_PATH_PROPERTY, value: MOUNT }] } });
    return { sourceRoot, actions: [a] };
  }

  async function buildTwice(h: Harness, depfile: string) {
    h.join('n1');
    const first = h.start(await compileWithDepfile(h));
    await settle();
    await h.finish('a', { 'a.o': 'A', 'a.d': depfile });
    await first.done;
    const second = h.start(await compileWithDepfile(h));
    await settle();
    return second;
  }

  it('runs an action instead of serving a cached result whose dependency file names a project file missing from the key that has changed since', async () => {
    const h = harness();
    h.join('n1');
    // gen.h was read (it is in the source tree) but is not in the key input root.
    const first = h.start(await compileWithDepfile(h));
    await settle();
    await h.finish('a', { 'a.o': 'A', 'a.d': `a.o: a.c ${MOUNT}/gen.h /usr/include/stdio.h\n` });
    await first.done;
    const changed = await compileWithDepfile(h);
    changed.sourceRoot = await h.putTree({ ...SOURCE, 'gen.h': '#define GEN 2' });
    const second = h.start(changed);
    await settle();
    expect(kindsOf(second.events, 'a')).toEqual(['queued', 'started']);
    await h.finish('a', { 'a.o': 'B', 'a.d': `a.o: a.c ${MOUNT}/gen.h\n` });
    expect(await second.done).toMatchObject({ ok: true, executed: 1, cacheHits: 0 });
  });

  it('serves a result under the key extended with the unkeyed files it read, while they are unchanged', async () => {
    const h = harness();
    const second = await buildTwice(h, `a.o: a.c ${MOUNT}/gen.h /usr/include/stdio.h\n`);
    expect(kindsOf(second.events, 'a')).toEqual(['cache-hit']);
    const hit = eventOf(second.events, 'a', 'cache-hit')!;
    // Not the key the client described (a.c only): the one that also covers gen.h.
    const { actions } = await compileWithDepfile(h);
    expect(hit.actionDigest).toEqual(keyFor(actions[0]!, rootOf({ 'a.c': SOURCE['a.c']!, 'gen.h': '#define GEN 1' })));
    expect(hit.actionDigest).not.toEqual(keyFor(actions[0]!, actions[0]!.inputRootDigest));
    expect(await second.done).toMatchObject({ ok: true, executed: 0, cacheHits: 1 });
  });

  it('serves a cached result whose dependency file names only files in the key or outside the project', async () => {
    const h = harness();
    const second = await buildTwice(h, `a.o: a.c ${MOUNT}/a.c \\\n /usr/include/stdio.h\n`);
    expect(kindsOf(second.events, 'a')).toEqual(['cache-hit']);
    expect(await second.done).toMatchObject({ ok: true, executed: 0, cacheHits: 1 });
  });
});
