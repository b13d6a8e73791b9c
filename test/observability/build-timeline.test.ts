import { describe, expect, it } from 'vitest';
import type { BuildAction, BuildGraph } from '../../dag-extractor/types.js';
import type { BuildSummary } from '../../cli/build/build-runner.js';
import { buildReport, criticalPath, formatReport, slowestActions } from '../../cli/build/build-report.js';
import { createTimeline, type ChromeTrace } from '../../cli/build/timeline.js';

const action = (id: string, deps: string[] = [], kind: BuildAction['kind'] = 'compile'): BuildAction => ({
  id,
  kind,
  cwd: '/p',
  argv: ['cc', id],
  inputs: [],
  outputs: [`/p/${id}`],
  deps,
  cacheable: true,
  label: `CC ${id}`,
});

/** Checks what Perfetto and chrome://tracing need, and returns the complete events. */
function checkTraceShape(t: ChromeTrace) {
  expect(Object.keys(t).sort()).toEqual(['displayTimeUnit', 'otherData', 'traceEvents']);
  expect(t.displayTimeUnit).toBe('ms');
  for (const e of t.traceEvents) {
    expect(['X', 'M']).toContain(e.ph);
    expect(Number.isInteger(e.pid) && Number.isInteger(e.tid)).toBe(true);
    expect(Number.isInteger(e.ts) && e.ts >= 0).toBe(true);
    if (e.ph === 'X') expect(Number.isInteger(e.dur) && e.dur! >= 1).toBe(true);
    if (e.ph === 'M') expect(['process_name', 'thread_name', 'process_sort_index', 'thread_sort_index']).toContain(e.name);
  }
  // Every lane an event uses is named.
  const named = new Set(t.traceEvents.filter((e) => e.name === 'thread_name').map((e) => `${e.pid}/${e.tid}`));
  const procs = new Set(t.traceEvents.filter((e) => e.name === 'process_name').map((e) => e.pid));
  const spans = t.traceEvents.filter((e) => e.ph === 'X');
  for (const e of spans) {
    expect(named.has(`${e.pid}/${e.tid}`), `lane ${e.pid}/${e.tid} has no thread_name`).toBe(true);
    expect(procs.has(e.pid)).toBe(true);
  }
  return spans;
}

describe('build timeline: Chrome trace events for --profile', () => {
  it('draws a remote action on its node with its phases, a local one executing, and a cache hit', () => {
    let now = 1_000_000;
    const tl = createTimeline(() => now);
    const [a, b, c] = [action('a'), action('b'), action('c')];
    tl.start(3);
    tl.started(a);
    tl.started(b);
    tl.started(c);
    now += 5;
    tl.finished(c, 'cached', 1);
    tl.running(a, 'remote');
    tl.executed(a, {
      where: 'n1',
      startMs: 1_000_000,
      endMs: 1_000_900,
      sentAt: 1_000_100,
      exitCode: 0,
      metadata: { worker: 'n1', workerStartMs: 1_000_200, inputFetchStartMs: 1_000_200, inputFetchCompletedMs: 1_000_300, executionStartMs: 1_000_310, executionCompletedMs: 1_000_700, outputUploadStartMs: 1_000_700, outputUploadCompletedMs: 1_000_800, workerCompletedMs: 1_000_800 },
    });
    now = 1_000_900;
    tl.finished(a, 'executed', 2);
    tl.executed(b, { where: 'local', startMs: 1_000_000, endMs: 1_000_400, exitCode: 0 });
    tl.finished(b, 'executed', 3);
    tl.summary({} as BuildSummary, 900);
    const t = tl.trace({ buildId: 'b-1' });
    const spans = checkTraceShape(t);
    const names = (pid: number) => t.traceEvents.find((e) => e.name === 'process_name' && e.pid === pid)!.args!.name;
    const remote = spans.find((e) => e.name === 'CC a')!;
    expect(names(remote.pid)).toBe('node n1');
    expect(remote).toMatchObject({ ts: 0, dur: 900_000, cat: 'compile', args: { where: 'n1', outcome: 'executed' } });
    const phases = spans.filter((e) => e.cat === 'phase' && e.pid === remote.pid && e.tid === remote.tid).map((e) => [e.name, e.ts, e.dur]);
    expect(phases).toEqual([
      ['uploading inputs', 0, 100_000],
      ['queued', 100_000, 100_000],
      ['fetching inputs', 200_000, 100_000],
      ['executing', 310_000, 390_000],
      ['uploading outputs', 700_000, 100_000],
      ['downloading outputs', 800_000, 100_000],
    ]);
    const local = spans.find((e) => e.name === 'CC b')!;
    expect(names(local.pid)).toBe('local (this machine)');
    expect(spans.filter((e) => e.pid === local.pid && e.tid === local.tid && e.cat === 'phase').map((e) => [e.name, e.ts, e.dur])).toEqual([['executing', 0, 400_000]]);
    const hit = spans.find((e) => e.name === 'CC c')!;
    expect(names(hit.pid)).toBe('cache hits');
    expect(hit).toMatchObject({ cat: 'cache', ts: 0, dur: 5000, args: { cache: 'local' } });
    expect(spans.find((e) => e.cat === 'build')).toMatchObject({ name: 'build b-1', ts: 0, dur: 900_000 });
    expect(JSON.parse(JSON.stringify(t))).toEqual(t);
  });

  it('puts overlapping actions of one node on separate slot lanes, and reuses a lane once it is free', () => {
    const tl = createTimeline(() => 0);
    const acts = ['a', 'b', 'c'].map((id) => action(id));
    for (const x of acts) tl.started(x);
    tl.executed(acts[0]!, { where: 'n1', startMs: 0, endMs: 100, exitCode: 0 });
    tl.executed(acts[1]!, { where: 'n1', startMs: 50, endMs: 150, exitCode: 0 });
    tl.executed(acts[2]!, { where: 'n1', startMs: 120, endMs: 200, exitCode: 0 });
    const spans = checkTraceShape(tl.trace()).filter((e) => e.cat === 'compile');
    const lane = (n: string) => spans.find((e) => e.name === n)!.tid;
    expect(lane('CC a')).toBe(1);
    expect(lane('CC b')).toBe(2);
    expect(lane('CC c')).toBe(1);
  });

  it('keeps phases inside their action when the node clock runs ahead of this one', () => {
    const tl = createTimeline(() => 0);
    const a = action('a');
    tl.started(a);
    tl.executed(a, { where: 'n9', startMs: 0, endMs: 100, sentAt: 10, exitCode: 0, metadata: { worker: 'n9', inputFetchStartMs: 5_000, inputFetchCompletedMs: 5_010, executionStartMs: 5_010, executionCompletedMs: 5_050 } });
    const spans = checkTraceShape(tl.trace());
    const parent = spans.find((e) => e.name === 'CC a')!;
    for (const p of spans.filter((e) => e.cat === 'phase')) {
      expect(p.ts).toBeGreaterThanOrEqual(parent.ts);
      expect(p.ts + p.dur!).toBeLessThanOrEqual(parent.ts + parent.dur!);
    }
  });
});

