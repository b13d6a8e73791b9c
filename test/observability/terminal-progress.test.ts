import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildAction } from '../../dag-extractor/types.js';
import type { BuildSummary } from '../../cli/build/build-runner.js';
import { createTtyReporter } from '../../cli/build/tty-reporter.js';
import { ORION } from '../helpers/daemons.js';
import { baseEnv, copyFixture, orionBuild, run, scratch } from '../helpers/build.js';
import { rm } from 'node:fs/promises';

const act = (id: string): BuildAction => ({ id, kind: 'compile', cwd: '/p', argv: ['cc', '-c', `${id}.c`], inputs: [], outputs: [], deps: [], cacheable: true, label: `CC ${id}.o` });

function fakeTerminal() {
  let out = '';
  let err = '';
  return {
    sink: { stdout: (s: string | Buffer) => void (out += s), stderr: (s: string | Buffer) => void (err += s) },
    out: () => out,
    err: () => err,
    /** What a terminal shows on its last line: text after the last carriage return / line clear. */
    statusShown: () => out.slice(out.lastIndexOf('\r\x1b[2K') + 5),
  };
}

describe('terminal progress: the live status line', () => {
  it('shows done/total, cache hits, running actions by node, failures, elapsed time and what is left', () => {
    let now = 0;
    const t = fakeTerminal();
    const r = createTtyReporter(t.sink, { verbose: false, root: '/p', columns: () => 200, now: () => now, refreshMs: 0, color: false });
    const [a, b, c, d, e] = ['a', 'b', 'c', 'd', 'e'].map(act);
    r.start(10);
    for (const x of [a, b, c, d, e]) r.started(x);
    r.finished(a, 'cached', 1);
    r.running!(b, 'local');
    r.running!(c, 'remote');
    r.running!(d, 'remote');
    r.running!(d, 'n2');
    r.running!(e, 'n1');
    now = 2000;
    r.finished(e, 'executed', 2);
    r.running!(e, 'n1');
    expect(r.statusLine()).toBe('[2/10] 1 cached · running 3 (local 1, n1 1, n2 1) · 1 queued on the cluster · 2.00s · ~8.00s left');
    r.finished(b, 'failed', 3);
    expect(r.statusLine()).toContain(' · 1 failed · ');
    expect(t.statusShown()).toBe(r.statusLine());
  });

  it('prints compiler output above the status line and redraws the line after it', () => {
    const t = fakeTerminal();
    const r = createTtyReporter(t.sink, { verbose: false, root: '/p', columns: () => 80, now: () => 0, refreshMs: 0, color: false });
    r.start(2);
    r.started(act('a'));
    r.actionStderr(Buffer.from("a.c:1:1: warning: unused variable 'x'\n"));
    expect(t.err()).toBe("a.c:1:1: warning: unused variable 'x'\n");
    // The status line was cleared before the output and drawn again after it.
    expect(t.out().endsWith(`\r\x1b[2K\r\x1b[2K[0/2] 0ms`)).toBe(true);
  });

  it('truncates the status line to the terminal width', () => {
    const t = fakeTerminal();
    let now = 0;
    const r = createTtyReporter(t.sink, { verbose: false, root: '/p', columns: () => 30, now: () => now, refreshMs: 0, color: false });
    r.start(100);
    for (let i = 0; i < 20; i++) r.running!(act(`x${i}`), `node-with-a-long-name-${i}`);
    // Redraws for changes are spaced (at most one per 50 ms): the next change after that draws.
    expect(t.statusShown()).toBe('[0/100] 0ms');
    now = 60;
    r.running!(act('x20'), 'node-with-a-long-name-20');
    expect(t.statusShown().length).toBeLessThanOrEqual(29);
    expect(t.statusShown().endsWith('…')).toBe(true);
  });

  it('clears the status line before the summary; --verbose also prints each command and finished action', () => {
    const t = fakeTerminal();
    const r = createTtyReporter(t.sink, { verbose: true, root: '/p', columns: () => 80, now: () => 0, refreshMs: 0, color: false });
    r.start(1);
    r.started(act('a'));
    r.finished(act('a'), 'executed', 1);
    r.summary({ ok: true, total: 1, counts: { cached: 0, 'remote-cached': 0, executed: 1, failed: 0, skipped: 0, 'dry-run': 0 }, where: { local: 1 }, failures: [], durations: new Map() } as BuildSummary, 1234);
    expect(t.out()).toContain('.$ cc -c a.c\n');
    expect(t.out()).toContain('[1/1] CC a.o\n');
    expect(t.out().endsWith('\r\x1b[2K')).toBe(true);
    expect(t.err()).toBe('orion: build finished in 1.23s: 1 actions, 1 run (1 on local), 0 cached\n');
  });
});

describe('orion build output, as a real process', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await scratch('progress');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('piped: stable progress lines, and no escape or carriage-return characters anywhere', async () => {
    const proj = await copyFixture('make-project', path.join(dir, 'piped'));
    const b = await orionBuild(proj, { cacheDir: path.join(dir, 'cache-piped') });
    expect(b.code, b.stderr).toBe(0);
    expect(b.lines.length).toBe(b.summary.total);
    expect(b.stdout + b.stderr).not.toMatch(/[\x1b\r]/);
    expect(b.stderr).toMatch(/^orion: ran 0 remotely, \d+ locally, 0 from cache$/m);
    expect(b.stderr).toMatch(/^orion: critical path \S+: .+$/m);
    expect(b.stderr).toMatch(/^orion: slowest: .+$/m);
  });

  it('piped with --quiet: nothing but what the compilers print', async () => {
    const proj = await copyFixture('make-project', path.join(dir, 'quiet'));
    const b = await orionBuild(proj, { cacheDir: path.join(dir, 'cache-quiet'), args: ['--quiet'] });
    expect(b.code, b.stderr).toBe(0);
    expect(b.stdout).toBe('');
    expect(b.stderr).toBe('');
  });

  it('on a terminal: a status line redrawn in place, then the summary', async () => {
    const proj = await copyFixture('make-project', path.join(dir, 'tty'));
    // script(1) gives the build a pseudo-terminal as stdout.
    const cmd = `${process.execPath} ${ORION} build --cache-dir ${path.join(dir, 'cache-tty')}`;
    const r = await run(['script', '-qec', cmd, '/dev/null'], { cwd: proj, env: baseEnv({ TERM: 'xterm', CI: undefined }) });
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toContain('\r\x1b[2K[');
    expect(r.stdout).toMatch(/\[\d+\/14\]/);
    // No per-action lines: the display is compact.
    expect(r.stdout).not.toMatch(/^\[\d+\/14\] CC /m);
    expect(r.stdout).toMatch(/build finished/);
    expect(r.stdout).toMatch(/orion: ran 0 remotely, \d+ locally, 0 from cache/);
  });
});
