import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { handedOutSince, killProcessesUnder } from '../../sandbox/stragglers.js';
import { isRunning, waitUntilGone } from '../helpers/processes.js';

let tmp: string;
const started: number[] = [];
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'orion-strays-'));
});
afterEach(async () => {
  for (const pid of started.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  await rm(tmp, { recursive: true, force: true });
});

/** A sleep in its own session working in `cwd`, as an action's escaped process would be. */
function strayIn(cwd: string): number {
  const p = spawn('sleep', ['300'], { cwd, detached: true, stdio: 'ignore' });
  p.unref();
  started.push(p.pid!);
  return p.pid!;
}

describe('handedOutSince', () => {
  it('takes pids from `since` up, and after a wrap-around also the small ones up to the last', () => {
    expect(handedOutSince(500, 400, 600)).toBe(true);
    expect(handedOutSince(400, 400, 600)).toBe(true);
    expect(handedOutSince(399, 400, 600)).toBe(false);
    expect(handedOutSince(12, 400, 600)).toBe(false);
    // Wrapped: the last pid (30) is below since; 12 came after since, 31..399 before it.
    expect(handedOutSince(12, 400, 30)).toBe(true);
    expect(handedOutSince(30, 400, 30)).toBe(true);
    expect(handedOutSince(31, 400, 30)).toBe(false);
    expect(handedOutSince(450, 400, 30)).toBe(true);
  });
});

describe('killProcessesUnder', () => {
  it('kills the processes working in the directory, and with `since` only those started after that pid', async () => {
    const dir = path.join(tmp, 'action');
    await mkdir(path.join(dir, 'sub'), { recursive: true });
    const older = strayIn(dir);
    const elsewhere = strayIn(tmp);
    const since = strayIn(path.join(dir, 'sub'));
    const newer = strayIn(dir);
    const killed = killProcessesUnder(dir, since);
    expect(killed.sort()).toEqual([since, newer].sort());
    expect(await waitUntilGone([since, newer])).toEqual([]);
    expect(isRunning(older)).toBe(true);
    // Without `since`, every process in the directory; never one outside it.
    expect(killProcessesUnder(dir)).toEqual([older]);
    expect(await waitUntilGone([older])).toEqual([]);
    expect(isRunning(elsewhere)).toBe(true);
  });
});
