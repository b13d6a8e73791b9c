/**
 * Records when each action of a build started, where it ran, its phases and
 * how it ended; turns that into a Chrome trace-event file (`orion build
 * --profile FILE.json`, loads in Perfetto and chrome://tracing).
 */
import type { BuildAction } from '../../dag-extractor/types.js';
import type { ActionOutcome } from './build-runner.js';
import type { ExecutionTiming, Reporter } from './reporter.js';

export interface TimelineEntry {
  action: BuildAction;
  startedAt: number;
  endedAt?: number;
  outcome?: ActionOutcome;
  /** Where it runs or ran: 'local', 'remote' (waiting at the head) or a node id. */
  where?: string;
  execution?: ExecutionTiming;
}

export interface Timeline extends Reporter {
  entries(): TimelineEntry[];
  /** Where each executed action ran ('local' or a node id). */
  where(): Map<string, string>;
  /** The Chrome trace-event JSON object. */
  trace(opts?: { buildId?: string }): ChromeTrace;
}

export interface TraceEvent {
  name: string;
  ph: 'X' | 'M' | 'i';
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  cat?: string;
  s?: 'g' | 'p' | 't';
  args?: Record<string, unknown>;
}

export interface ChromeTrace {
  traceEvents: TraceEvent[];
  displayTimeUnit: 'ms';
  otherData?: Record<string, string>;
}

interface Span {
  pid: number;
  start: number;
  end: number;
  name: string;
  cat: string;
  args: Record<string, unknown>;
  phases: { name: string; start: number; end: number }[];
}

const LOCAL_PID = 1;
const CACHE_PID = 2;

/** Phases of a remote execution from the node's timestamps, clamped into [start, end] and in order. */
function remotePhases(t: ExecutionTiming, start: number, end: number): Span['phases'] {
  const m = t.metadata;
  const sent = t.sentAt ?? start;
  const raw: [string, number | undefined, number | undefined][] = [
    ['uploading inputs', start, sent],
    ['queued', sent, m?.workerStartMs ?? m?.inputFetchStartMs],
    ['fetching inputs', m?.inputFetchStartMs, m?.inputFetchCompletedMs],
    ['executing', m?.executionStartMs, m?.executionCompletedMs],
    ['uploading outputs', m?.outputUploadStartMs, m?.outputUploadCompletedMs],
    ['downloading outputs', m?.workerCompletedMs ?? m?.outputUploadCompletedMs, end],
  ];
  const out: Span['phases'] = [];
  let floor = start;
  for (const [name, a, b] of raw) {
    if (a === undefined || b === undefined) continue;
    // Node clocks may differ from this one: keep phases inside the action and in order.
    const s = Math.min(Math.max(a, floor, start), end);
    const e = Math.min(Math.max(b, s), end);
    if (e > s) out.push({ name, start: s, end: e });
    floor = e;
  }
  return out;
}

