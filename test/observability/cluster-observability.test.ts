/**
 * A real head (with --http-port) and two real nodes (with --metrics-port and
 * --health-port), and `orion build --head` of the Make fixture: what the head
 * knows about builds, its JSON API and event stream, metrics, health and logs.
 */
import http from 'node:http';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HealthCheckResponse_ServingStatus, HealthClient } from '../../proto/gen/grpc/health/v1/health.js';
import type { ChromeTrace } from '../../cli/build/timeline.js';
import { startHeadProcess, startNodeProcess, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';
import { baseEnv, copyFixture, orion, orionBuild, scratch, type BuildRun } from '../helpers/build.js';

interface ActionJson {
  id: string;
  label: string;
  deps: string[];
  state: string;
  nodeId?: string;
}

async function getJson<T>(url: string): Promise<{ status: number; body: T }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as T };
}

/** Prometheus text to a map of series to value. */
function samples(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

/** Collects server-sent events from `url` until stopped. */
function listen(url: string) {
  const events: { event: string; data: unknown }[] = [];
  let buffer = '';
  const req = http.get(url, (res) => {
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buffer += chunk;
      let i;
      while ((i = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) events.push({ event, data: JSON.parse(data) });
      }
    });
  });
  req.on('error', () => undefined);
  return { events, stop: () => req.destroy() };
}

