import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Code } from '../../common/errors.js';
import { createMakeExtractor, topologicalOrder, type BuildAction, type BuildGraph, type CommandRunner } from '../../dag-extractor/index.js';
import { FIXTURES_DIR, adversarialOrder, copyFixture, executeActions, rel, removeScratchDirs, scratchDir } from './fixtures.js';

const extractor = createMakeExtractor();

function byLabel(graph: BuildGraph, label: string): BuildAction {
  const action = graph.actions.find((a) => a.label === label);
  if (!action) throw new Error(`no action labelled ${label}; labels: ${graph.actions.map((a) => a.label).join(', ')}`);
  return action;
}

function indexOf(graph: BuildGraph, action: BuildAction): number {
  return graph.actions.indexOf(action);
}

/** True when `from` depends on `to`, directly or through other actions. */
function dependsOn(graph: BuildGraph, from: BuildAction, to: BuildAction): boolean {
  const byId = new Map(graph.actions.map((a) => [a.id, a]));
  const seen = new Set<string>();
  const pending = [...from.deps];
  while (pending.length > 0) {
    const id = pending.pop()!;
    if (id === to.id) return true;
    if (seen.has(id)) continue;
    seen.add(id);
    pending.push(...byId.get(id)!.deps);
  }
  return false;
}

async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort();
}

afterAll(removeScratchDirs);

describe('make extractor on fixtures/make-project', () => {
  let project: string;
  let graph: BuildGraph;

  beforeAll(async () => {
    project = await copyFixture('make-project');
    graph = await extractor.extract(project);
  });

  it('lists the compile, archive, link and other actions of a full build in dry-run order', () => {
    expect(graph.tool).toBe('make');
    expect(graph.root).toBe(project);
    expect(graph.actions.map((a) => [a.kind, a.label])).toEqual([
      ['other', 'SH mkdir -p gen'],
      ['other', 'GEN gen/version.h'],
      ['compile', 'CC src/hello.o'],
      ['compile', 'CC lib/add.o'],
      ['compile', 'CC lib/strutil.o'],
      ['compile', 'CC lib/fmt.o'],
      ['other', 'SH rm -f libutil.a'],
      ['archive', 'AR lib/libutil.a'],
      ['archive', 'RANLIB lib/libutil.a'],
      ['link', 'LD hello'],
      ['compile', 'CC src/calc.o'],
      ['link', 'LD calc'],
      ['compile', 'CC tools/wordstat.o'],
      ['link', 'LD tools/wordstat'],
    ]);
  });

  it('runs the commands of recursive makes in the sub-make directory ($(MAKE) -C lib and cd tools && $(MAKE))', () => {
    expect(byLabel(graph, 'CC lib/add.o')).toMatchObject({
      cwd: path.join(project, 'lib'),
      argv: ['cc', '-I../include', '-O2', '-g', '-c', 'add.c', '-o', 'add.o'],
      inputs: [path.join(project, 'lib/add.c')],
      outputs: [path.join(project, 'lib/add.o')],
    });
    expect(byLabel(graph, 'AR lib/libutil.a').cwd).toBe(path.join(project, 'lib'));
    expect(byLabel(graph, 'CC tools/wordstat.o').cwd).toBe(path.join(project, 'tools'));
    expect(byLabel(graph, 'LD hello').cwd).toBe(project);
  });

  it('sees through the quiet printf prefix of the library compiles', () => {
    const compile = byLabel(graph, 'CC lib/fmt.o');
    expect(compile.argv[0]).toBe('cc');
    expect(compile.cacheable).toBe(true);
  });

  it('records the pattern-rule compile with its -MMD dependency file', () => {
    expect(rel(graph, byLabel(graph, 'CC src/hello.o').outputs)).toEqual(['src/hello.o', 'src/hello.d']);
  });

  it('runs the generated-header step before every compile that follows it', () => {
    const gen = byLabel(graph, 'GEN gen/version.h');
    expect(gen).toMatchObject({ cwd: project, argv: ['/bin/sh', '-c', 'sh scripts/gen-version.sh VERSION > gen/version.h'], cacheable: false });
    expect(rel(graph, gen.outputs)).toEqual(['gen/version.h']);
    const compiles = graph.actions.filter((a) => a.kind === 'compile');
    for (const compile of compiles) {
      expect(indexOf(graph, compile)).toBeGreaterThan(indexOf(graph, gen));
      expect(dependsOn(graph, compile, gen)).toBe(true);
    }
    expect(byLabel(graph, 'CC src/hello.o').deps).toContain(gen.id);
  });

  it('makes the archive depend on its objects and each link depend on the archive', () => {
    const ar = byLabel(graph, 'AR lib/libutil.a');
    const ranlib = byLabel(graph, 'RANLIB lib/libutil.a');
    for (const obj of ['lib/add.o', 'lib/strutil.o', 'lib/fmt.o']) expect(ar.deps).toContain(byLabel(graph, `CC ${obj}`).id);
    expect(ranlib.deps).toContain(ar.id);
    expect(rel(graph, ranlib.inputs)).toEqual(['lib/libutil.a']);
    for (const label of ['LD hello', 'LD calc', 'LD tools/wordstat']) {
      const link = byLabel(graph, label);
      expect(link.deps).toContain(ranlib.id);
      expect(rel(graph, link.inputs)).toContain('lib/libutil.a');
    }
    // hello finds the library through -Llib -lutil.
    expect(rel(graph, byLabel(graph, 'LD hello').inputs)).toEqual(['src/hello.o', 'lib/libutil.a']);
  });

  it('leaves recursive make invocations out of the graph', () => {
    const commands = graph.actions.map((a) => a.argv.join(' '));
    expect(commands.some((c) => /\bmake\b/.test(c))).toBe(false);
  });

  it('gives every action an id, deps that point to earlier actions, and absolute paths', () => {
    const seen = new Set<string>();
    for (const action of graph.actions) {
      for (const dep of action.deps) expect(seen.has(dep)).toBe(true);
      seen.add(action.id);
      for (const p of [action.cwd, ...action.inputs, ...action.outputs]) expect(path.isAbsolute(p)).toBe(true);
    }
    expect(seen.size).toBe(graph.actions.length);
    expect(topologicalOrder(graph)).toHaveLength(graph.actions.length);
  });

  it('extracts the same ids from the same project', async () => {
    const again = await extractor.extract(project);
    expect(again.actions.map((a) => a.id)).toEqual(graph.actions.map((a) => a.id));
  });

  it('does not build anything while extracting', async () => {
    expect(await listTree(project)).toEqual(await listTree(path.join(FIXTURES_DIR, 'make-project')));
  });
});

