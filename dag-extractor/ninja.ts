/**
 * Extracts the build graph of a Ninja build directory by reading its
 * manifest (build.ninja and what it includes) directly. CMake projects go
 * through cmake.ts, which configures the build directory first.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { failedPrecondition, invalidArgument } from '../common/errors.js';
import type { ExtractOptions, GraphExtractor } from './extractor.js';
import { ninjaManifestToActions } from './ninja-graph.js';
import { parseNinjaManifest } from './ninja-manifest.js';
import { commonAncestor } from './paths.js';
import { isFile, resolveDirectory } from './project-dir.js';
import type { BuildGraph } from './types.js';

export const NINJA_MANIFEST = 'build.ninja';

/** Extracts from PROJECT/build.ninja, or from BUILD_DIR/build.ninja when a build directory is given. */
export function createNinjaExtractor(): GraphExtractor {
  return {
    name: 'ninja',
    async extract(projectDir: string, options: ExtractOptions = {}): Promise<BuildGraph> {
      const root = await resolveDirectory(projectDir);
      const buildDir = options.buildDir === undefined ? root : await resolveDirectory(path.resolve(root, options.buildDir), 'Build directory');
      return readNinjaBuildGraph(root, buildDir, ninjaTargets(options.makeArgs));
    },
  };
}

/** Reads BUILD_DIR/build.ninja into a graph whose root contains both the project and the build directory. */
export async function readNinjaBuildGraph(projectRoot: string, buildDir: string, targets: string[]): Promise<BuildGraph> {
  if (!(await isFile(path.join(buildDir, NINJA_MANIFEST)))) {
    throw failedPrecondition(`No ${NINJA_MANIFEST} in ${buildDir}`);
  }
  const root = commonAncestor([projectRoot, buildDir]);
  const manifest = await parseNinjaManifest(NINJA_MANIFEST, buildDir, (file) => readManifestFile(file));
  return { root, tool: 'ninja', actions: ninjaManifestToActions(manifest, { buildDir, root, targets }) };
}

/** Ninja and CMake take target names only: no options, no VAR=value overrides. */
export function ninjaTargets(args: string[] | undefined): string[] {
  for (const arg of args ?? []) {
    if (arg === '' || arg.startsWith('-') || arg.includes('=')) {
      throw invalidArgument(`'${arg}' is not a target name: Ninja and CMake builds take target names only`, {
        hint: 'Set CMake cache variables when configuring the build directory (cmake -D...).',
      });
    }
  }
  return args ?? [];
}

async function readManifestFile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw failedPrecondition(`Cannot read Ninja manifest ${file}: ${(err as Error).message}`, { cause: err });
  }
}
