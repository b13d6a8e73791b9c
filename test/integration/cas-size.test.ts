/**
 * A head's CAS kept within --cas-size with real processes: a build over the
 * size leaves the head holding more only while its blobs are recent (--cas-keep);
 * a head started later on that data directory trims it back under the size,
 * removing the least recently used blobs only; a build afterwards is served
 * from the cached results that kept their outputs, and its binary runs. A
 * node's local CAS is trimmed the same way, and its next actions fetch again.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, copyFixture, orionBuild, run, scratch } from '../helpers/build.js';
import { startHeadProcess, startNodeProcess, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';

/** Bytes of blob files in the CAS under `dataDir` (a head's data dir or a node's work dir): sharded ab/<hash> files, and x/ copies. */
function casBytes(dataDir: string, sub = ''): number {
  let n = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'tmp') walk(p);
      } else if (/^[0-9a-f]{64}$/.test(e.name)) n += statSync(p).size;
    }
  };
  walk(path.join(dataDir, sub, 'cas'));
  return n;
}

const MiB = 1024 * 1024;

/** Sets the mtime of every blob file under `dir` (a local cache's cas/) to `ageMs` ago: last used then. */
function ageBlobs(dir: string, ageMs: number) {
  const t = (Date.now() - ageMs) / 1000;
  for (const f of readdirSync(dir, { recursive: true }) as string[]) if (/[0-9a-f]{64}$/.test(f)) utimesSync(path.join(dir, f), t, t);
}

