/**
 * Turns a Ninja manifest into build actions. Ninja's graph is complete (CMake
 * adds order-only edges from compiles to generated headers), so dependencies
 * come straight from it: an action depends on the producers of its explicit,
 * implicit and order-only inputs, looking through phony edges. Phony edges and
 * generator edges (CMake's build.ninja regeneration) are not actions.
 */
import path from 'node:path';
import { failedPrecondition, invalidArgument } from '../common/errors.js';
import { actionLabel } from './action-draft.js';
import { assignActionIds } from './action-id.js';
import { classifyCommandLine } from './command-line-classifier.js';
import type { NinjaEdge, NinjaManifest } from './ninja-manifest.js';
import { unique } from './paths.js';
import type { BuildAction } from './types.js';

export interface NinjaGraphOptions {
  /** Absolute directory Ninja runs in: manifest paths are relative to it. */
  buildDir: string;
  /** Absolute project root, for labels and for telling project files from system files. */
  root: string;
  /** Targets to build (manifest paths or absolute); default: the `default` targets, else every root of the graph. */
  targets?: string[];
}

const NO_MAKE = new Set<string>();

export function ninjaManifestToActions(manifest: NinjaManifest, options: NinjaGraphOptions): BuildAction[] {
  const { buildDir, root } = options;
  const abs = (p: string) => path.resolve(buildDir, p);
  const producers = new Map<string, NinjaEdge>();
  for (const edge of manifest.edges) {
    for (const output of edge.outputs) {
      const key = abs(output);
      const existing = producers.get(key);
      // CMake names a custom command's outputs both relative and absolute: the same file, one edge.
      if (existing !== undefined && existing !== edge) throw failedPrecondition(`Ninja manifest in ${buildDir}: multiple rules generate ${output}`);
      producers.set(key, edge);
    }
  }
  const isAction = (edge: NinjaEdge) => edge.rule !== 'phony' && !edge.generator;
  const allInputs = (edge: NinjaEdge) => [...edge.explicitInputs, ...edge.implicitInputs, ...edge.orderOnlyInputs].map(abs);
  const fileInputs = (edge: NinjaEdge) => [...edge.explicitInputs, ...edge.implicitInputs].map(abs);

  const order = topologicalEdges(selectRoots(manifest, options, producers, abs), producers, allInputs, (e) => e.validations.map(abs), isAction);

  // What a phony edge stands for: the actions it waits for and the files it names.
  const phonyMemo = new Map<NinjaEdge, { actions: Set<NinjaEdge>; files: string[] }>();
  const expandPhony = (phony: NinjaEdge): { actions: Set<NinjaEdge>; files: string[] } => {
    const memo = phonyMemo.get(phony);
    if (memo) return memo;
    const result = { actions: new Set<NinjaEdge>(), files: [] as string[] };
    phonyMemo.set(phony, result);
    for (const input of allInputs(phony)) for (const a of producingActions(input)) result.actions.add(a);
    for (const input of fileInputs(phony)) result.files.push(...expandFile(input));
    return result;
  };
  const producingActions = (file: string): NinjaEdge[] => {
    const producer = producers.get(file);
    if (!producer || producer.generator) return [];
    return producer.rule === 'phony' ? [...expandPhony(producer).actions] : [producer];
  };
  const expandFile = (file: string): string[] => {
    const producer = producers.get(file);
    const isAlias = producer?.rule === 'phony' && producer.explicitInputs.length + producer.implicitInputs.length > 0;
    return isAlias ? expandPhony(producer).files : [file];
  };

  const drafts = order.map((edge) => {
    const outputs = unique(edge.outputs.map(abs));
    const [draft] = classifyCommandLine(edge.command, buildDir, { root, makeNames: NO_MAKE, mode: 'single' }).drafts;
    const tool = draft !== undefined && draft.kind !== 'other';
    return {
      edge,
      kind: tool ? draft.kind : 'other' as const,
      verb: tool ? draft.verb : 'GEN',
      cwd: tool ? draft.cwd : buildDir,
      argv: tool ? draft.argv : ['/bin/sh', '-c', edge.command],
      env: tool ? draft.env : undefined,
      inputs: unique(fileInputs(edge).flatMap(expandFile)),
      outputs: unique([...outputs, ...(draft?.outputs ?? [])]),
      cacheable: tool,
    };
  });
  const ids = assignActionIds(drafts);
  const idOf = new Map(drafts.map((d, i) => [d.edge, ids[i]]));
  return drafts.map((d, i): BuildAction => {
    const deps = unique(allInputs(d.edge).flatMap(producingActions).map((e) => idOf.get(e)!));
    return {
      id: ids[i],
      kind: d.kind,
      cwd: d.cwd,
      argv: d.argv,
      ...(d.env ? { env: d.env } : {}),
      inputs: d.inputs,
      outputs: d.outputs,
      deps,
      cacheable: d.cacheable,
      label: actionLabel(d, root),
    };
  });
}

