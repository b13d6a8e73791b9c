/**
 * Hostile trees and paths: the head rejects them before scheduling, the node
 * refuses to touch anything outside an action's directory, and a client never
 * writes a downloaded output outside its project.
 */
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.js';
import { Code, OrionError } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import type { BlobStore } from '../../cas/blob-store.js';
import { digestOf } from '../../cas/digest.js';
import { encodeDirectory } from '../../cas/directory.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import { materializeTree } from '../../cas/merkle.js';
import { createStatCache } from '../../cas/stat-cache.js';
import type { ActionResult, Digest, Directory } from '../../cas/types.js';
import { assertSafeResult } from '../../cli/build/result-guard.js';
import { writeOutputs } from '../../cli/build/output-writer.js';
import { createProjectFiles } from '../../cli/build/project-files.js';
import { checkSymlink, symlinkClimb, validateInputTree } from '../../head/input-tree.js';
import { loadExecution } from '../../head/execution-service.js';
import { createExecutor } from '../../node/executor.js';
import { createProcessRunner } from '../../sandbox/runner.js';
import { Action, Command } from '../../proto/gen/build/bazel/remote/execution/v2/remote_execution.js';

let tmp: string;
let cas: BlobStore;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'orion-validation-'));
  cas = createMemoryBlobStore();
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const LIMITS = { maxEntries: 1000, maxDepth: 16, maxDirectoryBytes: 64 * 1024 };
const emptyDir = (): Directory => ({ files: [], directories: [], symlinks: [] });

/** Stores `d` as is (no sorting or checking) and returns its digest. */
async function put(d: Partial<Directory>): Promise<Digest> {
  const bytes = encodeDirectory({ ...emptyDir(), ...d });
  const digest = digestOf(bytes);
  await cas.put(digest, bytes);
  return digest;
}

async function failure(p: Promise<unknown>): Promise<OrionError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OrionError);
  return err as OrionError;
}