describe('orion build --cache-size', () => {
  let base: string;

  beforeAll(async () => {
    base = await scratch('cache-size');
  });

  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('trims the local cache after a build, at most once an hour, the blobs used least recently first; builds after it stay correct', async () => {
    const dir = path.join(base, 'proj');
    await mkdir(dir);
    // A step whose 3 MiB output the step cache keeps, and a compile.
    writeFileSync(path.join(dir, 'Makefile'), 'all: big.bin hello\nbig.bin: seed\n\thead -c 3145728 /dev/urandom > big.bin\nhello: hello.c\n\tcc -o hello hello.c\n');
    writeFileSync(path.join(dir, 'seed'), '1\n');
    writeFileSync(path.join(dir, 'hello.c'), '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n');
    const cacheDir = path.join(base, 'cache');
    const cas = path.join(cacheDir, 'cas');
    const build = (extra: string[] = []) => orionBuild(dir, { cacheDir, args: ['--cache-size', '1MiB', '-v', ...extra], env: baseEnv() });

    const first = await build();
    expect(first.code, first.stderr).toBe(0);
    // Over the size, but all of it was used just now: nothing goes.
    expect(first.stderr).toMatch(/^orion: local cache: 0 least recently used blob\(s\) removed, 3 MiB left of 1 MiB \(over: the rest was used within the hour\)$/m);
    expect(casBytes(base, 'cache')).toBeGreaterThan(3 * MiB);

    // Within the hour: no second trim, even over the size.
    const again = await build();
    expect(again.code).toBe(0);
    expect(again.stderr).not.toContain('local cache:');

    // Two hours later (the blobs and the last trim aged), a no-op build trims it under the size.
    ageBlobs(cas, 7_200_000);
    const old = (Date.now() - 7_200_000) / 1000;
    utimesSync(path.join(cas, '.last-trim'), old, old);
    const later = await build();
    expect(later.code, later.stderr).toBe(0);
    expect(later.stderr).toMatch(/^orion: local cache: [1-9]\d* least recently used blob\(s\) removed, [01] MiB left of 1 MiB$/m);
    expect(casBytes(base, 'cache')).toBeLessThanOrEqual(0.9 * MiB);

    // The outputs gone, the build runs again what lost its cached results, and the program works.
    await rm(path.join(dir, 'big.bin'));
    await rm(path.join(dir, 'hello'));
    const rebuilt = await build();
    expect(rebuilt.code, rebuilt.stderr).toBe(0);
    expect(statSync(path.join(dir, 'big.bin')).size).toBe(3 * MiB);
    expect((await run([path.join(dir, 'hello')], { cwd: dir })).stdout).toBe('hi\n');
  }, 60_000);

  it('removes the bookkeeping no build used for 30 days (action results, step effects, graphs, memos) with the hourly trim, and keeps what builds use', async () => {
    const dir = path.join(base, 'proj2');
    await mkdir(dir);
    writeFileSync(path.join(dir, 'Makefile'), 'hello: hello.c\n\tcc -o hello hello.c\n');
    writeFileSync(path.join(dir, 'hello.c'), '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n');
    const cacheDir = path.join(base, 'cache2');
    const build = () => orionBuild(dir, { cacheDir, args: ['-v'], env: baseEnv() });
    expect((await build()).code).toBe(0);
    const filesUnder = (sub: string) => (existsSync(path.join(cacheDir, sub)) ? (readdirSync(path.join(cacheDir, sub), { recursive: true }) as string[]).map((f) => path.join(cacheDir, sub, f)).filter((f) => statSync(f).isFile()) : []);
    const used = filesUnder('ac');
    expect(used.length).toBeGreaterThan(0);
    // Entries of builds long gone: an action result and a graph nothing asks for any more.
    const stale = [path.join(cacheDir, 'ac', 'ff', `${'f'.repeat(64)}-140.json`), path.join(cacheDir, 'graphs', `${'e'.repeat(64)}.json`)];
    for (const f of stale) {
      await mkdir(path.dirname(f), { recursive: true });
      await writeFile(f, '{}');
    }
    // Forty days pass for everything, the last trim included.
    const old = (Date.now() - 40 * 86_400_000) / 1000;
    for (const sub of ['ac', 'steps', 'graphs', 'stat', 'history', 'manifests', 'trees', 'includes']) for (const f of filesUnder(sub)) utimesSync(f, old, old);
    utimesSync(path.join(cacheDir, 'cas', '.last-trim'), old, old);

    const noop = await build();
    expect(noop.code, noop.stderr).toBe(0);
    expect(noop.stderr).toMatch(/^orion: local cache: [1-9]\d* file\(s\) of entries no build used for 30 days removed$/m);
    for (const f of stale) expect(existsSync(f), f).toBe(false);
    // What this build used was served from the cache, and so marked used: still there, with a fresh mtime.
    expect(noop.summary.cached).toBeGreaterThan(0);
    for (const f of used) expect(statSync(f).mtimeMs).toBeGreaterThan(Date.now() - 60_000);

    // The program removed: served from the entries that stayed, and it runs.
    await rm(path.join(dir, 'hello'));
    const again = await build();
    expect(again.code, again.stderr).toBe(0);
    expect(again.summary.cached).toBeGreaterThan(0);
    expect((await run([path.join(dir, 'hello')], { cwd: dir })).stdout).toBe('hi\n');
  }, 60_000);
});

