/**
 * Finds processes an action left behind after leaving its process group (setsid,
 * double fork): on Linux, every process whose working directory is inside the
 * action's directory belongs to that action. Without bubblewrap's PID namespace
 * this is how the node still ends them; a process that also changed its working
 * directory away escapes it (run with bubblewrap to close that gap).
 */
import { readdir, readlink } from 'node:fs/promises';

/** SIGKILLs every process (of this user) whose cwd is `dir` or below it; returns their pids. */
export async function killProcessesUnder(dir: string): Promise<number[]> {
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return []; // Not Linux: nothing to look at.
  }
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const killed: number[] = [];
  await Promise.all(
    entries.map(async (e) => {
      if (!/^\d+$/.test(e) || Number(e) === process.pid) return;
      const cwd = await readlink(`/proc/${e}/cwd`).catch(() => undefined);
      // A deleted directory shows as "PATH (deleted)".
      const clean = cwd?.replace(/ \(deleted\)$/, '');
      if (clean === undefined || (clean !== dir && !clean.startsWith(prefix))) return;
      try {
        process.kill(Number(e), 'SIGKILL');
        killed.push(Number(e));
      } catch {
        // Gone already, or not ours.
      }
    }),
  );
  return killed;
}
