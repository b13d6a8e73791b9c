/**
 * Caps how many processes an action may have at once (a fork bomb stops at the
 * cap instead of taking the node down), with the kernel's pids cgroup: each
 * running action has a group of its own with pids.max, and its command starts in
 * it (born there through the spawn helper's keeper of the group, else moving
 * itself in before exec), so nothing it starts escapes the count.
 *
 * Groups are kept and lent again once no process is left in them (making and
 * removing one per action cost a node ~0.3 ms of CPU per action, and a keeper
 * each); `close` removes them. Groups a node
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

/** The processes of a group (cgroup.procs: synchronous, cgroupfs answers from memory); undefined when it is gone. */
function membersOf(group: string): number[] | undefined {
  try {
    return readFileSync(path.join(group, 'cgroup.procs'), 'latin1')
      .split('\n')
      .filter((line) => line !== '')
      .map(Number);
  } catch {
    return undefined;
  }
}

/** The group's pids.current; undefined when it is gone. */
function chargedOf(group: string): number | undefined {
  try {
    return Number(readFileSync(path.join(group, 'pids.current'), 'latin1'));
  } catch {
    return undefined;
  }
}

/**
 * Whether no process but `keeper` is left in the group. A process that has exited is out of
 * cgroup.procs, though pids.current may still count it: until its parent reaps it, and, for the
 * first process of a pid namespace (bwrap's), until the kernel frees that namespace, ~1-2 s later
 * (measured on Linux 6.18: every `bwrap --unshare-pid` leaves one charge that long). Such charges
 * are nothing the next action could run into: `take` raises pids.max by them.
 */
function holdsOnly(group: string, keeper: number | undefined): boolean {
  const members = membersOf(group);
  return members !== undefined && members.every((pid) => pid === keeper);
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

  /** pids.max as last written, by group. */
  const maxOf = new Map<string, number>();
  /** The limit that leaves the action `maxProcesses` (the keeper counts as one; see holdsOnly for `pending`). */
  const limitFor = (pending: number) => maxProcesses + (inner.joinsCgroup ? 1 : 0) + pending;

  async function setMax(group: string, max: number) {
    if (maxOf.get(group) === max) return;
    await writeFile(path.join(group, 'pids.max'), String(max));
    maxOf.set(group, max);
  }

  async function take(): Promise<string> {
    await (ready ??= prepare());
    const reused = free.pop();
    if (reused) {
      // Charges of processes gone but not yet released still count against pids.max: add them,
      // so the action can start its `maxProcesses` (a few more if they are released meanwhile).
      const charged = chargedOf(reused) ?? 0;
      const members = membersOf(reused)?.length ?? 0;
      await setMax(reused, limitFor(Math.max(0, charged - members)));
      return reused;
    }
    const group = path.join(cgroup.parent, `a${process.pid}-${++seq}`);
    await mkdir(group);
    // The spawn helper's keeper of the group (it starts the commands there) is one of its processes.
    await setMax(group, limitFor(0));
    return group;
  }

  const keeperOf = (group: string) => inner.keeperOf?.(path.join(group, 'cgroup.procs'));

  /** Ends the group's keeper, and removes the group once no process is left in it (within a second). */
  async function remove(group: string) {
    maxOf.delete(group);
    const keeper = keeperOf(group);
    if (keeper !== undefined) {
      try {
        process.kill(keeper, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    for (let i = 0; i < 50; i++) {
      if (holdsOnly(group, undefined)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await rmdir(group).catch(() => undefined);
  }

  /** Lends `group` again once its processes are gone (the runner killed them all); else removes it when it empties. */
  async function giveBack(group: string) {
    for (let i = 0; i < 50; i++) {
      if (holdsOnly(group, keeperOf(group))) {
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
