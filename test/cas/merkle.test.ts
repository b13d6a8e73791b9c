import { createReadStream } from 'node:fs';
import { chmod, lstat, mkdir, readFile, readlink, stat, symlink, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import type { BlobStore } from '../../cas/blob-store.js';
import { digestKey, digestOf, EMPTY_DIGEST } from '../../cas/digest.js';
import { decodeDirectory, encodeDirectory } from '../../cas/directory.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { buildTreeFromDisk, buildTreeFromEntries, collectTree, materializeTree, treeOf, type DiskTree } from '../../cas/merkle.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import type { Digest, Directory } from '../../cas/types.js';
import { useTempDirs } from './tmpdir.js';

const tempDir = useTempDirs();

const HELLO_C = 'int main(){}';
const RUN_SH = '#!/bin/sh\necho hi\n';

/** src/ hello.c, include/a.h, include/same.h (same content as a.h), bin/run.sh (0755), empty, emptydir/, link -> hello.c, include/up -> ../bin/run.sh */
async function makeSourceTree(): Promise<string> {
  const root = join(await tempDir(), 'src');
  await mkdir(join(root, 'include'), { recursive: true });
  await mkdir(join(root, 'bin'));
  await mkdir(join(root, 'emptydir'));
  await writeFile(join(root, 'hello.c'), HELLO_C);
  await writeFile(join(root, 'include', 'a.h'), '#pragma once\n');
  await writeFile(join(root, 'include', 'same.h'), '#pragma once\n');
  await writeFile(join(root, 'bin', 'run.sh'), RUN_SH, { mode: 0o755 });
  await chmod(join(root, 'bin', 'run.sh'), 0o755);
  await writeFile(join(root, 'empty'), '');
  await symlink('hello.c', join(root, 'link'));
  await symlink('../bin/run.sh', join(root, 'include', 'up'));
  return root;
}

async function upload(tree: DiskTree, store: BlobStore): Promise<void> {
  for (const bytes of tree.directories.values()) await store.put(digestOf(bytes), bytes);
  for (const [key, path] of tree.files) {
    const [hash, size] = key.split('/');
    await store.putStream({ hash: hash!, sizeBytes: Number(size) }, createReadStream(path));
  }
}

async function rejection(p: Promise<unknown>): Promise<OrionError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OrionError);
  return err as OrionError;
}

function rootDirectory(tree: { rootDigest: Digest; directories: Map<string, Buffer> }): Directory {
  return decodeDirectory(tree.directories.get(digestKey(tree.rootDigest))!);
}

describe('buildTreeFromDisk', () => {
  it('records files with exec bits, symlinks verbatim and empty directories in canonical order', async () => {
    const tree = await buildTreeFromDisk(await makeSourceTree());
    const root = rootDirectory(tree);
    expect(root.files).toEqual([
      { name: 'empty', digest: EMPTY_DIGEST, isExecutable: false },
      { name: 'hello.c', digest: digestOf(Buffer.from(HELLO_C)), isExecutable: false },
    ]);
    expect(root.directories.map((d) => d.name)).toEqual(['bin', 'emptydir', 'include']);
    expect(root.directories[1]!.digest).toEqual(EMPTY_DIGEST);
    expect(root.symlinks).toEqual([{ name: 'link', target: 'hello.c' }]);
    const bin = decodeDirectory(tree.directories.get(digestKey(root.directories[0]!.digest))!);
    expect(bin.files).toEqual([{ name: 'run.sh', digest: digestOf(Buffer.from(RUN_SH)), isExecutable: true }]);
    // 5 distinct directories but emptydir is the empty Directory: root, bin, emptydir, include.
    expect(tree.directories.size).toBe(4);
    // a.h and same.h share content: one entry.
    expect(tree.files.size).toBe(4);
  });

  it('is independent of where the tree lives and equals buildTreeFromEntries for the same files', async () => {
    const a = await buildTreeFromDisk(await makeSourceTree());
    const b = await buildTreeFromDisk(await makeSourceTree());
    expect(b.rootDigest).toEqual(a.rootDigest);
    const header = digestOf(Buffer.from('#pragma once\n'));
    const fromEntries = buildTreeFromEntries(
      [
        { path: 'hello.c', digest: digestOf(Buffer.from(HELLO_C)), isExecutable: false },
        { path: 'include/same.h', digest: header, isExecutable: false },
        { path: './include/a.h', digest: header, isExecutable: false },
        { path: 'bin/run.sh', digest: digestOf(Buffer.from(RUN_SH)), isExecutable: true },
        { path: 'empty', digest: EMPTY_DIGEST, isExecutable: false },
      ],
      [
        { path: 'link', target: 'hello.c' },
        { path: 'include/up', target: '../bin/run.sh' },
      ],
    );
    const withoutEmptyDir = await buildTreeFromDisk(await makeSourceTree(), { include: (p) => p !== 'emptydir' });
    expect(fromEntries.rootDigest).toEqual(withoutEmptyDir.rootDigest);
    expect(fromEntries.rootDigest).not.toEqual(a.rootDigest);
  });

  it('skips fifos and whatever include rejects', async () => {
    const root = await makeSourceTree();
    execFileSync('mkfifo', [join(root, 'pipe')]);
    const tree = await buildTreeFromDisk(root, { include: (p) => !p.startsWith('include') });
    const dir = rootDirectory(tree);
    expect([...dir.files, ...dir.directories, ...dir.symlinks].map((n) => n.name).sort()).toEqual(['bin', 'empty', 'emptydir', 'hello.c', 'link']);
  });

  it('treeOf gives the Tree message of a built tree', async () => {
    const tree = await buildTreeFromDisk(await makeSourceTree());
    const t = treeOf(tree);
    expect(encodeDirectory(t.root)).toEqual(tree.directories.get(digestKey(tree.rootDigest)));
    expect(t.children.length).toBe(3);
  });
});

