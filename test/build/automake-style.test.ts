/**
 * A Make project laid out as automake and configure leave one (written by hand here, so the
 * suite needs no autotools): a top Makefile looping over SUBDIRS with `echo "Making all in
 * DIR"`, makefiles with rules that remake them through config.status, dependency files
 * included from .deps/, and a tests/ directory whose link needs ../src/libfoo.a, which only
 * src/'s make has a rule for. The dry run must not run config.status nor overwrite the
 * dependency files, must not take the loop's echo for commands, and must get past the
 * library the dry run did not make. Then `orion build` makes what make makes, byte for byte.
 * Real make, real compiler, the real CLI.
 */
import { chmod, mkdir, readFile, rename, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect, it } from 'vitest';
import { baseEnv, exists, graphOf, listFiles, orionBuild, scratchForFile, sh } from '../helpers/build.js';

const TOP = `SUBDIRS = src tests
all: all-recursive
all-recursive:
\t@for subdir in $(SUBDIRS); do \\
\t  echo "Making all in $$subdir"; \\
\t  (cd $$subdir && $(MAKE) all) || exit 1; \\
\tdone
Makefile: Makefile.in config.status
\t./config.status Makefile
config.status: configure
\t./config.status --recheck
.PHONY: all all-recursive
`;

const SRC = `all: libfoo.a
include ./.deps/foo.Po
libfoo.a: foo.o
\trm -f libfoo.a
\tar cr libfoo.a foo.o
foo.o: foo.c
\tcc -O1 -c -o foo.o foo.c -MD -MP -MF .deps/foo.Tpo
\tmv -f .deps/foo.Tpo .deps/foo.Po
./.deps/foo.Po:
\t@mkdir -p .deps; echo '# dummy' > $@
Makefile: Makefile.in ../config.status
\tcd .. && ./config.status src/Makefile
`;

const TESTS = `all: prog
prog: prog.o ../src/libfoo.a
\tcc -o prog prog.o ../src/libfoo.a
prog.o: prog.c
\tcc -O1 -c prog.c -o prog.o
Makefile: Makefile.in ../config.status
\tcd .. && ./config.status tests/Makefile
`;

/** The dependency file a previous build left (make includes it; the dry run must keep it). */
const FOO_PO = 'foo.o: foo.c foo.h\nfoo.h:\n';

async function project(dir: string): Promise<void> {
  await mkdir(path.join(dir, 'src/.deps'), { recursive: true });
  await mkdir(path.join(dir, 'tests'), { recursive: true });
  const files: Record<string, string> = {
    'configure': '#!/bin/sh\nexit 0\n',
    // Logs each run: none may happen, the makefiles are up to date.
    'config.status': '#!/bin/sh\necho "$*" >> config-status.log\n',
    'Makefile.in': TOP,
    'src/Makefile.in': SRC,
    'tests/Makefile.in': TESTS,
    'Makefile': TOP,
    'src/Makefile': SRC,
    'tests/Makefile': TESTS,
    'src/foo.h': 'int foo(void);\n',
    'src/foo.c': '#include "foo.h"\nint foo(void) { return 42; }\n',
    'src/.deps/foo.Po': FOO_PO,
    'tests/prog.c': '#include <stdio.h>\n#include "../src/foo.h"\nint main(void) { printf("%d\\n", foo()); return 0; }\n',
  };
  // Written in this order, one second apart: each file older than what is made from it.
  const order = ['configure', 'config.status', 'Makefile.in', 'src/Makefile.in', 'tests/Makefile.in', 'Makefile', 'src/Makefile', 'tests/Makefile'];
  const t0 = Math.floor(Date.now() / 1000) - 100;
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
  await chmod(path.join(dir, 'configure'), 0o755);
  await chmod(path.join(dir, 'config.status'), 0o755);
  for (const [i, name] of order.entries()) await utimes(path.join(dir, name), t0 + i, t0 + i);
}

const scratchDir = scratchForFile('automake-style');

it('extracts and builds an automake-style tree as make does, without running config.status or touching its dependency files', async () => {
  const base = scratchDir();
  const dir = path.join(base, 'proj');
  const env = baseEnv();

  // make's build, at the same path (debug paths and the like match), then moved aside.
  await project(dir);
  await sh('make', dir, env);
  expect(await exists(path.join(dir, 'config-status.log'))).toBe(false);
  await rename(dir, path.join(base, 'make-build'));

  await project(dir);
  const graph = await graphOf(dir, [], env);
  expect(await exists(path.join(dir, 'config-status.log')), 'config.status ran during the dry run').toBe(false);
  expect(await readFile(path.join(dir, 'src/.deps/foo.Po'), 'utf8')).toBe(FOO_PO);
  const commands = graph.actions.map((a) => a.argv.join(' '));
  expect(commands.filter((c) => c.includes('Making all in'))).toEqual([]);
  expect(commands.some((c) => c.includes('cc -o prog prog.o ../src/libfoo.a'))).toBe(true);
  expect(graph.actions.map((a) => a.kind).sort()).toEqual(expect.arrayContaining(['archive', 'compile', 'compile', 'link']));

  const built = await orionBuild(dir, { cacheDir: path.join(base, 'cache'), env });
  expect(built.code, built.stderr).toBe(0);
  expect(built.summary.failed).toBe(0);
  expect(await exists(path.join(dir, 'config-status.log'))).toBe(false);
  const mine = await listFiles(dir);
  expect(mine).toEqual(await listFiles(path.join(base, 'make-build')));
  for (const f of mine) expect(await readFile(path.join(dir, f)), f).toEqual(await readFile(path.join(base, 'make-build', f)));
  expect((await sh('./tests/prog', dir, env)).stdout).toBe('42\n');
}, 60_000);
