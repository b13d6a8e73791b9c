/** Keeping a disk CAS within its size (cas/store-trim.ts, cas/store-trimmer.ts, touch on use in disk-blob-store.ts). */
import { createHash } from 'node:crypto';
import { existsSync, linkSync, mkdtempSync, rmSync, statSync, utimesSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { trimDiskStore } from '../../cas/store-trim.js';
import { startStoreTrimmer } from '../../cas/store-trimmer.js';
import type { Digest } from '../../cas/types.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'orion-trim-'));
  dirs.push(d);
  return d;
}

const blob = (i: number, size = 1000): { d: Digest; data: Buffer } => {
  const data = Buffer.alloc(size, i);
  return { d: { hash: createHash('sha256').update(data).digest('hex'), sizeBytes: size }, data };
};
const fileOf = (dir: string, d: Digest) => path.join(dir, d.hash.slice(0, 2), d.hash);
const NOW = 1_800_000_000_000;
/** Sets the blob's last use to `ageMs` before NOW. */
const usedAgo = (dir: string, d: Digest, ageMs: number) => utimesSync(fileOf(dir, d), (NOW - ageMs) / 1000, (NOW - ageMs) / 1000);

describe('trimDiskStore', () => {
  it('removes the least recently used blobs down to the low-water mark, and nothing while under the size', async () => {
    const dir = tmp();
    const store = createDiskBlobStore(dir, { durable: false });
    const blobs = Array.from({ length: 10 }, (_, i) => blob(i));
    for (const [i, b] of blobs.entries()) {
      await store.put(b.d, b.data);
      usedAgo(dir, b.d, (10 - i) * 3_600_000); // blob 0 the oldest
    }
    const under = await trimDiskStore(dir, { maxBytes: 10_000, keepMs: 60_000, now: () => NOW });
    expect(under).toEqual({ files: 10, bytesBefore: 10_000, bytesAfter: 10_000, removed: 0, over: false });

    // 10,000 bytes over a 6,000 limit: down to 90% of it (5,400), oldest first.
    const r = await trimDiskStore(dir, { maxBytes: 6_000, keepMs: 60_000, now: () => NOW });
    expect(r).toEqual({ files: 10, bytesBefore: 10_000, bytesAfter: 5_000, removed: 5, over: false });
    expect(blobs.map((b) => existsSync(fileOf(dir, b.d)))).toEqual([false, false, false, false, false, true, true, true, true, true]);
    // What is gone reads as absent; what is left reads back.
    expect(await store.has(blobs[0]!.d)).toBe(false);
    expect(await store.get(blobs[9]!.d)).toEqual(blobs[9]!.data);
  });

  it('keeps blobs used within keepMs whatever the size, and says it is still over', async () => {
    const dir = tmp();
    const store = createDiskBlobStore(dir, { durable: false });
    const blobs = Array.from({ length: 4 }, (_, i) => blob(i));
    for (const [i, b] of blobs.entries()) {
      await store.put(b.d, b.data);
      usedAgo(dir, b.d, i === 0 ? 7_200_000 : 60_000); // one old, three used a minute ago
    }
    const r = await trimDiskStore(dir, { maxBytes: 1_000, keepMs: 3_600_000, now: () => NOW });
    expect(r).toMatchObject({ removed: 1, bytesAfter: 3_000, over: true });
    expect(blobs.map((b) => existsSync(fileOf(dir, b.d)))).toEqual([false, true, true, true]);
  });

  it('skips a blob with other hard links (removing it would free nothing) and counts executable copies', async () => {
    const dir = tmp();
    const store = createDiskBlobStore(dir, { durable: false });
    const [a, b, c] = [blob(1), blob(2), blob(3)];
    for (const x of [a, b, c]) await store.put(x.d, x.data);
    linkSync(fileOf(dir, a.d), path.join(tmp(), 'exec-root-input'));
    const exe = await store.localExecutablePath!(c.d);
    for (const x of [a, b, c]) usedAgo(dir, x.d, 7_200_000);
    utimesSync(exe!, (NOW - 7_200_000) / 1000, (NOW - 7_200_000) / 1000);
    const r = await trimDiskStore(dir, { maxBytes: 1_500, keepMs: 60_000, now: () => NOW });
    expect(r.files).toBe(4);
    expect(existsSync(fileOf(dir, a.d))).toBe(true);
    expect(r.bytesAfter).toBe(1_000);
    expect(r.removed).toBe(3);
  });
});

