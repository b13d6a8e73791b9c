import { describe, expect, it } from 'vitest';
import { criticalPathLengths } from '../../cli/build/build-runner.js';
import type { BuildAction } from '../../dag-extractor/types.js';

const action = (id: string, deps: string[] = []): BuildAction => ({ id, kind: 'compile', cwd: '/p', argv: ['cc'], inputs: [], outputs: [], deps, cacheable: true, label: id });

describe('critical path lengths (the priority orion build sends with each Execute)', () => {
  it('gives each action the length of the longest chain from it to the end of the build', () => {
    // gen -> a.o -> lib.a -> app ; b.o -> app ; c.o (alone)
    const lengths = criticalPathLengths([
      action('gen'),
      action('a.o', ['gen']),
      action('b.o'),
      action('c.o'),
      action('lib.a', ['a.o']),
      action('app', ['lib.a', 'b.o']),
    ]);
    expect(Object.fromEntries(lengths)).toEqual({ gen: 4, 'a.o': 3, 'lib.a': 2, 'b.o': 2, app: 1, 'c.o': 1 });
  });

  it('ignores dependencies on actions outside the graph and tolerates duplicates', () => {
    const lengths = criticalPathLengths([action('x', ['missing', 'y', 'y']), action('y')]);
    expect(lengths.get('y')).toBe(2);
    expect(lengths.get('x')).toBe(1);
  });
});

describe('critical paths through steps make will probably skip', () => {
  it('counts only the edges from what the decision waits for into such a step', async () => {
    const { dependentsOf, skippingSteps } = await import('../../cli/build/build-runner.js');
    // setup -> a.o, b.o -> gen (skippable, decided after setup) -> big.o -> app
    const gen: BuildAction = { ...action('gen', ['setup', 'a.o', 'b.o']), kind: 'other', cacheable: false, makeRule: { recipe: 'gen', target: '/p/gen.c', prereqs: ['/p/spec'], decideAfter: ['setup'] } };
    const actions = [action('setup'), action('a.o', ['setup']), action('b.o', ['setup']), gen, action('big.o', ['gen']), action('app', ['big.o', 'a.o', 'b.o'])];
    const all = criticalPathLengths(actions);
    expect([all.get('a.o'), all.get('big.o')]).toEqual([4, 2]);
    const skipping = criticalPathLengths(actions, skippingSteps(actions, dependentsOf(actions)));
    // a.o no longer leads through gen to big.o and app; setup still does.
    expect(Object.fromEntries(skipping)).toMatchObject({ 'a.o': 2, 'b.o': 2, gen: 3, 'big.o': 2, app: 1, setup: 4 });
  });
});