describe('orion head --cas-size', () => {
  let base: string;
  const daemons: Daemon[] = [];

  beforeAll(async () => {
    base = await scratch('cas-size');
  });

  afterAll(async () => {
    for (const d of daemons) await d.kill('SIGKILL');
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('trims the least recently used blobs back under the size, and a build afterwards is still served from the cache', async () => {
    const dataDir = path.join(base, 'head');
    const flags = ['--cas-size', '1MiB', '--cas-keep', '1h'];
    const head1 = await startHeadProcess(dataDir, flags);
    daemons.push(head1);
    const node = startNodeProcess(head1.address, 'cs-n1', path.join(base, 'n1'), ['--no-sandbox', '--slots', '2']);
    daemons.push(node);
    await waitForActiveNodes(head1.address, 1);

    // A project whose tree alone is over the size: 3 MiB of data no action reads.
    const dir = await copyFixture('make-project', path.join(base, 'proj'));
    const data = randomBytes(3 * MiB);
    const dataHash = createHash('sha256').update(data).digest('hex');
    writeFileSync(path.join(dir, 'data.bin'), data);
    const first = await orionBuild(dir, { cacheDir: path.join(base, 'cache1'), head: head1.address, env: baseEnv() });
    expect(first.code, first.stderr).toBe(0);
    expect(first.summary.where['cs-n1']).toBeGreaterThan(0);
    // Everything was used within --cas-keep: nothing could go.
    expect(casBytes(dataDir)).toBeGreaterThan(3 * MiB);

    // The data file is the least recently used blob (its last use two hours ago); later, a head
    // started on that data directory trims at its start.
    const dataBlob = path.join(dataDir, 'cas', dataHash.slice(0, 2), dataHash);
    const twoHoursAgo = (Date.now() - 7_200_000) / 1000;
    utimesSync(dataBlob, twoHoursAgo, twoHoursAgo);
    const others = casBytes(dataDir) - 3 * MiB;
    expect(others).toBeLessThan(0.9 * MiB);
    await head1.kill('SIGTERM');
    const head2 = await startHeadProcess(dataDir, ['--port', String(Number(head1.address.split(':')[1])), '--http-port', '0', ...flags]);
    daemons.push(head2);
    await waitFor('the trim at start', () => head2.output().includes('removed least recently used blobs from the CAS'), 20_000);
    const line = head2.output().split('\n').find((l) => l.includes('removed least recently used blobs'))!;
    // Only the least recently used blob had to go to get under 90% of the size.
    expect(JSON.parse(line)).toMatchObject({ maxMiB: 1, removed: 1 });
    expect(existsSync(dataBlob)).toBe(false);
    expect(casBytes(dataDir)).toBe(others);
    // Prometheus: the size after the trim, the size it keeps to, the blobs it removed.
    const dashboard = await waitFor('the dashboard', () => /orion head dashboard on (\S+)\//.exec(head2.output())?.[1]);
    const metrics = await (await fetch(`${dashboard}/metrics`)).text();
    expect(metrics).toContain(`\norion_cas_bytes ${others}\n`);
    expect(metrics).toContain(`\norion_cas_max_bytes ${MiB}\n`);
    expect(metrics).toContain('\norion_cas_blobs_removed_total 1\n');

    // A fresh checkout at the same path builds correctly against the trimmed head.
    await waitForActiveNodes(head2.address, 1);
    await rm(dir, { recursive: true });
    await copyFixture('make-project', dir);
    writeFileSync(path.join(dir, 'data.bin'), data);
    const second = await orionBuild(dir, { cacheDir: path.join(base, 'cache2'), head: head2.address, env: baseEnv() });
    expect(second.code, second.stderr + head2.output()).toBe(0);
    // The cached results kept all their outputs: every compile and link is a hit from the head
    // (the data file went up again with the tree).
    expect(second.summary.fromCluster, second.stderr).toBe(first.summary.where['cs-n1']);
    expect(second.summary.where['cs-n1']).toBeUndefined();
    // Over the size again, with nothing old enough to remove: the head keeps it all and says so.
    expect(casBytes(dataDir)).toBeGreaterThan(3 * MiB);
    await waitFor('the over-size warning', () => head2.output().includes('the CAS is over its size, and what is left was used too recently to remove'), 10_000);
    const hello = await run([path.join(dir, 'hello')], { cwd: dir });
    expect(hello.code).toBe(0);
  }, 90_000);

  it('orion node --cache-size trims its local CAS when no action runs, and its next actions fetch what they need again', async () => {
    const head = await startHeadProcess(path.join(base, 'head-n'));
    daemons.push(head);
    const workDir = path.join(base, 'nc');
    const flags = ['--no-sandbox', '--slots', '2', '--cache-size', '1MiB', '--cache-keep', '3s'];
    const n1 = startNodeProcess(head.address, 'nc-1', workDir, flags);
    daemons.push(n1);
    await waitForActiveNodes(head.address, 1);
    const dir = await copyFixture('make-project', path.join(base, 'proj-n'));
    writeFileSync(path.join(dir, 'data.bin'), randomBytes(3 * MiB));
    const first = await orionBuild(dir, { cacheDir: path.join(base, 'cache-n1'), head: head.address, env: baseEnv() });
    expect(first.code, first.stderr).toBe(0);
    expect(first.summary.where['nc-1']).toBeGreaterThan(0);
    // The node fetched the whole tree, the 3 MiB file too.
    expect(casBytes(workDir)).toBeGreaterThan(3 * MiB);

    await new Promise((r) => setTimeout(r, 4_000));
    await n1.kill('SIGTERM');
    const n2 = startNodeProcess(head.address, 'nc-1', workDir, flags);
    daemons.push(n2);
    await waitFor('the trim at start', () => n2.output().includes('removed least recently used blobs from the CAS'), 20_000);
    expect(casBytes(workDir)).toBeLessThanOrEqual(1 * MiB);
    await waitForActiveNodes(head.address, 1);

    // An edit: its compile and the links above it run on the node, which fetches the tree again.
    await writeFile(path.join(dir, 'src', 'hello.c'), (await readFile(path.join(dir, 'src', 'hello.c'), 'utf8')) + '\nint orion_cache_size_test;\n');
    const second = await orionBuild(dir, { cacheDir: path.join(base, 'cache-n1'), head: head.address, env: baseEnv() });
    expect(second.code, second.stderr + n2.output()).toBe(0);
    expect(second.summary.where['nc-1'], second.stderr).toBeGreaterThan(0);
    const hello = await run([path.join(dir, 'hello')], { cwd: dir });
    expect(hello.code).toBe(0);
  }, 90_000);

  it('a node whose CAS goes over its size while it is busy takes no new actions until the running ones end, trims, and goes on', async () => {
    const head = await startHeadProcess(path.join(base, 'head-d'));
    daemons.push(head);
    const workDir = path.join(base, 'nd');
    const node = startNodeProcess(head.address, 'nd-1', workDir, ['--no-sandbox', '--slots', '2', '--cache-size', '1MiB', '--cache-keep', '3s']);
    daemons.push(node);
    await waitForActiveNodes(head.address, 1);
    const dir = await copyFixture('make-project', path.join(base, 'proj-d'));
    // The tree the first action fetches is 3 MiB over the node's size: it goes over while busy.
    writeFileSync(path.join(dir, 'data.bin'), randomBytes(3 * MiB));
    const first = await orionBuild(dir, { cacheDir: path.join(base, 'cache-d1'), head: head.address, env: baseEnv() });
    expect(first.code, first.stderr + node.output()).toBe(0);
    expect(first.summary.where['nd-1'], first.stderr).toBeGreaterThan(5);
    const out = node.output();
    const drained = out.indexOf('the local CAS is over its size: taking no new actions until the running ones end, to trim it');
    expect(drained, out).toBeGreaterThan(-1);
    expect(out.indexOf('trimmed the local CAS: taking actions again', drained), out).toBeGreaterThan(drained);
    expect((await run([path.join(dir, 'hello')], { cwd: dir })).code).toBe(0);

    // Once what it fetched is older than --cache-keep, the next trim removes it.
    await new Promise((r) => setTimeout(r, 4_000));
    writeFileSync(path.join(dir, 'data.bin'), randomBytes(3 * MiB));
    await writeFile(path.join(dir, 'src', 'hello.c'), (await readFile(path.join(dir, 'src', 'hello.c'), 'utf8')) + '\nint orion_drain_test;\n');
    const before = node.output().length;
    const second = await orionBuild(dir, { cacheDir: path.join(base, 'cache-d1'), head: head.address, env: baseEnv() });
    expect(second.code, second.stderr + node.output()).toBe(0);
    // Removed: the first data.bin and what else only the first tree held (the new data.bin alone keeps it over 1 MiB).
    await waitFor('a trim that removed blobs', () => /"removed":[1-9]/.test(node.output().slice(before)), 20_000);
    expect(casBytes(workDir)).toBeLessThan(5 * MiB);
  }, 90_000);
});
