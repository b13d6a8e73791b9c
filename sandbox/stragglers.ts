/**
 * Finds processes an action left behind after leaving its process group (setsid,
 * double fork): on Linux, every process whose working directory is inside the
 * action's directory belongs to that action. Without bubblewrap's PID namespace
 * this is how the node still ends them; a process that also changed its working
 * directory away escapes it (run with bubblewrap to close that gap).
 *
 * Synchronous: a node scans /proc once per action, and a readlink through the
 * promise API cost ~20 times the system call (a few ms per action on a busy node).
 */
import { readdirSync, readlinkSync } from 'node:fs';

/** SIGKILLs every process (of this user) whose cwd is `dir` or below it; returns their pids. */
export function killProcessesUnder(dir: string): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return []; // Not Linux: nothing to look at.
  }
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const killed: number[] = [];
  for (const e of entries) {
    const c = e.charCodeAt(0);
    if (c < 48 || c > 57 || Number(e) === process.pid) continue;
    let cwd: string;
    try {
      cwd = readlinkSync(`/proc/${e}/cwd`);
    } catch {
      continue; // Gone, or another user's.
    }
    // A deleted directory shows as "PATH (deleted)".
    const clean = cwd.endsWith(' (deleted)') ? cwd.slice(0, -' (deleted)'.length) : cwd;
    if (clean !== dir && !clean.startsWith(prefix)) continue;
    try {
      process.kill(Number(e), 'SIGKILL');
      killed.push(Number(e));
    } catch {
      // Gone already, or not ours.
    }
  }
  return killed;
}
