import { execFile } from 'node:child_process';
import { chmod, lstat, mkdir, readdir, readFile, readlink, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeEach, describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import type { BlobStore } from '../../cas/blob-store.js';
import { digestKey, digestOf, fromDigestKey } from '../../cas/digest.js';
import { encodeDirectory } from '../../cas/directory.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { buildTreeFromDisk, buildTreeFromEntries, materializeTree, type MerkleTree } from '../../cas/merkle.js';
import type { Digest, Directory } from '../../cas/types.js';
import { createExecRootCache, diffTrees, removePath, type ExecRootCache } from '../../node/exec-root-cache.js';
import { useTempDirs } from '../cas/tmpdir.js';

const execFileP = promisify(execFile);
const tempDir = useTempDirs();

/** A tree on disk: a plain file (string), an executable, a symlink or an empty directory, by relative path. */
type Entry = string | { x: string } | { link: string } | { dir: true };
type Spec = Record<string, Entry>;

let tmp: string;
let store: BlobStore;
let specs = 0;

beforeEach(async () => {
  tmp = await tempDir();
  store = createDiskBlobStore(join(tmp, 'cas'));
  specs = 0;
});

/** Writes `spec` to disk, hashes it with buildTreeFromDisk and puts its directories and files in the store. */
async function putSpec(spec: Spec): Promise<Digest> {
  const root = join(tmp, 'specs', String(++specs));
  await mkdir(root, { recursive: true });
  for (const [rel, e] of Object.entries(spec)) {
    const abs = join(root, rel);
    if (typeof e === 'object' && 'dir' in e) {
      await mkdir(abs, { recursive: true });
      continue;
    }
    await mkdir(join(abs, '..'), { recursive: true });
    if (typeof e === 'string') await writeFile(abs, e);
    else if ('x' in e) {
      await writeFile(abs, e.x);
      await chmod(abs, 0o755);
    } else await symlink(e.link, abs);
  }
  const tree = await buildTreeFromDisk(root);
  for (const [key, bytes] of tree.directories) await store.put(fromDigestKey(key), bytes);
  for (const [key, file] of tree.files) await store.put(fromDigestKey(key), await readFile(file));
  return tree.rootDigest;
}

async function putTree(t: MerkleTree, contents: string[] = []): Promise<Digest> {
  for (const [key, bytes] of t.directories) await store.put(fromDigestKey(key), bytes);
  for (const c of contents) await store.put(digestOf(Buffer.from(c)), Buffer.from(c));
  return t.rootDigest;
}

async function putDirectory(d: Directory): Promise<Digest> {
  const bytes = encodeDirectory(d);
  const digest = digestOf(bytes);
  await store.put(digest, bytes);
  return digest;
}

type Node = { kind: 'file'; mode: number; content: string } | { kind: 'link'; target: string } | { kind: 'dir' };

/** Every entry under `dir`: kind, file mode bits and content, symlink target. */
async function snapshot(dir: string, rel = '', out = new Map<string, Node>()): Promise<Map<string, Node>> {
  for (const name of (await readdir(join(dir, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = await lstat(join(dir, r));
    if (st.isDirectory()) {
      out.set(r, { kind: 'dir' });
      await snapshot(dir, r, out);
    } else if (st.isSymbolicLink()) out.set(r, { kind: 'link', target: await readlink(join(dir, r)) });
    else out.set(r, { kind: 'file', mode: st.mode & 0o7777, content: await readFile(join(dir, r), 'utf8') });
  }
  return out;
}

/** `dest` holds exactly the tree `root`, as materializeTree would write it. */
async function expectTree(dest: string, root: Digest): Promise<void> {
  expect(digestKey((await buildTreeFromDisk(dest)).rootDigest)).toBe(digestKey(root));
  const ref = join(tmp, 'ref', `${root.hash}-${Math.random().toString(36).slice(2)}`);
  await materializeTree(root, store, ref);
  expect(Object.fromEntries(await snapshot(dest))).toEqual(Object.fromEntries(await snapshot(ref)));
  await rm(ref, { recursive: true, force: true });
}

/** The real `cp -al`, counting its calls. */
function countingCopy() {
  const calls: { src: string; dest: string }[] = [];
  return {
    calls,
    copyLinks: async (src: string, dest: string) => {
      calls.push({ src, dest });
      await execFileP('cp', ['-al', '--', src, dest]);
    },
  };
}

async function rejection(p: Promise<unknown>): Promise<OrionError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OrionError);
  return err as OrionError;
}

/** A store that counts get() per digest. */
function countingStore(inner: BlobStore) {
  const gets: string[] = [];
  const s: BlobStore = { ...inner, get: (d) => (gets.push(digestKey(d)), inner.get(d)) };
  return { store: s, gets };
}

const BASE: Spec = {
  'src/a.c': 'int a;\n',
  'src/b.c': 'int b;\n',
  'src/same.c': 'int a;\n', // same blob as src/a.c
  'src/sub/deep.h': '#define DEEP\n',
  'bin/tool': { x: '#!/bin/sh\necho tool\n' },
  'include/x.h': 'x\n',
  'include/y/z.h': 'z\n',
  'lib/becomes-file/f.o': 'f\n',
  'lib/becomes-dir': 'plain\n',
  'empty.txt': '',
  lnk: { link: 'src/a.c' },
  'src/up': { link: '../include/x.h' },
};

const without = (spec: Spec, ...paths: string[]): Spec => Object.fromEntries(Object.entries(spec).filter(([p]) => !paths.some((q) => p === q || p.startsWith(`${q}/`))));

const deepFiles: Spec = {};
for (let i = 0; i < 20; i++) deepFiles[`deep/a/b/c/d/e/f${i}.txt`] = `deep ${i}\n`;

const VARIANTS: [string, Spec][] = [
  ['the template root itself', BASE],
  ['a root adding files in existing and new directories', { ...BASE, 'src/new.c': 'new\n', 'newdir/n.txt': 'n\n', 'src/sub/more.h': 'more\n' }],
  ["a root changing a file's content (whose old blob another path shares)", { ...BASE, 'src/a.c': 'int a = 2;\n' }],
  ['a root flipping executable bits both ways', { ...BASE, 'bin/tool': '#!/bin/sh\necho tool\n', 'src/b.c': { x: 'int b;\n' } }],
  ['a root removing a file', without(BASE, 'src/b.c')],
  ['a root removing a whole directory', without(BASE, 'include')],
  [
    'a root replacing a file by a directory and a directory by a file',
    { ...without(BASE, 'lib/becomes-file', 'lib/becomes-dir'), 'lib/becomes-file': 'now a file\n', 'lib/becomes-dir/inner/g.o': 'g\n' },
  ],
  [
    'a root adding and retargeting symlinks and replacing a file by a symlink and a symlink by a file',
    { ...without(BASE, 'include/x.h', 'src/up'), lnk: { link: 'src/b.c' }, newlink: { link: 'bin' }, 'include/x.h': { link: 'y/z.h' }, 'src/up': 'now a file\n' },
  ],
  ['a root replacing a symlink by a directory and a directory by a symlink', { ...without(BASE, 'lnk', 'include'), 'lnk/inside.txt': 'inside\n', include: { link: 'src' } }],
  ['a root adding empty directories', { ...BASE, empty: { dir: true }, 'src/sub/nothing': { dir: true } }],
  ['a root adding a deep new subtree', { ...BASE, ...deepFiles, 'deep/a/tool.sh': { x: 'run\n' }, 'deep/a/b/zero': '' }],
  ['a root emptying a file and filling the empty one', { ...BASE, 'src/b.c': '', 'empty.txt': 'not empty\n' }],
  ['the empty tree', {}],
];

describe('diffTrees', () => {
  const f = (path: string, content: string, isExecutable = false) => ({ path, digest: digestOf(Buffer.from(content)), isExecutable });

  it('returns an empty change without reading a directory when both trees are the same', async () => {
    const root = await putSpec(BASE);
    const c = countingStore(store);
    expect(await diffTrees(c.store, root, root)).toEqual({ files: [], symlinks: [], dirs: [], removed: [] });
    expect(c.gets).toEqual([]);
  });

  it('lists changed content, flipped executable bits and added files and directories', async () => {
    const from = await putTree(buildTreeFromEntries([f('a', 'A'), f('t', 'T'), f('d/x', 'X')]));
    const to = await putTree(buildTreeFromEntries([f('a', 'A2'), f('t', 'T', true), f('d/x', 'X'), f('e/y', 'Y'), f('e/g/z', 'Z', true)]));
    expect(await diffTrees(store, from, to)).toEqual({
      files: [f('a', 'A2'), f('t', 'T', true), f('e/y', 'Y'), f('e/g/z', 'Z', true)],
      symlinks: [],
      dirs: ['e', 'e/g'],
      removed: [],
    });
  });

  it('lists removed entries, and removes first an entry whose kind changes', async () => {
    const from = await putTree(buildTreeFromEntries([f('keep', 'K'), f('gone', 'G'), f('gonedir/x', 'X'), f('f2d', 'F'), f('d2f/x', 'X')], [{ path: 'l2f', target: 'keep' }]));
    const to = await putTree(buildTreeFromEntries([f('keep', 'K'), f('f2d/inner', 'I'), f('d2f', 'D'), f('l2f', 'L')]));
    expect(await diffTrees(store, from, to)).toEqual({
      files: [f('d2f', 'D'), f('l2f', 'L'), f('f2d/inner', 'I')],
      symlinks: [],
      dirs: ['f2d'],
      removed: ['gone', 'gonedir', 'd2f', 'l2f', 'f2d'],
    });
  });

  it('lists new and retargeted symlinks, removing the old link and a file a link replaces', async () => {
    const from = await putTree(buildTreeFromEntries([f('file', 'F'), f('sub/x', 'X')], [{ path: 'same', target: 'file' }, { path: 'moved', target: 'file' }]));
    const to = await putTree(
      buildTreeFromEntries([f('sub/x', 'X')], [
        { path: 'same', target: 'file' },
        { path: 'moved', target: 'sub/x' },
        { path: 'file', target: 'sub' },
        { path: 'sub/new', target: '../same' },
      ]),
    );
    expect(await diffTrees(store, from, to)).toEqual({
      files: [],
      symlinks: [
        { path: 'file', target: 'sub' },
        { path: 'moved', target: 'sub/x' },
        { path: 'sub/new', target: '../same' },
      ],
      dirs: [],
      removed: ['file', 'moved'],
    });
  });

  it('reads only the directories on the path to a change, skipping identical subtrees', async () => {
    const big: ReturnType<typeof f>[] = [];
    for (let i = 0; i < 10; i++) for (let j = 0; j < 5; j++) big.push(f(`big${i}/sub${j}/file`, `${i}.${j}`));
    const fromTree = buildTreeFromEntries([...big, f('a/b/c/leaf', 'old')]);
    const toTree = buildTreeFromEntries([...big, f('a/b/c/leaf', 'new')]);
    const from = await putTree(fromTree);
    const to = await putTree(toTree);
    const c = countingStore(store);
    expect(await diffTrees(c.store, from, to)).toEqual({ files: [f('a/b/c/leaf', 'new')], symlinks: [], dirs: [], removed: [] });
    // Both sides of root, a, a/b and a/b/c: 8 directories, not the 60 of each tree.
    expect(c.gets).toHaveLength(8);
    expect(fromTree.directories.size).toBe(1 + 10 + 50 + 3);
  });

  it('gives up (undefined) once the changes exceed the limit, not when they reach it', async () => {
    const from = await putTree(buildTreeFromEntries([f('a', 'A'), f('b', 'B')]));
    const to = await putTree(buildTreeFromEntries([f('a', 'A2'), f('c', 'C'), f('d/e', 'E')]));
    // Changes: a changed, b removed, c added, d/e added.
    expect(await diffTrees(store, from, to, 3)).toBeUndefined();
    expect(await diffTrees(store, from, to, 0)).toBeUndefined();
    expect(await diffTrees(store, from, to, 4)).toEqual({ files: [f('a', 'A2'), f('c', 'C'), f('d/e', 'E')], symlinks: [], dirs: ['d'], removed: ['b'] });
  });

  it.each([
    ['a file named ".."', (leaf: Digest) => ({ files: [{ name: '..', digest: leaf, isExecutable: false }], directories: [], symlinks: [] }), 'invalid file name ".."'],
    ['a symlink named "."', () => ({ files: [], directories: [], symlinks: [{ name: '.', target: 'x' }] }), 'invalid symlink name "."'],
    ['a file name with "/"', (leaf: Digest) => ({ files: [{ name: '../../escape', digest: leaf, isExecutable: false }], directories: [], symlinks: [] }), 'invalid file name "../../escape": contains \'/\''],
  ])('refuses a directory with %s, in a changed subtree and in a new one (INVALID_ARGUMENT)', async (_what, make, message) => {
    const leaf = digestOf(Buffer.from('pwned'));
    await store.put(leaf, Buffer.from('pwned'));
    const bad = await putDirectory(make(leaf));
    const good = await putDirectory({ files: [], directories: [], symlinks: [] });
    // The root itself is the bad directory (walked), and the bad directory is new under a new name (added).
    for (const to of [bad, await putDirectory({ files: [], directories: [{ name: 'sub', digest: bad }], symlinks: [] })]) {
      const err = await rejection(diffTrees(store, good, to));
      expect(err.code).toBe(Code.INVALID_ARGUMENT);
      expect(err.message).toContain(message);
    }
  });
});

describe('createExecRootCache', () => {
  function cache(opts: { maxChanges?: number } = {}): { roots: ExecRootCache; calls: { src: string; dest: string }[] } {
    const copy = countingCopy();
    return { roots: createExecRootCache({ local: store, dir: join(tmp, 'templates'), copyLinks: copy.copyLinks, ...opts }), calls: copy.calls };
  }

  it.each(VARIANTS)('materialises %s from the template exactly as materializeTree would', async (_what, spec) => {
    const base = await putSpec(BASE);
    const root = await putSpec(spec);
    const { roots, calls } = cache();
    await roots.materialize(base, join(tmp, 'd0'));
    await expectTree(join(tmp, 'd0'), base);
    await roots.materialize(root, join(tmp, 'd1'));
    await expectTree(join(tmp, 'd1'), root);
    // Both exec roots came from one template (the differences were applied, no rebuild).
    expect(calls.map((c) => c.dest)).toEqual([join(tmp, 'd0'), join(tmp, 'd1')]);
    expect(calls[1]!.src).toBe(calls[0]!.src);
    await expectTree(calls[0]!.src, base);
  });

  it('materialises a sequence of roots from one template, each one right', async () => {
    const { roots, calls } = cache();
    const digests = [];
    for (const [, spec] of VARIANTS) digests.push(await putSpec(spec));
    for (const [i, d] of digests.entries()) {
      await roots.materialize(d, join(tmp, `seq${i}`));
      await expectTree(join(tmp, `seq${i}`), d);
    }
    expect(new Set(calls.map((c) => c.src)).size).toBe(1);
    expect(calls).toHaveLength(VARIANTS.length);
  });

  it('never changes the template: files are read-only hard links, and removing or adding entries in an exec root shows neither in the template nor in later exec roots', async () => {
    const base = await putSpec(BASE);
    const changed = await putSpec({ ...BASE, 'src/a.c': 'int a = 3;\n', 'src/more.c': 'more\n' });
    const { roots, calls } = cache();
    const d0 = join(tmp, 'd0');
    await roots.materialize(base, d0);
    const template = calls[0]!.src;

    // Files are hard links to the template's (and the CAS's) read-only files, not copies.
    for (const rel of ['src/a.c', 'src/b.c', 'bin/tool', 'include/y/z.h']) {
      const [mine, theirs] = await Promise.all([stat(join(d0, rel)), stat(join(template, rel))]);
      expect(mine.ino).toBe(theirs.ino);
      expect(mine.mode & 0o222).toBe(0);
    }
    expect((await stat(join(d0, 'src/a.c'))).ino).toBe((await stat(store.localPath!(digestOf(Buffer.from('int a;\n')))!)).ino);
    expect((await stat(join(d0, 'bin/tool'))).mode & 0o777).toBe(0o555);

    // Materialising a different root elsewhere replaces entries in that root only.
    await roots.materialize(changed, join(tmp, 'd1'));
    await expectTree(join(tmp, 'd1'), changed);
    await expectTree(template, base);
    await expectTree(d0, base);

    // An action removing and adding entries in its exec root.
    await rm(join(d0, 'src/a.c'));
    await rm(join(d0, 'include'), { recursive: true });
    await rm(join(d0, 'lnk'));
    await writeFile(join(d0, 'src/junk.o'), 'junk');
    await mkdir(join(d0, 'out/obj'), { recursive: true });
    await writeFile(join(d0, 'out/obj/x.o'), 'x');
    await expectTree(template, base);
    await roots.materialize(base, join(tmp, 'd2'));
    await expectTree(join(tmp, 'd2'), base);
    await roots.materialize(changed, join(tmp, 'd3'));
    await expectTree(join(tmp, 'd3'), changed);
    expect(new Set(calls.map((c) => c.src))).toEqual(new Set([template]));
  });

  it('rebuilds the template for a root that differs by more than maxChanges, and materialises it right', async () => {
    const base = await putSpec(BASE);
    const far = await putSpec({ ...deepFiles, 'other/file': 'o\n' });
    const near = await putSpec({ ...deepFiles, 'other/file': 'o2\n' });
    const close = await putSpec({ ...BASE, 'src/a.c': 'int a = 4;\n' });
    const { roots, calls } = cache({ maxChanges: 3 });
    await roots.materialize(base, join(tmp, 'd0'));
    // One change: applied to the template.
    await roots.materialize(close, join(tmp, 'd1'));
    await expectTree(join(tmp, 'd1'), close);
    expect(calls[1]!.src).toBe(calls[0]!.src);
    // Many changes: this tree becomes the template.
    await roots.materialize(far, join(tmp, 'd2'));
    await expectTree(join(tmp, 'd2'), far);
    expect(calls[2]!.src).not.toBe(calls[0]!.src);
    await expectTree(calls[2]!.src, far);
    // And the next root close to it is a difference from the new template.
    await roots.materialize(near, join(tmp, 'd3'));
    await expectTree(join(tmp, 'd3'), near);
    expect(calls[3]!.src).toBe(calls[2]!.src);
  });

  it('materialises many different roots concurrently, each one right', async () => {
    const { roots } = cache();
    const digests = [];
    for (const [, spec] of VARIANTS) digests.push(await putSpec(spec));
    await Promise.all(digests.map((d, i) => roots.materialize(d, join(tmp, `c${i}`))));
    for (const [i, d] of digests.entries()) await expectTree(join(tmp, `c${i}`), d);
  });

  it('materialises different roots concurrently while a small maxChanges forces template rebuilds, each one right', async () => {
    const { roots } = cache({ maxChanges: 2 });
    const digests = [];
    for (const [, spec] of VARIANTS) digests.push(await putSpec(spec));
    for (let i = 0; i < 6; i++) digests.push(await putSpec({ ...deepFiles, [`spread${i}/a`]: `${i}`, [`spread${i}/b`]: `${i}b` }));
    for (let round = 0; round < 3; round++) {
      await Promise.all(digests.map((d, i) => roots.materialize(d, join(tmp, `r${round}-${i}`))));
      for (const [i, d] of digests.entries()) await expectTree(join(tmp, `r${round}-${i}`), d);
    }
  });

  it('keeps a template that an exec root is being diffed against until it is copied, even when a far root replaces it meanwhile', async () => {
    const base = await putSpec(BASE);
    const near = await putSpec({ ...BASE, 'gate/file': 'g\n' });
    const far = await putSpec({ ...deepFiles, 'other/file': 'o\n' });
    const gateDir = (await buildTreeFromDisk(join(tmp, 'specs', '2', 'gate'))).rootDigest;
    // Holds the diff of `near` (at its new directory gate/) until the far root is done.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const gated: BlobStore = { ...store, get: async (d) => (d.hash === gateDir.hash && (await released), store.get(d)) };
    const copy = countingCopy();
    const roots = createExecRootCache({ local: gated, dir: join(tmp, 'templates'), maxChanges: 3, copyLinks: copy.copyLinks });
    await roots.materialize(base, join(tmp, 'd0'));
    const first = roots.materialize(near, join(tmp, 'd1'));
    await roots.materialize(far, join(tmp, 'd2'));
    // Give an eager removal of the old template every chance to finish before releasing.
    for (let i = 0; i < 20 && (await stat(copy.calls[0]!.src).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 10));
    release();
    await first;
    await expectTree(join(tmp, 'd1'), near);
    await expectTree(join(tmp, 'd2'), far);
  });

  it('refuses a root with a ".." entry and writes nothing outside its exec root', async () => {
    const base = await putSpec(BASE);
    const { roots } = cache();
    await roots.materialize(base, join(tmp, 'd0'));
    const payload = digestOf(Buffer.from('pwned'));
    await store.put(payload, Buffer.from('pwned'));
    const inner = await putDirectory({ files: [{ name: 'pwned', digest: payload, isExecutable: false }], directories: [], symlinks: [] });
    const evil = await putDirectory({ files: [], directories: [{ name: '..', digest: inner }], symlinks: [] });
    const root = await putDirectory({ files: [], directories: [{ name: 'sub', digest: evil }], symlinks: [] });
    const err = await rejection(roots.materialize(root, join(tmp, 'x', 'd1')));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toContain('invalid directory name ".."');
    expect(await readdir(join(tmp, 'x')).catch(() => [])).toEqual([]);
    await expect(lstat(join(tmp, 'x', 'pwned'))).rejects.toThrow();
  });

  it.each([
    ['absolute', '/etc/passwd', 'has absolute target "/etc/passwd"'],
    ['escaping', '../../outside', 'target "../../outside" escapes the tree root'],
  ])('refuses an %s input symlink in a changed root, as materializeTree does (INVALID_ARGUMENT)', async (_what, target, message) => {
    const base = await putSpec(BASE);
    const root = await putSpec({ ...BASE, 'src/evil': { link: target } });
    await expect(materializeTree(root, store, join(tmp, 'ref'))).rejects.toThrow(message);
    const { roots } = cache();
    await roots.materialize(base, join(tmp, 'd0'));
    const err = await rejection(roots.materialize(root, join(tmp, 'd1')));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toContain(message);
  });

  it('copies the template with copyLinks for every exec root and reports its failure with context', async () => {
    const base = await putSpec(BASE);
    const other = await putSpec({ ...BASE, 'x.c': 'x' });
    const copy = countingCopy();
    let fail = false;
    const roots = createExecRootCache({
      local: store,
      dir: join(tmp, 'templates'),
      copyLinks: (src, dest) => (fail ? Promise.reject(new OrionError(Code.RESOURCE_EXHAUSTED, 'disk full')) : copy.copyLinks(src, dest)),
    });
    await roots.materialize(base, join(tmp, 'd0'));
    await roots.materialize(other, join(tmp, 'd1'));
    await roots.materialize(base, join(tmp, 'd2'));
    expect(copy.calls.map((c) => c.dest)).toEqual(['d0', 'd1', 'd2'].map((d) => join(tmp, d)));
    fail = true;
    const err = await rejection(roots.materialize(other, join(tmp, 'd3')));
    expect(err.code).toBe(Code.RESOURCE_EXHAUSTED);
    expect(err.message).toBe(`failed to materialize exec root ${digestKey(other)} in ${join(tmp, 'd3')}: disk full`);
  });

  for (const [how, maxInProcess] of [
    ['links in this process (a template of up to maxInProcess entries)', 4000],
    ['cp -al (a larger template)', 0],
  ] as const) {
    it(`copies the template by ${how}: every variant right, files shared with the template`, async () => {
      const digests = [];
      for (const [, spec] of VARIANTS) digests.push(await putSpec(spec));
      const roots = createExecRootCache({ local: store, dir: join(tmp, 'templates'), maxInProcess });
      // Without a PATH there is no cp: the in-process copy must not need one.
      const savedPath = process.env.PATH;
      if (maxInProcess > 0) process.env.PATH = '';
      try {
        for (const [i, d] of digests.entries()) await roots.materialize(d, join(tmp, `v${i}`));
      } finally {
        process.env.PATH = savedPath;
      }
      for (const [i, d] of digests.entries()) await expectTree(join(tmp, `v${i}`), d);
      const [template] = await readdir(join(tmp, 'templates'));
      expect((await stat(join(tmp, 'v0', 'include/x.h'))).ino).toBe((await stat(join(tmp, 'templates', template!, 'include/x.h'))).ino);
    });
  }

  it('reset drops the template, its kept roots and what it knew complete (before the local CAS is trimmed); refused while an exec root is being made; the next lease starts afresh', async () => {
    const base = await putSpec(BASE);
    const leaseDir = join(tmp, 'actions');
    await mkdir(leaseDir);
    const roots = createExecRootCache({ local: store, dir: join(tmp, 'templates'), leaseDir });
    (await roots.lease(base)).release();
    roots.markComplete([base]);
    expect((await readdir(join(tmp, 'templates'))).length).toBeGreaterThan(0);
    // While an exec root is being made (a template read or rebuilt), nothing may be dropped.
    const other = await putSpec({ ...BASE, 'extra.txt': 'x' });
    const building = roots.lease(other);
    expect(roots.reset()).toBe(false);
    (await building).release();
    expect(roots.reset()).toBe(true);
    expect(await readdir(join(tmp, 'templates'))).toEqual([]);
    expect(roots.isComplete(base)).toBe(false);
    // A lease after it builds a template again and gives exactly the tree.
    const again = await roots.lease(base);
    await expectTree(again.dir, base);
    again.release();
  });

  it('lends exec roots, resets one after its action (whatever the action did) and lends it again, each time exactly the tree asked for', async () => {
    const base = await putSpec(BASE);
    const digests = [];
    for (const [, spec] of VARIANTS) digests.push(await putSpec(spec));
    const leaseDir = join(tmp, 'actions');
    await mkdir(leaseDir);
    const roots = createExecRootCache({ local: store, dir: join(tmp, 'templates'), leaseDir });
    const first = await roots.lease(base);
    expect(await readdir(leaseDir)).toEqual([first.dir.slice(leaseDir.length + 1)]);
    await expectTree(first.dir, base);
    // A kept root is moved back under leaseDir when lent again: the same directory (inode).
    const firstIno = (await stat(first.dir)).ino;
    const inoOf = async (dir: string) => (await stat(dir)).ino;
    const template = (await readdir(join(tmp, 'templates'))).find((n) => n.startsWith('t'))!;
    // An action that changes everything it can: adds, removes, replaces, retargets, chmods.
    const at = (rel: string) => join(first.dir, rel);
    await writeFile(at('src/new.o'), 'object');
    await mkdir(at('build/deep'), { recursive: true });
    await writeFile(at('build/deep/x'), 'x');
    await rm(at('src/b.c'));
    await rm(at('include'), { recursive: true });
    await writeFile(at('src/a.c.tmp'), 'rewritten');
    await rename(at('src/a.c.tmp'), at('src/a.c'));
    await rm(at('lnk'));
    await symlink('src/b.c', at('lnk'));
    await rm(at('lib/becomes-dir'));
    await mkdir(at('lib/becomes-dir'));
    await rm(at('src/sub'), { recursive: true });
    await writeFile(at('src/sub'), 'a file now');
    await chmod(at('bin'), 0o500);
    first.release();
    first.release(); // twice is harmless
    expect(await readdir(leaseDir)).toEqual([]);
    // The template never changed.
    await expectTree(join(tmp, 'templates', template), base);
    // The reset root is lent again, for each variant in turn, and dirtied each time.
    for (const [i, d] of digests.entries()) {
      const l = await roots.lease(d);
      expect(await inoOf(l.dir), VARIANTS[i]![0]).toBe(firstIno);
      await expectTree(l.dir, d);
      // Directory modes are the template's again (bin was made 0500).
      if (i === 0) expect((await stat(join(l.dir, 'bin'))).mode & 0o7777).toBe((await stat(join(tmp, 'templates', template, 'bin'))).mode & 0o7777);
      await writeFile(join(l.dir, `junk-${i}`), 'junk');
      l.release();
    }
    const again = await roots.lease(base);
    expect(await inoOf(again.dir)).toBe(firstIno);
    await expectTree(again.dir, base);
    // Two at once: the second gets a root of its own.
    const other = await roots.lease(base);
    expect(await inoOf(other.dir)).not.toBe(firstIno);
    await expectTree(other.dir, base);
    again.release();
    other.release();
    // Closing removes the roots kept for reuse.
    roots.close();
    await expect(lstat(again.dir)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(lstat(other.dir)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('puts a kept root back to the tree its action was given: that tree again reads no directory, another gets only its difference', async () => {
    const counted = countingStore(store);
    const base = await putSpec(BASE);
    const withOutputs = await putSpec({ ...BASE, 'out/lib.a': 'archive\n', 'src/a.o': 'object\n' });
    const next = await putSpec({ ...BASE, 'out/lib.a': 'archive\n', 'src/a.o': 'object\n', 'src/b.o': 'object b\n' });
    const leaseDir = join(tmp, 'actions');
    await mkdir(leaseDir);
    const roots = createExecRootCache({ local: counted.store, dir: join(tmp, 'templates'), leaseDir });
    (await roots.lease(base)).release();
    const l1 = await roots.lease(withOutputs);
    await expectTree(l1.dir, withOutputs);
    const ino = (await stat(l1.dir)).ino;
    await writeFile(join(l1.dir, 'src/c.o'), 'made by the action');
    await rm(join(l1.dir, 'out/lib.a'));
    l1.release();
    // The same tree again: no directory is read (the root already holds it) and it is the same root.
    counted.gets.length = 0;
    const l2 = await roots.lease(withOutputs);
    expect(counted.gets).toEqual([]);
    expect((await stat(l2.dir)).ino).toBe(ino);
    await expectTree(l2.dir, withOutputs);
    l2.release();
    // One more output: only the directories on the way to it are read (the root and src), not the template's whole difference.
    counted.gets.length = 0;
    const l3 = await roots.lease(next);
    await expectTree(l3.dir, next);
    const read = new Set(counted.gets);
    expect(read.size).toBe(4); // the two roots and their two src directories
    l3.release();
    // And back to the template's own tree: everything the earlier actions were given is gone.
    const l4 = await roots.lease(base);
    expect((await stat(l4.dir)).ino).toBe(ino);
    await expectTree(l4.dir, base);
    l4.release();
    roots.close();
  });

  it('undoes an action that changed a directory and set its mtime back to the stamp, and one that moved a stamped directory', async () => {
    const base = await putSpec(BASE);
    const roots = createExecRootCache({ local: store, dir: join(tmp, 'templates') });
    const l = await roots.lease(base);
    // Every directory of a kept root carries the stamp (2000-01-01T00:00:00Z).
    for (const d of ['', 'src', 'src/sub', 'include/y']) expect((await stat(join(l.dir, d))).mtimeMs).toBe(946_684_800_000);
    await writeFile(join(l.dir, 'src/sub/planted.h'), 'planted');
    await writeFile(join(l.dir, 'include/y/z.h.new'), 'replaced');
    await rename(join(l.dir, 'include/y/z.h.new'), join(l.dir, 'include/y/z.h'));
    await utimes(join(l.dir, 'src/sub'), 946_684_800, 946_684_800);
    await utimes(join(l.dir, 'include/y'), 946_684_800, 946_684_800);
    // A stamped directory moved over another one, its parent's mtime set back too.
    await rm(join(l.dir, 'lib/becomes-file'), { recursive: true });
    await mkdir(join(l.dir, 'spare/inner'), { recursive: true });
    await utimes(join(l.dir, 'spare/inner'), 946_684_800, 946_684_800);
    await rename(join(l.dir, 'spare/inner'), join(l.dir, 'lib/becomes-file'));
    await utimes(join(l.dir, 'lib'), 946_684_800, 946_684_800);
    l.release();
    const again = await roots.lease(base);
    await expectTree(again.dir, base);
    again.release();
    roots.close();
  });

  it('lends a template too large to list as a copy of its own, removed when released', async () => {
    const base = await putSpec(BASE);
    const roots = createExecRootCache({ local: store, dir: join(tmp, 'templates'), maxInProcess: 0 });
    const l = await roots.lease(base);
    await expectTree(l.dir, base);
    await writeFile(join(l.dir, 'out.o'), 'o');
    l.release();
    await expect(lstat(l.dir)).rejects.toMatchObject({ code: 'ENOENT' });
    const l2 = await roots.lease(base);
    expect(l2.dir).not.toBe(l.dir);
    await expectTree(l2.dir, base);
    l2.release();
  });

  it('remembers which directories are complete', () => {
    const { roots } = cache();
    const a = digestOf(Buffer.from('a'));
    const b = digestOf(Buffer.from('b'));
    expect(roots.isComplete(a)).toBe(false);
    roots.markComplete([a]);
    expect(roots.isComplete(a)).toBe(true);
    expect(roots.isComplete({ ...a })).toBe(true);
    expect(roots.isComplete(b)).toBe(false);
  });
});

describe('removePath', () => {
  const tempDir = useTempDirs();

  it('removes a tree with files, empty and nested directories and symlinks, without following a link out of it', async () => {
    const tmp = await tempDir();
    const outside = join(tmp, 'outside');
    await mkdir(join(outside, 'keep'), { recursive: true });
    await writeFile(join(outside, 'keep/file'), 'kept');
    const tree = join(tmp, 'tree');
    await mkdir(join(tree, 'a/b/c'), { recursive: true });
    await mkdir(join(tree, 'empty'));
    await writeFile(join(tree, 'a/b/c/f.o'), 'object');
    await writeFile(join(tree, 'top'), 'top');
    await symlink(outside, join(tree, 'a/to-dir'));
    await symlink('missing', join(tree, 'dangling'));
    removePath(tree);
    await expect(lstat(tree)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readFile(join(outside, 'keep/file'), 'utf8')).toBe('kept');
    // A symlink to a directory, given as such, goes alone; a plain file; nothing at all.
    await symlink(outside, join(tmp, 'link'));
    removePath(join(tmp, 'link'));
    await expect(lstat(join(tmp, 'link'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(outside)).toEqual(['keep']);
    await writeFile(join(tmp, 'file'), 'x');
    removePath(join(tmp, 'file'), false);
    await expect(lstat(join(tmp, 'file'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(() => removePath(join(tmp, 'nothing'))).not.toThrow();
    expect(() => removePath(join(tmp, 'nothing'), true)).not.toThrow();
  });

  it('reports what it cannot remove', async () => {
    const tmp = await tempDir();
    await writeFile(join(tmp, 'file'), 'x');
    // Told it is a directory, a file cannot be listed: the error names the path.
    expect(() => removePath(join(tmp, 'file'), true)).toThrow(/ENOTDIR.*file/);
  });
});
