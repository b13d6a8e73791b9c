// Putting a kept exec root back reads only the directories whose entries its action changed:
// the others carry their stamp (mtime 2000-01-01, ctime as recorded). node:fs is wrapped to
// record which directories the cache lists.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { fromDigestKey } from '../../cas/digest.js';
import { buildTreeFromDisk } from '../../cas/merkle.js';
import type { BlobStore } from '../../cas/blob-store.js';
import { createExecRootCache } from '../../node/exec-root-cache.js';
import { useTempDirs } from '../cas/tmpdir.js';

const listed = vi.hoisted(() => [] as string[]);
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const readdirSync = ((p: string, o?: unknown) => {
    listed.push(String(p));
    return (fs.readdirSync as (p: string, o?: unknown) => unknown)(p, o);
  }) as typeof fs.readdirSync;
  return { ...fs, default: { ...fs, readdirSync }, readdirSync };
});

const tempDir = useTempDirs();
let tmp: string;
let store: BlobStore;

beforeEach(async () => {
  tmp = await tempDir();
  store = createDiskBlobStore(join(tmp, 'cas'));
});

async function putFiles(files: Record<string, string>) {
  const root = join(tmp, 'spec');
  for (const [rel, content] of Object.entries(files)) {
    await mkdir(join(root, rel, '..'), { recursive: true });
    await writeFile(join(root, rel), content);
  }
  const tree = await buildTreeFromDisk(root);
  for (const [key, bytes] of tree.directories) await store.put(fromDigestKey(key), bytes);
  for (const [key, file] of tree.files) await store.put(fromDigestKey(key), await readFile(file));
  return tree.rootDigest;
}

describe('exec root stamps', () => {
  it('reads, when putting a root back, only the directories whose entries its action changed', async () => {
    const files: Record<string, string> = {};
    for (const d of ['src', 'src/sub', 'deps/a', 'deps/b/c', 'tests/unit']) for (let i = 0; i < 5; i++) files[`${d}/f${i}.c`] = `${d} ${i}\n`;
    const root = await putFiles(files);
    const roots = createExecRootCache({ local: store, dir: join(tmp, 'templates') });
    const first = await roots.lease(root);
    first.release();
    const l = await roots.lease(root);
    // The action writes its output next to its source, and a temp file in a new directory.
    await writeFile(join(l.dir, 'src/f0.o'), 'object');
    await mkdir(join(l.dir, 'deps/b/c/tmp'));
    await writeFile(join(l.dir, 'deps/b/c/tmp/x'), 'x');
    listed.length = 0;
    l.release();
    // The two changed directories, and the new one (emptied to remove it); no unchanged one.
    expect(listed.map((p) => p.slice(l.dir.length + 1)).sort()).toEqual(['deps/b/c', 'deps/b/c/tmp', 'src']);
    // Put back once, the same root is clean: nothing is listed the next time.
    const again = await roots.lease(root);
    listed.length = 0;
    again.release();
    expect(listed).toEqual([]);
    roots.close();
  });
});
