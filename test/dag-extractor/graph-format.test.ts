import { describe, expect, it } from 'vitest';
import { toDot, toJson, type BuildGraph } from '../../dag-extractor/index.js';

const graph: BuildGraph = {
  root: '/p',
  tool: 'make',
  actions: [
    { id: 'a1', kind: 'other', cwd: '/p', argv: ['/bin/sh', '-c', 'gen > "x.h"'], inputs: [], outputs: ['/p/x.h'], deps: [], cacheable: false, label: 'GEN x.h' },
    { id: 'b2', kind: 'compile', cwd: '/p', argv: ['cc', '-c', 'a.c'], inputs: ['/p/a.c'], outputs: ['/p/a.o'], deps: ['a1'], cacheable: true, label: 'CC a.o' },
    { id: 'c3', kind: 'link', cwd: '/p', argv: ['cc', '-o', 'app', 'a.o'], inputs: ['/p/a.o'], outputs: ['/p/app'], deps: ['b2'], cacheable: true, label: 'LD "app"' },
  ],
};

describe('graph formats', () => {
  it('writes JSON that reads back as the same graph', () => {
    expect(JSON.parse(toJson(graph))).toEqual(graph);
  });

  it('writes a Graphviz digraph with a labelled node per action and an edge from each producer to its consumer', () => {
    const dot = toDot(graph);
    expect(dot.startsWith('digraph build {\n')).toBe(true);
    expect(dot.trimEnd().endsWith('}')).toBe(true);
    expect(dot).toContain('"a1" [label="GEN x.h", shape=ellipse, style=dashed];');
    expect(dot).toContain('"b2" [label="CC a.o", shape=box];');
    expect(dot).toContain('"c3" [label="LD \\"app\\"", shape=box, style=bold];');
    expect(dot).toContain('"a1" -> "b2";');
    expect(dot).toContain('"b2" -> "c3";');
    expect(dot.match(/->/g)).toHaveLength(2);
  });
});
