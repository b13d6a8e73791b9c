import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.js';
import { Code, OrionError, statusOf } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import type { BlobStore } from '../../cas/blob-store.js';
import { digestKey, digestOf, fromDigestKey } from '../../cas/digest.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { buildTreeFromDisk, type DiskTree } from '../../cas/merkle.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import type { Action, Command, Digest } from '../../cas/types.js';
import { createExecRootCache, type ExecRootCache } from '../../node/exec-root-cache.js';
import { createExecutor, type Assignment, type Executor } from '../../node/executor.js';
import { createProcessRunner } from '../../sandbox/runner.js';

/** A remote CAS (in memory) offering getMany, recording every read. */
function countingRemote(inner: BlobStore) {
  const calls = { get: [] as string[], getStream: [] as string[], getMany: [] as string[][] };
  const store: BlobStore = {
    ...inner,
    get: (d) => (calls.get.push(digestKey(d)), inner.get(d)),
    getStream: (d, offset, limit) => (calls.getStream.push(digestKey(d)), inner.getStream(d, offset, limit)),
    async getMany(ds) {
      calls.getMany.push(ds.map(digestKey));
      const found = new Map<string, Buffer>();
      const missing: Digest[] = [];
      for (const d of ds) {
        try {
          found.set(digestKey(d), await inner.get(d));
        } catch (err) {
          if (statusOf(err) !== Code.NOT_FOUND) throw err;
          missing.push(d);
        }
      }
      return { found, missing };
    },
  };
  const reset = () => {
    calls.get.length = 0;
    calls.getStream.length = 0;
    calls.getMany.length = 0;
  };
  return { store, calls, reset };
}

let tmp: string;
let workDir: string;
let memory: BlobStore;
let remote: ReturnType<typeof countingRemote>;
let localGets: string[];
let local: BlobStore;
let roots: ExecRootCache;
let srcs = 0;

beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'orion-executor-roots-'));
  workDir = path.join(tmp, 'actions');
  await mkdir(workDir);
  const disk = createDiskBlobStore(path.join(tmp, 'local-cas'));
  localGets = [];
  local = { ...disk, get: (d) => (localGets.push(digestKey(d)), disk.get(d)) };
  memory = createMemoryBlobStore();
  remote = countingRemote(memory);
  roots = createExecRootCache({ local, dir: path.join(tmp, 'templates') });
});

afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function executor(): Executor {
  return createExecutor({ local, remote: remote.store, runner: createProcessRunner(), workDir, nodeId: 'test-node', clock: createManualClock(1_000), log: silentLogger(), roots });
}

/** Writes `files` (content, or content with mode 0755) and returns its tree, uploading it to the remote unless `upload` is false. */
async function inputTree(files: Record<string, string | { x: string }>, upload = true): Promise<DiskTree> {
  const dir = path.join(tmp, 'src', String(++srcs));
  for (const [rel, spec] of Object.entries(files)) {
    const abs = path.join(dir, rel);
    await mkdir(path.dirname(abs), { recursive: true });
    await writeFile(abs, typeof spec === 'string' ? spec : spec.x);
    if (typeof spec !== 'string') await chmod(abs, 0o755);
  }
  const tree = await buildTreeFromDisk(dir);
  if (upload) {
    for (const [key, bytes] of tree.directories) await memory.put(fromDigestKey(key), bytes);
    for (const [key, file] of tree.files) await memory.put(fromDigestKey(key), await readFile(file));
  }
  return tree;
}

function assignment(root: Digest, script: string, outputs: string[] = []): Assignment {
  const command: Command = {
    arguments: ['sh', '-c', script],
    environmentVariables: [{ name: 'PATH', value: '/usr/bin:/bin' }],
    outputPaths: outputs,
    outputFiles: [],
    outputDirectories: [],
    workingDirectory: '',
  };
  const action: Action = { commandDigest: digestOf(Buffer.from(JSON.stringify(command))), inputRootDigest: root, doNotCache: false };
  return { assignmentId: 'op/1', actionDigest: digestOf(Buffer.from(JSON.stringify(action))), action, command };
}

const run = (a: Assignment) => executor().execute(a, new AbortController().signal);
const text = async (d: Digest | undefined) => (await memory.get(d!)).toString();
const sorted = (keys: Iterable<string>) => [...keys].sort();

const FILES: Record<string, string | { x: string }> = {
  'src/main.c': 'int main() { return 0; }\n',
  'src/util.c': 'int util;\n',
  'src/lib/a.c': 'int a;\n',
  'src/lib/b.c': 'int b;\n',
  'src/lib/deep/x/y/z.h': '#define Z 1\n',
  'include/common.h': '#pragma once\n',
  'include/sys/types.h': 'typedef int t;\n',
  'tools/gen.sh': { x: '#!/bin/sh\necho generated\n' },
  'empty.txt': '',
};
for (let i = 0; i < 5; i++) for (let j = 0; j < 3; j++) FILES[`third_party/lib${i}/f${j}.c`] = `int lib${i}_${j};\n`;

