/**
 * The head's build tracker and HTTP API with real in-memory parts: a node
 * registry, the scheduler, a manual clock, and the HTTP handler on a loopback port.
 */
import { Metadata } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.js';
import { listenHttp, type HttpListener } from '../../common/http-listen.js';
import { silentLogger } from '../../common/logger.js';
import { createMetricsRegistry } from '../../common/metrics.js';
import { digestOf } from '../../cas/digest.js';
import { RequestMetadata } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';
import { createBuildTracker, type BuildEvent } from '../../head/build-tracker.js';
import { createHttpApi } from '../../head/http-server.js';
import { createNodeRegistry } from '../../head/node-registry.js';
import { requestInfo } from '../../head/request-info.js';
import { createScheduler, type ExecutionRequest, type NodeCommand } from '../../head/scheduler.js';

function request(n: number): ExecutionRequest {
  return {
    instanceName: '',
    actionDigest: digestOf(Buffer.from(`action ${n}`)),
    action: { commandDigest: digestOf(Buffer.from(`command ${n}`)), inputRootDigest: digestOf(Buffer.from('root')), doNotCache: false },
    command: { arguments: ['cc', '-c', `f${n}.c`], environmentVariables: [], outputPaths: [`f${n}.o`], outputFiles: [], outputDirectories: [], workingDirectory: '' },
  };
}

function setup() {
  const clock = createManualClock(1_000_000);
  const registry = createNodeRegistry({ clock, heartbeatTimeoutMs: 10_000 });
  const sent: NodeCommand[] = [];
  const scheduler = createScheduler({ registry, clock, log: silentLogger(), send: (_n, cmd) => (sent.push(cmd), true), acceptResult: async (_e, r) => r });
  const executed: [number, string][] = [];
  const tracker = createBuildTracker({ scheduler, clock, log: silentLogger(), idleMs: 60_000, onExecuted: (ms, state) => executed.push([ms, state]) });
  const events: BuildEvent[] = [];
  tracker.subscribe((e) => events.push(e));
  const addNode = (id: string) => {
    const rec = registry.register({ nodeId: id, address: '', slots: 1, metadata: {} });
    registry.attach(id, rec.sessionId);
  };
  return { clock, registry, scheduler, tracker, events, sent, executed, addNode };
}

const info = (buildId: string, actionId: string, deps: string[] = []) => ({ buildId, actionId, label: `CC ${actionId}.o`, deps });

describe('build tracker: executions grouped by the client\'s build id', () => {
  it('follows an action from queued to running on a node to done, with its timing', async () => {
    const t = setup();
    const e = t.scheduler.enqueue(request(1));
    t.tracker.execution(e, info('b1', 'a1', ['a0']));
    expect(t.tracker.get('b1')!.actions).toEqual([expect.objectContaining({ id: 'a1', label: 'CC a1.o', deps: ['a0'], state: 'queued', queuedAt: 1_000_000 })]);
    t.clock.advance(100);
    t.addNode('n1');
    expect(t.tracker.get('b1')!.actions[0]).toMatchObject({ state: 'running', nodeId: 'n1', startedAt: 1_000_100 });
    t.clock.advance(250);
    const assign = t.sent.find((c) => c.type === 'assign')!;
    await t.scheduler.finished('n1', assign.assignmentId, { ok: true, result: { outputFiles: [], outputSymlinks: [], outputDirectories: [], exitCode: 0 } });
    expect(t.tracker.get('b1')!.actions[0]).toMatchObject({ state: 'done', nodeId: 'n1', exitCode: 0, endedAt: 1_000_350 });
    expect(t.events.filter((x) => x.type === 'action').map((x) => (x as { action: { state: string } }).action.state)).toEqual(['queued', 'running', 'done']);
    expect(t.executed).toEqual([[250, 'done']]);
    expect(t.tracker.list()).toEqual([expect.objectContaining({ id: 'b1', inProgress: true, total: 1, counts: { queued: 0, running: 0, cached: 0, done: 1, failed: 0 } })]);
  });

  it('records a nonzero exit as failed, and a cache hit as cached without a node', async () => {
    const t = setup();
    t.addNode('n1');
    const e = t.scheduler.enqueue(request(2));
    t.tracker.execution(e, info('b1', 'bad'));
    const assign = t.sent.find((c) => c.type === 'assign')!;
    await t.scheduler.finished('n1', assign.assignmentId, { ok: true, result: { outputFiles: [], outputSymlinks: [], outputDirectories: [], exitCode: 1 } });
    const hit = t.scheduler.completed(request(3), { cachedResult: true, result: { outputFiles: [], outputSymlinks: [], outputDirectories: [], exitCode: 0 }, status: { code: 0, message: '' } });
    t.tracker.execution(hit, info('b1', 'hit'));
    t.tracker.lookup(info('b1', 'ac-hit'), digestOf(Buffer.from('x')), true);
    t.tracker.lookup(info('b1', 'ac-miss'), digestOf(Buffer.from('y')), false);
    const states = Object.fromEntries(t.tracker.get('b1')!.actions.map((a) => [a.id, [a.state, a.nodeId]]));
    expect(states).toEqual({ bad: ['failed', 'n1'], hit: ['cached', undefined], 'ac-hit': ['cached', undefined] });
  });

  it('lists a build as in progress while work is queued, and for a minute after its last activity', () => {
    const t = setup();
    t.tracker.execution(t.scheduler.enqueue(request(1)), info('b1', 'a'));
    t.clock.advance(120_000);
    expect(t.tracker.list().map((b) => [b.id, b.inProgress])).toEqual([['b1', true]]);
    t.tracker.lookup(info('b2', 'x'), digestOf(Buffer.from('x')), true);
    t.clock.advance(61_000);
    expect(t.tracker.list().map((b) => b.id)).toEqual(['b1']);
    expect(t.tracker.list(true).map((b) => [b.id, b.inProgress])).toEqual([
      ['b1', true],
      ['b2', false],
    ]);
  });

  it('reads the build from Orion headers, or from Bazel\'s RequestMetadata tool invocation id', () => {
    const md = new Metadata();
    md.set('x-orion-build-id', 'b-7');
    md.set('x-orion-action-id', 'abc');
    md.set('x-orion-action-label', 'CC a.o');
    md.set('x-orion-action-deps', 'd1, d2,,d3');
    expect(requestInfo(md)).toEqual({ buildId: 'b-7', actionId: 'abc', label: 'CC a.o', deps: ['d1', 'd2', 'd3'] });
    const bazel = new Metadata();
    bazel.set('build.bazel.remote.execution.v2.requestmetadata-bin', Buffer.from(RequestMetadata.encode(RequestMetadata.fromPartial({ toolInvocationId: 'inv-1', actionId: 'act', actionMnemonic: 'CppCompile', targetId: '//a:b' })).finish()));
    expect(requestInfo(bazel)).toEqual({ buildId: 'inv-1', actionId: 'act', label: 'CppCompile //a:b', deps: [] });
    expect(requestInfo(new Metadata())).toBeUndefined();
  });
});

