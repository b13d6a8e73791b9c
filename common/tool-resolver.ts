import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import type { StatCache } from '../cas/stat-cache.js';
import type { Digest } from '../cas/types.js';

export interface ResolvedTool {
  path: string;
  digest: Digest;
}

/** Finds a command's binary (as the shell would, through PATH) and its content digest. */
export interface ToolResolver {
  resolve(name: string, cwd: string, pathEnv: string | undefined): Promise<ResolvedTool | undefined>;
}

export interface ToolResolverOptions {
  /**
   * Remember each answer for the resolver's lifetime (default true: one build, whose tools do not
   * change under it). A daemon passes false: a compiler upgraded while it runs is found again (the
   * stat cache still spares rehashing an unchanged binary).
   */
  remember?: boolean;
}

export function createToolResolver(statCache: StatCache, opts: ToolResolverOptions = {}): ToolResolver {
  const memo = new Map<string, Promise<ResolvedTool | undefined>>();
  async function find(name: string, cwd: string, pathEnv: string | undefined): Promise<ResolvedTool | undefined> {
    const candidates = name.includes('/') ? [path.resolve(cwd, name)] : (pathEnv ?? '/usr/local/bin:/usr/bin:/bin').split(':').filter(Boolean).map((d) => path.join(d, name));
    for (const c of candidates) {
      try {
        const st = await stat(c);
        if (!st.isFile() || (st.mode & 0o111) === 0) continue;
        const real = await realpath(c);
        return { path: c, digest: await statCache.digestFileCached(real) };
      } catch {
        continue;
      }
    }
    return undefined;
  }
  return {
    resolve(name, cwd, pathEnv) {
      if (opts.remember === false) return find(name, cwd, pathEnv);
      const key = `${name}\u0000${name.includes('/') ? cwd : ''}\u0000${pathEnv ?? ''}`;
      let p = memo.get(key);
      if (!p) memo.set(key, (p = find(name, cwd, pathEnv)));
      return p;
    },
  };
}