export function createTimeline(clock: () => number = Date.now): Timeline {
  const entries = new Map<string, TimelineEntry>();
  let buildStart: number | undefined;
  let buildEnd: number | undefined;

  return {
    start() {
      buildStart = clock();
    },
    started(a) {
      entries.set(a.id, { action: a, startedAt: clock() });
    },
    running(a, where) {
      const e = entries.get(a.id);
      if (e) e.where = where;
    },
    executed(a, t) {
      const e = entries.get(a.id);
      if (e) {
        e.execution = t;
        e.where = t.where;
      }
    },
    finished(a, outcome) {
      const e = entries.get(a.id);
      if (e) {
        e.endedAt = clock();
        e.outcome = outcome;
      }
    },
    actionStdout() {},
    actionStderr() {},
    explain() {},
    error() {},
    summary() {
      buildEnd = clock();
    },
    entries: () => [...entries.values()],
    where() {
      const m = new Map<string, string>();
      for (const e of entries.values()) if (e.execution) m.set(e.action.id, e.execution.where);
      return m;
    },
    trace(opts = {}) {
      const spans: Span[] = [];
      const nodes = [...new Set([...entries.values()].flatMap((e) => (e.execution && e.execution.where !== 'local' ? [e.execution.where] : [])))].sort();
      const pidOf = new Map(nodes.map((n, i) => [n, 3 + i]));
      for (const e of entries.values()) {
        const a = e.action;
        const args: Record<string, unknown> = { id: a.id, kind: a.kind, outcome: e.outcome ?? 'unfinished' };
        if (e.execution) {
          const t = e.execution;
          const remote = t.where !== 'local';
          args.where = t.where;
          args.exitCode = t.exitCode;
          const start = t.startMs;
          const end = Math.max(t.endMs, start);
          spans.push({
            pid: remote ? pidOf.get(t.where)! : LOCAL_PID,
            start,
            end,
            name: a.label,
            cat: a.kind,
            args,
            phases: remote ? remotePhases(t, start, end) : [{ name: 'executing', start, end }],
          });
        } else if (e.outcome === 'failed' && e.endedAt !== undefined) {
          // Could not be executed at all (the head or a node refused it): drawn where the build runs.
          spans.push({ pid: LOCAL_PID, start: e.startedAt, end: Math.max(e.endedAt, e.startedAt), name: a.label, cat: 'failed', args, phases: [] });
        } else if ((e.outcome === 'cached' || e.outcome === 'remote-cached') && e.endedAt !== undefined) {
          args.cache = e.outcome === 'cached' ? 'local' : 'remote';
          spans.push({ pid: CACHE_PID, start: e.startedAt, end: Math.max(e.endedAt, e.startedAt), name: a.label, cat: 'cache', args, phases: [] });
        }
      }
      const starts = [...spans.map((s) => s.start), ...(buildStart !== undefined ? [buildStart] : [])];
      const t0 = starts.length > 0 ? Math.min(...starts) : 0;
      const us = (ms: number) => Math.round((ms - t0) * 1000);
      const events: TraceEvent[] = [];
      const meta = (pid: number, tid: number, name: 'process_name' | 'thread_name' | 'process_sort_index' | 'thread_sort_index', value: string | number) =>
        events.push({ name, ph: 'M', ts: 0, pid, tid, args: name.endsWith('sort_index') ? { sort_index: value } : { name: value } });
      meta(LOCAL_PID, 0, 'process_name', 'local (this machine)');
      meta(LOCAL_PID, 0, 'process_sort_index', 0);
      meta(LOCAL_PID, 0, 'thread_name', 'build');
      meta(CACHE_PID, 0, 'process_name', 'cache hits');
      meta(CACHE_PID, 0, 'process_sort_index', 1);
      for (const [n, pid] of pidOf) {
        meta(pid, 0, 'process_name', `node ${n}`);
        meta(pid, 0, 'process_sort_index', pid);
      }
      if (buildStart !== undefined) {
        const end = buildEnd ?? Math.max(buildStart, ...spans.map((s) => s.end));
        events.push({ name: opts.buildId ? `build ${opts.buildId}` : 'build', cat: 'build', ph: 'X', ts: us(buildStart), dur: Math.max(1, us(end) - us(buildStart)), pid: LOCAL_PID, tid: 0 });
      }
      // One lane (thread) per slot: each span goes to the lowest lane free at its start.
      const lanesByPid = new Map<number, number[]>();
      for (const s of spans.sort((x, y) => x.start - y.start || y.end - x.end)) {
        const lanes = lanesByPid.get(s.pid) ?? [];
        lanesByPid.set(s.pid, lanes);
        let lane = lanes.findIndex((free) => free <= s.start);
        if (lane < 0) {
          lane = lanes.length;
          lanes.push(0);
          meta(s.pid, lane + 1, 'thread_name', s.pid === CACHE_PID ? `lookup ${lane + 1}` : `slot ${lane + 1}`);
          meta(s.pid, lane + 1, 'thread_sort_index', lane + 1);
        }
        lanes[lane] = s.end;
        const tid = lane + 1;
        const ts = us(s.start);
        // Zero-length spans (instant cache hits) still get 1 us so every viewer draws them.
        events.push({ name: s.name, cat: s.cat, ph: 'X', ts, dur: Math.max(1, us(s.end) - ts), pid: s.pid, tid, args: s.args });
        for (const p of s.phases) {
          const pts = us(p.start);
          events.push({ name: p.name, cat: 'phase', ph: 'X', ts: pts, dur: Math.max(1, us(p.end) - pts), pid: s.pid, tid });
        }
      }
      return { traceEvents: events, displayTimeUnit: 'ms', otherData: { tool: 'orion build', ...(opts.buildId ? { buildId: opts.buildId } : {}) } };
    },
  };
}
