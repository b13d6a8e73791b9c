/**
 * How long an action is expected to run, before anything has measured it.
 *
 * The scheduler starts the ready action with the longest remaining chain
 * first; counting every action as one unit makes all compiles equal, so a big
 * translation unit feeding the last link can start last and leave one core
 * compiling it alone at the end (Redis: redis-cli.c, 340 KB, 2.8 s, started
 * last of 140 compiles). A compile's time follows the size of its source
 * file closely (Redis on this machine: 0.1 s + 5.5 ms per KB, correlation
 * 0.90 over 140 compiles); other steps get a fixed guess. Only the order
 * matters for the build itself; the figures are in milliseconds so the head
 * can mix them with the durations it measured.
 */
import { statSync } from 'node:fs';
import type { BuildAction } from '../../dag-extractor/types.js';

export type CostEstimate = (a: BuildAction) => number;

/** Expected milliseconds of a compile with no readable source, and of steps that are not compiles. */
export const UNKNOWN_COMPILE_MS = 500;
export const STEP_MS: Record<BuildAction['kind'], number> = { compile: UNKNOWN_COMPILE_MS, link: 300, archive: 50, copy: 20, other: 100 };
const COMPILE_BASE_MS = 100;
const COMPILE_MS_PER_KB = 5.5;

function fileSize(p: string): number | undefined {
  try {
    const st = statSync(p);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

/**
 * An estimate from the size of each compile's source (its first input).
 * `sizeOf` reads a file's size (undefined: absent, e.g. generated later).
 */
export function createCostEstimate(sizeOf: (path: string) => number | undefined = fileSize): CostEstimate {
  const memo = new Map<string, number>();
  return (a) => {
    if (a.kind !== 'compile') return STEP_MS[a.kind];
    let ms = memo.get(a.id);
    if (ms === undefined) {
      const source = a.inputs[0];
      const bytes = source === undefined ? undefined : sizeOf(source);
      ms = bytes === undefined ? UNKNOWN_COMPILE_MS : Math.round(COMPILE_BASE_MS + (COMPILE_MS_PER_KB * bytes) / 1024);
      memo.set(a.id, ms);
    }
    return ms;
  };
}
