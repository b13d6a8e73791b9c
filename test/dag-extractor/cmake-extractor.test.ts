import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Code } from '../../common/errors.js';
import {
  createCMakeExtractor,
  createProcessCommandRunner,
  parseNinjaManifest,
  type BuildAction,
  type BuildGraph,
  type CommandRunner,
} from '../../dag-extractor/index.js';
import { adversarialOrder, copyFixture, executeActions, rel, removeScratchDirs } from './fixtures.js';

const extractor = createCMakeExtractor();

function find(graph: BuildGraph, kind: BuildAction['kind'], output: string): BuildAction {
  const action = graph.actions.find((a) => a.kind === kind && rel(graph, a.outputs).includes(output));
  if (!action) throw new Error(`no ${kind} action writing ${output}; labels: ${graph.actions.map((a) => a.label).join(', ')}`);
  return action;
}

afterAll(removeScratchDirs);

describe('cmake extractor on fixtures/cmake-project', () => {
  let project: string;
  let graph: BuildGraph;

  beforeAll(async () => {
    project = await copyFixture('cmake-project');
    graph = await extractor.extract(project);
  });

  it('configures PROJECT/build with Ninja and reads the library compiles, archive, link and custom command', () => {
    expect(graph.tool).toBe('ninja');
    expect(graph.root).toBe(project);
    expect(graph.actions.map((a) => [a.kind, a.label]).sort()).toEqual(
      [
        ['archive', 'AR build/libshapes.a'],
        ['compile', 'CC build/CMakeFiles/shapes.dir/lib/area.c.o'],
        ['compile', 'CC build/CMakeFiles/shapes.dir/lib/perimeter.c.o'],
        ['compile', 'CXX build/CMakeFiles/shapes_demo.dir/app/main.cpp.o'],
        ['link', 'LD build/shapes_demo'],
        ['other', 'GEN build/generated/build_info.h'],
      ].sort(),
    );
  });

  it('keeps compiles as plain argv run in the build directory, with their dependency files as outputs', () => {
    const area = find(graph, 'compile', 'build/CMakeFiles/shapes.dir/lib/area.c.o');
    expect(area.cwd).toBe(path.join(project, 'build'));
    expect(area.argv[0]).toMatch(/\/(cc|gcc|clang)$/);
    expect(area.argv).toContain('-c');
    expect(rel(graph, area.inputs)).toEqual(['lib/area.c']);
    expect(rel(graph, area.outputs)).toEqual(['build/CMakeFiles/shapes.dir/lib/area.c.o', 'build/CMakeFiles/shapes.dir/lib/area.c.o.d']);
    expect(area.cacheable).toBe(true);
  });

  it('makes the custom command a non-cacheable shell step that library compiles wait for', () => {
    const gen = find(graph, 'other', 'build/generated/build_info.h');
    expect(gen.cacheable).toBe(false);
    expect(gen.argv.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    expect(gen.argv[2]).toContain('gen-build-info.sh');
    expect(rel(graph, gen.inputs)).toEqual(['cmake/gen-build-info.sh']);
    for (const object of ['area.c.o', 'perimeter.c.o']) {
      expect(find(graph, 'compile', `build/CMakeFiles/shapes.dir/lib/${object}`).deps).toEqual([gen.id]);
    }
  });

  it('makes the archive depend on the library objects and the link depend on the archive', () => {
    const archive = find(graph, 'archive', 'build/libshapes.a');
    const objects = ['area.c.o', 'perimeter.c.o'].map((o) => find(graph, 'compile', `build/CMakeFiles/shapes.dir/lib/${o}`).id);
    expect([...archive.deps].sort()).toEqual([...objects].sort());
    expect(archive.cacheable).toBe(true);
    const link = find(graph, 'link', 'build/shapes_demo');
    expect(link.deps).toContain(archive.id);
    expect(rel(graph, link.inputs)).toEqual(['build/CMakeFiles/shapes_demo.dir/app/main.cpp.o', 'build/libshapes.a']);
  });

  it('leaves out phony targets and the build.ninja regeneration rule', () => {
    const outputs = graph.actions.flatMap((a) => rel(graph, a.outputs));
    expect(outputs).not.toContain('build/build.ninja');
    expect(outputs).not.toContain('build/all');
    expect(graph.actions.some((a) => a.argv.join(' ').includes('--regenerate-during-build'))).toBe(false);
  });

  it('expands every command exactly as ninja -t compdb -x does', async () => {
    const buildDir = path.join(project, 'build');
    const { stdout } = await execa('ninja', ['-C', buildDir, '-t', 'compdb', '-x']);
    const compdb = new Map((JSON.parse(stdout) as { output: string; command: string }[]).map((e) => [e.output, e.command]));
    const manifest = await parseNinjaManifest('build.ninja', buildDir, (f) => readFile(f, 'utf8'));
    // ninja -t compdb lists the edges that have inputs.
    const commands = manifest.edges.filter((e) => e.rule !== 'phony' && e.explicitInputs.length + e.implicitInputs.length > 0);
    expect(commands.length).toBeGreaterThan(5);
    for (const edge of commands) expect(edge.command).toBe(compdb.get(edge.outputs[0]));
  });

  it('builds a working program when the graph is executed in a reordered topological order', async () => {
    await executeActions(adversarialOrder(graph));
    const { stdout } = await execa(path.join(project, 'build', 'shapes_demo'));
    expect(stdout).toBe('shapes 2.3.0\nrectangle 3x4: area 12, perimeter 14');
  });
});

describe('cmake extractor options and failures', () => {
  function recordingRunner(calls: string[]): CommandRunner {
    const real = createProcessCommandRunner();
    return {
      run(file, args, options) {
        calls.push([file, ...args].join(' '));
        return real.run(file, args, options);
      },
    };
  }

  it('configures only when the build directory has no build.ninja yet, and refreshes the manifest every time', async () => {
    const project = await copyFixture('cmake-project');
    const calls: string[] = [];
    const cmake = createCMakeExtractor({ runner: recordingRunner(calls) });
    await cmake.extract(project, { buildDir: 'out' });
    await cmake.extract(project, { buildDir: 'out' });
    const buildDir = path.join(project, 'out');
    expect(calls).toEqual([
      `cmake -G Ninja -S ${project} -B ${buildDir}`,
      `ninja -C ${buildDir} build.ninja`,
      `ninja -C ${buildDir} build.ninja`,
    ]);
  });

  it('restricts the graph to the requested targets', async () => {
    const project = await copyFixture('cmake-project');
    const graph = await extractor.extract(project, { makeArgs: ['shapes'] });
    expect(graph.actions.map((a) => a.kind).sort()).toEqual(['archive', 'compile', 'compile', 'other']);
  });

  it('rejects VAR=value arguments and unknown targets as INVALID_ARGUMENT', async () => {
    const project = await copyFixture('cmake-project');
    await expect(extractor.extract(project, { makeArgs: ['CFLAGS=-O0'] })).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });
    await expect(extractor.extract(project, { makeArgs: ['no_such_target'] })).rejects.toMatchObject({
      code: Code.INVALID_ARGUMENT,
      message: expect.stringContaining("Unknown Ninja target 'no_such_target'"),
    });
  });

  it('reports a failing CMake configure as FAILED_PRECONDITION with CMake\'s error', async () => {
    const project = await copyFixture('cmake-project');
    await writeFile(path.join(project, 'CMakeLists.txt'), 'cmake_minimum_required(VERSION 3.16)\nproject(broken C)\nadd_executable(app missing.c)\n');
    const failure = extractor.extract(project);
    await expect(failure).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
    await expect(failure).rejects.toThrow(/cmake -G Ninja .* failed with exit code 1:[\s\S]*CMake Error/);
  });
});