/** Prints every path of the exec root, the changed header, and runs the executable input. */
const SCRIPT = 'find . | LC_ALL=C sort; cat src/lib/deep/x/y/z.h; ./tools/gen.sh; cp src/lib/deep/x/y/z.h z.copy';
const listing = (files: Record<string, unknown>) => {
  const paths = new Set(['.']);
  for (const rel of Object.keys(files)) {
    const parts = rel.split('/');
    for (let i = 1; i <= parts.length; i++) paths.add(`./${parts.slice(0, i).join('/')}`);
  }
  return [...paths].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))).join('\n');
};

describe('executor with an exec root cache', () => {
  it('fetches a first input root whole through getMany batches, then only the changed blob and directories of a root that differs by one file', async () => {
    const first = await inputTree(FILES);
    const result1 = await run(assignment(first.rootDigest, SCRIPT, ['z.copy']));
    expect(result1.exitCode).toBe(0);
    expect(await text(result1.stdoutDigest)).toBe(`${listing(FILES)}\n#define Z 1\ngenerated\n`);
    expect(await text(result1.outputFiles[0]?.digest)).toBe('#define Z 1\n');
    // Every directory and every non-empty file blob, each once, all through getMany.
    const everything = [...first.directories.keys(), ...[...first.files.keys()].filter((k) => !k.endsWith('/0'))];
    expect(sorted(remote.calls.getMany.flat())).toEqual(sorted(everything));
    expect(remote.calls.getMany.length).toBeLessThan(everything.length);
    expect(remote.calls.get).toEqual([]);
    expect(remote.calls.getStream).toEqual([]);

    remote.reset();
    localGets.length = 0;
    const changedFiles = { ...FILES, 'src/lib/deep/x/y/z.h': '#define Z 2\n' };
    const second = await inputTree(changedFiles);
    const result2 = await run(assignment(second.rootDigest, SCRIPT, ['z.copy']));
    expect(result2.exitCode).toBe(0);
    expect(await text(result2.stdoutDigest)).toBe(`${listing(changedFiles)}\n#define Z 2\ngenerated\n`);
    expect(await text(result2.outputFiles[0]?.digest)).toBe('#define Z 2\n');
    // Exactly the new blob and the six directories above it: ., src, src/lib, src/lib/deep, .../x, .../x/y.
    const newDirs = [...second.directories.keys()].filter((k) => !first.directories.has(k));
    expect(newDirs).toHaveLength(6);
    expect(sorted(remote.calls.getMany.flat())).toEqual(sorted([...newDirs, digestKey(digestOf(Buffer.from('#define Z 2\n')))]));
    expect(remote.calls.get).toEqual([]);
    expect(remote.calls.getStream).toEqual([]);
    // Neither fetching nor materialising read a directory outside the changed path.
    const unchanged = [...first.directories.keys()].filter((k) => second.directories.has(k));
    expect(unchanged.length).toBeGreaterThan(8);
    expect(localGets.filter((k) => unchanged.includes(k))).toEqual([]);

    // The same root again: nothing to fetch.
    remote.reset();
    const result3 = await run(assignment(second.rootDigest, 'cat src/lib/deep/x/y/z.h'));
    expect(await text(result3.stdoutDigest)).toBe('#define Z 2\n');
    expect(remote.calls.getMany).toEqual([]);
    expect(remote.calls.get).toEqual([]);
    expect(await readdir(workDir)).toEqual([]);
  });

  it('prefetches a tree ahead of its build: blobs fetched once, the build\'s actions need nothing more; a blob the head lacks fails the prefetch naming it', async () => {
    const first = await inputTree(FILES);
    const ex = executor();
    const signal = new AbortController().signal;
    // An action of the same build arriving while the tree is still being fetched waits for it.
    const [, early] = await Promise.all([ex.prefetch(first.rootDigest, 'b1', signal), ex.execute({ ...assignment(first.rootDigest, 'cat src/util.c'), buildId: 'b1' }, signal)]);
    expect(await text(early.stdoutDigest)).toBe('int util;\n');
    const everything = [...first.directories.keys(), ...[...first.files.keys()].filter((k) => !k.endsWith('/0'))];
    expect(sorted(remote.calls.getMany.flat())).toEqual(sorted(everything));
    remote.reset();
    const later = await ex.execute({ ...assignment(first.rootDigest, 'cat src/main.c'), buildId: 'b1' }, signal);
    expect(await text(later.stdoutDigest)).toBe('int main() { return 0; }\n');
    expect(remote.calls.getMany).toEqual([]);
    expect(await readdir(workDir)).toEqual([]);

    const lost = 'not uploaded\n';
    const second = await inputTree({ ...FILES, 'include/lost.h': lost }, false);
    for (const [key, bytes] of second.directories) await memory.put(fromDigestKey(key), bytes);
    const err = await ex.prefetch(second.rootDigest, 'b2', signal).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(OrionError);
    expect((err as OrionError).code).toBe(Code.FAILED_PRECONDITION);
    expect((err as OrionError).message).toMatch(/failed to prefetch tree/);
    expect((err as OrionError).missing).toEqual([digestOf(Buffer.from(lost))]);
  });

  it('an action of the build being prefetched stops waiting for the prefetch when it is cancelled', async () => {
    const first = await inputTree(FILES);
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const gated: BlobStore = { ...remote.store, getMany: async (ds) => (await gate, remote.store.getMany!(ds)) };
    const ex = createExecutor({ local, remote: gated, runner: createProcessRunner(), workDir, nodeId: 'test-node', clock: createManualClock(1_000), log: silentLogger(), roots });
    const prefetch = ex.prefetch(first.rootDigest, 'b1', new AbortController().signal);
    const cancel = new AbortController();
    const run = ex.execute({ ...assignment(first.rootDigest, 'true'), buildId: 'b1' }, cancel.signal).then(() => 'ran', (e: unknown) => e);
    await new Promise((r) => setTimeout(r, 50));
    cancel.abort();
    // It ends while the prefetch is still blocked (before the fix it waited for the prefetch).
    const outcome = await Promise.race([run, new Promise((r) => setTimeout(() => r('still waiting'), 2_000))]);
    expect(outcome).toBeInstanceOf(OrionError);
    expect((outcome as OrionError).code).toBe(Code.CANCELLED);
    open();
    expect(await prefetch).toBeGreaterThan(0);
  });

  it('fetches each blob once for actions that start together on one root (a node\'s slots at the start of a build), and both fail on a blob the head lacks', async () => {
    const first = await inputTree(FILES);
    const [r1, r2] = await Promise.all([run(assignment(first.rootDigest, 'cat src/util.c')), run(assignment(first.rootDigest, 'cat src/main.c'))]);
    expect(await text(r1.stdoutDigest)).toBe('int util;\n');
    expect(await text(r2.stdoutDigest)).toBe('int main() { return 0; }\n');
    const everything = [...first.directories.keys(), ...[...first.files.keys()].filter((k) => !k.endsWith('/0'))];
    expect(sorted(remote.calls.getMany.flat())).toEqual(sorted(everything));

    const lost = 'lost on the head\n';
    const second = await inputTree({ ...FILES, 'include/lost.h': lost }, false);
    for (const [key, bytes] of second.directories) await memory.put(fromDigestKey(key), bytes);
    const errs = await Promise.all([run(assignment(second.rootDigest, 'true')), run(assignment(second.rootDigest, 'true'))].map((p) => p.then(() => undefined, (e: unknown) => e)));
    for (const err of errs) {
      expect(err).toBeInstanceOf(OrionError);
      expect((err as OrionError).code).toBe(Code.FAILED_PRECONDITION);
      expect((err as OrionError).missing).toEqual([digestOf(Buffer.from(lost))]);
    }
  });

  it('fails with FAILED_PRECONDITION listing an input blob the head lacks, and fetches it once it is there', async () => {
    const first = await inputTree(FILES);
    await run(assignment(first.rootDigest, 'true'));
    const lost = 'a new header the head lost\n';
    const second = await inputTree({ ...FILES, 'include/sys/new.h': lost }, false);
    for (const [key, bytes] of second.directories) await memory.put(fromDigestKey(key), bytes);
    const lostDigest = digestOf(Buffer.from(lost));

    remote.reset();
    const err = await run(assignment(second.rootDigest, 'cat include/sys/new.h')).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OrionError);
    expect((err as OrionError).code).toBe(Code.FAILED_PRECONDITION);
    expect((err as OrionError).missing).toEqual([lostDigest]);
    expect((err as OrionError).message).toContain(digestKey(lostDigest));
    expect(remote.calls.get).toEqual([]);

    // The directories holding it were not taken for complete: a retry fetches the blob.
    await memory.put(lostDigest, Buffer.from(lost));
    remote.reset();
    const result = await run(assignment(second.rootDigest, 'cat include/sys/new.h'));
    expect(result.exitCode).toBe(0);
    expect(await text(result.stdoutDigest)).toBe(lost);
    expect(remote.calls.getMany.flat()).toEqual([digestKey(lostDigest)]);
    expect(await readdir(workDir)).toEqual([]);
  });
});