describe('head HTTP API', () => {
  let listener: HttpListener | undefined;
  afterEach(async () => {
    await listener?.close();
    listener = undefined;
  });

  async function serve(authorize?: (req: import('node:http').IncomingMessage) => boolean) {
    const t = setup();
    const api = createHttpApi({ registry: t.registry, builds: t.tracker, metrics: createMetricsRegistry(), log: silentLogger(), authorize, nodesEveryMs: 20 });
    listener = await listenHttp('127.0.0.1', 0, api.handler);
    const close = listener.close;
    listener.close = async () => {
      api.close();
      await close();
    };
    return { ...t, url: listener.url };
  }

  it('asks the authorize hook about every request: 401 with a JSON error when it says no', async () => {
    const seen: string[] = [];
    const s = await serve((req) => {
      seen.push(req.url!);
      return req.headers.authorization === 'Bearer secret';
    });
    const denied = await fetch(`${s.url}/api/nodes`);
    expect(denied.status).toBe(401);
    expect(await denied.json()).toEqual({ error: 'unauthenticated: this head requires credentials' });
    expect((await fetch(`${s.url}/metrics`)).status).toBe(401);
    const ok = await fetch(`${s.url}/api/nodes`, { headers: { authorization: 'Bearer secret' } });
    expect(ok.status).toBe(200);
    expect(seen).toEqual(['/api/nodes', '/metrics', '/api/nodes']);
  });

  it('serves the dashboard page, JSON errors for unknown pages and methods', async () => {
    const s = await serve();
    const page = await fetch(`${s.url}/`);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const html = await page.text();
    expect(html).toContain('<title>Orion cluster</title>');
    expect(html).toMatch(/new EventSource\(["']\/api\/events["']\)/);
    expect(await (await fetch(`${s.url}/nope`)).json()).toEqual({ error: 'no such page: /nope' });
    const post = await fetch(`${s.url}/api/builds`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });

  it('streams node changes and build events as server-sent events', async () => {
    const s = await serve();
    const res = await fetch(`${s.url}/api/events`);
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const reader = res.body!.getReader();
    let text = '';
    const readUntil = async (needle: string) => {
      while (!text.includes(needle)) text += new TextDecoder().decode((await reader.read()).value);
    };
    await readUntil('event: builds\ndata: []\n\n');
    expect(text).toContain('event: nodes\ndata: []\n\n');
    s.addNode('n1');
    await readUntil('"id":"n1"');
    s.tracker.execution(s.scheduler.enqueue(request(1)), info('b9', 'a9'));
    await readUntil('event: build\n');
    expect(text).toMatch(/event: action\ndata: \{"buildId":"b9","action":\{"id":"a9","label":"CC a9.o"/);
    await reader.cancel();
  });
});
