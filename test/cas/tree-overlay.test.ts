import { describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import type { BlobStore } from '../../cas/blob-store.js';
import { digestOf } from '../../cas/digest.js';
import { decodeDirectory } from '../../cas/directory.js';
import { buildTreeFromEntries, collectTree, type TreeFileEntry, type TreeSymlinkEntry } from '../../cas/merkle.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import { createTreeOverlay } from '../../cas/tree-overlay.js';
import type { Digest } from '../../cas/types.js';

const file = (path: string, content: string, isExecutable = false): TreeFileEntry => ({ path, digest: digestOf(Buffer.from(content)), isExecutable });

/** Stores every directory of the tree built from `files` and returns its root. */
async function storeTree(store: BlobStore, files: TreeFileEntry[], symlinks: TreeSymlinkEntry[] = []): Promise<Digest> {
  const tree = buildTreeFromEntries(files, symlinks);
  for (const bytes of tree.directories.values()) await store.put(digestOf(bytes), bytes);
  return tree.rootDigest;
}

async function expectError(p: Promise<unknown>, code: Code, message: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OrionError);
  expect((err as OrionError).code).toBe(code);
  expect((err as OrionError).message).toBe(message);
}

const BASE = [file('main.c', 'int main'), file('src/util.c', 'util'), file('src/include/util.h', 'h'), file('README', 'readme')];
const BASE_LINKS = [{ path: 'src/link.h', target: 'include/util.h' }];

