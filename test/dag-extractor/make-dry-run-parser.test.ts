import { describe, expect, it } from 'vitest';
import { parseMakeDryRun, quietSubMakeDirectory } from '../../dag-extractor/make-dry-run-parser.js';

const names = new Set(['make']);

describe('parseMakeDryRun with --trace', () => {
  it('gives each command the rule of the recipe it belongs to, resolving target and prerequisites in the make directory', () => {
    const out = [
      "Makefile:4: update target 'gen.c' due to: a.json b.json ../tools/gen.py",
      'python3 ../tools/gen.py > gen.c',
      "Makefile:6: update target 'prog' due to: gen.c",
      'cc -o prog gen.c',
      'install prog prog2',
    ].join('\n');
    const cmds = parseMakeDryRun(out, '/p/src', names);
    expect(cmds.map((c) => c.text)).toEqual(['python3 ../tools/gen.py > gen.c', 'cc -o prog gen.c', 'install prog prog2']);
    expect(cmds[0]!.rule).toEqual({ target: '/p/src/gen.c', prereqs: ['/p/src/a.json', '/p/src/b.json', '/p/tools/gen.py'] });
    expect(cmds[1]!.rule).toEqual({ target: '/p/src/prog', prereqs: ['/p/src/gen.c'] });
    // Both lines of one recipe share one rule object: the recipe is decided once.
    expect(cmds[2]!.rule).toBe(cmds[1]!.rule);
  });

  it('records a target without prerequisites ("does not exist") with none, and keeps each sub-make\'s rule apart', () => {
    const out = [
      "Makefile:11: target 'all' does not exist",
      'cd lib && make all',
      "make[1]: Entering directory '/p/lib'",
      "Makefile:2: update target 'x' due to: y",
      'echo x > x',
      "make[1]: Leaving directory '/p/lib'",
      'echo done',
    ].join('\n');
    const cmds = parseMakeDryRun(out, '/p', names);
    expect(cmds.map((c) => [c.text, c.cwd, c.rule])).toEqual([
      ['cd lib && make all', '/p', { target: '/p/all', prereqs: [] }],
      ['echo x > x', '/p/lib', { target: '/p/lib/x', prereqs: ['/p/lib/y'] }],
      // After the sub-make, the parent's recipe continues.
      ['echo done', '/p', { target: '/p/all', prereqs: [] }],
    ]);
  });

  it('runs the commands of a sub-make told --no-print-directory (no Entering/Leaving lines) in its directory, until its database ends it', () => {
    const out = [
      "Makefile:2: target 'all' does not exist",
      'make -C sub --no-print-directory',
      "Makefile:1: update target 'x' due to: x.c",
      'cc -o x x.c',
      '# GNU Make 4.3',
      'CURDIR := /p/sub',
      '# Finished Make data base on Tue Nov 24 06:22:49 2026',
      'cd lib && make --no-print-directory -C inner',
      "Makefile:1: update target 'y' due to: y.c",
      'cc -o y y.c',
      '# GNU Make 4.3',
      '# Finished Make data base on Tue Nov 24 06:22:49 2026',
      'echo done',
    ].join('\n');
    const cmds = parseMakeDryRun(out, '/p', names);
    expect(cmds.map((c) => [c.text, c.cwd])).toEqual([
      ['make -C sub --no-print-directory', '/p'],
      ['cc -o x x.c', '/p/sub'],
      ['cd lib && make --no-print-directory -C inner', '/p'],
      ['cc -o y y.c', '/p/lib/inner'],
      ['echo done', '/p'],
    ]);
    // Each sub-make's database described its directory: its rules are known not to be phony.
    expect(cmds[1]!.rule).toEqual({ target: '/p/sub/x', prereqs: ['/p/sub/x.c'], alwaysRuns: false });
    expect(cmds[3]!.rule).toEqual({ target: '/p/lib/inner/y', prereqs: ['/p/lib/inner/y.c'], alwaysRuns: false });
  });

  it('skips what a recursive line make ran prints itself (between --debug=j\'s Live child and Reaping lines), keeping its sub-makes\' commands', () => {
    const out = [
      "Makefile:443: target 'all-recursive' does not exist",
      'for subdir in src tests; do \\',
      '  echo "Making all in $subdir"; \\',
      '  (cd $subdir && make all) || exit 1; \\',
      'done',
      'Putting child 0x558db6f1d910 (all-recursive) PID 19108 on the chain.',
      'Live child 0x558db6f1d910 (all-recursive) PID 19108 ',
      'Making all in src',
      "make[1]: Entering directory '/p/src'",
      "Makefile:4: update target 'a.o' due to: a.c",
      'cc -c a.c -o a.o',
      "make[1]: Leaving directory '/p/src'",
      'Making all in tests',
      'Got a SIGCHLD; 1 unreaped children.',
      "make[1]: Entering directory '/p/tests'",
      'cc -c t.c -o t.o',
      "make[1]: Leaving directory '/p/tests'",
      'all done in 2 directories',
      'Reaping winning child 0x558db6f1d910 PID 19108 ',
      'Removing child 0x558db6f1d910 PID 19108 from chain.',
      "Makefile:450: update target 'stamp' due to: x",
      'touch stamp',
    ].join('\n');
    const cmds = parseMakeDryRun(out, '/p', names);
    expect(cmds.map((c) => [c.text, c.cwd])).toEqual([
      ['for subdir in src tests; do \\\n  echo "Making all in $subdir"; \\\n  (cd $subdir && make all) || exit 1; \\\ndone', '/p'],
      ['cc -c a.c -o a.o', '/p/src'],
      ['cc -c t.c -o t.o', '/p/tests'],
      ['touch stamp', '/p'],
    ]);
  });

  it('skips what a recursive line printed before make announced its child (make prints "Putting child" after the fork)', () => {
    const out = [
      "Makefile:2: update target 'gen.h' due to: gen.in",
      'cp gen.in gen.h',
      "Makefile:3: target 'all-recursive' does not exist",
      'for d in src; do echo "Making all in $d"; (cd $d && make all) || exit 1; done',
      'Making all in src',
      "make[1]: Entering directory '/p/src'",
      'cc -c a.c -o a.o',
      "make[1]: Leaving directory '/p/src'",
      'Putting child 0x558db6f1d910 (all-recursive) PID 19108 on the chain.',
      'Live child 0x558db6f1d910 (all-recursive) PID 19108 ',
      'Reaping winning child 0x558db6f1d910 PID 19108 ',
      'echo done',
    ].join('\n');
    const cmds = parseMakeDryRun(out, '/p', names);
    expect(cmds.map((c) => [c.text, c.cwd])).toEqual([
      ['cp gen.in gen.h', '/p'],
      ['for d in src; do echo "Making all in $d"; (cd $d && make all) || exit 1; done', '/p'],
      ['cc -c a.c -o a.o', '/p/src'],
      ['echo done', '/p'],
    ]);
  });

  it('tells whose child a job line is by its target, when it lands among the sub-make\'s commands', () => {
    const out = [
      "Makefile:5: update target 'lib/libutil.a' due to: FORCE",
      'make -C lib',
      "make[1]: Entering directory '/p/lib'",
      "Makefile:2: update target 'add.o' due to: add.c",
      'cc -c add.c -o add.o',
      'Putting child 0x55dda3a3e760 (lib/libutil.a) PID 27457 on the chain.',
      "Makefile:4: update target 'libutil.a' due to: add.o",
      'ar cr libutil.a add.o',
      'ranlib libutil.a',
      "make[1]: Leaving directory '/p/lib'",
      'Live child 0x55dda3a3e760 (lib/libutil.a) PID 27457 ',
      'Reaping winning child 0x55dda3a3e760 PID 27457 ',
      'Removing child 0x55dda3a3e760 PID 27457 from chain.',
      "Makefile:8: update target 'hello' due to: hello.o lib/libutil.a",
      'cc -o hello hello.o -Llib -lutil',
    ].join('\n');
    const cmds = parseMakeDryRun(out, '/p', names);
    expect(cmds.map((c) => [c.text, c.cwd])).toEqual([
      ['make -C lib', '/p'],
      ['cc -c add.c -o add.o', '/p/lib'],
      ['ar cr libutil.a add.o', '/p/lib'],
      ['ranlib libutil.a', '/p/lib'],
      ['cc -o hello hello.o -Llib -lutil', '/p'],
    ]);
  });

  it('keeps the commands of a quiet sub-make a recursive line starts, and skips that line\'s own output after it', () => {
    const out = [
      "Makefile:2: target 'all' does not exist",
      'make -C sub --no-print-directory && echo left sub',
      'Live child 0x55b9a1c9a0a0 (all) PID 19114 ',
      "Makefile:1: update target 'x' due to: x.c",
      'cc -o x x.c',
      '# GNU Make 4.3',
      '# Finished Make data base on Tue Nov 24 06:22:49 2026',
      'left sub',
      'Reaping winning child 0x55b9a1c9a0a0 PID 19114 ',
      'echo done',
    ].join('\n');
    const cmds = parseMakeDryRun(out, '/p', names);
    expect(cmds.map((c) => [c.text, c.cwd])).toEqual([
      ['make -C sub --no-print-directory && echo left sub', '/p'],
      ['cc -o x x.c', '/p/sub'],
      ['echo done', '/p'],
    ]);
  });

  it('finds the directory of a quiet sub-make from -C (cumulative), --directory and cd, and nothing else', () => {
    expect(quietSubMakeDirectory('make --no-print-directory -C a -C b', '/p', names)).toBe('/p/a/b');
    expect(quietSubMakeDirectory('make --no-print-directory --directory=x', '/p', names)).toBe('/p/x');
    expect(quietSubMakeDirectory('make --no-print-directory -Cy', '/p', names)).toBe('/p/y');
    expect(quietSubMakeDirectory('cd /q; make --no-print-directory all', '/p', names)).toBe('/q');
    expect(quietSubMakeDirectory('make -C a all', '/p', names)).toBeUndefined();
    expect(quietSubMakeDirectory("echo '--no-print-directory'", '/p', names)).toBeUndefined();
    expect(quietSubMakeDirectory('make --no-print-directory | tee log', '/p', names)).toBeUndefined();
  });

  it("reads the trace of make's built-in rules (<builtin>:) as a trace, not as a command", () => {
    const out = ["<builtin>: update target 'lapi.o' due to: lapi.c lua.h", 'cc -c -o lapi.o lapi.c'].join('\n');
    const cmds = parseMakeDryRun(out, '/p/lua', names);
    expect(cmds).toEqual([{ text: 'cc -c -o lapi.o lapi.c', cwd: '/p/lua', rule: { target: '/p/lua/lapi.o', prereqs: ['/p/lua/lapi.c', '/p/lua/lua.h'] } }]);
  });

  it('leaves commands printed without a trace line (make without --trace) without a rule', () => {
    const cmds = parseMakeDryRun('cc -c a.c -o a.o\n', '/p', names);
    expect(cmds).toEqual([{ text: 'cc -c a.c -o a.o', cwd: '/p' }]);
  });

  it("reads -p's rule databases for phony and double-colon targets, in each make's directory, and never as commands", () => {
    const database = (entries: string[]) => [
      '# GNU Make 4.3',
      '# Built for x86_64-pc-linux-gnu',
      '',
      '# Make data base, printed on Tue Nov 24 02:39:35 2026',
      '# Variables',
      'GREETING = hello: world',
      'define CANNED',
      'docs: not an entry',
      'endef',
      '# Files',
      ...entries,
      '# Finished Make data base on Tue Nov 24 02:39:35 2026',
    ];
    const out = [
      "# make: Entering directory '/p'",
      "Makefile:3: target 'config.h' does not exist",
      'cp config.def.h config.h',
      "Makefile:5: target 'docs' does not exist",
      'echo docs > docs/index.txt',
      "Makefile:7: target 'log' does not exist",
      'echo built >> build.log',
      "Makefile:9: update target 'prog' due to: main.c",
      'cd lib && make',
      "# make[1]: Entering directory '/p/lib'",
      "Makefile:2: target 'docs' does not exist",
      'echo lib > docs.txt',
      ...database(['docs:', '#  Implicit rule search has not been done.', '\techo lib > docs.txt', '']),
      "# make[1]: Leaving directory '/p/lib'",
      'cc -o prog main.c',
      ...database([
        'config.h:',
        '#  Last modified 2026-11-24 02:39:35',
        '\tcp config.def.h $@',
        '',
        'docs:',
        '#  Phony target (prerequisite of .PHONY).',
        '\techo docs > docs/index.txt',
        '',
        'log::',
        '\techo built >> build.log',
        '',
        '.PHONY: docs',
        '',
      ]),
      "# make: Leaving directory '/p'",
    ].join('\n');
    const cmds = parseMakeDryRun(out, '/elsewhere', names);
    expect(cmds.map((c) => [c.text, c.cwd, c.rule?.alwaysRuns])).toEqual([
      ['cp config.def.h config.h', '/p', false],
      ['echo docs > docs/index.txt', '/p', true],
      ['echo built >> build.log', '/p', true],
      ['cd lib && make', '/p', false],
      // lib's docs is a plain file target: phony-ness belongs to the directory's own make.
      ['echo lib > docs.txt', '/p/lib', false],
      ['cc -o prog main.c', '/p', false],
    ]);
  });

  it('knows nothing of phony targets where no database was printed (make without -p)', () => {
    const cmds = parseMakeDryRun(["Makefile:3: target 'stamp' does not exist", 'touch stamp'].join('\n'), '/p', names);
    expect(cmds).toEqual([{ text: 'touch stamp', cwd: '/p', rule: { target: '/p/stamp', prereqs: [] } }]);
  });

  it('joins the lines of each recipe into one command where the database shows .ONESHELL, and only there', () => {
    const db = (oneShell: boolean) => ['# GNU Make 4.3', '# Files', ...(oneShell ? ['.ONESHELL:', ''] : []), '# Finished Make data base on Tue Nov 24 02:39:35 2026'];
    const out = [
      "# make: Entering directory '/p'",
      "Makefile:3: target 'a' does not exist",
      'cd sub',
      'pwd > a',
      "Makefile:6: target 'b' does not exist",
      'echo b > b',
      'echo b2 >> b',
      'cd lib && make',
      "# make[1]: Entering directory '/p/lib'",
      "Makefile:2: target 'c' does not exist",
      'cd x',
      'pwd > c',
      ...db(false),
      "# make[1]: Leaving directory '/p/lib'",
      ...db(true),
      "# make: Leaving directory '/p'",
    ].join('\n');
    expect(parseMakeDryRun(out, '/p', names).map((c) => [c.text, c.cwd])).toEqual([
      ['cd sub\npwd > a', '/p'],
      ['echo b > b\necho b2 >> b\ncd lib && make', '/p'],
      ['cd x', '/p/lib'],
      ['pwd > c', '/p/lib'],
    ]);
  });

  it("gives each command its make's SHELL and .SHELLFLAGS when they are not /bin/sh -c, and ignores values it cannot expand", () => {
    const db = (vars: string[]) => ['# GNU Make 4.3', '# Variables', ...vars, '# Finished Make data base on Tue Nov 24 02:39:35 2026'];
    const out = [
      "# make: Entering directory '/p'",
      "Makefile:3: target 'a' does not exist",
      'echo {a,b} > a',
      'cd lib && make',
      "# make[1]: Entering directory '/p/lib'",
      "Makefile:2: target 'c' does not exist",
      'echo c > c',
      ...db(['# makefile (from \'Makefile\', line 1)', 'SHELL = $(BASH)', '# default', '.SHELLFLAGS := -c']),
      "# make[1]: Leaving directory '/p/lib'",
      ...db(['# makefile (from \'Makefile\', line 1)', 'SHELL := /bin/bash', '# makefile (from \'Makefile\', line 2)', '.SHELLFLAGS := -eu -o pipefail -c']),
      "# make: Leaving directory '/p'",
    ].join('\n');
    expect(parseMakeDryRun(out, '/p', names).map((c) => [c.text, c.shell])).toEqual([
      ['echo {a,b} > a', ['/bin/bash', '-eu', '-o', 'pipefail', '-c']],
      ['cd lib && make', ['/bin/bash', '-eu', '-o', 'pipefail', '-c']],
      ['echo c > c', undefined],
    ]);
  });

  it('marks the rules of a make whose database has .DELETE_ON_ERROR, phony targets excepted', () => {
    const out = [
      "Makefile:3: target 'out.txt' does not exist",
      'echo x > out.txt',
      "Makefile:5: target 'all' does not exist",
      'echo done',
      '# GNU Make 4.3',
      '# Files',
      '.DELETE_ON_ERROR:',
      '',
      'all:',
      '#  Phony target (prerequisite of .PHONY).',
      '',
      '# Finished Make data base on Tue Nov 24 02:39:35 2026',
    ].join('\n');
    expect(parseMakeDryRun(out, '/p', names).map((c) => [c.text, c.rule?.deleteOnError])).toEqual([
      ['echo x > out.txt', true],
      ['echo done', undefined],
    ]);
  });

  it("marks the commands of recipe lines with `-` from the database's recipes, line for line, and all of them under .IGNORE", () => {
    const out = (ignoreAll: boolean) =>
      [
        "Makefile:2: target 'out' does not exist",
        'false',
        'echo ok > out',
        "Makefile:5: target 'odd' does not exist",
        'a',
        'b',
        '# GNU Make 4.3',
        '# Files',
        ...(ignoreAll ? ['.IGNORE:', ''] : []),
        'out:',
        '#  recipe to execute (from \'Makefile\', line 2):',
        '\t-false',
        '\t@echo ok > $@',
        '',
        'odd:',
        '#  recipe to execute (from \'Makefile\', line 5):',
        '\t-$(TWO_LINES)',
        '',
        '# Finished Make data base on Tue Nov 24 02:39:35 2026',
      ].join('\n');
    // odd's one line printed two commands: which of them the `-` was for is not known, so neither ignores.
    expect(parseMakeDryRun(out(false), '/p', names).map((c) => [c.text, c.ignoreErrors])).toEqual([
      ['false', true],
      ['echo ok > out', undefined],
      ['a', undefined],
      ['b', undefined],
    ]);
    expect(parseMakeDryRun(out(true), '/p', names).every((c) => c.ignoreErrors)).toBe(true);
  });
});
