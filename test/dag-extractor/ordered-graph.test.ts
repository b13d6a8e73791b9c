import { describe, expect, it } from 'vitest';
import type { ActionDraft } from '../../dag-extractor/action-draft.js';
import { buildOrderedActions } from '../../dag-extractor/ordered-graph.js';

function draft(name: string, fields: Partial<ActionDraft>): ActionDraft {
  return {
    kind: 'compile',
    verb: 'CC',
    cwd: '/p',
    argv: ['cc', name],
    inputs: [],
    optionalInputs: [],
    outputs: [],
    cacheable: true,
    ...fields,
  };
}

/** Deps as indices into the action list, for readable assertions. */
function depIndices(drafts: ActionDraft[]): number[][] {
  const actions = buildOrderedActions(drafts, '/p');
  const index = new Map(actions.map((a, i) => [a.id, i]));
  return actions.map((a) => a.deps.map((d) => index.get(d)!).sort((x, y) => x - y));
}

describe('buildOrderedActions', () => {
  it('makes each action depend on the last earlier writer of each input', () => {
    const deps = depIndices([
      draft('a', { outputs: ['/p/a.o'] }),
      draft('b', { outputs: ['/p/b.o'] }),
      draft('ar', { kind: 'archive', inputs: ['/p/a.o', '/p/b.o'], outputs: ['/p/l.a'] }),
      draft('ranlib', { kind: 'archive', inputs: ['/p/l.a'], outputs: ['/p/l.a'] }),
      draft('ld', { kind: 'link', inputs: ['/p/l.a'], outputs: ['/p/app'] }),
    ]);
    expect(deps).toEqual([[], [], [0, 1], [2], [3]]);
  });

  it('makes a non-cacheable step a barrier: it waits for everything since the previous barrier and everything after waits for it', () => {
    const deps = depIndices([
      draft('a', { outputs: ['/p/a.o'] }),
      draft('gen', { kind: 'other', cacheable: false, outputs: ['/p/gen.h'] }),
      draft('b', { outputs: ['/p/b.o'] }),
      draft('c', { outputs: ['/p/c.o'] }),
      draft('mkdir', { kind: 'other', cacheable: false }),
      draft('d', { outputs: ['/p/d.o'] }),
    ]);
    expect(deps).toEqual([[], [0], [1], [1], [1, 2, 3], [4]]);
  });

  it('makes a copy of a linked binary an ordinary action, and a copy of anything else (a header a compile may include) a barrier', () => {
    const copy = (name: string, src: string, dst: string) => draft(name, { kind: 'copy', verb: 'INSTALL', argv: ['install', src, dst], inputs: [src], outputs: [dst] });
    const deps = depIndices([
      draft('a', { outputs: ['/p/a.o'] }), // 0
      draft('app', { kind: 'link', verb: 'LD', inputs: ['/p/a.o'], outputs: ['/p/app'] }), // 1
      copy('i1', '/p/app', '/p/app2'), // 2: copies a binary: only after its source
      draft('b', { outputs: ['/p/b.o'] }), // 3: free to run beside the copy
      copy('i2', '/p/app2', '/p/app3'), // 4: a copy of a copy of a binary
      copy('h', '/p/config.h.in', '/p/config.h'), // 5: may be included: barrier
      draft('c', { outputs: ['/p/c.o'] }), // 6: after the barrier
    ]);
    expect(deps).toEqual([[], [0], [1], [], [2], [0, 1, 2, 3, 4], [5]]);
  });

  it('adds optional inputs (libraries found through -L/-l) only when an earlier action writes them', () => {
    const actions = buildOrderedActions(
      [
        draft('ar', { kind: 'archive', outputs: ['/p/lib/libx.a'] }),
        draft('ld', { kind: 'link', outputs: ['/p/app'], optionalInputs: ['/p/lib/libx.so', '/p/lib/libx.a'] }),
      ],
      '/p',
    );
    expect(actions[1].inputs).toEqual(['/p/lib/libx.a']);
    expect(actions[1].deps).toEqual([actions[0].id]);
  });

  it('orders writers of the same file and a rewrite after the readers of the old content', () => {
    const deps = depIndices([
      draft('w1', { outputs: ['/p/x'] }),
      draft('r', { inputs: ['/p/x'], outputs: ['/p/y'] }),
      draft('w2', { outputs: ['/p/x'] }),
    ]);
    expect(deps).toEqual([[], [0], [0, 1]]);
  });

  it('gives a repeated command a distinct id with a suffix', () => {
    const actions = buildOrderedActions([draft('same', { kind: 'other', cacheable: false }), draft('same', { kind: 'other', cacheable: false })], '/p');
    expect(actions[1].id).toBe(`${actions[0].id}-2`);
    expect(actions[0].id).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe('buildOrderedActions: steps make may find up to date', () => {
  // 0 setup step (barrier), 1 a.o, 2 gen.h writer, 3 conditional step (rule: out.c from gen.h, spec),
  // 4 c.o, 5 d.o, 6 install step (barrier).
  const drafts = [
    draft('setup', { kind: 'other', cacheable: false }),
    draft('a', { outputs: ['/p/a.o'] }),
    draft('gen', { outputs: ['/p/gen.h'] }),
    draft('generate', { kind: 'other', cacheable: false }),
    draft('c', { outputs: ['/p/c.o'] }),
    draft('d', { outputs: ['/p/d.o'] }),
    draft('install', { kind: 'other', cacheable: false }),
  ];
  const rule = { target: '/p/out.c', prereqs: ['/p/gen.h', '/p/spec.json'] };
  const actions = buildOrderedActions(drafts, '/p', (i) => (i === 3 ? rule : undefined));
  const at = new Map(actions.map((a, i) => [a.id, i]));
  const idx = (ids: string[] | undefined) => (ids ?? []).map((d) => at.get(d)!).sort((x, y) => x - y);

  it("lists what the decision waits for: the previous step and the writers of the rule's files", () => {
    expect(idx(actions[3]!.decideAfter)).toEqual([0, 2]);
    expect(actions.filter((a) => a.decideAfter).length).toBe(1);
  });

  it('keeps the step a barrier, and makes the next barrier wait for every action since the last one that is not conditional', () => {
    expect(idx(actions[3]!.deps)).toEqual([0, 1, 2]);
    expect(idx(actions[4]!.deps)).toEqual([3]);
    // Were the conditional step settled early, a.o and gen would still come before install.
    expect(idx(actions[6]!.deps)).toEqual([1, 2, 3, 4, 5]);
  });
});
