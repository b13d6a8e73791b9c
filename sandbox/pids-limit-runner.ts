/**
 * Caps how many processes an action may have at once (a fork bomb stops at the
 * cap instead of taking the node down), with the kernel's pids cgroup: each
 * action gets its own group with pids.max, and its command moves itself into it
 * before exec, so nothing it starts escapes the count.
 */
import { existsSync } from 'node:fs';
import { mkdir, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
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

let seq = 0;

export function createPidsLimitRunner(inner: ActionRunner, cgroup: PidsCgroup, maxProcesses: number): ActionRunner {
  return {
    // The isolation is the inner runner's; the limit is reported separately by the node.
    kind: inner.kind,
    async run(spec) {
      await mkdir(cgroup.parent, { recursive: true });
      const group = path.join(cgroup.parent, `a${process.pid}-${++seq}`);
      await mkdir(group);
      try {
        await writeFile(path.join(group, 'pids.max'), String(maxProcesses));
        const procs = path.join(group, 'cgroup.procs');
        return await inner.run({
          ...spec,
          // The shell joins the group, then becomes the command: every descendant is counted.
          argv: ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', procs, ...spec.argv],
        });
      } finally {
        // The group empties when the action's processes are gone (the runner kills them all).
        for (let i = 0; i < 50; i++) {
          try {
            await rmdir(group);
            break;
          } catch {
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      }
    },
  };
}
