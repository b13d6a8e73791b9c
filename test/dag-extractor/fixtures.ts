/** Test helpers: scratch copies of the fixture projects (tests never build inside fixtures/). */
import { cp, mkdtemp, realpath, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import type { BuildAction, BuildGraph } from '../../dag-extractor/index.js';

export const FIXTURES_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../fixtures');

const scratchDirs: string[] = [];

/** A fresh directory under the system temp dir, removed by `removeScratchDirs`. */
export async function scratchDir(prefix = 'orion-dag-'): Promise<string> {
  const dir = await realpath(await mkdtemp(path.join(os.tmpdir(), prefix)));
  scratchDirs.push(dir);
  return dir;
}

/** Copies fixtures/NAME to a new scratch directory and returns the copy's path. */
export async function copyFixture(name: string): Promise<string> {
  const dir = path.join(await scratchDir(), name);
  await cp(path.join(FIXTURES_DIR, name), dir, { recursive: true });
  return dir;
}

export async function removeScratchDirs(): Promise<void> {
  await Promise.all(scratchDirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
}

/** Paths relative to the graph root, for readable assertions. */
export function rel(graph: BuildGraph, paths: string[]): string[] {
  return paths.map((p) => path.relative(graph.root, p));
}

/**
 * An execution order that respects the graph's deps but otherwise runs the
 * latest action (in the graph's own order) first: as far from the dry-run
 * order as the edges allow, so a missing edge shows up as a failed step.
 */
export function adversarialOrder(graph: BuildGraph): BuildAction[] {
  const index = new Map(graph.actions.map((a, i) => [a.id, i]));
  const waiting = new Map(graph.actions.map((a) => [a.id, new Set(a.deps)]));
  const done = new Set<string>();
  const order: BuildAction[] = [];
  while (order.length < graph.actions.length) {
    const ready = graph.actions.filter((a) => !done.has(a.id) && [...waiting.get(a.id)!].every((d) => done.has(d)));
    if (ready.length === 0) throw new Error('graph has a cycle or an unknown dep');
    const next = ready.reduce((a, b) => (index.get(a.id)! > index.get(b.id)! ? a : b));
    done.add(next.id);
    order.push(next);
  }
  return order;
}

/** Runs each action's argv in its cwd, one at a time; throws with the action's label when one fails. */
export async function executeActions(actions: BuildAction[]): Promise<void> {
  for (const action of actions) {
    const result = await execa(action.argv[0], action.argv.slice(1), {
      cwd: action.cwd,
      env: action.env,
      reject: false,
      all: true,
    });
    if (result.exitCode !== 0) throw new Error(`${action.label} failed (exit ${result.exitCode}):\n${result.all}`);
  }
}