describe('make extractor options and failures', () => {
  it('passes make variables through: CFLAGS=-O0 reaches every compile, in sub-makes too', async () => {
    const project = await copyFixture('make-project');
    const graph = await extractor.extract(project, { makeArgs: ['CFLAGS=-O0'] });
    const compiles = graph.actions.filter((a) => a.kind === 'compile');
    expect(compiles).toHaveLength(6);
    for (const compile of compiles) {
      expect(compile.argv).toContain('-O0');
      expect(compile.argv).not.toContain('-O2');
    }
  });

  it('passes targets through: building only calc skips hello and the tools', async () => {
    const project = await copyFixture('make-project');
    const graph = await extractor.extract(project, { makeArgs: ['calc'] });
    const labels = graph.actions.map((a) => a.label);
    expect(labels).toContain('LD calc');
    expect(labels).not.toContain('LD hello');
    expect(labels).not.toContain('LD tools/wordstat');
  });

  it('reports a Makefile syntax error as FAILED_PRECONDITION naming make\'s error', async () => {
    const project = await scratchDir();
    await writeFile(path.join(project, 'Makefile'), 'all:\n    echo spaces instead of a tab\n');
    const failure = extractor.extract(project);
    await expect(failure).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
    await expect(failure).rejects.toThrow(/make -n -B -w --trace --debug=j -p -j1 \(-o: 1 file\) failed with exit code 2 in .*:\nMakefile:2: \*\*\* missing separator/);
  });

  it('reports an unknown target as FAILED_PRECONDITION naming the target', async () => {
    const project = await copyFixture('make-project');
    await expect(extractor.extract(project, { makeArgs: ['no-such-target'] })).rejects.toThrow(
      "make: *** No rule to make target 'no-such-target'.  Stop.",
    );
  });

  it('gets past a file another sub-make makes earlier (-W), and still reports one nothing makes', async () => {
    const project = await scratchDir();
    await mkdir(path.join(project, 'src'));
    await mkdir(path.join(project, 'tests'));
    await writeFile(path.join(project, 'Makefile'), 'all:\n\t$(MAKE) -C src\n\t$(MAKE) -C tests\n');
    await writeFile(path.join(project, 'src/Makefile'), 'libx.a: x.o\n\tar cr libx.a x.o\nx.o: x.c\n\tcc -c x.c -o x.o\n');
    await writeFile(path.join(project, 'src/x.c'), 'int x;\n');
    await writeFile(path.join(project, 'tests/prog.c'), 'int main(void) { return 0; }\n');
    await writeFile(path.join(project, 'tests/Makefile'), 'prog: prog.c ../src/libx.a\n\tcc -o prog prog.c ../src/libx.a\n');
    const graph = await extractor.extract(project);
    const link = graph.actions.find((a) => a.kind === 'link')!;
    expect(link.argv).toEqual(['cc', '-o', 'prog', 'prog.c', '../src/libx.a']);
    expect(dependsOn(graph, link, graph.actions.find((a) => a.kind === 'archive')!)).toBe(true);

    await writeFile(path.join(project, 'tests/Makefile'), 'prog: prog.c ../src/liby.a\n\tcc -o prog prog.c ../src/liby.a\n');
    const failure = extractor.extract(project);
    await expect(failure).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
    await expect(failure).rejects.toThrow("No rule to make target '../src/liby.a', needed by 'prog'");
  });

  it('rejects a build directory, which Make projects do not have', async () => {
    const project = await copyFixture('make-project');
    await expect(extractor.extract(project, { buildDir: 'out' })).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });
  });

  it('reports a missing make program as FAILED_PRECONDITION', async () => {
    const project = await copyFixture('make-project');
    const missing = createMakeExtractor({ makeProgram: 'orion-no-such-make' });
    await expect(missing.extract(project)).rejects.toMatchObject({
      code: Code.FAILED_PRECONDITION,
      message: 'orion-no-such-make was not found on PATH',
    });
  });

  it('runs make with LC_ALL=C, without an enclosing make\'s MAKEFLAGS, and with the user\'s arguments', async () => {
    const calls: { file: string; args: readonly string[]; env: Record<string, string | undefined> }[] = [];
    const runner: CommandRunner = {
      async run(file, args, options) {
        calls.push({ file, args, env: options.env });
        return { exitCode: 0, stdout: "make: Entering directory '/p'\ncc -c a.c\nmake: Leaving directory '/p'\n", stderr: '' };
      },
    };
    const project = await scratchDir();
    process.env.MAKEFLAGS = '-j8 --jobserver-auth=3,4';
    try {
      await createMakeExtractor({ runner }).extract(project, { makeArgs: ['all', 'V=1'] });
    } finally {
      delete process.env.MAKEFLAGS;
    }
    expect(calls).toHaveLength(1);
    expect(calls[0].file).toBe('make');
    expect(calls[0].args).toEqual(['-n', '-B', '-w', '--trace', '--debug=j', '-p', 'all', 'V=1', '-j1']);
    expect(calls[0].env.LC_ALL).toBe('C');
    expect(calls[0].env.MAKEFLAGS).toBeUndefined();
  });

  it('reports cancellation through the signal as CANCELLED', async () => {
    const project = await copyFixture('make-project');
    const controller = new AbortController();
    controller.abort();
    await expect(extractor.extract(project, { signal: controller.signal })).rejects.toMatchObject({ code: Code.CANCELLED });
  });
});

