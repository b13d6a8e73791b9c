/**
 * Extracting a graph runs make or cmake, which costs more than a no-op build
 * should. The graph is cached under a key of everything extraction reads: the
 * build files' contents, the project's file listing (wildcards), the arguments
 * and the environment make sees.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../../cas/atomic-file.js';
import type { BuildGraph } from '../../dag-extractor/types.js';
import type { ProjectFiles } from './project-files.js';

const BUILD_FILE = /(^|\/)(GNUmakefile|makefile|Makefile|CMakeLists\.txt|compile_commands\.json|build\.ninja)$|\.(mk|make|cmake|ninja)$/;
const GRAPH_ENV = ['CC', 'CXX', 'CFLAGS', 'CXXFLAGS', 'CPPFLAGS', 'LDFLAGS', 'LDLIBS', 'AR', 'ARFLAGS', 'MAKEFLAGS', 'PATH', 'SOURCE_DATE_EPOCH'];
const FORMAT = 2;

export interface GraphCacheInput {
  files: ProjectFiles;
  cacheDir: string;
  args: string[];
  buildDir?: string;
  env: Record<string, string | undefined>;
  extract(): Promise<BuildGraph>;
}

export async function graphKey(input: GraphCacheInput): Promise<string> {
  const h = createHash('sha256');
  h.update(`orion-graph-${FORMAT}\u0000${input.files.root}\u0000${input.args.join('\u0001')}\u0000${input.buildDir ?? ''}\u0000`);
  for (const name of GRAPH_ENV) h.update(`${name}=${input.env[name] ?? ''}\u0000`);
  const { files, symlinks } = await input.files.list();
  for (const f of files) {
    h.update(f);
    if (BUILD_FILE.test(f)) {
      const s = await input.files.state(path.join(input.files.root, f));
      h.update(`@${s?.digest.hash ?? '-'}`);
    }
    h.update('\n');
  }
  for (const s of symlinks) h.update(`${s.path}->${s.target}\n`);
  return h.digest('hex');
}

/** Returns the cached graph for this key, or extracts and caches it. */
export async function loadOrExtractGraph(input: GraphCacheInput): Promise<{ graph: BuildGraph; cached: boolean }> {
  const key = await graphKey(input);
  const file = path.join(input.cacheDir, 'graphs', `${key}.json`);
  try {
    const graph = JSON.parse(await readFile(file, 'utf8')) as BuildGraph;
    if (graph.root === input.files.root && Array.isArray(graph.actions)) return { graph, cached: true };
  } catch {
    // Not cached yet (or unreadable): extract below.
  }
  const graph = await input.extract();
  await mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, JSON.stringify(graph));
  return { graph, cached: false };
}
