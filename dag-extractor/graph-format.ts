/** Renderings of a build graph for `orion graph`: JSON, and Graphviz DOT. */
import type { ActionKind, BuildGraph } from './types.js';

export function toJson(graph: BuildGraph): string {
  return `${JSON.stringify(graph, null, 2)}\n`;
}

const NODE_STYLE: Record<ActionKind, string> = {
  compile: 'shape=box',
  archive: 'shape=box3d',
  link: 'shape=box, style=bold',
  copy: 'shape=note',
  other: 'shape=ellipse, style=dashed',
};

/** A Graphviz digraph: one node per action, labelled, and an edge from each producer to each consumer. */
export function toDot(graph: BuildGraph): string {
  const lines = [
    'digraph build {',
    '  rankdir=LR;',
    `  label=${dotString(`${graph.tool} build of ${graph.root}`)};`,
    '  node [fontname="monospace", fontsize=10];',
  ];
  for (const action of graph.actions) {
    lines.push(`  ${dotString(action.id)} [label=${dotString(action.label)}, ${NODE_STYLE[action.kind]}];`);
  }
  for (const action of graph.actions) {
    for (const dep of action.deps) lines.push(`  ${dotString(dep)} -> ${dotString(action.id)};`);
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

function dotString(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}