describe('build report: critical path and slowest actions', () => {
  const graph: BuildGraph = {
    root: '/p',
    tool: 'make',
    actions: [action('a'), action('b'), action('lib', ['a', 'b'], 'archive'), action('gen', [], 'other'), action('app', ['lib', 'gen'], 'link')],
  };
  const durations = new Map([
    ['a', 300],
    ['b', 1200],
    ['lib', 50],
    ['gen', 900],
    ['app', 400],
  ]);

  it('follows the heaviest chain of dependencies by measured duration', () => {
    const cp = criticalPath(graph, durations, new Map([['b', 'n2']]));
    expect(cp.ms).toBe(1650);
    expect(cp.path.map((x) => [x.label, x.ms, x.where])).toEqual([
      ['CC b', 1200, 'n2'],
      ['CC lib', 50, undefined],
      ['CC app', 400, undefined],
    ]);
  });

  it('leaves cache hits (no duration) out of the path, and finds none when all was cached', () => {
    expect(criticalPath(graph, new Map([['app', 10]])).path.map((x) => x.label)).toEqual(['CC app']);
    expect(criticalPath(graph, new Map())).toEqual({ path: [], ms: 0 });
  });

  it('lists the slowest actions first and formats the summary lines without control characters', () => {
    expect(slowestActions(graph, durations, new Map(), 3).map((x) => x.label)).toEqual(['CC b', 'CC gen', 'CC app']);
    const summary = { ok: true, total: 5, counts: { cached: 1, 'remote-cached': 1, executed: 3, failed: 0, skipped: 0, 'dry-run': 0 }, where: { n1: 2, local: 1 }, failures: [], durations } as BuildSummary;
    const lines = formatReport(buildReport({ graph, summary, wallMs: 2000, where: new Map([['b', 'n1']]), bytes: { uploaded: 2 * 1024 * 1024, downloaded: 1500 } }));
    expect(lines[0]).toBe('orion: ran 2 remotely (n1: 2), 1 locally, 2 from cache; moved 2.0 MiB up, 1.5 KiB down');
    expect(lines[1]).toBe('orion: critical path 1.65s: CC b 1.20s > CC lib 50ms > CC app 400ms');
    expect(lines[2]).toMatch(/^orion: slowest: CC b 1\.20s \(n1\), CC gen 900ms, CC app 400ms, CC a 300ms, CC lib 50ms$/);
    for (const l of lines) expect(l).not.toMatch(/[\x00-\x1f]/);
  });
});
