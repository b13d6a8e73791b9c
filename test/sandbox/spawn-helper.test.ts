import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import { createHelperLauncher, findSpawnHelper } from '../../sandbox/spawn-helper.js';
import type { LaunchSpec } from '../../sandbox/launcher.js';
import { isRunning, waitUntilGone } from '../helpers/processes.js';

const HELPER = findSpawnHelper()!;
const REPO = path.resolve(import.meta.dirname, '../..');

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'orion-spawn-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const spec = (file: string, args: string[], more: Partial<LaunchSpec> = {}): LaunchSpec => ({ file, args, cwd: tmp, env: { PATH: '/usr/bin:/bin' }, ...more });

describe('orion-spawn helper', () => {
  it('is built by `make build` next to the bundle; ORION_SPAWN_HELPER names another, or none when empty', () => {
    expect(HELPER).toBe(path.join(REPO, 'dist', 'orion-spawn'));
    const saved = process.env.ORION_SPAWN_HELPER;
    try {
      process.env.ORION_SPAWN_HELPER = '';
      expect(findSpawnHelper()).toBeUndefined();
      process.env.ORION_SPAWN_HELPER = path.join(tmp, 'absent');
      expect(findSpawnHelper()).toBeUndefined();
      process.env.ORION_SPAWN_HELPER = HELPER;
      expect(findSpawnHelper()).toBe(HELPER);
    } finally {
      if (saved === undefined) delete process.env.ORION_SPAWN_HELPER;
      else process.env.ORION_SPAWN_HELPER = saved;
    }
  });

  it('runs many commands at once, each with its own output, exit status and process group', async () => {
    const launcher = createHelperLauncher(HELPER, { maxOutputBytes: 1 << 20 });
    const runs = await Promise.all(
      Array.from({ length: 24 }, (_, i) => launcher.launch(spec('sh', ['-c', `echo out-${i}; echo err-${i} >&2; ps -o pgid= -p $$; exit ${i % 5}`]))),
    );
    const results = await Promise.all(runs.map(async (r) => ({ pid: r.pid, exit: await r.exit, ...(await r.output) })));
    results.forEach((r, i) => {
      expect(r.exit).toEqual({ code: i % 5, signal: null });
      const [out, pgid] = r.stdout.toString().trim().split('\n');
      expect(out).toBe(`out-${i}`);
      expect(Number(pgid)).toBe(r.pid); // the leader of its own group
      expect(r.stderr.toString()).toBe(`err-${i}\n`);
    });
  });

  it('reports death by signal, gives stdin as /dev/null and the environment exactly as given, and runs in cwd', async () => {
    const launcher = createHelperLauncher(HELPER, { maxOutputBytes: 1 << 20 });
    const killed = await launcher.launch(spec('sh', ['-c', 'kill -TERM $$']));
    expect(await killed.exit).toEqual({ code: null, signal: 'SIGTERM' });
    const r = await launcher.launch(spec('sh', ['-c', 'cat; env | sort; pwd'], { env: { PATH: '/usr/bin:/bin', ONLY: 'this one' } }));
    await r.exit;
    const lines = (await r.output).stdout.toString().trim().split('\n');
    expect(lines.filter((l) => /^(ONLY|HOME|USER)=/.test(l))).toEqual(['ONLY=this one']);
    expect(lines.at(-1)).toBe(tmp);
  });

  it("looks a bare name up in the command's own PATH, and says ENOENT or EACCES when it cannot start", async () => {
    const launcher = createHelperLauncher(HELPER, { maxOutputBytes: 1 << 20 });
    const bin = path.join(tmp, 'bin');
    await rm(bin, { recursive: true, force: true });
    await import('node:fs/promises').then((fs) => fs.mkdir(bin));
    await writeFile(path.join(bin, 'mytool'), '#!/bin/sh\necho found me\n');
    await chmod(path.join(bin, 'mytool'), 0o755);
    await writeFile(path.join(bin, 'noexec'), '#!/bin/sh\n');
    const r = await launcher.launch(spec('mytool', [], { env: { PATH: `/nonexistent:${bin}:/usr/bin:/bin` } }));
    await r.exit;
    expect((await r.output).stdout.toString()).toBe('found me\n');

    await expect(launcher.launch(spec('mytool', []))).rejects.toMatchObject({ code: 'ENOENT', message: 'spawn mytool ENOENT' });
    await expect(launcher.launch(spec('noexec', [], { env: { PATH: bin } }))).rejects.toMatchObject({ code: 'EACCES' });
    await expect(launcher.launch(spec('/bin/true', [], { cwd: path.join(tmp, 'no-such-dir') }))).rejects.toMatchObject({ code: 'ENOENT' });
    // The helper is still there for the next command.
    const ok = await launcher.launch(spec('true', []));
    expect(await ok.exit).toEqual({ code: 0, signal: null });
  });

  it('keeps at most maxOutputBytes of each stream and still reads the rest, so the command finishes', async () => {
    const launcher = createHelperLauncher(HELPER, { maxOutputBytes: 1000 });
    const r = await launcher.launch(spec('sh', ['-c', 'head -c 3000000 /dev/zero; head -c 10 /dev/zero >&2']));
    expect(await r.exit).toEqual({ code: 0, signal: null });
    const { stdout, stderr } = await r.output;
    expect(stdout.length).toBe(1000);
    expect(stderr.length).toBe(10);
  });

  it('refuses a NUL byte in an argument with INVALID_ARGUMENT, starting nothing', async () => {
    const launcher = createHelperLauncher(HELPER, { maxOutputBytes: 1000 });
    const err = await launcher.launch(spec('echo', ['a\0b'])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OrionError);
    expect((err as OrionError).code).toBe(Code.INVALID_ARGUMENT);
  });

  it('fails the running commands with INTERNAL when the helper dies, and starts a new helper for the next one', async () => {
    const errors: string[] = [];
    const launcher = createHelperLauncher(HELPER, { maxOutputBytes: 1000, onError: (e) => errors.push(e.message) });
    const r = await launcher.launch(spec('sleep', ['30']));
    const helperPid = Number(spawnSync('ps', ['-o', 'ppid=', '-p', String(r.pid)], { encoding: 'utf8' }).stdout.trim());
    expect(helperPid).not.toBe(process.pid);
    process.kill(helperPid, 'SIGKILL');
    await expect(r.exit).rejects.toMatchObject({ code: Code.INTERNAL, message: expect.stringMatching(/orion-spawn helper exited/) });
    await expect(r.output).rejects.toMatchObject({ code: Code.INTERNAL });
    expect(errors).toHaveLength(1);
    process.kill(-r.pid, 'SIGKILL');
    const again = await launcher.launch(spec('sh', ['-c', 'echo again']));
    await again.exit;
    expect((await again.output).stdout.toString()).toBe('again\n');
  });

  it('does not keep an idle process alive, and kills what it started when that process exits', async () => {
    const marker = `orion-spawn-marker-${process.pid}-${Date.now()}`;
    // A script that runs one command to the end, starts a long one, and exits without waiting.
    const script = `
      import { createHelperLauncher } from ${JSON.stringify(path.join(REPO, 'dist/sandbox/spawn-helper.js'))};
      const l = createHelperLauncher(${JSON.stringify(HELPER)}, { maxOutputBytes: 1000 });
      const first = await l.launch({ file: 'true', args: [], cwd: '/', env: { PATH: '/usr/bin:/bin' } });
      await first.output;
      const long = await l.launch({ file: 'sh', args: ['-c', 'sleep 300', ${JSON.stringify(marker)}], cwd: '/', env: { PATH: '/usr/bin:/bin' } });
      console.log(long.pid);
      setTimeout(() => process.exit(0), 100);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const code = await new Promise((r) => child.on('exit', r));
    expect(code).toBe(0);
    const pid = Number(out.trim());
    expect(pid).toBeGreaterThan(0);
    expect(await waitUntilGone([pid], 5_000)).toEqual([]);
    expect(isRunning(pid)).toBe(false);

    // Idle, it does not hold the process open: this one exits on its own.
    const idle = spawn(process.execPath, ['--input-type=module', '-e', script.replace(/const long[\s\S]*$/, '')], { stdio: 'ignore' });
    const timer = setTimeout(() => idle.kill('SIGKILL'), 10_000);
    const [idleCode, idleSignal] = await new Promise<[number | null, string | null]>((r) => idle.on('exit', (c, s) => r([c, s])));
    clearTimeout(timer);
    expect([idleCode, idleSignal]).toEqual([0, null]);
  });

  it('exits with a clear message on a malformed request', () => {
    const bad = Buffer.alloc(12);
    bad.writeUInt32LE(8, 0); // a frame too short for a command line
    const r = spawnSync(HELPER, ['1000'], { input: bad, encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/orion-spawn: malformed request/);
    const usage = spawnSync(HELPER, [], { encoding: 'utf8' });
    expect(usage.status).toBe(2);
    expect(usage.stderr).toMatch(/usage: orion-spawn MAX_OUTPUT_BYTES/);
  });
});
