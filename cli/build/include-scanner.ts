/**
 * Finds the files a C/C++ source includes, following #include through the
 * include search paths. It over-approximates (every #include counts, whatever
 * #if surrounds it), which only costs an occasional extra cache miss; headers
 * it cannot see (computed includes, system headers) are caught afterwards from
 * the compiler's own dependency output.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../../cas/atomic-file.js';

const INCLUDE = /^[ \t]*#[ \t]*(?:include|include_next|import)[ \t]*([<"])([^">\n]+)[">]/gm;

type Include = { quoted: boolean; name: string };

function directivesOf(text: string): Include[] {
  return [...text.matchAll(INCLUDE)].map((m) => ({ quoted: m[1] === '"', name: m[2]!.trim() }));
}

/**
 * The #include lines of files by the SHA-256 of their content, kept across builds (one
 * small file per project): a rebuild scans the headers of a changed source without
 * reading them again. Content-addressed, so never stale: an entry is stored under the
 * hash of the bytes it was parsed from.
 */
export interface DirectiveStore {
  get(hash: string): Include[] | undefined;
  set(hash: string, includes: Include[]): void;
  save(): Promise<void>;
}

const STORE_VERSION = 1;

/** Loads the store kept in `file` (empty when it is missing or of another format). */
export function loadDirectiveStore(file: string): DirectiveStore {
  const known = new Map<string, string[]>();
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as { v?: number; e?: Record<string, string[]> };
    if (parsed.v === STORE_VERSION && parsed.e) for (const [h, list] of Object.entries(parsed.e)) if (Array.isArray(list)) known.set(h, list);
  } catch {
    // Missing or unreadable: every file is read once, and remembered.
  }
  const used = new Set<string>();
  let added = false;
  return {
    get(hash) {
      const list = known.get(hash);
      if (!list) return undefined;
      used.add(hash);
      return list.map((x) => ({ quoted: x[0] === '"', name: x.slice(1) }));
    },
    set(hash, includes) {
      if (!known.has(hash)) added = true;
      known.set(hash, includes.map((i) => `${i.quoted ? '"' : '<'}${i.name}`));
      used.add(hash);
    },
    async save() {
      if (!added) return;
      // Older versions of files go once the store holds over twice what this build used.
      const keep = known.size > Math.max(2 * used.size, 2000) ? [...used] : [...known.keys()];
      await writeFileAtomic(file, JSON.stringify({ v: STORE_VERSION, e: Object.fromEntries(keep.map((h) => [h, known.get(h)!])) }));
      added = false;
    },
  };
}

export interface IncludeScannerOptions {
  /** Kept directives, and the SHA-256 of a file's current content (the build's file states) to find them by. */
  store?: DirectiveStore;
  contentHash?(abs: string): Promise<string | undefined>;
}

export interface IncludeScanner {
  /** Every file reachable by #include from `files`, found under `root`; plus files that could not be resolved. */
  scan(files: string[], quoteDirs: string[], searchDirs: string[]): Promise<{ found: string[]; unresolved: string[] }>;
  /** Forgets what it read of files an action just wrote. */
  invalidate(files: string[]): void;
}

export function createIncludeScanner(root: string, opts: IncludeScannerOptions = {}): IncludeScanner {
  const directives = new Map<string, Promise<Include[]>>();
  const existence = new Map<string, boolean>();
  /**
   * Where an #include resolved, by the directories searched and the name: compiles of
   * one project share their flags, so most lookups were made before. Forgotten whenever
   * a path whose existence was looked at is invalidated.
   */
  let resolved = new Map<string, string | null>();
  const under = root.endsWith('/') ? root : root + '/';

  const exists = (p: string) => {
    let e = existence.get(p);
    if (e === undefined) {
      try {
        e = existsSync(p) && statSync(p).isFile();
      } catch {
        e = false;
      }
      // Negative answers are kept too: every file the build creates goes through invalidate()
      // (action outputs, and what a step with unknown effects wrote), which forgets them.
      existence.set(p, e);
    }
    return e;
  };

  const { store, contentHash } = opts;
  /** Reads and parses the file; stored under the hash of the bytes read (the file may have changed since it was hashed). */
  const parse = async (file: string): Promise<Include[]> => {
    const bytes = await readFile(file).catch(() => undefined);
    if (!bytes) return [];
    const includes = directivesOf(bytes.toString('latin1'));
    store?.set(createHash('sha256').update(bytes).digest('hex'), includes);
    return includes;
  };
  const read = (file: string) => {
    let p = directives.get(file);
    if (!p) {
      p = store && contentHash ? contentHash(file).then((h) => (h !== undefined && store.get(h)) || parse(file), () => parse(file)) : parse(file);
      directives.set(file, p);
    }
    return p;
  };

  /** Where `inc`, included from `f`, is found first; null when nowhere. */
  const resolve = (f: string, inc: Include, quoteDirs: string[], searchDirs: string[]): string | null => {
    if (path.isAbsolute(inc.name)) return exists(inc.name) ? inc.name : null;
    const dirs = inc.quoted ? [path.dirname(f), ...quoteDirs, ...searchDirs] : searchDirs;
    for (const d of dirs) {
      const cand = path.join(d, inc.name);
      if (exists(cand)) return cand;
    }
    return null;
  };

  return {
    async scan(files, quoteDirs, searchDirs) {
      const seen = new Set<string>();
      const unresolved = new Set<string>();
      const queue = [...files];
      const dirsKey = `${quoteDirs.join('\u0000')}\u0001${searchDirs.join('\u0000')}`;
      while (queue.length > 0) {
        const batch = queue.splice(0, queue.length);
        const lists = await Promise.all(batch.map(async (f) => ({ f, incs: await read(f) })));
        for (const { f, incs } of lists) {
          for (const inc of incs) {
            const memoKey = `${inc.quoted ? path.dirname(f) : ''}\u0000${inc.name}\u0001${dirsKey}`;
            let hit = resolved.get(memoKey);
            if (hit === undefined) {
              hit = resolve(f, inc, quoteDirs, searchDirs);
              resolved.set(memoKey, hit);
            }
            if (!hit) {
              unresolved.add(`${inc.quoted ? '"' : '<'}${inc.name}${inc.quoted ? '"' : '>'}`);
              continue;
            }
            if (!hit.startsWith(under)) continue; // a system header: covered by the toolchain identity
            if (!seen.has(hit)) {
              seen.add(hit);
              queue.push(hit);
            }
          }
        }
      }
      return { found: [...seen].sort(), unresolved: [...unresolved].sort() };
    },
    invalidate(files) {
      for (const f of files) {
        directives.delete(f);
        if (existence.delete(f)) resolved = new Map();
      }
    },
  };
}
