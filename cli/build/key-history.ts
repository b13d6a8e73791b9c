/** The inputs of each action's last key, so --explain can say what changed. */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../../cas/atomic-file.js';
import type { KeyHistory } from './build-runner.js';

export interface PersistentKeyHistory extends KeyHistory {
  save(): Promise<void>;
}

type Entry = { actionDigest: string; inputs: Record<string, string>; argv: string[] };

export async function loadKeyHistory(file: string): Promise<PersistentKeyHistory> {
  let data: Record<string, Entry> = {};
  try {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as { version?: number; actions?: Record<string, Entry> };
    if (parsed.version === 1 && parsed.actions) data = parsed.actions;
  } catch {
    data = {};
  }
  let dirty = false;
  return {
    previous: (id) => data[id],
    record(id, key, argv) {
      if (data[id]?.actionDigest === key.actionDigest.hash) return;
      data[id] = { actionDigest: key.actionDigest.hash, inputs: Object.fromEntries(key.inputs), argv };
      dirty = true;
    },
    async save() {
      if (dirty) await writeFileAtomic(file, JSON.stringify({ version: 1, actions: data }), { durable: false });
      dirty = false;
    },
  };
}
