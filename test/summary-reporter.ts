/** Prints one plain closing line, `N passed, N failed`, that any CI log reader understands. */
import type { Reporter } from 'vitest/reporters';

export type Task = { type: string; result?: { state?: string }; tasks?: Task[] };

function count(tasks: Task[], acc = { passed: 0, failed: 0, skipped: 0 }) {
  for (const t of tasks) {
    if (t.type === 'test') {
      const state = t.result?.state;
      if (state === 'pass') acc.passed++;
      else if (state === 'fail') acc.failed++;
      else acc.skipped++;
    } else {
      const before = acc.failed;
      if (t.tasks) count(t.tasks, acc);
      // A suite or file that failed with no failed test inside it (a beforeAll/afterAll hook threw,
      // or the file did not load) is one failure, not a clean pass of the tests it ran.
      if (t.result?.state === 'fail' && acc.failed === before) acc.failed++;
    }
  }
  return acc;
}

export default class SummaryReporter implements Reporter {
  onFinished(files: Task[] = [], errors: unknown[] = []) {
    const c = count(files);
    const failed = c.failed + (errors.length > 0 && c.failed === 0 ? errors.length : 0);
    process.stdout.write(`\n${c.passed} passed, ${failed} failed${c.skipped ? `, ${c.skipped} skipped` : ''}\n`);
  }
}
