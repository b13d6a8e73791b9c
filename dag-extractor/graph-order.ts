/** Checks a graph's dependency edges and orders its actions for execution. */
import { invalidArgument } from '../common/errors.js';
import type { BuildAction, BuildGraph } from './types.js';

/**
 * The actions of `graph` with every action after all of its deps, keeping the
 * graph's own order where it already allows that. INVALID_ARGUMENT when ids
 * repeat, a dep names no action, or the deps form a cycle.
 */
export function topologicalOrder(graph: BuildGraph): BuildAction[] {
  const byId = new Map<string, BuildAction>();
  for (const action of graph.actions) {
    if (byId.has(action.id)) throw invalidArgument(`Build graph has two actions with id ${action.id}`);
    byId.set(action.id, action);
  }
  for (const action of graph.actions) {
    for (const dep of action.deps) {
      if (!byId.has(dep)) throw invalidArgument(`Action ${action.id} (${action.label}) depends on unknown action ${dep}`);
    }
  }
  const state = new Map<string, 'visiting' | 'done'>();
  const order: BuildAction[] = [];
  for (const start of graph.actions) {
    if (state.has(start.id)) continue;
    const stack: { action: BuildAction; next: number }[] = [{ action: start, next: 0 }];
    state.set(start.id, 'visiting');
    while (stack.length > 0) {
      const frame = stack[stack.length - 1];
      if (frame.next < frame.action.deps.length) {
        const dep = byId.get(frame.action.deps[frame.next++])!;
        const s = state.get(dep.id);
        if (s === 'visiting') throw invalidArgument(`Build graph has a dependency cycle through ${dep.id} (${dep.label})`);
        if (s === undefined) {
          state.set(dep.id, 'visiting');
          stack.push({ action: dep, next: 0 });
        }
        continue;
      }
      stack.pop();
      state.set(frame.action.id, 'done');
      order.push(frame.action);
    }
  }
  return order;
}
