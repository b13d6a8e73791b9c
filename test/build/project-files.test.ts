import { lstatSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { digestOf } from '../../cas/digest.js';
import { createStatCache } from '../../cas/stat-cache.js';
import { createProjectFiles, portableTarget, snapshotHash, type ProjectFiles } from '../../cli/build/project-files.js';

let tmp: string;
let root: string;
let files: ProjectFiles;

beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'orion-files-'));
  root = path.join(tmp, 'project');
  await mkdir(path.join(root, 'src', 'deep'), { recursive: true });
  await writeFile(path.join(root, 'Makefile'), 'all:\n');
  await writeFile(path.join(root, 'src', 'a.c'), 'int a;\n');
  await writeFile(path.join(root, 'src', 'deep', 'b.h'), '#define B 1\n');
  await symlink('a.c', path.join(root, 'src', 'link.c'));
  await mkdir(path.join(root, '.git'));
  await writeFile(path.join(root, '.git', 'HEAD'), 'ref\n');
  // A root given with a trailing slash and a dot: paths still come out as path.join makes them.
  files = createProjectFiles(`${root}/./`, createStatCache(path.join(tmp, 'stat.json')));
});

afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('project files as an input tree', () => {
  it('writes a symlink to an absolute path in the project relative, and leaves one out of it out', async () => {
    expect(portableTarget('/p', 'src/x.c', '/p/src/x.c.dist')).toBe('x.c.dist');
    expect(portableTarget('/p', 'src/deep/x.h', '/p/include/x.h')).toBe('../../include/x.h');
    expect(portableTarget('/p', 'a', '/p')).toBe('.');
    expect(portableTarget('/p', 'src/x.c', 'x.c.dist')).toBe('x.c.dist');
    expect(portableTarget('/p', 'src/x.h', '/usr/include/stdio.h')).toBeUndefined();
    expect(portableTarget('/p', 'src/x.h', '/pp/x.h')).toBeUndefined();

    await symlink(path.join(root, 'src', 'a.c'), path.join(root, 'src', 'abs.c'));
    await symlink('/etc/hostname', path.join(root, 'outside'));
    const tree = await files.tree();
    const texts = [...tree.directories.values()].map((b) => b.toString('latin1'));
    expect(texts.some((t) => t.includes('abs.c') && t.includes('a.c'))).toBe(true);
    expect(texts.some((t) => t.includes(path.join(root, 'src', 'a.c')))).toBe(false);
    expect(texts.some((t) => t.includes('outside') || t.includes('/etc/hostname'))).toBe(false);
  });
});

describe('project files snapshots', () => {
  it('lists every file, symlink and directory under the root (not .git), with each file state reachable by its joined path', async () => {
    const snap = await files.snapshot();
    expect([...snap.entries.keys()].sort()).toEqual(['Makefile', 'src', 'src/a.c', 'src/deep', 'src/deep/b.h', 'src/link.c']);
    expect(snap.entries.get('src/link.c')).toEqual({ kind: 'symlink', target: 'a.c' });
    const b = snap.entries.get('src/deep/b.h');
    expect(b?.kind === 'file' && b.state.digest).toEqual(digestOf(Buffer.from('#define B 1\n')));
    // The snapshot primed the per-path states under path.join's spelling.
    expect((await files.state(path.join(root, 'src', 'deep', 'b.h')))?.digest).toEqual(digestOf(Buffer.from('#define B 1\n')));
    expect(snap.hash).toBe(snapshotHash(snap.entries));
  });

  it('keeps the hash while nothing changes, and follows every change: a recorded write, a forgotten file, a new walk', async () => {
    const first = await files.snapshot();
    const h0 = first.hash;
    expect((await files.snapshot()).hash).toBe(h0);

    // A write Orion made itself (record): the same snapshot map, a new hash.
    const out = path.join(root, 'src', 'a.o');
    await writeFile(out, 'object');
    files.record(out, digestOf(Buffer.from('object')), lstatSync(out));
    const h1 = (await files.snapshot()).hash;
    expect(h1).not.toBe(h0);
    expect(h1).toBe(snapshotHash((await files.snapshot()).entries));

    // A file changed behind Orion's back and reported with forget().
    await writeFile(path.join(root, 'src', 'a.c'), 'int a = 2;\n');
    files.forget(path.join(root, 'src', 'a.c'));
    const h2 = (await files.snapshot()).hash;
    expect(h2).not.toBe(h1);

    // A step with unknown effects: everything is walked again.
    await writeFile(path.join(root, 'src', 'deep', 'c.h'), 'new\n');
    files.forgetAll();
    const after = await files.snapshot();
    expect(after.entries.has('src/deep/c.h')).toBe(true);
    expect(after.hash).not.toBe(h2);
    expect(after.hash).toBe(snapshotHash(after.entries));
  });
});