describe('tree overlay', () => {
  it('adds files into new and existing nested directories with the same canonical root as a tree built from the combined list', async () => {
    const store = createMemoryBlobStore();
    const overlay = createTreeOverlay(store);
    const base = await storeTree(store, BASE, BASE_LINKS);
    // Out of order, with names whose byte order differs from a naive sort (upper case first, '-' before '.').
    const added = [file('src/util.o', 'obj', false), file('out/bin/app', 'elf', true), file('src/include/gen/Version.h', 'v'), file('src/include/a-b.h', 'ab'), file('Zeta', 'z')];
    const root = await overlay.overlay(base, added);
    expect(root).toEqual(buildTreeFromEntries([...BASE, ...added], BASE_LINKS).rootDigest);
    // Every directory of the result is in the store, so the tree can be walked from it.
    const walked = await collectTree(root, store);
    expect(walked.directories).toHaveLength(6); // root, src, src/include, src/include/gen, out, out/bin
    expect(new Set(walked.fileDigests.map((d) => d.hash))).toEqual(new Set([...BASE, ...added].map((f) => f.digest.hash)));
  });

  it('replaces an existing file (content and executable bit) and a symlink at the path of a new file', async () => {
    const store = createMemoryBlobStore();
    const overlay = createTreeOverlay(store);
    const base = await storeTree(store, BASE, BASE_LINKS);
    const root = await overlay.overlay(base, [file('src/util.c', 'rewritten', true), file('src/link.h', 'now a file')]);
    const expected = [file('main.c', 'int main'), file('src/util.c', 'rewritten', true), file('src/include/util.h', 'h'), file('README', 'readme'), file('src/link.h', 'now a file')];
    expect(root).toEqual(buildTreeFromEntries(expected).rootDigest);
  });

  it('leaves the base tree as it was, and returns it unchanged for an empty file list', async () => {
    const store = createMemoryBlobStore();
    const overlay = createTreeOverlay(store);
    const base = await storeTree(store, BASE);
    const before = decodeDirectory(await store.get(base));
    await overlay.overlay(base, [file('new.c', 'n'), file('src/util.c', 'changed')]);
    expect(decodeDirectory(await store.get(base))).toEqual(before);
    expect(await overlay.overlay(base, [])).toBe(base);
  });

  it('applies successive overlays on top of each other like one combined list, the later file winning', async () => {
    const store = createMemoryBlobStore();
    const overlay = createTreeOverlay(store);
    const base = await storeTree(store, BASE);
    const r1 = await overlay.overlay(base, [file('out/a.o', 'a1')]);
    const r2 = await overlay.overlay(r1, [file('out/b.o', 'b'), file('out/a.o', 'a2')]);
    expect(r2).toEqual(buildTreeFromEntries([...BASE, file('out/a.o', 'a2'), file('out/b.o', 'b')]).rootDigest);
  });

  it('refuses a path whose parent is a file or a symlink with INVALID_ARGUMENT', async () => {
    const store = createMemoryBlobStore();
    const overlay = createTreeOverlay(store);
    const base = await storeTree(store, BASE, BASE_LINKS);
    await expectError(overlay.overlay(base, [file('main.c/x.o', 'x')]), Code.INVALID_ARGUMENT, 'cannot add main.c/x.o: main.c is a file');
    await expectError(overlay.overlay(base, [file('src/util.c/deep/x.o', 'x')]), Code.INVALID_ARGUMENT, 'cannot add src/util.c/deep/x.o: util.c is a file');
    await expectError(overlay.overlay(base, [file('src/link.h/x', 'x')]), Code.INVALID_ARGUMENT, 'cannot add src/link.h/x: link.h is a file');
    // A file added earlier in the same list counts too.
    await expectError(overlay.overlay(base, [file('gen', 'g'), file('gen/x.h', 'x')]), Code.INVALID_ARGUMENT, 'cannot add gen/x.h: gen is a file');
  });

  it('refuses a file at the path of an existing or newly added directory with INVALID_ARGUMENT', async () => {
    const store = createMemoryBlobStore();
    const overlay = createTreeOverlay(store);
    const base = await storeTree(store, BASE);
    await expectError(overlay.overlay(base, [file('src/include', 'x')]), Code.INVALID_ARGUMENT, 'cannot add file src/include: a directory has that path');
    await expectError(overlay.overlay(base, [file('gen/x.h', 'x'), file('gen', 'g')]), Code.INVALID_ARGUMENT, 'cannot add file gen: a directory has that path');
  });

  it.each(['', '/abs', 'a//b', 'a/../b', './a', 'a/'])('refuses the malformed path %j with INVALID_ARGUMENT', async (path) => {
    const store = createMemoryBlobStore();
    const overlay = createTreeOverlay(store);
    const base = await storeTree(store, BASE);
    const err = await overlay.overlay(base, [file(path, 'x')]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as OrionError).code).toBe(Code.INVALID_ARGUMENT);
  });

  it('says whether a root holds a file or symlink at a path (not a directory, not a missing path)', async () => {
    const store = createMemoryBlobStore();
    const overlay = createTreeOverlay(store);
    const base = await storeTree(store, BASE, BASE_LINKS);
    const root = await overlay.overlay(base, [file('out/bin/app', 'elf', true)]);
    expect(await overlay.has(root, 'main.c')).toBe(true);
    expect(await overlay.has(root, 'src/include/util.h')).toBe(true);
    expect(await overlay.has(root, 'src/link.h')).toBe(true);
    expect(await overlay.has(root, 'out/bin/app')).toBe(true);
    expect(await overlay.has(base, 'out/bin/app')).toBe(false);
    expect(await overlay.has(root, 'src/include')).toBe(false);
    expect(await overlay.has(root, 'src/missing.h')).toBe(false);
    expect(await overlay.has(root, 'nope/util.h')).toBe(false);
    expect(await overlay.has(root, 'main.c/x')).toBe(false);
  });

  it('fails with NOT_FOUND when the base tree is not in the store', async () => {
    const overlay = createTreeOverlay(createMemoryBlobStore());
    const missing = buildTreeFromEntries(BASE).rootDigest;
    const err = await overlay.overlay(missing, [file('a', 'a')]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as OrionError).code).toBe(Code.NOT_FOUND);
  });
});
