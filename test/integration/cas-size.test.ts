/**
 * A head's CAS kept within --cas-size with real processes: a build over the
 * size leaves the head holding more only while its blobs are recent (--cas-keep);
 * a head started later on that data directory trims it back under the size,
 * removing the least recently used blobs; a build afterwards still succeeds,
 * re-running what lost its cached outputs, and its binary runs.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, copyFixture, orionBuild, run, scratch } from '../helpers/build.js';
import { startHeadProcess, startNodeProcess, waitFor, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';

/** Bytes of blob files in the head's CAS (sharded ab/<hash> files, and x/ copies). */
function casBytes(dataDir: string): number {
  let n = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'tmp') walk(p);
      } else if (/^[0-9a-f]{64}$/.test(e.name)) n += statSync(p).size;
    }
  };
  walk(path.join(dataDir, 'cas'));
  return n;
}

describe('orion head --cas-size', () => {
  let base: string;
  const daemons: Daemon[] = [];
  const MiB = 1024 * 1024;

  beforeAll(async () => {
    base = await scratch('cas-size');
  });

  afterAll(async () => {
    for (const d of daemons) await d.kill('SIGKILL');
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('trims the least recently used blobs back under the size, and builds stay correct', async () => {
    const dataDir = path.join(base, 'head');
    const flags = ['--cas-size', '1MiB', '--cas-keep', '4s'];
    const head1 = await startHeadProcess(dataDir, flags);
    daemons.push(head1);
    const node = startNodeProcess(head1.address, 'cs-n1', path.join(base, 'n1'), ['--no-sandbox', '--slots', '2']);
    daemons.push(node);
    await waitForActiveNodes(head1.address, 1);

    // A project whose tree alone is over the size: 3 MiB of data no action reads.
    const dir = await copyFixture('make-project', path.join(base, 'proj'));
    writeFileSync(path.join(dir, 'data.bin'), randomBytes(3 * MiB));
    const first = await orionBuild(dir, { cacheDir: path.join(base, 'cache1'), head: head1.address, env: baseEnv() });
    expect(first.code, first.stderr).toBe(0);
    expect(first.summary.where['cs-n1']).toBeGreaterThan(0);
    // Everything was used within --cas-keep: nothing could go yet.
    expect(casBytes(dataDir)).toBeGreaterThan(3 * MiB);

    // Later, a head started on that data directory trims at its start.
    await new Promise((r) => setTimeout(r, 5_000));
    await head1.kill('SIGTERM');
    const head2 = await startHeadProcess(dataDir, ['--port', String(Number(head1.address.split(':')[1])), ...flags]);
    daemons.push(head2);
    await waitFor('the trim at start', () => head2.output().includes('removed least recently used blobs from the CAS'), 20_000);
    const line = head2.output().split('\n').find((l) => l.includes('removed least recently used blobs'))!;
    expect(JSON.parse(line)).toMatchObject({ maxMiB: 1 });
    expect(JSON.parse(line).removed).toBeGreaterThan(0);
    expect(casBytes(dataDir)).toBeLessThanOrEqual(1 * MiB);

    // A fresh checkout at the same path builds correctly against the trimmed head.
    await waitForActiveNodes(head2.address, 1);
    await rm(dir, { recursive: true });
    await copyFixture('make-project', dir);
    writeFileSync(path.join(dir, 'data.bin'), randomBytes(3 * MiB));
    const second = await orionBuild(dir, { cacheDir: path.join(base, 'cache2'), head: head2.address, env: baseEnv() });
    expect(second.code, second.stderr + head2.output()).toBe(0);
    // The cached results whose outputs were trimmed are misses now, run again on the node.
    expect(second.summary.where['cs-n1'], second.stderr).toBeGreaterThan(0);
    const hello = await run([path.join(dir, 'hello')], { cwd: dir });
    expect(hello.code).toBe(0);
  }, 90_000);
});
