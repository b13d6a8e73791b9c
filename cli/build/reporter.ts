/** How a build tells the user what happens. The plain reporter prints stable lines with no control characters. */
import path from 'node:path';
import type { BuildAction } from '../../dag-extractor/types.js';
import type { ActionOutcome, BuildSummary } from './build-runner.js';
import type { ExecutionMetadata } from '../../cas/types.js';
import { formatReport, type BuildReport } from './build-report.js';

/** One execution of an action (not a cache hit), as the build runner saw it. */
export interface ExecutionTiming {
  /** 'local' or the node id. */
  where: string;
  /** When the runner handed it to an executor, and when that returned (ms since the epoch). */
  startMs: number;
  endMs: number;
  /** Remote runs: when the Execute request went out (inputs uploaded). */
  sentAt?: number;
  /** Remote runs: the node's timestamps of each phase. */
  metadata?: ExecutionMetadata;
  exitCode: number;
}

export interface Reporter {
  start(total: number): void;
  started(a: BuildAction): void;
  finished(a: BuildAction, outcome: ActionOutcome, done: number): void;
  actionStdout(data: Buffer): void;
  actionStderr(data: Buffer): void;
  explain(a: BuildAction, why: string): void;
  error(message: string): void;
  summary(s: BuildSummary, wallMs: number): void;
  /** Where an action runs now: 'local', 'remote' (sent to the cluster), or a node id once one started it. */
  running?(a: BuildAction, where: string): void;
  /** An action finished executing (called before `finished`). */
  executed?(a: BuildAction, t: ExecutionTiming): void;
  /** The end-of-build details: bytes moved, critical path, slowest actions (after `summary`). */
  report?(r: BuildReport): void;
}

export interface Sink {
  stdout(s: string | Buffer): void;
  stderr(s: string | Buffer): void;
}

export const OUTCOME_TAG: Record<ActionOutcome, string> = {
  cached: 'cached',
  'remote-cached': 'cached (remote)',
  executed: '',
  failed: 'FAILED',
  skipped: 'skipped',
  'dry-run': 'would run',
  'up-to-date': 'up to date',
};

/** "orion: build finished in 1.23s: 100 actions, 2 run (2 on local), 95 cached, 3 up to date" */
export function summaryLine(s: BuildSummary, wallMs: number, paint: (code: string, text: string) => string = (_c, t) => t): string {
  const c = s.counts;
  const where = Object.entries(s.where)
    .map(([w, n]) => `${n} on ${w}`)
    .join(', ');
  const head = s.ok ? paint('32', 'build finished') : paint('1;31', 'build FAILED');
  const parts = [
    `${s.total} actions`,
    `${c.executed} run${where ? ` (${where})` : ''}`,
    `${c.cached + c['remote-cached']} cached${c['remote-cached'] ? ` (${c['remote-cached']} from the cluster)` : ''}`,
    ...(c['up-to-date'] ? [`${c['up-to-date']} up to date`] : []),
    ...(c.failed ? [`${c.failed} failed`] : []),
    ...(c.skipped ? [`${c.skipped} not run`] : []),
    ...(c['dry-run'] ? [`${c['dry-run']} would run`] : []),
  ];
  return `orion: ${head} in ${(wallMs / 1000).toFixed(2)}s: ${parts.join(', ')}\n`;
}

export function createPlainReporter(sink: Sink, opts: { quiet: boolean; verbose: boolean; root: string }): Reporter {
  let total = 0;
  return {
    start(n) {
      total = n;
    },
    started(a) {
      if (opts.verbose) sink.stdout(`${path.relative(opts.root, a.cwd) || '.'}$ ${a.argv.join(' ')}\n`);
    },
    finished(a, outcome, done) {
      if (opts.quiet && outcome !== 'failed') return;
      const tag = OUTCOME_TAG[outcome];
      sink.stdout(`[${done}/${total}] ${a.label}${tag ? ` (${tag})` : ''}\n`);
    },
    actionStdout: (d) => sink.stdout(d),
    actionStderr: (d) => sink.stderr(d),
    explain(a, why) {
      sink.stdout(`explain: ${a.label}: ${why}\n`);
    },
    error(message) {
      sink.stderr(`orion: ${message}\n`);
    },
    summary(s, wallMs) {
      if (!opts.quiet || !s.ok) sink.stderr(summaryLine(s, wallMs));
      for (const f of s.failures) sink.stderr(`orion: failed: ${f.message}\n`);
    },
    report(r) {
      if (opts.quiet) return;
      for (const line of formatReport(r)) sink.stderr(`${line}\n`);
    },
  };
}
