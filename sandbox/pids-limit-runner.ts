/**
 * Caps how many processes an action may have at once (a fork bomb stops at the
 * cap instead of taking the node down), with the kernel's pids cgroup: each
 * running action has a group of its own with pids.max, and its command starts in
 * it (born there through the spawn helper's keeper of the group, else moving
 * itself in before exec), so nothing it starts escapes the count.
 *
 * Groups are kept and lent again once empty (making and removing one per action
 * cost a node ~0.3 ms of CPU per action); `close` removes them. Groups a node
 * killed without its `close` left behind (named after its pid) are removed by the
 * next runner on the same hierarchy.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { isProcessAlive } from '../common/process-alive.js';
import type { ActionRunner } from './runner.js';

export interface PidsCgroup {
  /** Directory under which per-action groups are made (cgroup v1 pids hierarchy, or a v2 group with pids enabled). */
  parent: string;
}

/** Finds a writable pids cgroup hierarchy on this machine, if any. */
export async function probePidsCgroup(): Promise<PidsCgroup | undefined> {
  const candidates = ['/sys/fs/cgroup/pids', '/sys/fs/cgroup/unified', '/sys/fs/cgroup'];
  for (const base of candidates) {
    if (!existsSync(path.join(base, 'cgroup.procs'))) continue;
    const dir = path.join(base, `orion-probe-${process.pid}`);
    try {
      await mkdir(dir);
      const ok = existsSync(path.join(dir, 'pids.max'));
      await rmdir(dir);
      if (ok) return { parent: path.join(base, 'orion') };
    } catch {
      await rmdir(dir).catch(() => undefined);
    }
  }
  return undefined;
}

/**
 * Whether the group has no process but `keeper` (synchronous reads: cgroupfs answers from
 * memory, a file handle costs more). A killed process leaves cgroup.procs when it exits
 * but is counted in pids.current until its parent reaps it: the next action gets the whole
 * limit only once that happened too.
 */
function isEmpty(group: string, keeper: number | undefined): boolean {
  try {
    const text = readFileSync(path.join(group, 'cgroup.procs'), 'latin1');
    const members = text.split('\n').filter((line) => line !== '');
    if (!members.every((line) => Number(line) === keeper)) return false;
    return Number(readFileSync(path.join(group, 'pids.current'), 'latin1')) <= members.length;
  } catch {
    return false; // gone
  }
}

export interface PidsLimitRunner extends ActionRunner {
  /** Removes the groups this runner made (the node stopping); runs still going keep theirs until they end. */
  close(): Promise<void>;
}

/** Numbers the groups of this process (names must differ between its runners too). */
let seq = 0;

export function createPidsLimitRunner(inner: ActionRunner, cgroup: PidsCgroup, maxProcesses: number): PidsLimitRunner {
  let closed = false;
  /** Empty groups ready for the next action. */
  const free: string[] = [];
  let ready: Promise<void> | undefined;
  /** Groups on their way back to `free`. */
  const returning = new Set<Promise<void>>();

  /** Makes the parent, and removes the empty groups of runners whose process is gone. */
  async function prepare() {
    await mkdir(cgroup.parent, { recursive: true });
    for (const name of await readdir(cgroup.parent).catch(() => [] as string[])) {
      const owner = /^a(\d+)-\d+$/.exec(name);
      if (owner && Number(owner[1]) !== process.pid && !isProcessAlive(Number(owner[1]))) await rmdir(path.join(cgroup.parent, name)).catch(() => undefined);
    }
  }

  async function take(): Promise<string> {
    await (ready ??= prepare());
    const reused = free.pop();
    if (reused) return reused;
    const group = path.join(cgroup.parent, `a${process.pid}-${++seq}`);
    await mkdir(group);
    // The spawn helper's keeper of the group (it starts the commands there) is one of its processes.
    await writeFile(path.join(group, 'pids.max'), String(maxProcesses + (inner.joinsCgroup ? 1 : 0)));
    return group;
  }

  const keeperOf = (group: string) => inner.keeperOf?.(path.join(group, 'cgroup.procs'));

  /** Ends the group's keeper, and removes the group once nothing is left in it (within a second). */
  async function remove(group: string) {
    const keeper = keeperOf(group);
    if (keeper !== undefined) {
      try {
        process.kill(keeper, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    for (let i = 0; i < 50; i++) {
      if (isEmpty(group, undefined)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await rmdir(group).catch(() => undefined);
  }

  /** Lends `group` again once its processes are gone (the runner killed them all); else removes it when it empties. */
  async function giveBack(group: string) {
    for (let i = 0; i < 50; i++) {
      if (isEmpty(group, keeperOf(group))) {
        if (closed) await remove(group);
        else free.push(group);
        return;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    // Something of the action is still in there after a second: never lend it again.
    await remove(group);
  }

  return {
    // The isolation is the inner runner's; the limit is reported separately by the node.
    kind: inner.kind,
    keeperOf: inner.keeperOf ? (procs) => inner.keeperOf!(procs) : undefined,
    async run(spec) {
      const group = await take();
      try {
        const procs = path.join(group, 'cgroup.procs');
        // The command joins the group before exec, so every descendant is counted: through the
        // spawn helper, else a shell that joins it and becomes the command (~0.9 ms more per action).
        if (inner.joinsCgroup) return await inner.run({ ...spec, cgroupProcs: procs });
        return await inner.run({ ...spec, argv: ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', procs, ...spec.argv] });
      } finally {
        // In the background: the result need not wait for the group to empty.
        const back = giveBack(group).finally(() => returning.delete(back));
        returning.add(back);
      }
    },
    async close() {
      closed = true;
      await Promise.all([...returning]);
      await Promise.all(free.splice(0).map((g) => remove(g)));
    },
  };
}
