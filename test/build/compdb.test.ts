/**
 * `orion build` end to end on fixtures/compdb-project (compile commands only,
 * relative directories, one compile writing outside its directory), embedded
 * and on a head with two nodes.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'vitest';
import { removeAll, run, sh, shellQuote, toolOutputs } from '../helpers/build.js';
import { defineFixtureSuite, edit } from './fixture-suite.js';

interface Entry {
  directory: string;
  arguments?: string[];
  command?: string;
}

const editGreekHeader = (dir: string) => edit(path.join(dir, 'src/greek.h'), (t) => t.replace('#define GREEK_BASE 100', '#define GREEK_BASE 200'));

defineFixtureSuite({
  fixture: 'compdb-project',
  // The plain build: each entry's command, run by sh in the entry's directory.
  async plainBuild(dir, env) {
    const entries = JSON.parse(await readFile(path.join(dir, 'compile_commands.json'), 'utf8')) as Entry[];
    for (const e of entries) await sh(e.arguments ? e.arguments.map(shellQuote).join(' ') : e.command!, path.resolve(dir, e.directory), env);
  },
  // The database has no -g: add it (in this copy) so objects record their compilation directories.
  debugInfo: {
    async prepare(dir) {
      const file = path.join(dir, 'compile_commands.json');
      const entries = JSON.parse(await readFile(file, 'utf8')) as Entry[];
      for (const e of entries) {
        if (e.arguments) e.arguments.splice(1, 0, '-g');
        else e.command = e.command!.replace(/^cc /, 'cc -g ');
      }
      await writeFile(file, JSON.stringify(entries, null, 2));
    },
  },
  clean: (_dir, graph) => removeAll(toolOutputs(graph)),
  products: ['out/alpha.o', 'out/beta.o', 'sub/gamma.o'],
  // No programs: link the three objects with a main of our own, outside the project.
  async checkPrograms(dir, variant) {
    const check = path.join(path.dirname(dir), 'check');
    await mkdir(check, { recursive: true });
    await writeFile(path.join(check, 'main.c'), '#include <stdio.h>\nint alpha(void); int beta(void); int gamma_value(void);\nint main(void) { printf("%d %d %d\\n", alpha(), beta(), gamma_value()); return 0; }\n');
    await sh(`cc -o prog main.c ${['out/alpha.o', 'out/beta.o', 'sub/gamma.o'].map((o) => shellQuote(path.join(dir, o))).join(' ')}`, check);
    const r = await run(['./prog'], { cwd: check });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(variant === 'original' ? '101 102 103\n' : '201 202 203\n');
  },
  // Compiles run `cc` through PATH. On the cluster two of the three run on nodes; beta.o's
  // compile writes outside its directory (REAPI cannot express that), so it always runs here,
  // but the cluster's builds run without the wrappers (the nodes have no such `cc`).
  wrappersSeeFirstBuild: (mode) => mode === 'embedded',
  headerEdit: { apply: editGreekHeader, rebuilt: ['CC out/alpha.o', 'CC out/beta.o', 'CC sub/gamma.o'] },
  explainEdit: {
    header: 'src/greek.h',
    apply: (dir) => edit(path.join(dir, 'src/greek.h'), (t) => t.replace('int gamma_value(void);', 'int gamma_value(void);\nint delta_value(void);')),
    rebuilt: ['CC out/alpha.o', 'CC out/beta.o', 'CC sub/gamma.o'],
  },
  broken: { file: 'src/alpha.c', label: 'CC out/alpha.o', built: ['out/beta.o', 'sub/gamma.o'], missing: ['out/alpha.o'], notRun: 0 },
  graphKinds: ['compile'],
});
