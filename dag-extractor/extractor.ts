/** The interface every build-graph extractor implements. */
import type { BuildGraph } from './types.js';

export interface ExtractOptions {
  /**
   * Make: targets and VAR=value overrides passed to make. CMake and Ninja:
   * target names to build instead of the default targets.
   */
  makeArgs?: string[];
  /** CMake and Ninja: the build directory (relative paths are taken from the project directory; CMake default: PROJECT/build). */
  buildDir?: string;
  signal?: AbortSignal;
}

export interface GraphExtractor {
  /** Name of the build system, for messages. */
  readonly name: string;
  extract(projectDir: string, options?: ExtractOptions): Promise<BuildGraph>;
}