describe('observing a cluster build through the head and nodes', () => {
  let dir: string;
  let head: Daemon & { address: string };
  let dashboard: string;
  const nodes: Daemon[] = [];
  const nodeMetrics: string[] = [];
  const nodeHealth: string[] = [];
  let first: BuildRun;
  let buildId: string;
  let profile: string;

  beforeAll(async () => {
    dir = await scratch('observe');
    head = await startHeadProcess(path.join(dir, 'head'), ['--heartbeat-timeout', '2s', '--http-port', '0', '--log-level', 'debug']);
    dashboard = await waitFor('the dashboard address', () => /orion head dashboard on (\S+)\//.exec(head.output())?.[1]);
    for (const id of ['n1', 'n2']) {
      const n = startNodeProcess(head.address, id, path.join(dir, id), ['--slots', '2', '--no-sandbox', '--log-level', 'debug', '--metrics-port', '0', '--health-port', '0']);
      nodes.push(n);
      nodeMetrics.push(await waitFor(`${id} metrics address`, () => /orion node metrics on (\S+)/.exec(n.output())?.[1]));
      nodeHealth.push(await waitFor(`${id} health address`, () => /orion node health on (\S+)/.exec(n.output())?.[1]));
    }
    await waitForActiveNodes(head.address, 2);
    const proj = await copyFixture('make-project', path.join(dir, 'proj'));
    profile = path.join(dir, 'trace.json');
    first = await orionBuild(proj, { cacheDir: path.join(dir, 'cache1'), head: head.address, args: ['--profile', profile] });
    const builds = await getJson<{ builds: { id: string }[] }>(`${dashboard}/api/builds`);
    if (builds.body.builds.length !== 1) throw new Error(`the head saw ${builds.body.builds.length} builds; the build said:\n${first.stdout}\n${first.stderr}`);
    buildId = builds.body.builds[0]!.id;
  });

  afterAll(async () => {
    for (const n of nodes) await n.kill('SIGKILL');
    await head?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('the build succeeds on the nodes and its summary tells where actions ran and the bytes moved', () => {
    expect(first.code, first.stderr).toBe(0);
    const remote = /^orion: ran (\d+) remotely \((.*)\), (\d+) locally, (\d+) from cache; moved (\S+ \S+) up, \S+ \S+ down$/m.exec(first.stderr);
    expect(remote, first.stderr).not.toBeNull();
    expect(Number(remote![1])).toBeGreaterThan(0);
    // The source tree went up (in batches of small blobs, which count too).
    expect(remote![5]).toMatch(/KiB|MiB/);
    expect(remote![2]).toMatch(/^n[12]: \d+(, n2: \d+)?$/);
    expect(first.stderr).toMatch(/^orion: critical path /m);
  });

  it('--profile writes a trace with a process per node and a lane per slot, spans with their remote phases', async () => {
    const t = JSON.parse(await readFile(profile, 'utf8')) as ChromeTrace;
    expect(t.displayTimeUnit).toBe('ms');
    const processes = t.traceEvents.filter((e) => e.ph === 'M' && e.name === 'process_name').map((e) => e.args!.name);
    expect(processes).toEqual(expect.arrayContaining(['local (this machine)', 'cache hits']));
    expect(processes.some((p) => p === 'node n1' || p === 'node n2')).toBe(true);
    const phases = new Set(t.traceEvents.filter((e) => e.cat === 'phase').map((e) => e.name));
    for (const p of ['queued', 'fetching inputs', 'executing', 'uploading outputs']) expect(phases).toContain(p);
    // Every action a node ran shows its time in the head's queue (from the head's own stamp, which the
    // QUEUED event can reach this process after), not only those whose event came before the node started.
    const count = (name: string) => t.traceEvents.filter((e) => e.cat === 'phase' && e.name === name).length;
    expect(count('downloading outputs')).toBeGreaterThan(0);
    // (Timestamps are whole milliseconds: a dispatch within one shows no queued phase, hence 80%.)
    expect(count('queued')).toBeGreaterThanOrEqual(Math.ceil(0.8 * count('downloading outputs')));
    expect(t.otherData?.buildId).toBe(buildId);
  });

  it('GET /api/nodes lists both nodes with their slots and load', async () => {
    const r = await getJson<{ nodes: { id: string; status: string; slots: number; running: number }[] }>(`${dashboard}/api/nodes`);
    expect(r.status).toBe(200);
    expect(r.body.nodes.map((n) => [n.id, n.status, n.slots])).toEqual([
      ['n1', 'active', 2],
      ['n2', 'active', 2],
    ]);
  });

  it('GET /api/builds/:id gives each remote action with its label, dependencies, node and final state', async () => {
    const r = await getJson<{ id: string; counts: Record<string, number>; actions: ActionJson[] }>(`${dashboard}/api/builds/${encodeURIComponent(buildId)}`);
    expect(r.status).toBe(200);
    const acts = r.body.actions;
    expect(acts.length).toBeGreaterThanOrEqual(5);
    for (const a of acts) {
      expect(a.state).toBe('done');
      expect(['n1', 'n2']).toContain(a.nodeId);
      expect(a.label).toMatch(/^(CC|AR|LD|RANLIB) /);
    }
    // Edges between actions the head saw: the link depends on compiles it ran too.
    const ids = new Set(acts.map((a) => a.id));
    expect(acts.some((a) => a.deps.some((d) => ids.has(d)))).toBe(true);
    expect(r.body.counts.done).toBe(acts.length);
    const missing = await getJson<{ error: string }>(`${dashboard}/api/builds/nope`);
    expect(missing).toEqual({ status: 404, body: { error: 'no build "nope" is known to this head' } });
  });

  it('GET /api/events pushes a new build and its cache hits as they happen', async () => {
    const stream = listen(`${dashboard}/api/events`);
    try {
      await waitFor('the initial events', () => stream.events.some((e) => e.event === 'builds'));
      // The same project with a fresh local cache: every action comes from the head's action cache.
      const second = await orionBuild(path.join(dir, 'proj'), { cacheDir: path.join(dir, 'cache2'), head: head.address });
      expect(second.code, second.stderr).toBe(0);
      const actions = await waitFor('cache-hit events', () => {
        const a = stream.events.filter((e) => e.event === 'action' && (e.data as { buildId: string }).buildId !== buildId);
        return a.length >= 5 ? a : undefined;
      });
      expect(actions.every((e) => (e.data as { action: ActionJson }).action.state === 'cached')).toBe(true);
      expect(stream.events.some((e) => e.event === 'build' && (e.data as { id: string }).id !== buildId)).toBe(true);
      expect(stream.events.some((e) => e.event === 'nodes')).toBe(true);
    } finally {
      stream.stop();
    }
  });

  it('`orion status --builds` lists the builds with their counts', async () => {
    const r = await orion(['status', '--head', head.address, '--builds'], { cwd: dir, env: baseEnv() });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^BUILD\s+STARTED\s+QUEUED\s+RUNNING\s+DONE\s+CACHED\s+FAILED\s+STATE$/);
    const row = lines.find((l) => l.startsWith(buildId))!.split(/\s{2,}/);
    expect(row.slice(2, 7)).toEqual(['0', '0', row[4], '0', '0']);
    expect(Number(row[4])).toBeGreaterThanOrEqual(5);
    expect(row[7]).toBe('in progress');
    expect(lines).toHaveLength(3);
  });

  it('the head serves Prometheus metrics: queue, running, nodes by status, cache hit ratio, durations, CAS bytes', async () => {
    const res = await fetch(`${dashboard}/metrics`);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const s = samples(await res.text());
    expect(s.get('orion_scheduler_queue_length')).toBe(0);
    expect(s.get('orion_scheduler_running_actions')).toBe(0);
    expect(s.get('orion_nodes{status="active"}')).toBe(2);
    expect(s.get('orion_action_cache_hit_ratio')).toBeGreaterThan(0);
    expect(s.get('orion_action_cache_hit_ratio')).toBeLessThan(1);
    expect(s.get('orion_action_duration_seconds_count{result="ok"}')).toBeGreaterThanOrEqual(5);
    expect(s.get('orion_cas_bytes_received_total')).toBeGreaterThan(0);
    expect(s.get('orion_cas_bytes_sent_total')).toBeGreaterThan(0);
  });

  it('each node serves its own metrics: running actions, results, durations, CAS bytes', async () => {
    let ran = 0;
    for (const url of nodeMetrics) {
      const s = samples(await (await fetch(url)).text());
      expect(s.get('orion_node_running_actions')).toBe(0);
      expect(s.get('orion_node_slots')).toBe(2);
      ran += s.get('orion_node_actions_total{result="ok"}') ?? 0;
      if (s.get('orion_node_actions_total{result="ok"}')) expect(s.get('orion_node_cas_bytes_fetched_total')).toBeGreaterThan(0);
    }
    expect(ran).toBeGreaterThanOrEqual(5);
  });

  it('each node answers grpc.health.v1 checks: SERVING while connected, NOT_FOUND for unknown services', async () => {
    for (const address of nodeHealth) {
      const client = new HealthClient(address, credentials.createInsecure());
      try {
        const ok = await new Promise<{ status: number }>((resolve, reject) => client.check({ service: '' }, (err, r) => (err ? reject(err) : resolve(r))));
        expect(ok.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
        const node = await new Promise<{ status: number }>((resolve, reject) => client.check({ service: 'orion.v1.Node' }, (err, r) => (err ? reject(err) : resolve(r))));
        expect(node.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
        const unknown = await new Promise<{ code?: number }>((resolve) => client.check({ service: 'nope' }, (err) => resolve(err ?? {})));
        expect(unknown.code).toBe(5);
      } finally {
        client.close();
      }
    }
  });

  it('daemon logs carry the build id: the node per action (with nodeId and actionDigest), the head per finished action', () => {
    const jsonLines = (out: string) => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const nodeLines = nodes.flatMap((n) => jsonLines(n.output())).filter((l) => l.msg === 'running action' && l.buildId === buildId);
    expect(nodeLines.length).toBeGreaterThanOrEqual(5);
    for (const l of nodeLines) {
      expect(['n1', 'n2']).toContain(l.nodeId);
      expect(l.actionDigest).toMatch(/^[0-9a-f]{64}$/);
    }
    const headLines = jsonLines(head.output()).filter((l) => l.msg === 'action finished' && l.buildId === buildId);
    expect(headLines.length).toBeGreaterThanOrEqual(5);
    expect(headLines.every((l) => (l.nodeId === 'n1' || l.nodeId === 'n2') && typeof l.actionDigest === 'string')).toBe(true);
  });
});
