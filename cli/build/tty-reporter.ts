/**
 * The reporter for a terminal: one status line at the bottom, redrawn in place
 * (done/total, cache hits, what runs where, failures, elapsed time and an
 * estimate of what is left), with compiler output and errors printed above it.
 */
import path from 'node:path';
import type { BuildAction } from '../../dag-extractor/types.js';
import type { ActionOutcome } from './build-runner.js';
import { formatMs, formatReport } from './build-report.js';
import { OUTCOME_TAG, summaryLine, type Reporter, type Sink } from './reporter.js';

export interface TtyReporterOptions {
  verbose: boolean;
  root: string;
  /** Terminal width (read at each redraw: the window may be resized). */
  columns: () => number;
  now?: () => number;
  /** How often the status line is redrawn while the build runs (ms); 0: only on events. */
  refreshMs?: number;
  color?: boolean;
}

export interface TtyReporter extends Reporter {
  /** The status line as it would be drawn now (without control characters). */
  statusLine(): string;
}

const CLEAR_LINE = '\r\x1b[2K';

export function createTtyReporter(sink: Sink, opts: TtyReporterOptions): TtyReporter {
  const now = opts.now ?? Date.now;
  const color = opts.color ?? true;
  const paint = (code: string, s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
  let total = 0;
  let done = 0;
  let cached = 0;
  let failed = 0;
  let startedAt = now();
  /** Actions handed to an executor, by action id: 'local', 'remote' (waiting at the head) or a node id. */
  const running = new Map<string, string>();
  let shown = false;
  let lastDraw = -Infinity;
  let timer: ReturnType<typeof setInterval> | undefined;
  let finished = false;

  function statusLine(): string {
    const elapsed = now() - startedAt;
    const parts = [`[${done}/${total}]`];
    if (cached > 0) parts.push(`${cached} cached`);
    const byWhere = new Map<string, number>();
    for (const w of running.values()) byWhere.set(w, (byWhere.get(w) ?? 0) + 1);
    const waiting = byWhere.get('remote') ?? 0;
    byWhere.delete('remote');
    const busy = [...byWhere].sort(([a], [b]) => (a === 'local' ? -1 : b === 'local' ? 1 : a.localeCompare(b)));
    const runningCount = busy.reduce((n, [, c]) => n + c, 0);
    if (runningCount > 0) parts.push(`running ${runningCount} (${busy.map(([w, c]) => `${w} ${c}`).join(', ')})`);
    if (waiting > 0) parts.push(`${waiting} queued on the cluster`);
    if (failed > 0) parts.push(`${failed} failed`);
    parts.push(formatMs(elapsed));
    const left = total - done;
    // The pace so far, once there is one: actions left times time per action.
    if (done > 0 && left > 0 && elapsed > 1000) parts.push(`~${formatMs((elapsed / done) * left)} left`);
    return `${parts[0]} ${parts.slice(1).join(' · ')}`;
  }

  function draw() {
    if (finished) return;
    const width = Math.max(20, opts.columns() - 1);
    let line = statusLine();
    if (line.length > width) line = `${line.slice(0, width - 1)}…`;
    sink.stdout(`${CLEAR_LINE}${failed > 0 ? line.replace(/(\d+ failed)/, paint('31', '$1')) : line}`);
    shown = true;
    lastDraw = now();
  }

  /** Redraws for a change, at most every 50 ms (the refresh timer catches up the rest). */
  function changed() {
    if (now() - lastDraw >= 50) draw();
  }

  function clear() {
    if (shown) sink.stdout(CLEAR_LINE);
    shown = false;
  }

  /** Writes something above the status line. */
  function above(write: () => void) {
    clear();
    write();
    draw();
  }

  const stop = () => {
    if (timer) clearInterval(timer);
    timer = undefined;
    clear();
    finished = true;
  };

  return {
    statusLine,
    start(n) {
      total = n;
      startedAt = now();
      const every = opts.refreshMs ?? 200;
      if (every > 0) {
        timer = setInterval(draw, every);
        timer.unref();
      }
      draw();
    },
    started(a) {
      if (opts.verbose) above(() => sink.stdout(`${path.relative(opts.root, a.cwd) || '.'}$ ${a.argv.join(' ')}\n`));
    },
    running(a, where) {
      running.set(a.id, where);
      changed();
    },
    finished(a: BuildAction, outcome: ActionOutcome, n: number) {
      running.delete(a.id);
      done = n;
      if (outcome === 'cached' || outcome === 'remote-cached') cached++;
      if (outcome === 'failed') {
        failed++;
        above(() => sink.stdout(`${paint('31', 'FAILED')} ${a.label}\n`));
        return;
      }
      if (opts.verbose) {
        const tag = outcome === 'executed' ? '' : ` (${OUTCOME_TAG[outcome]})`;
        above(() => sink.stdout(`[${n}/${total}] ${a.label}${tag}\n`));
      } else changed();
    },
    actionStdout: (d) => above(() => sink.stdout(d)),
    actionStderr: (d) => above(() => sink.stderr(d)),
    explain: (a, why) => above(() => sink.stdout(`explain: ${a.label}: ${why}\n`)),
    error: (message) => above(() => sink.stderr(`orion: ${message}\n`)),
    summary(s, wallMs) {
      stop();
      sink.stderr(summaryLine(s, wallMs, paint));
      for (const f of s.failures) sink.stderr(`orion: failed: ${f.message}\n`);
    },
    report(r) {
      for (const line of formatReport(r)) sink.stderr(`${line}\n`);
    },
  };
}