describe('executing the extracted make graph', () => {
  const programs = ['hello', 'calc', 'tools/wordstat'];

  async function runPrograms(dir: string): Promise<string[]> {
    return Promise.all(programs.map(async (p) => (await execa(path.join(dir, p), { cwd: dir })).stdout));
  }

  it('builds working programs whose output matches a plain make build, even in a reordered topological order', async () => {
    const viaGraph = await copyFixture('make-project');
    const viaMake = await copyFixture('make-project');
    const graph = await extractor.extract(viaGraph);

    const order = adversarialOrder(graph);
    expect(order.map((a) => a.id)).not.toEqual(graph.actions.map((a) => a.id));
    await executeActions(order);
    await execa('make', { cwd: viaMake, env: { LC_ALL: 'C' } });

    const fromGraph = await runPrograms(viaGraph);
    expect(fromGraph).toEqual(await runPrograms(viaMake));
    expect(fromGraph[0]).toBe('HELLO FROM THE ORION MAKE FIXTURE (version 1.4.2)\nwords: 6');
    expect(fromGraph[1]).toBe('sum=50\nadd=42');
  });

  it('make clean returns the fixture to its pristine files', async () => {
    const project = await copyFixture('make-project');
    const pristine = await listTree(project);
    await execa('make', { cwd: project });
    expect((await listTree(project)).length).toBeGreaterThan(pristine.length);
    await execa('make', ['clean'], { cwd: project });
    expect(await listTree(project)).toEqual(pristine);
  });
});

