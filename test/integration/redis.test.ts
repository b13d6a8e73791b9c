import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, statSync } from 'node:fs';
import { cp } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ORION, REPO, tempDir } from '../helpers/daemons.js';

// Redis 7.0.15 from Debian's source package: orion build must match make byte for byte.
// The last three are `install redis-server NAME` copies, which Orion caches as actions.
const BINARIES = ['redis-server', 'redis-cli', 'redis-benchmark', 'redis-sentinel', 'redis-check-rdb', 'redis-check-aof'];
const ENV = { ...process.env, SOURCE_DATE_EPOCH: '1700000000', LC_ALL: 'C' };
// Every command runs asynchronously: a test file's process that blocks for a minute (Redis's
// build on a loaded 2-core machine) misses vitest's 60 s RPC deadline, which fails the run.

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

describe('Redis 7.0.15 built by orion build', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let src: string;
  const reference = new Map<string, Buffer>();
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    tmp = await tempDir('redis');
    const fetched = (await execa('bash', [path.join(REPO, 'scripts/fetch-redis.sh'), path.join(REPO, 'bench/work/redis-src')], { stdin: 'ignore', stderr: 'inherit' })).stdout.trim().split('\n').at(-1)!;
    src = path.join(tmp.dir, 'redis');
    await cp(fetched, src, { recursive: true });
    let t = Date.now();
    await execa('make', ['-j2', 'MALLOC=libc'], { cwd: src, env: ENV, stdio: 'ignore' });
    timings.make = Date.now() - t;
    for (const b of BINARIES) reference.set(b, readFileSync(path.join(src, 'src', b)));
    await execa('make', ['distclean'], { cwd: src, env: ENV, stdio: 'ignore' });
    t = Date.now();
    await execa(process.execPath, [ORION, 'build', '-q', '--cache-dir', path.join(tmp.dir, 'cache'), '--', 'MALLOC=libc'], { cwd: src, env: ENV, stdio: 'ignore' });
    timings.orionCold = Date.now() - t;
  }, 900_000);

  afterAll(async () => {
    console.log(`redis timings (ms): ${JSON.stringify(timings)}`);
    await tmp?.cleanup();
  });

  it('produces every Redis binary byte-identical to make in the same directory, executable', () => {
    for (const b of BINARIES) {
      const built = readFileSync(path.join(src, 'src', b));
      expect(built.equals(reference.get(b)!), `${b} differs from make's`).toBe(true);
      expect(statSync(path.join(src, 'src', b)).mode & 0o777, `${b}'s mode`).toBe(0o755);
    }
  });

  it('builds a server that answers PING', async () => {
    const port = await freePort();
    const server = spawn(path.join(src, 'src/redis-server'), ['--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    try {
      let reply = '';
      for (let i = 0; i < 100 && reply !== 'PONG'; i++) {
        await new Promise((r) => setTimeout(r, 100));
        try {
          reply = (await execa(path.join(src, 'src/redis-cli'), ['-p', String(port), 'ping'])).stdout.trim();
        } catch {
          reply = '';
        }
      }
      expect(reply).toBe('PONG');
    } finally {
      server.kill('SIGKILL');
    }
  });

  it('rebuilds nothing on a second run and make then finds everything up to date', async () => {
    const out = (await execa(process.execPath, [ORION, 'build', '--cache-dir', path.join(tmp.dir, 'cache'), '--', 'MALLOC=libc'], { cwd: src, env: ENV, stdin: 'ignore' })).stdout;
    const compiledAgain = out.split('\n').filter((l) => /\] (CC|CXX|LD|AR|INSTALL) /.test(l) && !l.includes('(cached)'));
    expect(compiledAgain).toEqual([]);
    // make -q exits 0 only when nothing is out of date for it either.
    const q = await execa('make', ['-q', '-C', 'src', ...BINARIES, 'MALLOC=libc'], { cwd: src, env: ENV, stdio: 'ignore', reject: false });
    expect(q.exitCode).toBe(0);
  });

  it('after a comment-only edit runs the one compile, serves the rest from the cache, and make agrees', async () => {
    appendFileSync(path.join(src, 'src/t_string.c'), '\n/* a comment */\n');
    const out = (await execa(process.execPath, [ORION, 'build', '--cache-dir', path.join(tmp.dir, 'cache'), '--', 'MALLOC=libc'], { cwd: src, env: ENV, stdin: 'ignore' })).stdout;
    const ran = out.split('\n').filter((l) => /^\[\d+\/\d+\] /.test(l) && !/\((cached|up to date)\)/.test(l)).map((l) => l.replace(/^\[\d+\/\d+\] /, ''));
    expect(ran).toEqual(['CC src/t_string.o']);
    expect(out).toMatch(/INSTALL src\/redis-sentinel \(cached\)/);
    for (const b of BINARIES) expect(readFileSync(path.join(src, 'src', b)).equals(reference.get(b)!), `${b} differs from make's`).toBe(true);
    // The relink make would do is a cache hit: its output is made newer than the object, so make -q agrees.
    const q = await execa('make', ['-q', '-C', 'src', ...BINARIES, 'MALLOC=libc'], { cwd: src, env: ENV, stdio: 'ignore', reject: false });
    expect(q.exitCode).toBe(0);
  });
});