describe('a disk store with touchAfterMs', () => {
  it('sets a looked-for blob\'s mtime to now once it is older than touchAfterMs, so a trim keeps what is used', async () => {
    const dir = tmp();
    const store = createDiskBlobStore(dir, { durable: false, touchAfterMs: 600_000 });
    const [used, idle] = [blob(1), blob(2)];
    await store.put(used.d, used.data);
    await store.put(idle.d, idle.data);
    const hourAgo = (Date.now() - 3_600_000) / 1000;
    for (const x of [used, idle]) utimesSync(fileOf(dir, x.d), hourAgo, hourAgo);
    expect(await store.findMissing([used.d])).toEqual([]);
    // The touch is not awaited by the lookup.
    await new Promise((r) => setTimeout(r, 50));
    expect(statSync(fileOf(dir, used.d)).mtimeMs).toBeGreaterThan(Date.now() - 60_000);
    expect(statSync(fileOf(dir, idle.d)).mtimeMs).toBeLessThan(Date.now() - 3_000_000);
    const r = await trimDiskStore(dir, { maxBytes: 1_500, keepMs: 1_800_000 });
    expect(r.removed).toBe(1);
    expect(await store.has(used.d)).toBe(true);
    expect(await store.has(idle.d)).toBe(false);
  });

  it('records the use of a large blob read whole or streamed (a ByteStream read), as of a small one', async () => {
    const dir = tmp();
    const store = createDiskBlobStore(dir, { durable: false, touchAfterMs: 600_000 });
    const [whole, streamed, small] = [blob(1, 2 * 1024 * 1024), blob(2, 2 * 1024 * 1024), blob(3)];
    for (const x of [whole, streamed, small]) await store.put(x.d, x.data);
    const hourAgo = (Date.now() - 3_600_000) / 1000;
    for (const x of [whole, streamed, small]) utimesSync(fileOf(dir, x.d), hourAgo, hourAgo);
    expect((await store.get(whole.d)).equals(whole.data)).toBe(true);
    const chunks: Buffer[] = [];
    for await (const c of store.getStream(streamed.d, 1024, 4096)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(streamed.data.subarray(1024, 1024 + 4096))).toBe(true);
    expect(statSync(fileOf(dir, whole.d)).mtimeMs).toBeGreaterThan(Date.now() - 60_000);
    expect(statSync(fileOf(dir, streamed.d)).mtimeMs).toBeGreaterThan(Date.now() - 60_000);
    expect(statSync(fileOf(dir, small.d)).mtimeMs, 'not read').toBeLessThan(Date.now() - 3_000_000);
  });

  it('leaves mtimes alone without touchAfterMs', async () => {
    const dir = tmp();
    const store = createDiskBlobStore(dir, { durable: false });
    const b = blob(1);
    await store.put(b.d, b.data);
    const hourAgo = (Date.now() - 3_600_000) / 1000;
    utimesSync(fileOf(dir, b.d), hourAgo, hourAgo);
    expect(await store.has(b.d)).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    expect(statSync(fileOf(dir, b.d)).mtimeMs).toBeLessThan(Date.now() - 3_000_000);
  });
});