describe("make extractor: which recipes follow make's up-to-date rule", () => {
  // config.h: the suckless pattern (copied once, then the user's to edit); stamp: a step without
  // prerequisites; docs: a phony target with a directory of its name; log:: a double-colon rule
  // without prerequisites (make runs it every time); lib/version.h: a sub-make's rule without
  // prerequisites, and lib's own phony `check`; defaults.h: a copy with a prerequisite.
  const MAKEFILE = [
    '.PHONY: all docs',
    'GREETING = hello: world',
    'all: prog docs log stamp defaults.h',
    'config.h:',
    '\tcp config.def.h $@',
    'defaults.h: defaults.in',
    '\tcp defaults.in defaults.h',
    'stamp:',
    '\ttouch stamp',
    'docs:',
    '\techo "$(GREETING)" > docs/index.txt',
    'log::',
    '\techo built >> build.log',
    'prog: main.c config.h',
    '\t$(MAKE) -C lib',
    '\tcc -o prog main.c',
    '',
  ].join('\n');
  const LIB = ['.PHONY: all check', 'all: version.h check', 'version.h:', '\techo "#define V 1" > version.h', 'check:', '\techo checked >> check.log', ''].join('\n');

  let graph: BuildGraph;
  beforeAll(async () => {
    const dir = await scratchDir('make-rules');
    await execa('mkdir', ['-p', path.join(dir, 'docs'), path.join(dir, 'lib')]);
    await writeFile(path.join(dir, 'Makefile'), MAKEFILE);
    await writeFile(path.join(dir, 'lib', 'Makefile'), LIB);
    await writeFile(path.join(dir, 'config.def.h'), '#define FONT "default"\n');
    await writeFile(path.join(dir, 'defaults.in'), '#define D 1\n');
    await writeFile(path.join(dir, 'main.c'), '#include "config.h"\nint main(void) { return 0; }\n');
    graph = await extractor.extract(dir);
  });

  it('gives the copy and the step without prerequisites a rule without prerequisites: they run only when their target is missing', () => {
    expect(byLabel(graph, 'CP config.h')).toMatchObject({ kind: 'copy', makeRule: { target: path.join(graph.root, 'config.h'), prereqs: [] } });
    expect(byLabel(graph, 'GEN stamp').makeRule).toMatchObject({ target: path.join(graph.root, 'stamp'), prereqs: [] });
    expect(byLabel(graph, 'GEN lib/version.h').makeRule).toMatchObject({ target: path.join(graph.root, 'lib/version.h'), prereqs: [] });
  });

  it('gives a copy with a prerequisite make\'s rule, so a target edited after its source is kept', () => {
    expect(byLabel(graph, 'CP defaults.h').makeRule).toMatchObject({ prereqs: [path.join(graph.root, 'defaults.in')] });
  });

  it('leaves phony targets (here and in the sub-make) and a double-colon rule without prerequisites to run every time', () => {
    const labels = graph.actions.map((a) => a.label);
    for (const label of ['GEN docs/index.txt', 'GEN build.log', 'GEN lib/check.log']) {
      expect(labels).toContain(label);
      expect(byLabel(graph, label).makeRule, label).toBeUndefined();
    }
  });

  it('does not take the rule database for commands: only the recipes are actions', () => {
    expect(graph.actions.map((a) => a.label).sort()).toEqual(
      ['LD prog', 'CP config.h', 'CP defaults.h', 'GEN build.log', 'GEN docs/index.txt', 'GEN lib/version.h', 'GEN stamp', 'GEN lib/check.log'].sort(),
    );
  });
});
