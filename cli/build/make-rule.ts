/**
 * GNU make's up-to-date rule, for steps whose effects Orion cannot key: a
 * rule's recipe is skipped when its target exists and none of its
 * prerequisites is newer (nanosecond modification times, as make compares).
 * A missing prerequisite (a phony target, a file nothing made) means the
 * recipe runs, as it would under make. A rule without prerequisites (never a
 * phony one: the extractor leaves those out) is up to date when its target
 * exists.
 */
import { stat } from 'node:fs/promises';
import type { MakeRule } from '../../dag-extractor/types.js';

/** Modification time in nanoseconds, following symlinks as make does; undefined when absent. */
export type MtimeOf = (file: string) => Promise<bigint | undefined>;

export const statMtime: MtimeOf = async (file) => {
  try {
    return (await stat(file, { bigint: true })).mtimeNs;
  } catch {
    return undefined;
  }
};

export async function makeFindsUpToDate(rule: Pick<MakeRule, 'target' | 'prereqs'>, mtimeOf: MtimeOf = statMtime): Promise<boolean> {
  const target = await mtimeOf(rule.target);
  if (target === undefined) return false;
  for (const p of rule.prereqs) {
    const m = await mtimeOf(p);
    if (m === undefined || m > target) return false;
  }
  return true;
}
