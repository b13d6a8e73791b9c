/** A Reporter that passes every call to several reporters (the one the user sees, plus recorders). */
import type { Reporter } from './reporter.js';

export function fanOutReporter(...reporters: Reporter[]): Reporter {
  const each =
    <K extends keyof Reporter>(k: K) =>
    (...args: Parameters<NonNullable<Reporter[K]>>) => {
      for (const r of reporters) (r[k] as ((...a: unknown[]) => void) | undefined)?.apply(r, args);
    };
  return {
    start: each('start'),
    started: each('started'),
    finished: each('finished'),
    actionStdout: each('actionStdout'),
    actionStderr: each('actionStderr'),
    explain: each('explain'),
    error: each('error'),
    summary: each('summary'),
    running: each('running'),
    executed: each('executed'),
    report: each('report'),
  };
}
