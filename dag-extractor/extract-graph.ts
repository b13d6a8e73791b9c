/**
 * Picks the extractor for a project directory, as the user would build it by
 * hand: a makefile means Make (what `make` runs there: a hand-written one, or
 * one configure wrote next to a CMakeLists.txt the project also ships), unless
 * CMake generated it or a build directory is asked for and there is a
 * CMakeLists.txt; then CMakeLists.txt means CMake, a build.ninja Ninja, and a
 * lone compile_commands.json a compilation database (in that order).
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import { failedPrecondition } from '../common/errors.js';
import { createCMakeExtractor } from './cmake.js';
import { COMPILE_COMMANDS, createCompdbExtractor } from './compdb.js';
import type { ExtractOptions, GraphExtractor } from './extractor.js';
import { createMakeExtractor } from './make.js';
import { NINJA_MANIFEST, createNinjaExtractor } from './ninja.js';
import { isFile, resolveDirectory } from './project-dir.js';
import type { BuildGraph } from './types.js';

export type BuildSystem = 'cmake' | 'make' | 'ninja' | 'compile_commands';

export const CMAKE_LISTS = 'CMakeLists.txt';
export const MAKEFILE_NAMES = ['GNUmakefile', 'makefile', 'Makefile'] as const;

/**
 * The build system of `projectDir`. build.ninja and compile_commands.json are
 * also looked for in `buildDir` when one is given. FAILED_PRECONDITION when
 * none is found.
 */
export async function detectBuildSystem(projectDir: string, buildDir?: string): Promise<BuildSystem> {
  const root = await resolveDirectory(projectDir);
  const dirs = buildDir === undefined ? [root] : [root, path.resolve(root, buildDir)];
  const anyFile = async (dirsToSearch: string[], names: readonly string[]) => {
    for (const dir of dirsToSearch) for (const name of names) if (await isFile(path.join(dir, name))) return true;
    return false;
  };
  const cmake = await anyFile([root], [CMAKE_LISTS]);
  for (const name of MAKEFILE_NAMES) {
    const makefile = path.join(root, name);
    if (!(await isFile(makefile))) continue;
    if (!cmake || (buildDir === undefined && !(await generatedByCMake(makefile)))) return 'make';
    break;
  }
  if (cmake) return 'cmake';
  if (await anyFile(dirs, [NINJA_MANIFEST])) return 'ninja';
  if (await anyFile(dirs, [COMPILE_COMMANDS])) return 'compile_commands';
  const searched = dirs.join(' and ');
  throw failedPrecondition(
    `No build files found in ${searched}: looked for ${CMAKE_LISTS}, ${MAKEFILE_NAMES.join(', ')}, ${NINJA_MANIFEST} and ${COMPILE_COMMANDS}`,
    { hint: 'Run orion in the top directory of a CMake, Make or Ninja project, or next to a compile_commands.json.' },
  );
}

/** An in-source CMake build's makefile: CMake's first line says so. */
async function generatedByCMake(makefile: string): Promise<boolean> {
  const f = await open(makefile, 'r');
  try {
    const { buffer, bytesRead } = await f.read({ buffer: Buffer.alloc(256), position: 0 });
    return /^# CMAKE generated file/.test(buffer.subarray(0, bytesRead).toString('latin1'));
  } finally {
    await f.close();
  }
}

export type ExtractorsBySystem = Record<BuildSystem, GraphExtractor>;

/** An extractor that detects the build system on each call and delegates to the matching extractor. */
export function createAutoDetectingExtractor(extractors: Partial<ExtractorsBySystem> = {}): GraphExtractor {
  const bySystem: ExtractorsBySystem = {
    cmake: extractors.cmake ?? createCMakeExtractor(),
    make: extractors.make ?? createMakeExtractor(),
    ninja: extractors.ninja ?? createNinjaExtractor(),
    compile_commands: extractors.compile_commands ?? createCompdbExtractor(),
  };
  return {
    name: 'auto',
    async extract(projectDir: string, options: ExtractOptions = {}): Promise<BuildGraph> {
      const system = await detectBuildSystem(projectDir, options.buildDir);
      return bySystem[system].extract(projectDir, options);
    },
  };
}

/** Extracts the build graph of `projectDir` with the extractor its build files call for. */
export function extractGraph(projectDir: string, options: ExtractOptions = {}): Promise<BuildGraph> {
  return createAutoDetectingExtractor().extract(projectDir, options);
}
