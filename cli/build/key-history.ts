/**
 * The inputs of each action's last key, so --explain can say what changed.
 *
 * Kept as a log of JSON lines (a header, then one line per recorded key; the
 * last line of an action wins): a build appends only the keys that changed,
 * instead of rewriting every action's inputs, and reads the log while its
 * first actions run unless --explain needs it before the first one is keyed.
 * A line cut short (a build killed while appending) is skipped. When the log
 * holds many more lines than actions it is rewritten with the latest ones.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ensureDirSync, writeFileAtomic } from '../../cas/atomic-file.js';
import type { KeyHistory } from './build-runner.js';

export interface PersistentKeyHistory extends KeyHistory {
  save(): Promise<void>;
}

export interface KeyHistoryOptions {
  /** Read the log before returning (--explain asks for previous keys from the first action on). */
  eager?: boolean;
}

type Entry = { actionDigest: string; inputs: Record<string, string>; argv: string[] };
type Line = Entry & { id: string };

const HEADER = JSON.stringify({ orionKeyHistory: 2 });
/** Rewrite the log once it holds this many times more lines than actions (and at least MIN_COMPACT lines). */
const COMPACT_RATIO = 3;
const MIN_COMPACT = 256;

interface Loaded {
  data: Map<string, Entry>;
  lines: number;
  /** The file is missing, unreadable or of another format: the next save writes it whole. */
  rewrite: boolean;
}

function parseLog(file: string): Loaded {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return { data: new Map(), lines: 0, rewrite: true };
  }
  const rows = text.split('\n');
  if (rows[0] !== HEADER) return { data: new Map(), lines: 0, rewrite: true };
  const data = new Map<string, Entry>();
  let lines = 0;
  for (let i = 1; i < rows.length; i++) {
    const row = rows[i]!;
    if (row === '') continue;
    lines++;
    try {
      const { id, actionDigest, inputs, argv } = JSON.parse(row) as Line;
      if (typeof id === 'string' && typeof actionDigest === 'string') data.set(id, { actionDigest, inputs, argv });
    } catch {
      // A line cut short: the keys it held are simply not known.
    }
  }
  return { data, lines, rewrite: false };
}

export async function loadKeyHistory(file: string, opts: KeyHistoryOptions = {}): Promise<PersistentKeyHistory> {
  let loaded: Loaded | undefined = opts.eager ? parseLog(file) : undefined;
  const load = () => (loaded ??= parseLog(file));
  // Otherwise read once the build's first actions are under way.
  const background = opts.eager ? undefined : setTimeout(load, 50).unref();
  const recorded = new Map<string, Line>();
  return {
    previous: (id) => load().data.get(id),
    record(id, key, argv) {
      recorded.set(id, { id, actionDigest: key.actionDigest.hash, inputs: Object.fromEntries(key.inputs), argv });
    },
    async save() {
      if (background) clearTimeout(background);
      const { data, lines, rewrite } = load();
      const changed = [...recorded.values()].filter((l) => data.get(l.id)?.actionDigest !== l.actionDigest);
      recorded.clear();
      if (changed.length === 0 && !rewrite) return;
      for (const l of changed) data.set(l.id, { actionDigest: l.actionDigest, inputs: l.inputs, argv: l.argv });
      const total = lines + changed.length;
      if (rewrite || (total > MIN_COMPACT && total > COMPACT_RATIO * data.size)) {
        const body = [...data].map(([id, e]) => JSON.stringify({ id, ...e }) + '\n').join('');
        await writeFileAtomic(file, `${HEADER}\n${body}`, { durable: false });
        loaded = { data, lines: data.size, rewrite: false };
        return;
      }
      ensureDirSync(path.dirname(file));
      appendFileSync(file, changed.map((l) => JSON.stringify(l) + '\n').join(''));
      loaded = { data, lines: total, rewrite: false };
    },
  };
}
