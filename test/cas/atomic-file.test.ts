import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../../cas/atomic-file.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { digestOf } from '../../cas/digest.js';
import { useTempDirs } from './tmpdir.js';

const tempDir = useTempDirs();

describe('writeFileAtomic', () => {
  it('writes the whole file with its mode and leaves no temp file, durable or not', async () => {
    const dir = await tempDir();
    for (const durable of [true, false]) {
      const file = join(dir, `sub-${durable}`, 'deeper', 'f.json');
      await writeFileAtomic(file, 'first', { durable, mode: 0o600 });
      await writeFileAtomic(file, Buffer.from('second'), { durable, mode: 0o600 });
      expect(await readFile(file, 'utf8')).toBe('second');
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect(await readdir(join(dir, `sub-${durable}`, 'deeper'))).toEqual(['f.json']);
    }
  });

  it('makes the directory again when it was removed after a first write (it remembers the directories it made)', async () => {
    const dir = await tempDir();
    for (const durable of [false, true]) {
      const file = join(dir, `cache-${durable}`, 'x', 'entry');
      await writeFileAtomic(file, 'a', { durable });
      await rm(join(dir, `cache-${durable}`), { recursive: true });
      await writeFileAtomic(file, 'b', { durable });
      expect(await readFile(file, 'utf8')).toBe('b');
    }
  });
});

describe('disk blob store, small blobs by synchronous calls (syncIo)', () => {
  it('stores a small blob read-only and reads it back, even after its directories were removed', async () => {
    const dir = await tempDir();
    const store = createDiskBlobStore(join(dir, 'cas'), { durable: false, syncIo: true });
    const a = Buffer.from('blob a');
    await store.put(digestOf(a), a);
    expect(await store.get(digestOf(a))).toEqual(a);
    expect((await stat(store.localPath!(digestOf(a))!)).mode & 0o777).toBe(0o444);
    await rm(join(dir, 'cas'), { recursive: true });
    await store.put(digestOf(a), a);
    expect(await store.get(digestOf(a))).toEqual(a);
    expect(await readdir(join(dir, 'cas', 'tmp'))).toEqual([]);
  });

  it('refuses a small blob whose bytes do not match its digest, storing nothing; durable (flushed through the thread pool) or synchronous', async () => {
    for (const opts of [{ durable: false, syncIo: true }, { durable: true }]) {
      const dir = await tempDir();
      const store = createDiskBlobStore(join(dir, 'cas'), opts);
      const d = digestOf(Buffer.from('right'));
      await expect(store.put(d, Buffer.from('wrong'))).rejects.toThrow(/digest|mismatch/i);
      expect(await store.has(d)).toBe(false);
      await store.put(d, Buffer.from('right'));
      expect((await store.get(d)).toString()).toBe('right');
      expect((await stat(store.localPath!(d)!)).mode & 0o777).toBe(0o444);
      expect(await readdir(join(dir, 'cas', 'tmp'))).toEqual([]);
    }
  });
});
