/**
 * Finds the files a C/C++ source includes, following #include through the
 * include search paths. It over-approximates (every #include counts, whatever
 * #if surrounds it), which only costs an occasional extra cache miss; headers
 * it cannot see (computed includes, system headers) are caught afterwards from
 * the compiler's own dependency output.
 */
import { readFile } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';

const INCLUDE = /^[ \t]*#[ \t]*(?:include|include_next|import)[ \t]*([<"])([^">\n]+)[">]/gm;

export interface IncludeScanner {
  /** Every file reachable by #include from `files`, found under `root`; plus files that could not be resolved. */
  scan(files: string[], quoteDirs: string[], searchDirs: string[]): Promise<{ found: string[]; unresolved: string[] }>;
  /** Forgets what it read of files an action just wrote. */
  invalidate(files: string[]): void;
}

export function createIncludeScanner(root: string): IncludeScanner {
  const directives = new Map<string, Promise<{ quoted: boolean; name: string }[]>>();
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

  const read = (file: string) => {
    let p = directives.get(file);
    if (!p) {
      p = readFile(file, 'latin1').then(
        (text) => [...text.matchAll(INCLUDE)].map((m) => ({ quoted: m[1] === '"', name: m[2]!.trim() })),
        () => [],
      );
      directives.set(file, p);
    }
    return p;
  };

  /** Where `inc`, included from `f`, is found first; null when nowhere. */
  const resolve = (f: string, inc: { quoted: boolean; name: string }, quoteDirs: string[], searchDirs: string[]): string | null => {
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
