import { readdirSync, readFileSync } from 'node:fs';

/**
 * Whether `pid` is a live process. A zombie counts as gone: it has exited and
 * only waits to be reaped (some container inits never reap orphans).
 */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 3, after the parenthesised command name (which may contain spaces).
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Polls until none of `pids` runs (killing is asynchronous), or gives up after `timeoutMs`. */
export async function waitUntilGone(pids: number[], timeoutMs = 2_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = pids.filter(isRunning);
    if (alive.length === 0 || Date.now() > deadline) return alive;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Pids of live processes whose command line (arguments joined by spaces) contains `text`. */
export function processesMatching(text: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmdline.includes(text) && isRunning(Number(entry))) out.push(Number(entry));
    } catch {
      // Gone while we looked.
    }
  }
  return out;
}
