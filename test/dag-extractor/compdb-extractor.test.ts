import { access, mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Code } from '../../common/errors.js';
import { createCompdbExtractor } from '../../dag-extractor/index.js';
import { copyFixture, executeActions, rel, removeScratchDirs, scratchDir } from './fixtures.js';

const extractor = createCompdbExtractor();

afterAll(removeScratchDirs);

describe('compile_commands.json extractor', () => {
  it('turns every entry of fixtures/compdb-project into an independent compile action', async () => {
    const project = await copyFixture('compdb-project');
    const graph = await extractor.extract(project);
    expect(graph.tool).toBe('compile_commands');
    expect(graph.root).toBe(project);
    expect(graph.actions.map((a) => ({ kind: a.kind, label: a.label, cwd: rel(graph, [a.cwd])[0], deps: a.deps, cacheable: a.cacheable }))).toEqual([
      { kind: 'compile', label: 'CC out/alpha.o', cwd: '', deps: [], cacheable: true },
      { kind: 'compile', label: 'CC out/beta.o', cwd: 'src', deps: [], cacheable: true },
      { kind: 'compile', label: 'CC sub/gamma.o', cwd: 'sub', deps: [], cacheable: true },
    ]);
  });

  it('uses "arguments" as argv and splits "command" as the shell would', async () => {
    const project = await copyFixture('compdb-project');
    const [alpha, beta] = (await extractor.extract(project)).actions;
    expect(alpha.argv).toEqual(['cc', '-O2', '-Isrc', '-c', 'src/alpha.c', '-o', 'out/alpha.o']);
    expect(beta.argv).toEqual(['cc', '-O2', '-DLABEL="beta module"', '-c', 'beta.c', '-o', '../out/beta.o']);
  });

  it('resolves relative directories against the folder of compile_commands.json, and files and outputs against the directory', async () => {
    const project = await copyFixture('compdb-project');
    const graph = await extractor.extract(project);
    expect(graph.actions.map((a) => [rel(graph, a.inputs), rel(graph, a.outputs)])).toEqual([
      [['src/alpha.c'], ['out/alpha.o']],
      [['src/beta.c'], ['out/beta.o']],
      [['sub/gamma.c'], ['sub/gamma.o', 'sub/gamma.d']],
    ]);
  });

  it('produces commands that compile when run in their directories', async () => {
    const project = await copyFixture('compdb-project');
    await executeActions((await extractor.extract(project)).actions);
    for (const object of ['out/alpha.o', 'out/beta.o', 'sub/gamma.o']) await access(path.join(project, object));
  });

  it('finds compile_commands.json in the build directory when one is given', async () => {
    const project = await copyFixture('compdb-project');
    await mkdir(path.join(project, 'build'));
    await rename(path.join(project, 'compile_commands.json'), path.join(project, 'build', 'compile_commands.json'));
    await writeFile(
      path.join(project, 'build', 'compile_commands.json'),
      JSON.stringify([{ directory: '..', file: 'src/alpha.c', arguments: ['cc', '-c', 'src/alpha.c', '-o', 'build/alpha.o'] }]),
    );
    const graph = await extractor.extract(project, { buildDir: 'build' });
    expect(graph.actions.map((a) => [a.cwd, rel(graph, a.outputs)])).toEqual([[project, ['build/alpha.o']]]);
  });

  it('rejects invalid JSON and malformed entries as INVALID_ARGUMENT', async () => {
    const dir = await scratchDir();
    const file = path.join(dir, 'compile_commands.json');
    await writeFile(file, '[{"directory": "."');
    await expect(extractor.extract(dir)).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT, message: expect.stringContaining('is not valid JSON') });
    await writeFile(file, JSON.stringify([{ directory: '.', file: 'a.c' }]));
    await expect(extractor.extract(dir)).rejects.toMatchObject({
      code: Code.INVALID_ARGUMENT,
      message: `${file} entry 0 has neither "arguments" nor "command"`,
    });
    await writeFile(file, JSON.stringify([{ directory: '.', file: 'a.c', command: 'cc -c a.c && rm a.c' }]));
    await expect(extractor.extract(dir)).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });
  });

  it('reports a missing database as FAILED_PRECONDITION', async () => {
    const dir = await scratchDir();
    await expect(extractor.extract(dir)).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
  });
});
