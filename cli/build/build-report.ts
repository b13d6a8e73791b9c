/**
 * The end-of-build details: where actions ran, bytes moved, the critical path
 * (the chain of dependent actions whose measured durations add up the most) and
 * the slowest actions.
 */
import type { BuildGraph } from '../../dag-extractor/types.js';
import type { BuildSummary } from './build-runner.js';

export interface TimedAction {
  id: string;
  label: string;
  ms: number;
  /** 'local' or a node id, when it executed. */
  where?: string;
}

export interface BuildReport {
  wallMs: number;
  summary: BuildSummary;
  buildId?: string;
  /** With a head: bytes uploaded to and downloaded from its CAS. */
  bytes?: { uploaded: number; downloaded: number };
  /** Whole-DAG builds: input bytes nodes fetched from each other, and from the head. */
  transfer?: { peerBytes: number; headBytes: number };
  /** Executed actions by where they ran. */
  remote: Record<string, number>;
  local: number;
  cached: number;
  criticalPath: TimedAction[];
  criticalPathMs: number;
  slowest: TimedAction[];
}

/**
 * The heaviest chain through the graph, weighting each action by its measured
 * duration (0 for cache hits and actions that did not run), in build order.
 */
export function criticalPath(graph: BuildGraph, durations: Map<string, number>, where: Map<string, string> = new Map()): { path: TimedAction[]; ms: number } {
  const byId = new Map(graph.actions.map((a) => [a.id, a]));
  const finish = new Map<string, number>();
  const via = new Map<string, string | undefined>();
  const visiting = new Set<string>();
  const visit = (id: string): number => {
    const known = finish.get(id);
    if (known !== undefined) return known;
    if (visiting.has(id)) return 0; // a cycle: the runner reports it; do not loop here
    visiting.add(id);
    let best = 0;
    let bestDep: string | undefined;
    for (const d of new Set(byId.get(id)!.deps)) {
      if (!byId.has(d)) continue;
      const f = visit(d);
      if (f > best) {
        best = f;
        bestDep = d;
      }
    }
    visiting.delete(id);
    const f = best + (durations.get(id) ?? 0);
    finish.set(id, f);
    via.set(id, bestDep);
    return f;
  };
  let end: string | undefined;
  let endMs = 0;
  for (const a of graph.actions) {
    const f = visit(a.id);
    if (f > endMs) {
      endMs = f;
      end = a.id;
    }
  }
  const path: TimedAction[] = [];
  for (let id = end; id !== undefined; id = via.get(id)) {
    const ms = durations.get(id) ?? 0;
    if (ms > 0) path.push({ id, label: byId.get(id)!.label, ms, where: where.get(id) });
  }
  return { path: path.reverse(), ms: endMs };
}

export function slowestActions(graph: BuildGraph, durations: Map<string, number>, where: Map<string, string> = new Map(), n = 5): TimedAction[] {
  const byId = new Map(graph.actions.map((a) => [a.id, a]));
  return [...durations]
    .filter(([id]) => byId.has(id))
    .sort((x, y) => y[1] - x[1] || x[0].localeCompare(y[0]))
    .slice(0, n)
    .map(([id, ms]) => ({ id, label: byId.get(id)!.label, ms, where: where.get(id) }));
}

export function buildReport(o: { graph: BuildGraph; summary: BuildSummary; wallMs: number; where: Map<string, string>; buildId?: string; bytes?: { uploaded: number; downloaded: number } }): BuildReport {
  const remote: Record<string, number> = {};
  let local = 0;
  for (const [w, n] of Object.entries(o.summary.where)) {
    if (w === 'local') local += n;
    else remote[w] = n;
  }
  const cp = criticalPath(o.graph, o.summary.durations, o.where);
  return {
    wallMs: o.wallMs,
    summary: o.summary,
    buildId: o.buildId,
    bytes: o.bytes,
    transfer: o.summary.transfer,
    remote,
    local,
    cached: o.summary.counts.cached + o.summary.counts['remote-cached'],
    criticalPath: cp.path,
    criticalPathMs: cp.ms,
    slowest: slowestActions(o.graph, o.summary.durations, o.where),
  };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : ms < 60_000 ? `${(ms / 1000).toFixed(2)}s` : `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`;
}

/** The report as plain lines (no control characters), each starting with "orion: ". */
export function formatReport(r: BuildReport): string[] {
  const lines: string[] = [];
  const remoteTotal = Object.values(r.remote).reduce((a, b) => a + b, 0);
  const remoteWhere = Object.entries(r.remote)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([w, n]) => `${w}: ${n}`)
    .join(', ');
  let where = `orion: ran ${remoteTotal} remotely${remoteWhere ? ` (${remoteWhere})` : ''}, ${r.local} locally, ${r.cached} from cache`;
  if (r.bytes) where += `; moved ${formatBytes(r.bytes.uploaded)} up, ${formatBytes(r.bytes.downloaded)} down`;
  lines.push(where);
  if (r.transfer && r.transfer.peerBytes + r.transfer.headBytes > 0) {
    lines.push(`orion: nodes fetched ${formatBytes(r.transfer.peerBytes)} of inputs from each other and ${formatBytes(r.transfer.headBytes)} from the head`);
  }
  if (r.criticalPath.length > 0) {
    lines.push(`orion: critical path ${formatMs(r.criticalPathMs)}: ${r.criticalPath.map((a) => `${a.label} ${formatMs(a.ms)}`).join(' > ')}`);
  }
  if (r.slowest.length > 0) {
    lines.push(`orion: slowest: ${r.slowest.map((a) => `${a.label} ${formatMs(a.ms)}${a.where ? ` (${a.where})` : ''}`).join(', ')}`);
  }
  return lines;
}
