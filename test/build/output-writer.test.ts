import { statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Code } from '../../common/errors.js';
import { digestOf } from '../../cas/digest.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import { createStatCache } from '../../cas/stat-cache.js';
import { freshenOutputs, writeOutputs } from '../../cli/build/output-writer.js';
import { createProjectFiles } from '../../cli/build/project-files.js';

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'orion-outputs-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const result = (files: { path: string; data: Buffer; isExecutable: boolean }[]) => ({
  outputFiles: files.map((f) => ({ path: f.path, digest: digestOf(f.data), isExecutable: f.isExecutable })),
  outputSymlinks: [],
  outputDirectories: [],
  exitCode: 0,
});

describe('writing cached outputs into the tree', () => {
  it('copies from a disk store (kernel copy) with the right content and modes, and leaves no temporary file', async () => {
    const root = path.join(tmp, 'proj');
    await mkdir(root);
    const cas = createDiskBlobStore(path.join(tmp, 'cas'));
    const obj = Buffer.from('\x7fELF object'.repeat(1000));
    const exe = Buffer.from('#!/bin/sh\necho hi\n');
    await cas.put(digestOf(obj), obj);
    await cas.put(digestOf(exe), exe);
    const files = createProjectFiles(root, createStatCache(path.join(tmp, 'stat.json')));
    const n = await writeOutputs(result([{ path: 'src/a.o', data: obj, isExecutable: false }, { path: 'app', data: exe, isExecutable: true }]), root, files, cas);
    expect(n).toBe(2);
    expect(await readFile(path.join(root, 'src/a.o'))).toEqual(obj);
    expect((await stat(path.join(root, 'src/a.o'))).mode & 0o777).toBe(0o644);
    expect((await stat(path.join(root, 'app'))).mode & 0o777).toBe(0o755);
    expect((await readdir(path.join(root, 'src'))).sort()).toEqual(['a.o']);
    // The store's own file is untouched (still read-only).
    expect((await stat(cas.localPath!(digestOf(obj))!)).mode & 0o222).toBe(0);
  });

  it('refuses a stored file of the wrong size as NOT_FOUND and writes nothing', async () => {
    const root = path.join(tmp, 'proj');
    await mkdir(root);
    const cas = createDiskBlobStore(path.join(tmp, 'cas'));
    const obj = Buffer.from('object bytes');
    await cas.put(digestOf(obj), obj);
    const stored = cas.localPath!(digestOf(obj))!;
    await chmod(stored, 0o644);
    await writeFile(stored, 'truncated');
    const files = createProjectFiles(root, createStatCache(path.join(tmp, 'stat.json')));
    const err = await writeOutputs(result([{ path: 'a.o', data: obj, isExecutable: false }]), root, files, cas).catch((e) => e);
    expect(err.code).toBe(Code.NOT_FOUND);
    expect(await readdir(root).catch(() => [])).toEqual([]);
  });

  it('reports a blob missing from a disk store as NOT_FOUND', async () => {
    const root = path.join(tmp, 'proj');
    await mkdir(root);
    const cas = createDiskBlobStore(path.join(tmp, 'cas'));
    const files = createProjectFiles(root, createStatCache(path.join(tmp, 'stat.json')));
    const err = await writeOutputs(result([{ path: 'a.o', data: Buffer.from('never stored'), isExecutable: false }]), root, files, cas).catch((e) => e);
    expect(err.code).toBe(Code.NOT_FOUND);
  });

  it('streams from a store without local files', async () => {
    const root = path.join(tmp, 'proj');
    await mkdir(root);
    const cas = createMemoryBlobStore();
    const obj = Buffer.from('from memory');
    await cas.put(digestOf(obj), obj);
    const files = createProjectFiles(root, createStatCache(path.join(tmp, 'stat.json')));
    await writeOutputs(result([{ path: 'a.o', data: obj, isExecutable: false }]), root, files, cas);
    expect(await readFile(path.join(root, 'a.o'))).toEqual(obj);
  });
});

describe('freshening outputs a cache hit left in place', () => {
  it('makes the output newer than its newest input, to the nanosecond, even when that input is timestamped later in the current millisecond', async () => {
    const root = path.join(tmp, 'proj');
    await mkdir(root);
    const input = path.join(root, 'main.o');
    const output = path.join(root, 'prog');
    await writeFile(input, 'object');
    await writeFile(output, 'program');
    // The input written "just now" with a sub-millisecond part ahead of the clock's whole milliseconds.
    const inputSeconds = (Math.floor(Date.now()) + 0.7) / 1000 + 2;
    await utimes(input, inputSeconds, inputSeconds);
    await utimes(output, 1_000_000, 1_000_000);
    const files = createProjectFiles(root, createStatCache(path.join(tmp, 'stat.json')));
    await freshenOutputs([output], [input], files);
    const [i, o] = [statSync(input, { bigint: true }), statSync(output, { bigint: true })];
    expect(o.mtimeNs > i.mtimeNs).toBe(true);
    // And Orion's own view of the output follows (to within a double's rounding of a ms count near 1.8e12: Node
    // and this line compute it in different orders, ~0.2 µs apart).
    expect(Math.abs((await files.state(output))!.mtimeMs - Number(o.mtimeNs) / 1e6)).toBeLessThan(0.001);
  });
});
