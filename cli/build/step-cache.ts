/**
 * Steps whose reads Orion cannot know (scripts, generators, `echo > file`,
 * `rm`) are keyed by the whole project tree they start from: if a step with
 * the same command once ran on exactly this tree, its effect (files written,
 * files deleted) is replayed instead of running it again.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../../cas/atomic-file.js';
import { METADATA_TOUCH_MS, touchIfOlder } from '../../cas/store-trim.js';
import type { Digest } from '../../cas/types.js';
import type { Entry, Snapshot } from './project-files.js';

export interface StepEffect {
  /** Files written or changed, relative to the project root. */
  written: { path: string; digest: Digest; isExecutable: boolean }[];
  symlinks: { path: string; target: string }[];
  /** Directories created. */
  dirs: string[];
  /** Paths removed (files, symlinks, directories). */
  deleted: string[];
  stdout?: Digest;
  stderr?: Digest;
}

export interface StepCache {
  get(key: string): Promise<StepEffect | undefined>;
  put(key: string, effect: StepEffect): Promise<void>;
}

export function stepKey(cwd: string, argv: string[], env: string[], before: Snapshot): string {
  return createHash('sha256').update(JSON.stringify({ v: 1, cwd, argv, env, tree: before.hash })).digest('hex');
}

/** What a step did to the tree: the difference between two snapshots. */
export function diffSnapshots(before: ReadonlyMap<string, Entry>, after: ReadonlyMap<string, Entry>): Omit<StepEffect, 'stdout' | 'stderr'> {
  const written: StepEffect['written'] = [];
  const symlinks: StepEffect['symlinks'] = [];
  const dirs: string[] = [];
  const deleted: string[] = [];
  for (const [p, e] of after) {
    const b = before.get(p);
    if (e.kind === 'dir') {
      if (b?.kind !== 'dir') dirs.push(p);
    } else if (e.kind === 'file') {
      if (!b || b.kind !== 'file' || b.state.digest.hash !== e.state.digest.hash || b.state.isExecutable !== e.state.isExecutable) {
        written.push({ path: p, digest: e.state.digest, isExecutable: e.state.isExecutable });
      }
    } else if (!b || b.kind !== 'symlink' || b.target !== e.target) symlinks.push({ path: p, target: e.target });
  }
  for (const [p, e] of before) if (!after.has(p) || (e.kind === 'dir') !== (after.get(p)!.kind === 'dir')) deleted.push(p);
  return { written, symlinks, dirs: dirs.sort(), deleted: deleted.sort() };
}

export function createDiskStepCache(dir: string): StepCache {
  const file = (key: string) => path.join(dir, key.slice(0, 2), `${key}.json`);
  return {
    async get(key) {
      try {
        const effect = JSON.parse(await readFile(file(key), 'utf8')) as StepEffect;
        // Used: kept by the cache's trim of unused files (cas/store-trim.ts).
        touchIfOlder(file(key), METADATA_TOUCH_MS);
        return effect;
      } catch {
        return undefined;
      }
    },
    async put(key, effect) {
      await mkdir(path.dirname(file(key)), { recursive: true });
      await writeFileAtomic(file(key), JSON.stringify(effect), { durable: false });
    },
  };
}
