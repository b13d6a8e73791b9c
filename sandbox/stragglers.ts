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
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** The pid this pid namespace handed out last (/proc/loadavg's fifth field); undefined when unknown. */
function lastPid(): number | undefined {
  try {
    const n = Number(readFileSync('/proc/loadavg', 'latin1').split(' ')[4]);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether `pid` was handed out at or after `since`, the last pid handed out being `last`: pids
 * grow until they wrap around to small numbers (then the newer ones are those up to `last`).
 */
export function handedOutSince(pid: number, since: number, last: number): boolean {
  return pid >= since || (last < since && pid <= last);
}

/**
 * SIGKILLs every process (of this user) whose cwd is `dir` or below it; returns their pids.
 * With `since` (the pid of the action's first process), only processes started after it are
 * looked at: the action's can be no older, and the node's own, its other slots' older actions
 * and the machine's daemons (most of /proc on a busy node) need no readlink each.
 */
export function killProcessesUnder(dir: string, since?: number): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return []; // Not Linux: nothing to look at.
  }
  // Read after the listing: every pid listed was handed out by then.
  const last = since === undefined ? undefined : lastPid();
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const killed: number[] = [];
  for (const e of entries) {
    const c = e.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const pid = Number(e);
    if (pid === process.pid || (since !== undefined && last !== undefined && !handedOutSince(pid, since, last))) continue;
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
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    } catch {
      // Gone already, or not ours.
    }
  }
  return killed;
}

/**
 * SIGKILLs every process in the cgroup whose cgroup.procs file is `procs`, this process and
 * `spare` (the launcher's keeper of that cgroup) excepted; returns their pids. For an action in a cgroup of its own (pids-limit-runner.ts):
 * what it started is there whatever its session or directory, found with one read instead of
 * a look at every new process on the machine.
 */
export function killCgroupMembers(procs: string, spare?: number): number[] {
  let text: string;
  try {
    text = readFileSync(procs, 'latin1');
  } catch {
    return []; // The group is gone: nothing is in it.
  }
  const killed: number[] = [];
  for (const line of text.split('\n')) {
    const pid = Number(line);
    if (!line || !Number.isInteger(pid) || pid <= 0 || pid === process.pid || pid === spare) continue;
    try {
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    } catch {
      // Gone already.
    }
  }
  return killed;
}
