import { readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseProjectConfig, resolveBuildSettings } from '../../cli/project-config.js';
import { baseEnv, copyFixture, orion, scratch } from '../helpers/build.js';

const F = '/p/orion.json';

describe('orion.json: parsing and validation', () => {
  it('reads head, cacheDir (relative to the file), jobs and makeArgs', () => {
    expect(parseProjectConfig('{"head":"10.0.0.1:50050","cacheDir":".cache/orion","jobs":8,"makeArgs":["MALLOC=libc","all"]}', F)).toEqual({
      head: '10.0.0.1:50050',
      cacheDir: '/p/.cache/orion',
      jobs: 8,
      makeArgs: ['MALLOC=libc', 'all'],
    });
    expect(parseProjectConfig('{}', F)).toEqual({});
  });

  it.each([
    ['{"jobs": 8,}', /^\/p\/orion\.json: not valid JSON: .*line 1, column 12/],
    ['{\n  "head": "a:1"\n  "jobs": 2\n}', /^\/p\/orion\.json: not valid JSON: .*line 3, column 3/],
    ['[1]', /^\/p\/orion\.json: expected a JSON object like \{"head": "10\.0\.0\.1:50050", "jobs": 8\}, got an array$/],
    ['{"jobs": "8"}', /^\/p\/orion\.json: "jobs" must be a whole number from 1 to 1000000, got "8"$/],
    ['{"jobs": 0}', /^\/p\/orion\.json: "jobs" must be a whole number from 1 to 1000000, got 0$/],
    ['{"head": "nowhere"}', /^\/p\/orion\.json: "head": expected HOST:PORT \(for example 127\.0\.0\.1:50050\), got "nowhere"$/],
    ['{"makeArgs": "all"}', /^\/p\/orion\.json: "makeArgs" must be an array of strings, like \["-j1", "MALLOC=libc", "all"\], got "all"$/],
    ['{"cacheDir": ""}', /^\/p\/orion\.json: "cacheDir" must be a non-empty path string, got ""$/],
    ['{"hed": "a:1", "job": 2}', /^\/p\/orion\.json: unknown keys "hed", "job" \(known keys: head, cacheDir, jobs, makeArgs\)$/],
  ])('rejects %j naming the file and the problem', (text, message) => {
    expect(() => parseProjectConfig(text, F)).toThrow(message);
  });
});

describe('settings precedence: flags, then environment, then orion.json', () => {
  const project = { head: 'file:1', cacheDir: '/from-file', jobs: 2, makeArgs: ['all'] };
  it('uses orion.json when neither flags nor environment say otherwise', () => {
    expect(resolveBuildSettings({}, {}, project)).toMatchObject({ head: 'file:1', cacheDir: '/from-file', jobs: 2, makeArgs: ['all'] });
  });
  it('prefers ORION_HEAD, ORION_CACHE_DIR and ORION_JOBS over orion.json', () => {
    const s = resolveBuildSettings({}, { ORION_HEAD: 'env:2', ORION_CACHE_DIR: '/from-env', ORION_JOBS: '5' }, project);
    expect(s).toMatchObject({ head: 'env:2', cacheDir: '/from-env', jobs: 5, sources: { head: 'env', cacheDir: 'env', jobs: 'env', makeArgs: 'orion.json' } });
  });
  it('prefers flags over both; make arguments on the command line replace orion.json\'s', () => {
    const s = resolveBuildSettings({ head: 'flag:3', cacheDir: '/flag', jobs: 9, makeArgs: ['hello'] }, { ORION_HEAD: 'env:2', ORION_JOBS: '5' }, project);
    expect(s).toMatchObject({ head: 'flag:3', cacheDir: '/flag', jobs: 9, makeArgs: ['hello'], sources: { head: 'flag', jobs: 'flag', makeArgs: 'flag' } });
  });
  it('rejects a malformed ORION_JOBS naming the variable', () => {
    expect(() => resolveBuildSettings({}, { ORION_JOBS: 'lots' }, {})).toThrow('ORION_JOBS: expected a positive integer, got "lots"');
  });
});

describe('orion.json with the real CLI', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await scratch('config');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a malformed orion.json stops `orion build` with exit 2 and a message naming the file', async () => {
    const proj = await copyFixture('make-project', path.join(dir, 'bad'));
    await writeFile(path.join(proj, 'orion.json'), '{ "jobs": 4, }\n');
    const r = await orion(['build'], { cwd: proj });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^orion: ${path.join(proj, 'orion.json').replace(/[.]/g, '\\.')}: not valid JSON: .*line 1, column 14`));
    expect(r.stdout).toBe('');
  });

  it('orion build and orion graph take cacheDir, jobs and makeArgs from orion.json; flags and ORION_JOBS win', async () => {
    const proj = await copyFixture('make-project', path.join(dir, 'good'));
    await writeFile(path.join(proj, 'orion.json'), JSON.stringify({ cacheDir: '.orion-cache', jobs: 3, makeArgs: ['calc'] }));
    const graph = await orion(['graph'], { cwd: proj });
    expect(graph.code, graph.stderr).toBe(0);
    const labels = (JSON.parse(graph.stdout) as { actions: { label: string }[] }).actions.map((a) => a.label);
    expect(labels.some((l) => l.includes('calc'))).toBe(true);
    expect(labels.some((l) => l.includes('hello'))).toBe(false);

    const b = await orion(['build', '--verbose'], { cwd: proj });
    expect(b.code, b.stderr).toBe(0);
    expect(b.stderr).toContain('orion: settings: cacheDir=');
    expect(b.stderr).toContain('jobs=3 (orion.json), makeArgs=["calc"] (orion.json)');
    expect(await readdir(path.join(proj, '.orion-cache'))).toContain('cas');

    const env = await orion(['build', '--verbose', '-j', '2'], { cwd: proj, env: baseEnv({ ORION_JOBS: '7' }) });
    expect(env.stderr).toContain('jobs=2 (flag)');
    const fromEnv = await orion(['build', '--verbose'], { cwd: proj, env: baseEnv({ ORION_JOBS: '7' }) });
    expect(fromEnv.stderr).toContain('jobs=7 (env)');
  });
});