describe('buildTreeFromEntries', () => {
  it("rejects absolute paths and '..' with INVALID_ARGUMENT", () => {
    for (const [path, message] of [
      ['/etc/passwd', 'path "/etc/passwd" is absolute, expected a relative path'],
      ['a/../b', `path "a/../b" contains '..'`],
      ['', 'path "" names no file'],
    ] as const) {
      let caught: unknown;
      try {
        buildTreeFromEntries([{ path, digest: EMPTY_DIGEST, isExecutable: false }]);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(OrionError);
      expect((caught as OrionError).code).toBe(Code.INVALID_ARGUMENT);
      expect((caught as OrionError).message).toBe(message);
    }
  });

  it('rejects a path that is both a file and a directory, and duplicate paths', () => {
    const f = (path: string) => ({ path, digest: EMPTY_DIGEST, isExecutable: false });
    expect(() => buildTreeFromEntries([f('a'), f('a/b')])).toThrow('path "a/b": "a" is not a directory');
    expect(() => buildTreeFromEntries([f('a/b'), f('a')])).toThrow('duplicate path "a"');
    expect(() => buildTreeFromEntries([f('x'), f('./x')])).toThrow('duplicate path "./x"');
  });
});

describe('materializeTree', () => {
  it('round-trips a tree through a disk store, hard-linking files with exec bits and symlinks preserved', async () => {
    const src = await makeSourceTree();
    const tree = await buildTreeFromDisk(src);
    const store = createDiskBlobStore(join(await tempDir(), 'cas'));
    await upload(tree, store);
    const dest = join(await tempDir(), 'dest');
    await materializeTree(tree.rootDigest, store, dest, { link: true });

    expect(await readFile(join(dest, 'hello.c'), 'utf8')).toBe(HELLO_C);
    expect(await readFile(join(dest, 'bin/run.sh'), 'utf8')).toBe(RUN_SH);
    expect(await readFile(join(dest, 'include/a.h'), 'utf8')).toBe('#pragma once\n');
    expect(await readFile(join(dest, 'empty'), 'utf8')).toBe('');
    expect(await readlink(join(dest, 'link'))).toBe('hello.c');
    expect(await readlink(join(dest, 'include/up'))).toBe('../bin/run.sh');
    expect((await stat(join(dest, 'emptydir'))).isDirectory()).toBe(true);

    const hello = await stat(join(dest, 'hello.c'));
    expect(hello.mode & 0o777).toBe(0o444);
    expect(hello.ino).toBe((await stat(store.localPath!(digestOf(Buffer.from(HELLO_C)))!)).ino);
    expect(hello.nlink).toBeGreaterThan(1);
    const run = await stat(join(dest, 'bin/run.sh'));
    expect(run.mode & 0o777).toBe(0o555);
    expect(run.ino).toBe((await stat((await store.localExecutablePath!(digestOf(Buffer.from(RUN_SH))))!)).ino);
    expect((await stat(store.localPath!(digestOf(Buffer.from(RUN_SH)))!)).mode & 0o777).toBe(0o444);
    expect((await stat(join(dest, 'include/a.h'))).ino).toBe((await stat(join(dest, 'include/same.h'))).ino);

    expect((await buildTreeFromDisk(dest)).rootDigest).toEqual(tree.rootDigest);
  });

  it('copies files (read-only, one fetch per blob) when the store is not on disk', async () => {
    const tree = await buildTreeFromDisk(await makeSourceTree());
    const memory = createMemoryBlobStore();
    await upload(tree, memory);
    const fetched: string[] = [];
    const counting: BlobStore = {
      ...memory,
      getStream(d, offset, limit) {
        fetched.push(digestKey(d));
        return memory.getStream(d, offset, limit);
      },
    };
    const dest = join(await tempDir(), 'dest');
    await materializeTree(tree.rootDigest, counting, dest, { link: true });
    expect((await buildTreeFromDisk(dest)).rootDigest).toEqual(tree.rootDigest);
    expect(fetched.length).toBe(new Set(fetched).size);
    expect(fetched).toContain(digestKey(digestOf(Buffer.from('#pragma once\n'))));
    const a = await stat(join(dest, 'include/a.h'));
    expect(a.nlink).toBe(1);
    expect(a.mode & 0o777).toBe(0o444);
    expect((await stat(join(dest, 'bin/run.sh'))).mode & 0o777).toBe(0o555);
    expect((await lstat(join(dest, 'link'))).isSymbolicLink()).toBe(true);
  });

  async function storeWith(dirs: Directory[]): Promise<{ store: BlobStore; digests: Digest[] }> {
    const store = createMemoryBlobStore();
    const digests: Digest[] = [];
    for (const d of dirs) {
      const bytes = encodeDirectory(d);
      await store.put(digestOf(bytes), bytes);
      digests.push(digestOf(bytes));
    }
    return { store, digests };
  }

  it('rejects symlinks that are absolute or escape the root with INVALID_ARGUMENT, writing nothing', async () => {
    for (const [target, why] of [
      ['/etc/passwd', 'has absolute target "/etc/passwd"'],
      ['../../outside', 'target "../../outside" escapes the tree root'],
      ['../x/../../y', 'target "../x/../../y" escapes the tree root'],
    ] as const) {
      const sub: Directory = { files: [], directories: [], symlinks: [{ name: 'evil', target }] };
      const { store, digests } = await storeWith([sub, { files: [], directories: [{ name: 'sub', digest: digestOf(encodeDirectory(sub)) }], symlinks: [] }]);
      const dest = join(await tempDir(), 'dest');
      const err = await rejection(materializeTree(digests[1]!, store, dest));
      expect(err.code).toBe(Code.INVALID_ARGUMENT);
      expect(err.message).toContain(`symlink "sub/evil" ${why}`);
      await expect(stat(dest)).rejects.toMatchObject({ code: 'ENOENT' });
    }
  });

  it("accepts a '..' symlink that stays inside the root", async () => {
    const sub: Directory = { files: [], directories: [], symlinks: [{ name: 'ok', target: '../sibling' }] };
    const { store, digests } = await storeWith([sub, { files: [], directories: [{ name: 'sub', digest: digestOf(encodeDirectory(sub)) }], symlinks: [] }]);
    const dest = join(await tempDir(), 'dest');
    await materializeTree(digests[1]!, store, dest);
    expect(await readlink(join(dest, 'sub/ok'))).toBe('../sibling');
  });

  it('rejects an invalid Directory (unsorted) before writing anything', async () => {
    const f = (name: string) => ({ name, digest: EMPTY_DIGEST, isExecutable: false });
    const { store, digests } = await storeWith([{ files: [f('b'), f('a')], directories: [], symlinks: [] }]);
    const dest = join(await tempDir(), 'dest');
    const err = await rejection(materializeTree(digests[0]!, store, dest));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toContain('files not sorted by name: "b" before "a"');
    await expect(stat(dest)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('reports a missing file blob as FAILED_PRECONDITION with the digest', async () => {
    const absent = digestOf(Buffer.from('not uploaded'));
    const { store, digests } = await storeWith([{ files: [{ name: 'x.c', digest: absent, isExecutable: false }], directories: [], symlinks: [] }]);
    const err = await rejection(materializeTree(digests[0]!, store, join(await tempDir(), 'dest'), { link: true }));
    expect(err.code).toBe(Code.FAILED_PRECONDITION);
    expect(err.missing).toEqual([absent]);
  });
});

describe('materializeTree cancellation', () => {
  it('stops with CANCELLED when its signal is aborted', async () => {
    const tree = await buildTreeFromDisk(await makeSourceTree());
    const store = createMemoryBlobStore();
    await upload(tree, store);
    const ac = new AbortController();
    ac.abort();
    const err = await rejection(materializeTree(tree.rootDigest, store, join(await tempDir(), 'dest'), { signal: ac.signal }));
    expect(err.code).toBe(Code.CANCELLED);
  });
});

describe('collectTree', () => {
  it('lists every directory once and every distinct file digest', async () => {
    const tree = await buildTreeFromDisk(await makeSourceTree());
    const store = createMemoryBlobStore();
    await upload(tree, store);
    const { directories, fileDigests } = await collectTree(tree.rootDigest, store);
    expect(directories[0]).toEqual(rootDirectory(tree));
    expect(directories.length).toBe(4);
    expect(fileDigests.map(digestKey).sort()).toEqual([...tree.files.keys()].sort());
  });

  it('fails with FAILED_PRECONDITION listing the missing directory blobs', async () => {
    const sub1 = digestOf(Buffer.from('sub1'));
    const sub2 = digestOf(Buffer.from('sub2'));
    const root = encodeDirectory({ files: [], directories: [{ name: 'a', digest: sub1 }, { name: 'b', digest: sub2 }], symlinks: [] });
    const store = createMemoryBlobStore();
    await store.put(digestOf(root), root);
    const err = await rejection(collectTree(digestOf(root), store));
    expect(err.code).toBe(Code.FAILED_PRECONDITION);
    expect(err.missing).toEqual([sub1, sub2]);
  });
});