function selectRoots(
  manifest: NinjaManifest,
  options: NinjaGraphOptions,
  producers: Map<string, NinjaEdge>,
  abs: (p: string) => string,
): NinjaEdge[] {
  if (options.targets && options.targets.length > 0) {
    return options.targets.map((target) => {
      const edge = producers.get(abs(target));
      if (!edge) throw invalidArgument(`Unknown Ninja target '${target}' in ${options.buildDir}`);
      return edge;
    });
  }
  if (manifest.defaults.length > 0) {
    return manifest.defaults.map((target) => {
      const edge = producers.get(abs(target));
      if (!edge) throw failedPrecondition(`Ninja manifest in ${options.buildDir}: default target '${target}' has no rule`);
      return edge;
    });
  }
  const consumed = new Set(manifest.edges.flatMap((e) => [...e.explicitInputs, ...e.implicitInputs, ...e.orderOnlyInputs].map(abs)));
  return manifest.edges.filter((e) => !e.generator && !e.outputs.some((o) => consumed.has(abs(o))));
}

/**
 * The action edges needed for `roots`, each after everything it depends on
 * (depth-first post-order, iterative so deep graphs do not overflow the stack).
 * Validation edges are built too, without becoming dependencies.
 */
function topologicalEdges(
  roots: NinjaEdge[],
  producers: Map<string, NinjaEdge>,
  inputs: (e: NinjaEdge) => string[],
  validations: (e: NinjaEdge) => string[],
  isAction: (e: NinjaEdge) => boolean,
): NinjaEdge[] {
  const state = new Map<NinjaEdge, 'visiting' | 'done'>();
  const order: NinjaEdge[] = [];
  const pending = [...roots].reverse();
  const children = (edge: NinjaEdge) =>
    unique(inputs(edge))
      .map((p) => producers.get(p))
      .filter((e): e is NinjaEdge => e !== undefined && !e.generator);
  while (pending.length > 0) {
    const root = pending.pop()!;
    if (state.has(root) || root.generator) continue;
    const stack: { edge: NinjaEdge; next: number; deps: NinjaEdge[] }[] = [{ edge: root, next: 0, deps: children(root) }];
    state.set(root, 'visiting');
    while (stack.length > 0) {
      const frame = stack[stack.length - 1];
      if (frame.next < frame.deps.length) {
        const child = frame.deps[frame.next++];
        const s = state.get(child);
        if (s === 'visiting') throw failedPrecondition(`Ninja manifest has a dependency cycle through ${child.outputs[0]}`);
        if (s === undefined) {
          state.set(child, 'visiting');
          stack.push({ edge: child, next: 0, deps: children(child) });
        }
        continue;
      }
      stack.pop();
      state.set(frame.edge, 'done');
      if (isAction(frame.edge)) order.push(frame.edge);
      for (const v of validations(frame.edge)) {
        const edge = producers.get(v);
        if (edge) pending.push(edge);
      }
    }
  }
  return order;
}
