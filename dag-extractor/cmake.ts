/**
 * Extracts the build graph of a CMake project through the Ninja generator:
 * configures the build directory with `cmake -G Ninja -S PROJECT -B BUILD`
 * when it has no build.ninja yet, brings the manifest up to date with
 * `ninja -C BUILD build.ninja` (which re-runs CMake only if a CMakeLists.txt
 * changed), then reads the graph from the manifest (see ninja-graph.ts).
 * Custom commands become non-cacheable 'other' actions.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { failedPrecondition } from '../common/errors.js';
import { createProcessCommandRunner, environmentWith, tail, type CommandRunner } from './command-runner.js';
import type { ExtractOptions, GraphExtractor } from './extractor.js';
import { NINJA_MANIFEST, ninjaTargets, readNinjaBuildGraph } from './ninja.js';
import { isFile, resolveDirectory } from './project-dir.js';
import type { BuildGraph } from './types.js';

export interface CMakeExtractorDeps {
  runner?: CommandRunner;
  cmakeProgram?: string;
  ninjaProgram?: string;
}

export const DEFAULT_CMAKE_BUILD_DIR = 'build';

export function createCMakeExtractor(deps: CMakeExtractorDeps = {}): GraphExtractor {
  const runner = deps.runner ?? createProcessCommandRunner();
  const cmake = deps.cmakeProgram ?? 'cmake';
  const ninja = deps.ninjaProgram ?? 'ninja';

  return {
    name: 'cmake',
    async extract(projectDir: string, options: ExtractOptions = {}): Promise<BuildGraph> {
      const root = await resolveDirectory(projectDir);
      const targets = ninjaTargets(options.makeArgs);
      const requested = path.resolve(root, options.buildDir ?? DEFAULT_CMAKE_BUILD_DIR);
      await mkdir(requested, { recursive: true });
      const buildDir = await resolveDirectory(requested, 'Build directory');
      const env = environmentWith({ LC_ALL: 'C' });

      if (!(await isFile(path.join(buildDir, NINJA_MANIFEST)))) {
        const args = ['-G', 'Ninja', '-S', root, '-B', buildDir];
        const configure = await runner.run(cmake, args, { cwd: root, env, signal: options.signal });
        if (configure.exitCode !== 0) {
          throw failedPrecondition(`${cmake} ${args.join(' ')} failed with exit code ${configure.exitCode}:\n${tail(configure.stderr || configure.stdout)}`, {
            hint: 'Fix the CMake configuration, or remove a build directory made with another generator.',
          });
        }
      }
      const regenerate = await runner.run(ninja, ['-C', buildDir, NINJA_MANIFEST], { cwd: root, env, signal: options.signal });
      if (regenerate.exitCode !== 0) {
        throw failedPrecondition(`Regenerating ${path.join(buildDir, NINJA_MANIFEST)} failed with exit code ${regenerate.exitCode}:\n${tail(regenerate.stderr || regenerate.stdout)}`);
      }
      return readNinjaBuildGraph(root, buildDir, targets);
    },
  };
}