describe('startStoreTrimmer', () => {
  it('trims at start, on its timer and after a tenth of maxBytes written, only when ready, and stops with its signal', async () => {
    const dir = tmp();
    const store = createDiskBlobStore(dir, { durable: false });
    const logs: string[] = [];
    const log = { info: (_: unknown, m: string) => void logs.push(m), warn: (_: unknown, m: string) => void logs.push(`warn: ${m}`) };
    let tick: () => void = () => undefined;
    let ready = false;
    const ac = new AbortController();
    const put = async (i: number) => {
      const b = blob(i);
      await store.put(b.d, b.data);
      usedAgo(dir, b.d, 7_200_000 - i * 60_000); // a minute apart: recency is kept to the minute
      return b;
    };
    for (let i = 0; i < 5; i++) await put(i);
    const trimmer = startStoreTrimmer({ dir, maxBytes: 3_000, keepMs: 60_000, now: () => NOW, everyMs: 1, log, signal: ac.signal, ready: () => ready, every: (fn) => ((tick = fn), () => (tick = () => undefined)) });
    // Not ready at start: nothing removed.
    expect(await trimmer.trimNow()).toBeUndefined();
    expect(existsSync(fileOf(dir, blob(0).d))).toBe(true);
    ready = true;
    tick();
    const r = await trimmer.trimNow();
    expect(r).toMatchObject({ bytesAfter: 2_000, over: false });
    expect(logs).toContain('removed least recently used blobs from the CAS');
    // Growth: 300 bytes (a tenth of 3,000) written starts a trim without the timer.
    for (let i = 10; i < 13; i++) await put(i);
    trimmer.wrote(299);
    await new Promise((r) => setTimeout(r, 20));
    expect((await trimDiskStore(dir, { maxBytes: 1e9, keepMs: 0 })).bytesBefore).toBe(5_000);
    trimmer.wrote(1);
    // The trim it started ran before this one (one at a time), which finds nothing left to do.
    const after = await trimmer.trimNow();
    expect(after).toMatchObject({ bytesBefore: 2_000, removed: 0 });
    // A trim skipped while not ready runs once the owner says it may be.
    ready = false;
    for (let i = 20; i < 23; i++) await put(i);
    expect(await trimmer.trimNow()).toBeUndefined();
    ready = true;
    trimmer.maybeReady();
    expect(await trimmer.trimNow()).toMatchObject({ removed: 0, bytesBefore: 2_000 });
    ac.abort();
    tick();
    expect(await trimmer.trimNow()).toBeUndefined();
  });

  it('calls overdue when a trim is skipped while the store is estimated over its size, and not again while a trim that could not help is recent', async () => {
    const dir = tmp();
    const store = createDiskBlobStore(dir, { durable: false });
    const log = { info: () => undefined, warn: () => undefined };
    let now = NOW;
    let ready = true;
    let overdue = 0;
    const ac = new AbortController();
    for (let i = 0; i < 2; i++) {
      const b = blob(i);
      await store.put(b.d, b.data);
      usedAgo(dir, b.d, 7_200_000);
    }
    const trimmer = startStoreTrimmer({ dir, maxBytes: 3_000, keepMs: 60_000, now: () => now, everyMs: 1, log, signal: ac.signal, ready: () => ready, overdue: () => void overdue++, every: () => () => undefined });
    expect(await trimmer.trimNow()).toMatchObject({ bytesAfter: 2_000, over: false });
    // Busy: a skipped trim under the size (2,000 + 900 written) asks nothing.
    ready = false;
    trimmer.wrote(900);
    expect(await trimmer.trimNow()).toBeUndefined();
    expect(overdue).toBe(0);
    // Over it (2,000 + 1,200): the owner is told, at each skipped trim.
    trimmer.wrote(300);
    await new Promise((r) => setTimeout(r, 20));
    expect(overdue).toBe(1);
    expect(await trimmer.trimNow()).toBeUndefined();
    expect(overdue).toBe(2);
    // Drained: the trim runs; everything was used just now, so it stays over the size.
    for (let i = 10; i < 14; i++) {
      const b = blob(i);
      await store.put(b.d, b.data);
      usedAgo(dir, b.d, 0);
    }
    for (let i = 0; i < 2; i++) usedAgo(dir, blob(i).d, 0);
    ready = true;
    trimmer.maybeReady();
    expect(await trimmer.trimNow()).toMatchObject({ over: true, removed: 0 });
    // Busy again: draining cannot help until some of it may have aged (keepMs / 6).
    ready = false;
    expect(await trimmer.trimNow()).toBeUndefined();
    expect(overdue).toBe(2);
    now += 10_000;
    expect(await trimmer.trimNow()).toBeUndefined();
    expect(overdue).toBe(3);
    ac.abort();
  });
});
