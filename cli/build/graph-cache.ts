/**
 * Extracting a graph runs make or cmake, which costs more than a no-op build
 * should. The graph is cached under a key of everything extraction reads: the
 * build files' contents, the project's file listing (wildcards), the commit
 * checked out (makefiles stamp it into generated headers), the arguments and
 * the environment make sees.
 *
 * Extraction also has effects: a dry run still runs $(shell ...) and remakes
 * included makefiles (Redis writes release.h and Makefile.dep that way). Like
 * any step with unknown effects, the files it wrote are recorded with the
 * graph and written again when the cached graph is used on a tree that lacks them.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../../cas/atomic-file.js';
import { METADATA_TOUCH_MS, touchIfOlder } from '../../cas/store-trim.js';
import { putHashedFile, type BlobStore } from '../../cas/blob-store.js';
import type { BuildGraph } from '../../dag-extractor/types.js';
import { applyStepEffect } from './output-writer.js';
import type { ProjectFiles, Snapshot } from './project-files.js';
import { diffSnapshots, type StepEffect } from './step-cache.js';

const BUILD_FILE = /(^|\/)(GNUmakefile|makefile|Makefile|CMakeLists\.txt|compile_commands\.json|build\.ninja)$|\.(mk|make|cmake|ninja)$/;
const GRAPH_ENV = ['CC', 'CXX', 'CFLAGS', 'CXXFLAGS', 'CPPFLAGS', 'LDFLAGS', 'LDLIBS', 'AR', 'ARFLAGS', 'MAKEFLAGS', 'PATH', 'SOURCE_DATE_EPOCH'];
// 4: make steps carry their rule (target, prerequisites) for make's up-to-date check.
// 7: steps and copies of recipes without prerequisites (not phony) and copies carry their rule too.
// 8: .ONESHELL recipes as one command; steps run with the makefile's SHELL and .SHELLFLAGS.
// 9: actions of .DELETE_ON_ERROR makefiles name the target to delete when they fail.
// 10: recipe lines make ignores the failure of (`-`, .IGNORE) are steps marked ignoreErrors.
// 11: the commands of a sub-make run with --no-print-directory run in its directory.
// 12: what a recursive line prints itself (automake's "Making all in src") is not a command; makefiles and
//     configure's files are marked old and files other sub-makes make are marked new in the dry run.
// 13: a makefile next to CMakeLists.txt means Make unless CMake wrote it (or a build directory is given).
// 14: libtool compiles are compiles; automake's dependency-file renames fold into their compiles; its
//     `test -f 'a.c' || echo './'`a.c source names are read.
// 15: ... and also when an earlier command of the build writes a.c.
const FORMAT = 15;

export interface GraphCacheInput {
  files: ProjectFiles;
  /** Where the files extraction wrote are kept, to write them again. */
  cas: BlobStore;
  cacheDir: string;
  args: string[];
  buildDir?: string;
  /** The commit and tags checked out (git-identity.ts). */
  git: string;
  env: Record<string, string | undefined>;
  extract(): Promise<BuildGraph>;
}

interface CachedGraph {
  graph: BuildGraph;
  effect: Omit<StepEffect, 'stdout' | 'stderr'>;
}

export async function graphKey(input: Omit<GraphCacheInput, 'extract' | 'cas'>, snap: Snapshot): Promise<string> {
  const h = createHash('sha256');
  h.update(`orion-graph-${FORMAT}\u0000${input.files.root}\u0000${input.args.join('\u0001')}\u0000${input.buildDir ?? ''}\u0000`);
  for (const name of GRAPH_ENV) h.update(`${name}=${input.env[name] ?? ''}\u0000`);
  h.update(`git=${input.git}\u0000`);
  for (const p of [...snap.entries.keys()].sort()) {
    const e = snap.entries.get(p)!;
    h.update(p);
    if (e.kind === 'file' && BUILD_FILE.test(p)) h.update(`@${e.state.digest.hash}`);
    else if (e.kind === 'symlink') h.update(`->${e.target}`);
    else if (e.kind === 'dir') h.update('/');
    h.update('\n');
  }
  return h.digest('hex');
}

/**
 * Make imports every environment variable as a make variable (`ifdef DEBUG`, `$(PREFIX)`), and the
 * recipes it runs see them too: the environment variables whose names the build files mention, as
 * `NAME=value` lines (sorted; unset ones left out). The names are found once per set of build
 * files (`namesFile`), not at every build.
 */
async function referencedEnv(input: Omit<GraphCacheInput, 'extract' | 'cas'>, snap: Snapshot, namesFile: string): Promise<string[]> {
  let names: string[] | undefined;
  try {
    names = JSON.parse(await readFile(namesFile, 'utf8')) as string[];
  } catch {
    const found = new Set<string>();
    for (const [p, e] of snap.entries) {
      if (e.kind !== 'file' || !BUILD_FILE.test(p)) continue;
      const text = await readFile(path.join(input.files.root, p), 'latin1').catch(() => '');
      for (const w of text.matchAll(/[A-Za-z_][A-Za-z0-9_]*/g)) found.add(w[0]);
    }
    // Every name a build file mentions, whichever of them this environment sets: kept for the next builds.
    names = [...found].sort();
    await mkdir(path.dirname(namesFile), { recursive: true });
    await writeFileAtomic(namesFile, JSON.stringify(names), { durable: false });
  }
  return names.filter((n) => input.env[n] !== undefined && !GRAPH_ENV.includes(n)).map((n) => `${n}=${input.env[n]}`);
}

/** Returns the cached graph for this tree (replaying what extraction wrote), or extracts and caches it. */
export async function loadOrExtractGraph(input: GraphCacheInput): Promise<{ graph: BuildGraph; cached: boolean; env: string[] }> {
  const before = await input.files.snapshot();
  const beforeEntries = new Map(before.entries);
  const base = await graphKey(input, before);
  const namesFile = path.join(input.cacheDir, 'graphs', `${base}.names`);
  const env = await referencedEnv(input, before, namesFile);
  const key = env.length === 0 ? base : createHash('sha256').update(`${base}\u0000${env.join('\u0000')}`).digest('hex');
  const file = path.join(input.cacheDir, 'graphs', `${key}.json`);
  try {
    const cached = JSON.parse(await readFile(file, 'utf8')) as CachedGraph;
    // Used: kept by the cache's trim of unused files (cas/store-trim.ts).
    for (const f of [file, namesFile]) touchIfOlder(f, METADATA_TOUCH_MS);
    if (cached.graph?.root === input.files.root && Array.isArray(cached.graph.actions) && cached.effect) {
      const missing = await input.cas.findMissing(cached.effect.written.map((w) => w.digest));
      if (missing.length === 0) {
        await applyStepEffect({ ...cached.effect, deleted: [] }, input.files, input.cas);
        return { graph: cached.graph, cached: true, env };
      }
    }
  } catch {
    // Not cached yet (or unreadable): extract below.
  }
  const graph = await input.extract();
  input.files.forgetAll();
  const after = await input.files.snapshot();
  const effect = diffSnapshots(beforeEntries, after.entries);
  for (const w of effect.written) await putHashedFile(input.cas, w.digest, path.join(input.files.root, w.path));
  await mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, JSON.stringify({ graph, effect } satisfies CachedGraph), { durable: false });
  return { graph, cached: false, env };
}
