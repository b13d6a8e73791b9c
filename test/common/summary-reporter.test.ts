/** The suite's closing line (`N passed, N failed`) counts every failure CI's exit code does. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import SummaryReporter, { type Task } from '../summary-reporter.js';
const test = (state: string): Task => ({ type: 'test', result: { state } });
const suite = (state: string, tasks: Task[]): Task => ({ type: 'suite', result: { state }, tasks });

function summary(files: Task[], errors: unknown[] = []): string {
  const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  new SummaryReporter().onFinished(files, errors);
  const out = write.mock.calls.map((c) => String(c[0])).join('');
  write.mockRestore();
  return out.trim();
}

describe('summary reporter', () => {
  afterEach(() => vi.restoreAllMocks());

  it('counts passed, failed and skipped tests', () => {
    expect(summary([suite('fail', [test('pass'), test('fail'), suite('pass', [test('pass'), test('skip')])])])).toBe('2 passed, 1 failed, 1 skipped');
  });

  it('counts a file whose hook failed after its tests passed as a failure', () => {
    expect(summary([suite('fail', [suite('fail', [test('pass')])]), suite('pass', [test('pass')])])).toBe('2 passed, 1 failed');
  });

  it('counts a file that failed to load, with no tests, as a failure', () => {
    expect(summary([suite('fail', [])])).toBe('0 passed, 1 failed');
  });

  it('counts errors outside any test when nothing else failed', () => {
    expect(summary([suite('pass', [test('pass')])], [new Error('unhandled rejection')])).toBe('1 passed, 1 failed');
  });
});
