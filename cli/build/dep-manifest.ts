/**
 * Extra inputs learnt from compilers' dependency output (like ccache's
 * manifests): when a compile read a file its key did not cover, the file is
 * remembered for that action so every later key includes it.
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../../cas/atomic-file.js';

export interface DepManifest {
  extraInputs(actionId: string): string[];
  /** Adds files to an action's extra inputs; returns true when anything was new. */
  add(actionId: string, files: string[]): boolean;
  save(): Promise<void>;
}

export async function loadDepManifest(file: string): Promise<DepManifest> {
  let data: Record<string, string[]> = {};
  try {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as { version?: number; extra?: Record<string, string[]> };
    if (parsed.version === 1 && parsed.extra) data = parsed.extra;
  } catch {
    data = {};
  }
  let dirty = false;
  return {
    extraInputs: (id) => data[id] ?? [],
    add(id, files) {
      const have = new Set(data[id] ?? []);
      let added = false;
      for (const f of files) {
        if (!have.has(f)) {
          have.add(f);
          added = true;
        }
      }
      if (added) {
        data[id] = [...have].sort();
        dirty = true;
      }
      return added;
    },
    async save() {
      if (!dirty) return;
      await writeFileAtomic(file, JSON.stringify({ version: 1, extra: data }));
      dirty = false;
    },
  };
}
