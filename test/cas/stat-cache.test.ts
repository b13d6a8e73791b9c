import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.js';
import { digestOf, digestOfFile } from '../../cas/digest.js';
import { buildTreeFromDisk } from '../../cas/merkle.js';
import { createStatCache, FINE_RACY_WINDOW_MS, RACY_WINDOW_MS, racyWindowMs } from '../../cas/stat-cache.js';
import type { Digest } from '../../cas/types.js';
import { useTempDirs } from './tmpdir.js';

const tempDir = useTempDirs();

/** A hashing function that counts its calls. */
function countingHasher(): { hashFile: (p: string) => Promise<Digest>; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    hashFile: (p) => {
      calls.push(p);
      return digestOfFile(p);
    },
  };
}

/** A clock well past the files' mtimes, so none of them is racily clean. */
const laterClock = () => createManualClock(Date.now() + 60_000);

describe('stat cache', () => {
  it('hashes a file once and serves the digest from its stat afterwards', async () => {
    const dir = await tempDir();
    const path = join(dir, 'a.c');
    await writeFile(path, 'int a;');
    const h = countingHasher();
    const cache = createStatCache(join(dir, 'stat-cache.json'), { ...h, clock: laterClock() });
    expect(await cache.digestFileCached(path)).toEqual(digestOf(Buffer.from('int a;')));
    expect(await cache.digestFileCached(path)).toEqual(digestOf(Buffer.from('int a;')));
    expect(h.calls).toEqual([path]);
  });

  it('lists the files it had to hash: new or changed since they were cached, not those served from their stat', async () => {
    const dir = await tempDir();
    const [a, b] = [join(dir, 'a.c'), join(dir, 'b.c')];
    const file = join(dir, 'stat-cache.json');
    await writeFile(a, 'int a;');
    await writeFile(b, 'int b;');
    const first = createStatCache(file, { clock: laterClock() });
    await first.digestFileCached(a);
    await first.digestFileCached(b);
    expect([...first.rehashed()].sort()).toEqual([a, b]);
    await first.save();
    await writeFile(b, 'int bb;');
    const second = createStatCache(file, { clock: laterClock() });
    await second.digestFileCached(a);
    await second.digestFileCached(b);
    expect([...second.rehashed()]).toEqual([b]);
  });

  it('persists across instances once saved', async () => {
    const dir = await tempDir();
    const path = join(dir, 'a.c');
    const file = join(dir, 'stat-cache.json');
    await writeFile(path, 'int a;');
    const first = createStatCache(file, { clock: laterClock() });
    await first.digestFileCached(path);
    await first.save();
    const h = countingHasher();
    const second = createStatCache(file, { ...h, clock: laterClock() });
    expect(await second.digestFileCached(path)).toEqual(digestOf(Buffer.from('int a;')));
    expect(h.calls).toEqual([]);
  });

  it('trusts an unchanged stat without reading the file (same-size rewrite, stale stat)', async () => {
    const dir = await tempDir();
    const path = join(dir, 'a.c');
    await writeFile(path, 'int a;');
    const st = await stat(path);
    const cache = createStatCache(join(dir, 'sc.json'), { clock: laterClock() });
    expect(await cache.digestFileCached(path, st)).toEqual(digestOf(Buffer.from('int a;')));
    await writeFile(path, 'int b;');
    expect(await cache.digestFileCached(path, st)).toEqual(digestOf(Buffer.from('int a;')));
  });

  it('re-hashes a file whose size or mtime changed', async () => {
    const dir = await tempDir();
    const path = join(dir, 'a.c');
    await writeFile(path, 'int a;');
    const h = countingHasher();
    const cache = createStatCache(join(dir, 'sc.json'), { ...h, clock: laterClock() });
    await cache.digestFileCached(path);
    await writeFile(path, 'int abc;');
    expect(await cache.digestFileCached(path)).toEqual(digestOf(Buffer.from('int abc;')));
    await utimes(path, new Date(1_000_000), new Date(1_000_000));
    await cache.digestFileCached(path);
    expect(h.calls.length).toBe(3);
  });

  it('does not cache a file modified within the racy window of hashing it (sub-second timestamps: 100 ms)', async () => {
    const dir = await tempDir();
    const path = join(dir, 'a.c');
    await writeFile(path, 'int a;');
    const st = await stat(path);
    expect(racyWindowMs(st)).toBe(FINE_RACY_WINDOW_MS);
    const newest = Math.max(st.mtimeMs, st.ctimeMs);
    const racy = countingHasher();
    const early = createStatCache(join(dir, 'sc1.json'), { ...racy, clock: createManualClock(newest + FINE_RACY_WINDOW_MS / 2) });
    await early.digestFileCached(path);
    await early.digestFileCached(path);
    expect(racy.calls.length).toBe(2);
    // Well past a kernel tick, but within what whole-second file systems need: cached.
    const settled = countingHasher();
    const later = createStatCache(join(dir, 'sc2.json'), { ...settled, clock: createManualClock(newest + FINE_RACY_WINDOW_MS * 3) });
    await later.digestFileCached(path);
    await later.digestFileCached(path);
    expect(settled.calls.length).toBe(1);
  });

  it('remembers the digest of a file Orion just wrote even inside the racy window, across instances, until its stat changes', async () => {
    const dir = await tempDir();
    const path = join(dir, 'out.o');
    await writeFile(path, 'object');
    const st = await stat(path);
    const newest = Math.max(st.mtimeMs, st.ctimeMs);
    const file = join(dir, 'sc.json');
    const writer = createStatCache(file, { ...countingHasher(), clock: createManualClock(newest) });
    writer.remember(path, st, digestOf(Buffer.from('object')));
    // A directory, or a stat whose size is not the digest's, is not remembered.
    writer.remember(dir, await stat(dir), digestOf(Buffer.from('object')));
    writer.remember(join(dir, 'other'), st, digestOf(Buffer.from('other size')));
    await writer.save();
    const h = countingHasher();
    const next = createStatCache(file, { ...h, clock: createManualClock(newest + 1) });
    expect(await next.digestFileCached(path)).toEqual(digestOf(Buffer.from('object')));
    expect(h.calls).toEqual([]);
    expect(Object.keys((JSON.parse(await readFile(file, 'utf8')) as { entries: object }).entries)).toEqual([path]);
    // Rewritten afterwards: the stat differs, so it is hashed again.
    await writeFile(path, 'object v2');
    expect(await next.digestFileCached(path)).toEqual(digestOf(Buffer.from('object v2')));
    expect(h.calls).toEqual([path]);
  });

  it('waits RACY_WINDOW_MS for files whose timestamps are whole seconds', async () => {
    const dir = await tempDir();
    const path = join(dir, 'a.c');
    await writeFile(path, 'int a;');
    const real = await stat(path);
    const whole = Object.assign(Object.create(Object.getPrototypeOf(real)), real, { mtimeMs: 1_700_000_000_000, ctimeMs: 1_700_000_000_000 });
    expect(racyWindowMs(whole)).toBe(RACY_WINDOW_MS);
    const h = countingHasher();
    const cache = createStatCache(join(dir, 'sc.json'), { ...h, clock: createManualClock(1_700_000_000_000 + RACY_WINDOW_MS / 2) });
    await cache.digestFileCached(path, whole);
    await cache.digestFileCached(path, whole);
    expect(h.calls.length).toBe(2);
    const h2 = countingHasher();
    const cache2 = createStatCache(join(dir, 'sc2.json'), { ...h2, clock: createManualClock(1_700_000_000_000 + RACY_WINDOW_MS + 1) });
    await cache2.digestFileCached(path, whole);
    await cache2.digestFileCached(path, whole);
    expect(h2.calls.length).toBe(1);
  });

  it('starts empty when the cache file is corrupt', async () => {
    const dir = await tempDir();
    const file = join(dir, 'sc.json');
    await writeFile(file, '{"version":1,"entr');
    const path = join(dir, 'a.c');
    await writeFile(path, 'int a;');
    const cache = createStatCache(file, { clock: laterClock() });
    expect(await cache.digestFileCached(path)).toEqual(digestOf(Buffer.from('int a;')));
    await cache.save();
    expect(JSON.parse(await readFile(file, 'utf8')).entries[path][4]).toBe(digestOf(Buffer.from('int a;')).hash);
  });

  it('lets buildTreeFromDisk skip re-hashing unchanged files', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src');
    await mkdir(join(src, 'sub'), { recursive: true });
    await writeFile(join(src, 'a.c'), 'int a;');
    await writeFile(join(src, 'sub', 'b.c'), 'int b;');
    const h = countingHasher();
    const statCache = createStatCache(join(dir, 'sc.json'), { ...h, clock: laterClock() });
    const first = await buildTreeFromDisk(src, { statCache });
    const second = await buildTreeFromDisk(src, { statCache });
    expect(second.rootDigest).toEqual(first.rootDigest);
    expect((await buildTreeFromDisk(src)).rootDigest).toEqual(first.rootDigest);
    expect(h.calls.length).toBe(2);
  });
});

describe('stat cache peek', () => {
  it('answers an unchanged file from the saved cache without hashing, and nothing for a changed one', async () => {
    const dir = await tempDir();
    const path = join(dir, 'a.c');
    await writeFile(path, 'int a;');
    const file = join(dir, 'stat-cache.json');
    const first = createStatCache(file, { clock: laterClock() });
    await first.digestFileCached(path);
    await first.save();

    const h = countingHasher();
    const second = createStatCache(file, { ...h, clock: laterClock() });
    const { lstatSync } = await import('node:fs');
    expect(second.peek(path, lstatSync(path))).toEqual(digestOf(Buffer.from('int a;')));
    await writeFile(path, 'int b;');
    expect(second.peek(path, lstatSync(path))).toBeUndefined();
    expect(h.calls).toEqual([]);
    expect(second.rehashed().size).toBe(0);
  });
});
