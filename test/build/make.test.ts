/**
 * `orion build` end to end on fixtures/make-project (recursive make, a
 * generated header, a static library), embedded and on a head with two nodes;
 * plus Make-only scenarios: computed includes, make variables, ORION_CACHE_DIR.
 */
import { mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect, it } from 'vitest';
import { CACHEABLE_KINDS, baseEnv, exists, graphOf, listFiles, orionBuild, run, sh, toolRuns } from '../helpers/build.js';
import { defineFixtureSuite, edit, expectOk, type SuiteContext } from './fixture-suite.js';

async function output(dir: string, argv: string[]): Promise<string> {
  const r = await run(argv, { cwd: dir });
  expect(r.code, `${argv.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

async function checkPrograms(dir: string, variant: 'original' | 'header-edited'): Promise<void> {
  const version = variant === 'original' ? '1.4.2' : '1.5.0';
  expect(await output(dir, ['./hello'])).toBe(`HELLO FROM THE ORION MAKE FIXTURE (version ${version})\nwords: 6\n`);
  expect(await output(dir, ['./calc'])).toBe('sum=50\nadd=42\n');
  expect(await output(dir, ['./tools/wordstat'])).toBe('line 1: 4 words\nline 2: 2 words\nline 3: 3 words\ntotal: 9 words\n');
}

const SLOW = 120_000;

defineFixtureSuite(
  {
    fixture: 'make-project',
    // The Makefiles compile with -g already.
    plainBuild: async (dir, env) => void (await sh('make', dir, env)),
    clean: async (dir) => void (await sh('make clean', dir)),
    products: ['hello', 'calc', 'tools/wordstat', 'lib/libutil.a', 'src/hello.o', 'src/calc.o', 'lib/add.o', 'tools/wordstat.o'],
    checkPrograms,
    // `cc`, `ar` and `ranlib` are found through PATH. On the cluster every
    // compile and link runs on a node, whose PATH is its own.
    wrappersSeeFirstBuild: (mode) => mode === 'embedded',
    // gen/version.h (generated from VERSION) is included by src/hello.c only.
    headerEdit: { apply: (dir) => writeFile(path.join(dir, 'VERSION'), '1.5.0\n'), rebuilt: ['CC src/hello.o', 'LD hello'] },
    explainEdit: {
      header: 'include/util.h',
      apply: (dir) => edit(path.join(dir, 'include/util.h'), (t) => t.replace('#include <stddef.h>', '#include <stddef.h>\n\nint util_unused_declaration(void);')),
      rebuilt: ['CC src/hello.o', 'CC src/calc.o', 'CC lib/add.o', 'CC lib/strutil.o', 'CC lib/fmt.o', 'CC tools/wordstat.o'],
    },
    // Only `LD calc` depends on src/calc.o.
    broken: { file: 'src/calc.c', label: 'CC src/calc.o', built: ['hello', 'tools/wordstat', 'lib/libutil.a', 'src/hello.o'], missing: ['src/calc.o', 'calc'], notRun: 1 },
    graphKinds: ['compile', 'archive', 'link', 'other'],
  },
  (ctx: SuiteContext) => {
    it('rebuilds after editing a header reached only through a computed #include, also with a cold cache', async () => {
      const dirA = path.join(ctx.fresh('computed-include'), 'proj');
      await writeComputedIncludeProject(dirA, 1);
      const cacheA = path.join(path.dirname(dirA), 'cache');
      expectOk(await ctx.build(dirA, { cacheDir: cacheA }));
      expect(await output(dirA, ['./prog'])).toBe('conf 1\n');

      await writeFile(path.join(dirA, 'conf.h'), '#define CONF_VALUE 2\n');
      const b = await ctx.build(dirA, { cacheDir: cacheA });
      expectOk(b);
      const graph = await graphOf(dirA);
      expect(toolRuns(b, graph)).toEqual(['CC main.o', 'LD prog']);
      expect(await output(dirA, ['./prog'])).toBe('conf 2\n');
      const again = await ctx.build(dirA, { cacheDir: cacheA });
      expectOk(again);
      expect(toolRuns(again, graph)).toEqual([]);
      expect(await output(dirA, ['./prog'])).toBe('conf 2\n');

      // A second copy at another path, with a cold cache.
      const dirB = path.join(ctx.fresh('computed-include-copy'), 'proj');
      await writeComputedIncludeProject(dirB, 2);
      const cacheB = path.join(path.dirname(dirB), 'cache');
      expectOk(await ctx.build(dirB, { cacheDir: cacheB }));
      expect(await output(dirB, ['./prog'])).toBe('conf 2\n');
      await writeFile(path.join(dirB, 'conf.h'), '#define CONF_VALUE 3\n');
      const bB = await ctx.build(dirB, { cacheDir: cacheB });
      expectOk(bB);
      expect(toolRuns(bB, graph)).toEqual(['CC main.o', 'LD prog']);
      expect(await output(dirB, ['./prog'])).toBe('conf 3\n');

      // The first copy again, header edited, with a cold cache: nothing learnt
      // earlier (locally or on the head) may hand back an object built from an
      // older conf.h.
      await writeFile(path.join(dirA, 'conf.h'), '#define CONF_VALUE 4\n');
      const cold = await ctx.build(dirA, { cacheDir: path.join(path.dirname(dirA), 'cold-cache') });
      expectOk(cold);
      expect(await output(dirA, ['./prog'])).toBe('conf 4\n');

      if (ctx.mode !== 'cluster') return;
      // Unchanged sources and yet another cold cache: the head's results are reused again.
      const cold2 = await ctx.build(dirA, { cacheDir: path.join(path.dirname(dirA), 'cold-cache-2') });
      expectOk(cold2);
      expect(toolRuns(cold2, graph)).toEqual([]);
      expect(await output(dirA, ['./prog'])).toBe('conf 4\n');
    }, SLOW);

    it('rebuilds a one-command compile and link (`cc -o prog main.c`) after editing a header it includes, directly or through a computed #include', async () => {
      const dir = path.join(ctx.fresh('compile-and-link'), 'proj');
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, 'Makefile'), 'prog: main.c\n\t$(CC) -O2 -o prog main.c\n');
      await writeFile(
        path.join(dir, 'main.c'),
        '#include <stdio.h>\n#include "name.h"\n#define HDR "conf.h"\n#include HDR\n\nint main(void) {\n  printf("%s %d\\n", NAME, CONF_VALUE);\n  return 0;\n}\n',
      );
      await writeFile(path.join(dir, 'name.h'), '#define NAME "one"\n');
      await writeFile(path.join(dir, 'conf.h'), '#define CONF_VALUE 1\n');
      const cache = path.join(path.dirname(dir), 'cache');
      expectOk(await ctx.build(dir, { cacheDir: cache }));
      expect(await output(dir, ['./prog'])).toBe('one 1\n');
      const graph = await graphOf(dir);

      await writeFile(path.join(dir, 'name.h'), '#define NAME "two"\n');
      const b = await ctx.build(dir, { cacheDir: cache });
      expectOk(b);
      expect(toolRuns(b, graph)).toEqual(['LD prog']);
      expect(await output(dir, ['./prog'])).toBe('two 1\n');

      // Reached only through the macro: the compiler's dependency output made it an input.
      await writeFile(path.join(dir, 'conf.h'), '#define CONF_VALUE 2\n');
      const c = await ctx.build(dir, { cacheDir: cache });
      expectOk(c);
      expect(toolRuns(c, graph)).toEqual(['LD prog']);
      expect(await output(dir, ['./prog'])).toBe('two 2\n');
      expect(await readdir(dir)).toEqual(['Makefile', 'conf.h', 'main.c', 'name.h', 'prog']);

      // Back to the first header: the first result, from the cache.
      await writeFile(path.join(dir, 'name.h'), '#define NAME "one"\n');
      await writeFile(path.join(dir, 'conf.h'), '#define CONF_VALUE 1\n');
      const d = await ctx.build(dir, { cacheDir: cache });
      expectOk(d);
      expect(toolRuns(d, graph)).toEqual([]);
      expect(await output(dir, ['./prog'])).toBe('one 1\n');
    }, SLOW);

    it('relinks when a prebuilt library in the tree (-Lvendor -lv) or the linker version script (-Wl,--version-script=) changes', async () => {
      const dir = path.join(ctx.fresh('prebuilt-library'), 'proj');
      await mkdir(path.join(dir, 'vendor'), { recursive: true });
      // The library is not built by the Makefile: it came with the tree.
      const vendorLib = async (value: number) => {
        await writeFile(path.join(dir, 'vendor', 'v.c'), `int v(void) { return ${value}; }\n`);
        await sh('cc -c v.c -o v.o && rm -f libv.a && ar rcs libv.a v.o && rm v.o v.c', path.join(dir, 'vendor'));
      };
      await vendorLib(3);
      await writeFile(path.join(dir, 'main.c'), 'int v(void);\nint main(void) { return v(); }\n');
      await writeFile(path.join(dir, 'ver.map'), 'VERS_1 { global: main; local: *; };\n');
      await writeFile(path.join(dir, 'Makefile'), 'prog: main.o\n\t$(CC) -o prog main.o -Lvendor -lv -Wl,--version-script=ver.map\n\nmain.o: main.c\n\t$(CC) -c main.c -o main.o\n');
      const cache = path.join(path.dirname(dir), 'cache');
      const exitOf = async () => (await run([path.join(dir, 'prog')], { cwd: dir })).code;
      const versions = async () => (await run(['objdump', '-T', path.join(dir, 'prog')], { cwd: dir })).stdout;
      expectOk(await ctx.build(dir, { cacheDir: cache }));
      expect(await exitOf()).toBe(3);
      const graph = await graphOf(dir);

      await vendorLib(5);
      const b = await ctx.build(dir, { cacheDir: cache });
      expectOk(b);
      expect(toolRuns(b, graph)).toEqual(['LD prog']);
      expect(await exitOf()).toBe(5);

      await writeFile(path.join(dir, 'ver.map'), 'VERS_2 { global: main; local: *; };\n');
      const c = await ctx.build(dir, { cacheDir: cache });
      expectOk(c);
      expect(toolRuns(c, graph)).toEqual(['LD prog']);
      expect(await versions()).toContain('VERS_2');

      const again = await ctx.build(dir, { cacheDir: cache });
      expectOk(again);
      expect(toolRuns(again, graph)).toEqual([]);
    }, SLOW);

    it('builds a sub-make run with --no-print-directory in its own directory, as make does', async () => {
      const dir = path.join(ctx.fresh('no-print-directory'), 'proj');
      await mkdir(path.join(dir, 'sub', 'inner'), { recursive: true });
      await writeFile(path.join(dir, 'Makefile'), 'all:\n\t$(MAKE) -C sub --no-print-directory\n\tcd sub && $(MAKE) --no-print-directory -C inner\n\t@echo done > done.txt\n');
      await writeFile(path.join(dir, 'sub', 'Makefile'), 'x: x.c\n\t$(CC) -o x x.c\n');
      await writeFile(path.join(dir, 'sub', 'x.c'), 'int main(void) { return 3; }\n');
      await writeFile(path.join(dir, 'sub', 'inner', 'Makefile'), 'y: y.c\n\t$(CC) -o y y.c\n');
      await writeFile(path.join(dir, 'sub', 'inner', 'y.c'), 'int main(void) { return 4; }\n');
      const b = await ctx.build(dir, { cacheDir: path.join(path.dirname(dir), 'cache') });
      expectOk(b);
      expect((await run([path.join(dir, 'sub', 'x')], { cwd: dir })).code).toBe(3);
      expect((await run([path.join(dir, 'sub', 'inner', 'y')], { cwd: dir })).code).toBe(4);
      expect(await readFile(path.join(dir, 'done.txt'), 'utf8')).toBe('done\n');
      // Nothing landed in the parent directory.
      expect(await exists(path.join(dir, 'x'))).toBe(false);
    }, SLOW);

    it('relinks when the library a symbolic link -l finds points to changes (vendor/libv.a -> libv-1.0.a)', async () => {
      const dir = path.join(ctx.fresh('symlinked-library'), 'proj');
      await mkdir(path.join(dir, 'vendor'), { recursive: true });
      const vendorLib = async (value: number) => {
        await writeFile(path.join(dir, 'vendor', 'v.c'), `int v(void) { return ${value}; }\n`);
        await sh('cc -c v.c -o v.o && rm -f libv-1.0.a && ar rcs libv-1.0.a v.o && rm v.o v.c', path.join(dir, 'vendor'));
      };
      await vendorLib(3);
      await symlink('libv-1.0.a', path.join(dir, 'vendor', 'libv.a'));
      await writeFile(path.join(dir, 'main.c'), 'int v(void);\nint main(void) { return v(); }\n');
      await writeFile(path.join(dir, 'Makefile'), 'prog: main.o\n\t$(CC) -o prog main.o -Lvendor -lv\n\nmain.o: main.c\n\t$(CC) -c main.c -o main.o\n');
      const cache = path.join(path.dirname(dir), 'cache');
      const exitOf = async () => (await run([path.join(dir, 'prog')], { cwd: dir })).code;
      expectOk(await ctx.build(dir, { cacheDir: cache }));
      expect(await exitOf()).toBe(3);
      const graph = await graphOf(dir);

      await vendorLib(7);
      const b = await ctx.build(dir, { cacheDir: cache });
      expectOk(b);
      expect(toolRuns(b, graph)).toEqual(['LD prog']);
      expect(await exitOf()).toBe(7);
    }, SLOW);

    it('recompiles when what a symbolic link points to changes: a header (include/x.h -> ../real/x.h) and a source', async () => {
      const dir = path.join(ctx.fresh('symlinks'), 'proj');
      await mkdir(path.join(dir, 'include'), { recursive: true });
      await mkdir(path.join(dir, 'real'), { recursive: true });
      await writeFile(path.join(dir, 'real', 'x.h'), '#define X 1\n');
      await symlink('../real/x.h', path.join(dir, 'include', 'x.h'));
      await writeFile(path.join(dir, 'real', 'main.c'), '#include "x.h"\nint main(void) { return X + Y; }\n');
      await symlink('real/main.c', path.join(dir, 'main.c'));
      await writeFile(path.join(dir, 'Makefile'), 'prog: main.o\n\t$(CC) -o prog main.o\n\nmain.o: main.c\n\t$(CC) -Iinclude -DY=0 -c main.c -o main.o\n');
      const cache = path.join(path.dirname(dir), 'cache');
      const exitOf = async () => (await run([path.join(dir, 'prog')], { cwd: dir })).code;
      expectOk(await ctx.build(dir, { cacheDir: cache }));
      expect(await exitOf()).toBe(1);
      const graph = await graphOf(dir);

      await writeFile(path.join(dir, 'real', 'x.h'), '#define X 2\n');
      const b = await ctx.build(dir, { cacheDir: cache });
      expectOk(b);
      expect(toolRuns(b, graph)).toEqual(['CC main.o', 'LD prog']);
      expect(await exitOf()).toBe(2);

      await writeFile(path.join(dir, 'real', 'main.c'), '#include "x.h"\nint main(void) { return X + Y + 4; }\n');
      const c = await ctx.build(dir, { cacheDir: cache });
      expectOk(c);
      expect(toolRuns(c, graph)).toEqual(['CC main.o', 'LD prog']);
      expect(await exitOf()).toBe(6);
    }, SLOW);

    it('keeps the members an earlier build left in an archive (`ar rcs` as make), and never serves that archive to a fresh checkout at the same path', async () => {
      const dir = path.join(ctx.fresh('stale-archive'), 'proj');
      const cache = path.join(path.dirname(dir), 'cache');
      const tree = async (objs: string) => {
        await mkdir(dir, { recursive: true });
        await writeFile(path.join(dir, 'foo.c'), 'int foo(void) { return 1; }\n');
        await writeFile(path.join(dir, 'bar.c'), 'int bar(void) { return 2; }\n');
        await writeFile(path.join(dir, 'Makefile'), `OBJS = ${objs}\nlibx.a: $(OBJS)\n\tar rcs libx.a $(OBJS)\n\n%.o: %.c\n\t$(CC) -c $< -o $@\n`);
      };
      const members = async () => (await run(['ar', 't', 'libx.a'], { cwd: dir })).stdout.split('\n').filter(Boolean);
      await tree('foo.o bar.o');
      expectOk(await ctx.build(dir, { cacheDir: cache }));
      expect(await members()).toEqual(['foo.o', 'bar.o']);
      // foo.c dropped from the Makefile: make's `ar rcs libx.a bar.o` keeps foo.o in the archive.
      await tree('bar.o');
      expectOk(await ctx.build(dir, { cacheDir: cache }));
      expect(await members()).toEqual(['foo.o', 'bar.o']);
      // A fresh checkout of that revision at the same path: make makes an archive of bar.o alone.
      await rm(dir, { recursive: true, force: true });
      await tree('bar.o');
      expectOk(await ctx.build(dir, { cacheDir: cache }));
      expect(await members()).toEqual(['bar.o']);
      // And the next build finds it up to date in the cache.
      const again = await ctx.build(dir, { cacheDir: cache });
      expectOk(again);
      expect(toolRuns(again, await graphOf(dir))).toEqual([]);
    }, SLOW);

    it('extracts the graph again when an environment variable the Makefile reads changes (ifdef FAST), and serves each graph from the cache after', async () => {
      const dir = path.join(ctx.fresh('make-env'), 'proj');
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, 'Makefile'), 'ifdef FAST\nOPT = -DMODE=2\nelse\nOPT = -DMODE=1\nendif\nprog: main.c\n\t$(CC) $(OPT) -o prog main.c\n');
      await writeFile(path.join(dir, 'main.c'), 'int main(void) { return MODE; }\n');
      const cache = path.join(path.dirname(dir), 'cache');
      const exitOf = async () => (await run([path.join(dir, 'prog')], { cwd: dir })).code;
      // Twice without: the second build sees prog in the listing, a graph of its own.
      for (const fast of [undefined, undefined, '1', undefined, '1']) {
        const b = await ctx.build(dir, { cacheDir: cache, env: baseEnv({ FAST: fast }) });
        expectOk(b);
        expect(await exitOf(), `FAST=${fast ?? '(unset)'}`).toBe(fast ? 2 : 1);
      }
      // Three graphs: without FAST before and after prog existed, and with it; the last two builds reused theirs.
      expect((await readdir(path.join(cache, 'graphs'))).filter((f) => f.endsWith('.json'))).toHaveLength(3);
    }, SLOW);

    it('runs the lines of a .ONESHELL recipe in one shell: a `cd` holds for the lines after it, as under make', async () => {
      const dir = path.join(ctx.fresh('oneshell'), 'proj');
      await mkdir(path.join(dir, 'sub'), { recursive: true });
      await writeFile(path.join(dir, 'Makefile'), '.ONESHELL:\nall: sub/prog sub/where.txt\nsub/prog: sub/main.c\n\tcd sub\n\t$(CC) -o prog main.c\nsub/where.txt:\n\tcd sub\n\tpwd > where.txt\n');
      await writeFile(path.join(dir, 'sub', 'main.c'), 'int main(void) { return 7; }\n');
      expectOk(await ctx.build(dir, { cacheDir: path.join(path.dirname(dir), 'cache') }));
      expect((await run([path.join(dir, 'sub', 'prog')], { cwd: dir })).code).toBe(7);
      expect((await readFile(path.join(dir, 'sub', 'where.txt'), 'utf8')).trim()).toBe(path.join(dir, 'sub'));
      expect(await readdir(dir)).toEqual(['Makefile', 'sub']);
    }, SLOW);

    it("runs recipes with the Makefile's SHELL and .SHELLFLAGS (bash, pipefail), and still caches its compiles", async () => {
      const dir = path.join(ctx.fresh('bash-shell'), 'proj');
      await mkdir(dir, { recursive: true });
      await writeFile(
        path.join(dir, 'Makefile'),
        'SHELL := /bin/bash\n.SHELLFLAGS := -eu -o pipefail -c\nall: prog list.txt\nlist.txt:\n\techo {a,b}.c > list.txt\nprog: main.c\n\t$(CC) -o prog main.c\npiped:\n\tfalse | cat > piped\n',
      );
      await writeFile(path.join(dir, 'main.c'), 'int main(void) { return 3; }\n');
      const cache = path.join(path.dirname(dir), 'cache');
      expectOk(await ctx.build(dir, { cacheDir: cache }));
      expect(await readFile(path.join(dir, 'list.txt'), 'utf8')).toBe('a.c b.c\n');
      expect((await run([path.join(dir, 'prog')], { cwd: dir })).code).toBe(3);
      await rm(path.join(dir, 'prog'));
      const again = await ctx.build(dir, { cacheDir: cache });
      expectOk(again);
      expect(toolRuns(again, await graphOf(dir))).toEqual([]);
      // pipefail: the pipeline fails as under make, and the build with it.
      const piped = await ctx.build(dir, { cacheDir: cache, args: ['piped'] });
      expect(piped.code, piped.stderr).not.toBe(0);
      expect(piped.stderr).toContain('GEN piped failed with exit code 1');
      // make fails the same way (and, like Orion, leaves the file the redirection made).
      expect(await readFile(path.join(dir, 'piped'), 'utf8')).toBe('');
      await rm(path.join(dir, 'piped'));
      expect((await run(['make', 'piped'], { cwd: dir })).code).not.toBe(0);
    }, SLOW);

    it('deletes the target a failed recipe changed when the Makefile has .DELETE_ON_ERROR, as make does, and keeps one it did not touch', async () => {
      const dir = path.join(ctx.fresh('delete-on-error'), 'proj');
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, 'Makefile'), '.DELETE_ON_ERROR:\nall: out.txt keep.txt\nout.txt:\n\techo partial > out.txt; false\nkeep.txt: in.txt\n\tfalse\n');
      await writeFile(path.join(dir, 'keep.txt'), 'old\n');
      await new Promise((r) => setTimeout(r, 20));
      await writeFile(path.join(dir, 'in.txt'), 'newer\n');
      const b = await ctx.build(dir, { cacheDir: path.join(path.dirname(dir), 'cache'), args: ['-k'] });
      expect(b.code, b.stderr).not.toBe(0);
      expect(b.stderr).toContain("deleting file 'out.txt' (.DELETE_ON_ERROR)");
      expect(await readdir(dir)).toEqual(['Makefile', 'in.txt', 'keep.txt']);
      expect(await readFile(path.join(dir, 'keep.txt'), 'utf8')).toBe('old\n');
      // make leaves the same tree.
      const ref = await run(['make', '-k'], { cwd: dir });
      expect(ref.code).not.toBe(0);
      expect(await readdir(dir)).toEqual(['Makefile', 'in.txt', 'keep.txt']);
    }, SLOW);

    it('goes on after a failing recipe line make ignores (`-false`, `-@cmd`), as make does, and still fails on one it does not', async () => {
      const dir = path.join(ctx.fresh('ignore-errors'), 'proj');
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, 'Makefile'), 'all: out.txt prog\nout.txt:\n\t-false\n\t-@test -d nowhere && echo never\n\techo ok > out.txt\nprog: main.c\n\t$(CC) -o prog main.c\nstrict:\n\tfalse\n\techo after > strict\n');
      await writeFile(path.join(dir, 'main.c'), 'int main(void) { return 5; }\n');
      const cache = path.join(path.dirname(dir), 'cache');
      const b = await ctx.build(dir, { cacheDir: cache });
      expectOk(b);
      expect(b.stderr).toContain('SH false: SH false failed with exit code 1 (ignored)');
      expect(await readFile(path.join(dir, 'out.txt'), 'utf8')).toBe('ok\n');
      expect((await run([path.join(dir, 'prog')], { cwd: dir })).code).toBe(5);
      const strict = await ctx.build(dir, { cacheDir: cache, args: ['strict'] });
      expect(strict.code, strict.stderr).not.toBe(0);
      expect(await readdir(dir)).not.toContain('strict');
    }, SLOW);

    it('passes make variables through: CFLAGS=-O0 changes the compile lines and rebuilds', async () => {
      const dir = ctx.incremental();
      const graph = ctx.ref();
      const tools = graph.actions.filter((a) => CACHEABLE_KINDS.has(a.kind));
      const graphO0 = await graphOf(dir, ['CFLAGS=-O0']);
      const compiles = graphO0.actions.filter((a) => a.kind === 'compile');
      expect(compiles.length).toBe(graph.actions.filter((a) => a.kind === 'compile').length);
      for (const a of compiles) {
        expect(a.argv, a.label).toContain('-O0');
        expect(a.argv, a.label).not.toContain('-O2');
      }

      const b = await ctx.build(dir, { args: ['--verbose', '--', 'CFLAGS=-O0'] });
      expectOk(b);
      const compileLines = b.stdout.split('\n').filter((l) => /^\S*\$ cc .* -c /.test(l));
      expect(compileLines.length).toBe(compiles.length);
      for (const l of compileLines) {
        expect(l).toMatch(/ -O0( |$)/);
        expect(l).not.toMatch(/ -O2( |$)/);
      }
      // Every object changes, so every archive and link reruns too.
      expect(toolRuns(b, graph)).toEqual(tools.map((a) => a.label).sort());
      await checkPrograms(dir, 'header-edited');

      // Back to the Makefile's own flags: all of it is still cached.
      const back = await ctx.build(dir);
      expectOk(back);
      expect(toolRuns(back, graph)).toEqual([]);
      await checkPrograms(dir, 'header-edited');
    }, SLOW);

    it('uses ORION_CACHE_DIR when --cache-dir is absent', async () => {
      const dir = await ctx.copy('cache-env');
      const cacheDir = path.join(path.dirname(dir), 'env-cache');
      const xdg = path.join(path.dirname(dir), 'xdg');
      await mkdir(xdg);
      const env = baseEnv({ ORION_CACHE_DIR: cacheDir, XDG_CACHE_HOME: xdg });
      const head = ctx.mode === 'cluster' ? ctx.cluster().address : undefined;
      expectOk(await orionBuild(dir, { head, env }));
      const files = await listFiles(cacheDir);
      expect(files.some((f) => f.startsWith('ac/')), 'action cache entries').toBe(true);
      expect(files.some((f) => f.startsWith('cas/')), 'CAS blobs').toBe(true);
      expect(await listFiles(xdg)).toEqual([]);

      const graph = ctx.ref();
      const second = await orionBuild(dir, { head, env });
      expectOk(second);
      expect(toolRuns(second, graph)).toEqual([]);
      expect(second.summary.cached).toBeGreaterThanOrEqual(graph.actions.filter((a) => CACHEABLE_KINDS.has(a.kind)).length);
      expect(second.summary.fromCluster).toBe(0);
      // Served from the local cache, a result a node made leaves no dependency file of Orion's in the tree.
      expect((await listFiles(dir)).filter((f) => f.includes('.orion-deps'))).toEqual([]);
    }, SLOW);
  },
);

/** A tiny Make project whose only header is reached through `#include HDR`, which no include scanner can follow. */
async function writeComputedIncludeProject(dir: string, value: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'Makefile'), 'prog: main.o\n\t$(CC) -o prog main.o\n\nmain.o: main.c\n\t$(CC) -O2 -c main.c -o main.o\n');
  await writeFile(
    path.join(dir, 'main.c'),
    '#include <stdio.h>\n#define HDR "conf.h"\n#include HDR\n\nint main(void) {\n  printf("conf %d\\n", CONF_VALUE);\n  return 0;\n}\n',
  );
  await writeFile(path.join(dir, 'conf.h'), `#define CONF_VALUE ${value}\n`);
}
