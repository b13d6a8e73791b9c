import { describe, expect, it } from 'vitest';
import { createCostEstimate, STEP_MS, UNKNOWN_COMPILE_MS } from '../../cli/build/cost-estimate.js';
import { criticalPathLengths } from '../../cli/build/build-runner.js';
import type { ActionKind, BuildAction } from '../../dag-extractor/types.js';

const action = (id: string, kind: ActionKind, inputs: string[] = [], deps: string[] = []): BuildAction => ({ id, kind, cwd: '/p', argv: ['cc'], inputs, outputs: [], deps, cacheable: true, label: id });

describe('cost estimates (expected milliseconds before anything was measured)', () => {
  it('grows a compile with the size of its source, and reads each size once', () => {
    const asked: string[] = [];
    const sizes: Record<string, number> = { '/p/big.c': 340 * 1024, '/p/small.c': 4 * 1024 };
    const estimate = createCostEstimate((p) => (asked.push(p), sizes[p]));
    const big = action('big.o', 'compile', ['/p/big.c']);
    expect(estimate(big)).toBe(100 + Math.round(5.5 * 340));
    expect(estimate(action('small.o', 'compile', ['/p/small.c']))).toBe(122);
    expect(estimate(big)).toBe(1970);
    expect(asked).toEqual(['/p/big.c', '/p/small.c']);
  });

  it('guesses a fixed figure for a compile whose source is not there yet, and for other steps', () => {
    const estimate = createCostEstimate(() => undefined);
    expect(estimate(action('gen.o', 'compile', ['/p/generated.c']))).toBe(UNKNOWN_COMPILE_MS);
    expect(estimate(action('app', 'link'))).toBe(STEP_MS.link);
    expect(estimate(action('lib.a', 'archive'))).toBe(STEP_MS.archive);
  });

  it('makes the big compile feeding a link outrank a chain of small ones (the priority order)', () => {
    const sizes: Record<string, number> = { '/p/cli.c': 340 * 1024, '/p/a.c': 10 * 1024, '/p/b.c': 10 * 1024 };
    const actions = [
      action('a.o', 'compile', ['/p/a.c']),
      action('b.o', 'compile', ['/p/b.c'], ['a.o']),
      action('server', 'link', [], ['b.o']),
      action('cli.o', 'compile', ['/p/cli.c']),
      action('cli', 'link', [], ['cli.o']),
    ];
    const byCount = criticalPathLengths(actions);
    expect(byCount.get('a.o')! > byCount.get('cli.o')!).toBe(true);
    const byTime = criticalPathLengths(actions, undefined, createCostEstimate((p) => sizes[p]));
    expect(Object.fromEntries(byTime)).toEqual({ 'a.o': 155 + 155 + 300, 'b.o': 155 + 300, server: 300, 'cli.o': 1970 + 300, cli: 300 });
  });
});

describe('orion build starts the biggest compiles first', () => {
  it('with one job, compiles the large source feeding its own program before the small ones', async () => {
    const { rm, writeFile } = await import('node:fs/promises');
    const path = await import('node:path');
    const { baseEnv, orionBuild, scratch, sh } = await import('../helpers/build.js');
    const base = await scratch('cost-first');
    const dir = path.join(base, 'proj');
    try {
      await sh(`mkdir -p ${dir}`, base);
      const small = ['a', 'b', 'c', 'd'];
      for (const n of small) await writeFile(path.join(dir, `${n}.c`), `int ${n}(void) { return 1; }\n`);
      const body = Array.from({ length: 2000 }, (_, i) => `int f${i}(int x) { return x * ${i} + ${i % 7}; }`).join('\n');
      await writeFile(path.join(dir, 'big.c'), `${body}\nint main(void) { return f1(0); }\n`);
      await writeFile(path.join(dir, 'main.c'), 'int a(void);\nint main(void) { return a() - 1; }\n');
      // Equal chains (compile, link): by action count the tie goes to make's last compile, big.o is its first.
      await writeFile(path.join(dir, 'Makefile'), `all: tool app\napp: main.o ${small.map((n) => `${n}.o`).join(' ')}\n\tcc -o $@ $^\ntool: big.o\n\tcc -o $@ $^\n%.o: %.c\n\tcc -c $< -o $@\n`);
      const b = await orionBuild(dir, { cacheDir: path.join(base, 'cache'), args: ['-j', '1', '--verbose'], env: baseEnv() });
      expect(b.code, b.stderr).toBe(0);
      const starts = b.stdout.split('\n').flatMap((l) => /^\S+\$ cc -c (\w+)\.c /.exec(l)?.[1] ?? []);
      expect(starts).toHaveLength(6);
      expect(starts[0]).toBe('big');
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});
