import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Code } from '../../common/errors.js';
import { createAutoDetectingExtractor, detectBuildSystem, extractGraph, type GraphExtractor } from '../../dag-extractor/index.js';
import { copyFixture, removeScratchDirs, scratchDir } from './fixtures.js';

afterAll(removeScratchDirs);

function fakeExtractor(name: string, calls: string[]): GraphExtractor {
  return {
    name,
    async extract(projectDir) {
      calls.push(name);
      return { root: projectDir, tool: 'make', actions: [] };
    },
  };
}

describe('extractGraph', () => {
  it('detects each fixture\'s build system', async () => {
    expect(await detectBuildSystem(await copyFixture('make-project'))).toBe('make');
    expect(await detectBuildSystem(await copyFixture('cmake-project'))).toBe('cmake');
    expect(await detectBuildSystem(await copyFixture('compdb-project'))).toBe('compile_commands');
  });

  it('prefers CMakeLists.txt over a Makefile, and a Makefile over compile_commands.json', async () => {
    const dir = await scratchDir();
    await writeFile(path.join(dir, 'compile_commands.json'), '[]');
    expect(await detectBuildSystem(dir)).toBe('compile_commands');
    await writeFile(path.join(dir, 'GNUmakefile'), 'all:\n');
    expect(await detectBuildSystem(dir)).toBe('make');
    await writeFile(path.join(dir, 'CMakeLists.txt'), '');
    expect(await detectBuildSystem(dir)).toBe('cmake');
  });

  it('looks for build.ninja and compile_commands.json in the build directory too', async () => {
    const dir = await scratchDir();
    await mkdir(path.join(dir, 'out'));
    await writeFile(path.join(dir, 'out', 'build.ninja'), 'rule cc\n  command = cc -c $in -o $out\nbuild a.o: cc ../a.c\n');
    expect(await detectBuildSystem(dir, 'out')).toBe('ninja');
    const graph = await extractGraph(dir, { buildDir: 'out' });
    expect(graph.actions.map((a) => [a.kind, a.label, a.cwd])).toEqual([['compile', 'CC out/a.o', path.join(dir, 'out')]]);
  });

  it('delegates to the extractor of the detected build system', async () => {
    const calls: string[] = [];
    const auto = createAutoDetectingExtractor({
      make: fakeExtractor('make', calls),
      cmake: fakeExtractor('cmake', calls),
      compile_commands: fakeExtractor('compdb', calls),
    });
    await auto.extract(await copyFixture('cmake-project'));
    await auto.extract(await copyFixture('make-project'));
    await auto.extract(await copyFixture('compdb-project'));
    expect(calls).toEqual(['cmake', 'make', 'compdb']);
  });

  it('reports a directory without build files as FAILED_PRECONDITION naming what it looked for', async () => {
    const dir = await scratchDir();
    await expect(extractGraph(dir)).rejects.toMatchObject({
      code: Code.FAILED_PRECONDITION,
      message: `No build files found in ${dir}: looked for CMakeLists.txt, GNUmakefile, makefile, Makefile, build.ninja and compile_commands.json`,
    });
  });

  it('reports a project directory that does not exist as INVALID_ARGUMENT', async () => {
    const dir = path.join(await scratchDir(), 'missing');
    await expect(extractGraph(dir)).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT, message: `Project directory ${dir} does not exist` });
  });
});