describe('head: input tree validation', () => {
  it('measures how far a symlink target climbs', () => {
    expect(symlinkClimb('a/b')).toBe(0);
    expect(symlinkClimb('..')).toBe(1);
    expect(symlinkClimb('a/../../b')).toBe(1);
    expect(symlinkClimb('./../a/../..')).toBe(2);
  });

  it.each([
    [{ name: 'l', target: '/etc/passwd' }, 0, 'symlink "l" has absolute target "/etc/passwd" (absolute symlinks are not allowed in input trees)'],
    [{ name: 'l', target: '../x' }, 0, 'symlink "l" target "../x" escapes the input root'],
    [{ name: 'l', target: 'a/../../x' }, 0, 'symlink "l" target "a/../../x" escapes the input root'],
    [{ name: 'l', target: '../../x' }, 1, 'symlink "l" target "../../x" escapes the input root'],
    [{ name: 'l', target: '' }, 0, 'symlink "l" has an empty target'],
  ])('rejects symlink %j at depth %d', (s, depth, message) => {
    expect(() => checkSymlink(s, depth, s.name)).toThrow(message);
  });

  it('accepts symlinks that stay inside the root', () => {
    expect(() => checkSymlink({ name: 'l', target: '..' }, 1, 'l')).not.toThrow();
    expect(() => checkSymlink({ name: 'l', target: 'a/../b' }, 0, 'l')).not.toThrow();
  });

  it('rejects an escaping symlink deep in the tree, checked at the shallowest place its directory occurs', async () => {
    // The same directory at depth 1 (escapes) and at depth 2 (would not).
    const shared = await put({ symlinks: [{ name: 'up', target: '../../x' }] });
    const mid = await put({ directories: [{ name: 'inner', digest: shared }] });
    const root = await put({ directories: [{ name: 'a', digest: shared }, { name: 'b', digest: mid }] });
    const err = await failure(validateInputTree(cas, root, LIMITS));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toBe('symlink "a/up" target "../../x" escapes the input root');
  });

  it.each([
    ['a name ".."', { files: [{ name: '..', digest: digestOf(Buffer.from('x')), isExecutable: false }] }, 'invalid file name ".."'],
    ['a name with "/"', { directories: [{ name: 'a/b', digest: digestOf(Buffer.alloc(0)) }] }, 'invalid directory name "a/b": contains \'/\''],
    ['unsorted names', { files: ['b', 'a'].map((name) => ({ name, digest: digestOf(Buffer.from(name)), isExecutable: false })) }, 'files not sorted by name: "b" before "a"'],
    ['a duplicate name', { files: ['a', 'a'].map((name) => ({ name, digest: digestOf(Buffer.from(name)), isExecutable: false })) }, 'duplicate file name "a"'],
    ['a name used twice across kinds', { files: [{ name: 'a', digest: digestOf(Buffer.from('a')), isExecutable: false }], symlinks: [{ name: 'a', target: 'b' }] }, 'duplicate name "a" used by more than one of files, directories and symlinks'],
  ])('rejects a directory with %s', async (_what, dir, message) => {
    const root = await put(dir as Partial<Directory>);
    const err = await failure(validateInputTree(cas, root, LIMITS));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toContain(message);
  });

  it('rejects a tree nested deeper than the limit', async () => {
    let d = await put({});
    for (let i = 0; i < 20; i++) d = await put({ directories: [{ name: 'd', digest: d }] });
    const err = await failure(validateInputTree(cas, d, LIMITS));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toMatch(/is nested deeper than 16 directories \(at "d\/d\/d/);
  });

  it('rejects a tree with more entries than the limit', async () => {
    const files = Array.from({ length: 1001 }, (_, i) => ({ name: `f${String(i).padStart(5, '0')}`, digest: digestOf(Buffer.from(String(i))), isExecutable: false }));
    const root = await put({ files });
    const err = await failure(validateInputTree(cas, root, { ...LIMITS, maxDirectoryBytes: 1024 * 1024 }));
    expect(err.message).toMatch(/has more than 1000 entries$/);
  });

  it('refuses a directory blob too big to be a message without reading it', async () => {
    const huge = { hash: 'a'.repeat(64), sizeBytes: 10 * 1024 * 1024 * 1024 };
    const root = await put({ directories: [{ name: 'big', digest: huge }] });
    const reads: Digest[] = [];
    const watched: BlobStore = { ...cas, get: (d) => (reads.push(d), cas.get(d)) };
    const err = await failure(validateInputTree(watched, root, LIMITS));
    expect(err.message).toBe(`directory "big" (${huge.hash}/${huge.sizeBytes}) is ${huge.sizeBytes} bytes; a Directory may be at most ${LIMITS.maxDirectoryBytes}`);
    expect(reads.map((d) => d.sizeBytes)).not.toContain(huge.sizeBytes);
  });

  it('rejects Execute of an action whose output path is absolute or climbs out, and of an oversized action blob', async () => {
    const root = await put({});
    const action = async (outputs: string[]) => {
      const cmd = Buffer.from(Command.encode(Command.fromPartial({ arguments: ['true'], outputPaths: outputs })).finish());
      await cas.put(digestOf(cmd), cmd);
      const act = Buffer.from(Action.encode(Action.fromPartial({ commandDigest: digestOf(cmd), inputRootDigest: root })).finish());
      await cas.put(digestOf(act), act);
      return digestOf(act);
    };
    for (const [out, message] of [
      ['/etc/x', 'output path "/etc/x" must be a relative path without \'..\', empty segments or NUL'],
      ['a/../../etc/x', 'output path "a/../../etc/x" must be a relative path without \'..\', empty segments or NUL'],
    ]) {
      const err = await failure(loadExecution(cas, '', await action([out!]), new Set()));
      expect(err.code).toBe(Code.INVALID_ARGUMENT);
      expect(err.message).toBe(message);
    }
    const big = { hash: 'b'.repeat(64), sizeBytes: 1024 ** 3 };
    const err = await failure(loadExecution(cas, '', big, new Set()));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toBe(`action ${big.hash}/${big.sizeBytes} is ${big.sizeBytes} bytes; the limit for a message is ${16 * 1024 * 1024}`);
  });
});

describe('node: materialising and running in the action directory', () => {
  it('refuses to materialise a tree with an escaping or absolute symlink, writing nothing outside', async () => {
    for (const target of ['../outside', '/etc']) {
      const root = await put({ symlinks: [{ name: 'l', target }] });
      const dest = path.join(tmp, `dest-${target.length}`);
      const err = await failure(materializeTree(root, cas, dest));
      expect(err.code).toBe(Code.INVALID_ARGUMENT);
      expect(existsSync(path.join(dest, 'l'))).toBe(false);
    }
  });

  /** An executor over a node-local disk CAS, fed from `cas` (the head). */
  function nodeExecutor(workDir: string) {
    return createExecutor({ local: createDiskBlobStore(path.join(tmp, 'node-cas')), remote: cas, runner: createProcessRunner(), workDir, nodeId: 'n', clock: createManualClock(0), log: silentLogger() });
  }
  const assignment = (root: Digest, argv: string[], outputPaths: string[]) => ({
    assignmentId: 'a1',
    actionDigest: digestOf(Buffer.from('action')),
    action: { commandDigest: digestOf(Buffer.from('cmd')), inputRootDigest: root, doNotCache: false, timeoutMs: 10_000 },
    command: { arguments: argv, environmentVariables: [{ name: 'PATH', value: '/usr/bin:/bin' }], outputFiles: [], outputDirectories: [], outputPaths, workingDirectory: '' },
  });

  it('refuses to prepare an output reached through a chain of symlinks that each look harmless, leaving the node\'s files alone', async () => {
    const workDir = path.join(tmp, 'work');
    // Something of the node's, next to the action directories.
    await mkdir(path.join(workDir, 'precious'), { recursive: true });
    await writeFile(path.join(workDir, 'precious', 'keep'), 'node data');
    // x/y/z -> ../.. is the root itself; l -> x/y/z/../.. reads as "x", but resolves two levels above the root.
    const z = await put({ symlinks: [{ name: 'z', target: '../..' }] });
    const y = await put({ directories: [{ name: 'y', digest: z }] });
    const root = await put({ directories: [{ name: 'x', digest: y }], symlinks: [{ name: 'l', target: 'x/y/z/../..' }] });
    await validateInputTree(cas, root, LIMITS); // Lexically fine: the head cannot tell.
    const err = await failure(nodeExecutor(workDir).execute(assignment(root, ['true'], ['l/precious']) as never, new AbortController().signal));
    expect(err.code).toBe(Code.PERMISSION_DENIED);
    expect(err.message).toMatch(/^output "l\/precious" leads outside the action's directory through a symlink/);
    expect(await readFile(path.join(workDir, 'precious', 'keep'), 'utf8')).toBe('node data');
    expect(await readdir(workDir)).toEqual(['precious']);
  });

  it('refuses to read back an output through a symlink the action made to the node\'s files', async () => {
    const workDir = path.join(tmp, 'work');
    await mkdir(workDir);
    const secrets = path.join(tmp, 'secrets');
    await mkdir(secrets);
    await writeFile(path.join(secrets, 'node.key'), 'PRIVATE KEY');
    const root = await put({});
    const err = await failure(nodeExecutor(workDir).execute(assignment(root, ['sh', '-c', `rmdir out && ln -s ${secrets} out`], ['out/node.key']) as never, new AbortController().signal));
    expect(err.code).toBe(Code.PERMISSION_DENIED);
    expect(err.message).toMatch(/^output "out\/node.key" leads outside the action's directory through a symlink/);
    // The key never reached the head's CAS.
    expect(await cas.has(digestOf(Buffer.from('PRIVATE KEY')))).toBe(false);
    expect(await readdir(workDir)).toEqual([]);
  });
});

describe('client: writing downloaded outputs', () => {
  const result = (r: Partial<ActionResult>): ActionResult => ({ outputFiles: [], outputSymlinks: [], outputDirectories: [], exitCode: 0, ...r });

  async function project() {
    const root = path.join(tmp, 'project');
    await mkdir(path.join(root, 'src'), { recursive: true });
    const files = createProjectFiles(root, createStatCache(path.join(tmp, 'stat.json')));
    return { root, files };
  }

  it.each([
    ['an output path that climbs out', { outputFiles: [{ path: '../../etc/x', digest: digestOf(Buffer.from('x')), isExecutable: false }] }, /^refusing r: output file "..\/..\/etc\/x" resolves outside the project/],
    ['an absolute output path', { outputFiles: [{ path: '/etc/x', digest: digestOf(Buffer.from('x')), isExecutable: false }] }, /^refusing r: output file "\/etc\/x" is an absolute path$/],
    ['an absolute symlink target', { outputSymlinks: [{ path: 'lib.so', target: '/etc/passwd' }] }, /^refusing r: output symlink "lib.so" has absolute target "\/etc\/passwd"$/],
    ['a symlink target that climbs out', { outputSymlinks: [{ path: 'lib.so', target: '../../../home' }] }, /^refusing r: output symlink "lib.so" points outside the project/],
  ])('refuses a remote result with %s', async (_what, r, message) => {
    const { root } = await project();
    let err: unknown;
    try {
      assertSafeResult(result(r as Partial<ActionResult>), root, path.join(root, 'src'), 'r');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OrionError);
    expect((err as OrionError).code).toBe(Code.PERMISSION_DENIED);
    expect((err as OrionError).message).toMatch(message);
  });

  it('accepts a result that stays inside the project', async () => {
    const { root } = await project();
    expect(() => assertSafeResult(result({ outputFiles: [{ path: 'a.o', digest: digestOf(Buffer.from('o')), isExecutable: false }], outputSymlinks: [{ path: 'lib.so', target: '../lib/libx.so' }] }), root, path.join(root, 'src'))).not.toThrow();
  });

  it('never writes a file outside the project, even a "../../etc/x" that reached writeOutputs', async () => {
    const { root, files } = await project();
    const data = Buffer.from('evil');
    await cas.put(digestOf(data), data);
    const err = await failure(writeOutputs(result({ outputFiles: [{ path: '../../x-outside', digest: digestOf(data), isExecutable: false }] }), path.join(root, 'src'), files, cas));
    expect(err.code).toBe(Code.PERMISSION_DENIED);
    expect(existsSync(path.join(tmp, 'x-outside'))).toBe(false);
  });

  it('never writes through a symlink (an earlier output) that leads out of the project', async () => {
    const { root, files } = await project();
    const outside = path.join(tmp, 'outside');
    await mkdir(outside);
    await symlink(outside, path.join(root, 'evil'));
    const data = Buffer.from('evil');
    await cas.put(digestOf(data), data);
    const err = await failure(writeOutputs(result({ outputFiles: [{ path: 'evil/authorized_keys', digest: digestOf(data), isExecutable: false }] }), root, files, cas));
    expect(err.code).toBe(Code.PERMISSION_DENIED);
    expect(err.message).toMatch(/^output "evil\/authorized_keys" leads outside the project through a symlink/);
    expect(await readdir(outside)).toEqual([]);
    expect((await lstat(path.join(root, 'evil'))).isSymbolicLink()).toBe(true);
  });
});
