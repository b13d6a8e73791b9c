import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.js';
import { Code, OrionError } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import type { BlobStore } from '../../cas/blob-store.js';
import { digestKey, digestOf, sha256Hex } from '../../cas/digest.js';
import { decodeTree, encodeDirectory } from '../../cas/directory.js';
import { createDiskBlobStore } from '../../cas/disk-blob-store.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import { buildTreeFromDisk, collectTree } from '../../cas/merkle.js';
import type { Action, Command, Digest } from '../../cas/types.js';
import { MOUNT_PATH_PROPERTY, TOOL_ARG_PROPERTY, TOOL_PROPERTY } from '../../common/platform-properties.js';
import type { ToolCheck } from '../../node/tool-check.js';
import { createExecutor, type Assignment, type Executor } from '../../node/executor.js';
import { createBwrapRunner, probeBwrap } from '../../sandbox/bwrap-runner.js';
import { createProcessRunner, type ActionRunner } from '../../sandbox/runner.js';
import { isRunning, waitUntilGone } from '../helpers/processes.js';

let tmp: string;
let workDir: string;
let local: BlobStore;
let remote: BlobStore;

beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'orion-executor-'));
  workDir = path.join(tmp, 'actions');
  await mkdir(workDir);
  local = createDiskBlobStore(path.join(tmp, 'local-cas'));
  remote = createMemoryBlobStore();
});

afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function executor(runner: ActionRunner = createProcessRunner()): Executor {
  return createExecutor({ local, remote, runner, workDir, nodeId: 'test-node', clock: createManualClock(1_000), log: silentLogger() });
}

/** Writes `files` under a fresh directory and uploads its tree to the remote CAS. */
async function inputRoot(files: Record<string, string | { content: string; mode: number }>): Promise<Digest> {
  const dir = await mkdtemp(path.join(tmp, 'src-'));
  for (const [rel, spec] of Object.entries(files)) {
    const abs = path.join(dir, rel);
    await mkdir(path.dirname(abs), { recursive: true });
    if (typeof spec === 'string') await writeFile(abs, spec);
    else await writeFile(abs, spec.content, { mode: spec.mode });
  }
  const tree = await buildTreeFromDisk(dir);
  for (const [key, bytes] of tree.directories) await remote.put(parseKey(key), bytes);
  for (const [key, file] of tree.files) await remote.put(parseKey(key), await readFile(file));
  return tree.rootDigest;
}

const parseKey = (key: string): Digest => {
  const [hash, size] = key.split('/');
  return { hash: hash!, sizeBytes: Number(size) };
};

function assignment(root: Digest, argv: string[], opts: { outputs?: string[]; env?: Record<string, string>; timeoutMs?: number; platform?: Action['platform']; cwd?: string } = {}): Assignment {
  const command: Command = {
    arguments: argv,
    environmentVariables: Object.entries({ PATH: '/usr/bin:/bin', ...opts.env }).map(([name, value]) => ({ name, value })),
    outputPaths: opts.outputs ?? [],
    outputFiles: [],
    outputDirectories: [],
    workingDirectory: opts.cwd ?? '',
    platform: opts.platform,
  };
  const action: Action = { commandDigest: digestOf(Buffer.from(JSON.stringify(command))), inputRootDigest: root, timeoutMs: opts.timeoutMs, doNotCache: false };
  return { assignmentId: 'op/1', actionDigest: digestOf(Buffer.from(JSON.stringify(action))), action, command };
}

async function failure(p: Promise<unknown>): Promise<OrionError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OrionError);
  return err as OrionError;
}

const remoteText = async (d: Digest | undefined) => (await remote.get(d!)).toString();

describe('executor', () => {
  it('runs a command in its materialised input root and collects output files, output directories, stdout and stderr', async () => {
    const root = await inputRoot({ 'in.txt': 'input data\n', 'lib/helper.sh': { content: '#!/bin/sh\necho helper ran\n', mode: 0o755 } });
    const script = [
      'set -e',
      'mkdir -p out && cat in.txt > out/copy.txt',
      "printf '#!/bin/sh\\necho tool\\n' > tool && chmod 755 tool",
      'mkdir -p gen/d && echo a > gen/a && echo b > gen/d/b',
      './lib/helper.sh',
      'echo to-stderr >&2',
      'exit 3',
    ].join('\n');
    const result = await executor().execute(assignment(root, ['sh', '-c', script], { outputs: ['out/copy.txt', 'tool', 'gen', 'never-created'] }), new AbortController().signal);

    expect(result.exitCode).toBe(3);
    expect(await remoteText(result.stdoutDigest)).toBe('helper ran\n');
    expect(await remoteText(result.stderrDigest)).toBe('to-stderr\n');
    expect(result.outputFiles.map((f) => [f.path, f.isExecutable])).toEqual([
      ['out/copy.txt', false],
      ['tool', true],
    ]);
    expect(await remoteText(result.outputFiles[0]!.digest)).toBe('input data\n');
    expect(await remoteText(result.outputFiles[1]!.digest)).toBe('#!/bin/sh\necho tool\n');
    // Outputs that the command did not create are absent, not an error.
    expect(result.outputDirectories).toHaveLength(1);
    expect(result.outputDirectories[0]!.path).toBe('gen');
    const tree = decodeTree(await remote.get(result.outputDirectories[0]!.treeDigest));
    expect(tree.root.files.map((f) => f.name)).toEqual(['a']);
    expect(tree.root.directories.map((d) => d.name)).toEqual(['d']);
    expect(tree.children).toHaveLength(1);
    expect(tree.children[0]!.files.map((f) => f.name)).toEqual(['b']);
    expect(await remoteText(tree.root.files[0]!.digest)).toBe('a\n');
    expect(await remoteText(tree.children[0]!.files[0]!.digest)).toBe('b\n');
    expect(result.executionMetadata?.worker).toBe('test-node');
    expect(await readdir(workDir)).toEqual([]);
  });

  it('runs in the working directory and gives the command exactly the environment of the Command', async () => {
    const root = await inputRoot({ 'sub/marker': 'x' });
    const result = await executor().execute(
      assignment(root, ['sh', '-c', 'pwd; ls; env | grep -v "^PWD=\\|^SHLVL=\\|^_=" | sort'], { cwd: 'sub', env: { ONLY: 'this' } }),
      new AbortController().signal,
    );
    const [cwd, ...rest] = (await remoteText(result.stdoutDigest)).trim().split('\n');
    expect(cwd!.endsWith('/root/sub')).toBe(true);
    expect(rest).toEqual(['marker', 'ONLY=this', 'PATH=/usr/bin:/bin']);
  });

  it('gives a declared output that already exists as an input a private copy, never writing through to the local CAS', async () => {
    const root = await inputRoot({ 'gen.h': 'old header\n', 'tool.sh': { content: '#!/bin/sh\n', mode: 0o755 }, 'outdir/stale.txt': 'stale\n', 'keep.txt': 'kept\n' });
    const oldHeader = digestOf(Buffer.from('old header\n'));
    const oldTool = digestOf(Buffer.from('#!/bin/sh\n'));
    const stale = digestOf(Buffer.from('stale\n'));
    // Appending (as `ar r` does) and truncating both write into the existing file.
    const script = 'echo new header >> gen.h && echo "echo changed" >> tool.sh && test ! -e outdir && mkdir -p outdir && echo fresh > outdir/new.txt && cat keep.txt';
    const result = await executor().execute(assignment(root, ['sh', '-c', script], { outputs: ['gen.h', 'tool.sh', 'outdir'] }), new AbortController().signal);
    expect(result.exitCode).toBe(0);
    expect(await remoteText(result.stdoutDigest)).toBe('kept\n');
    expect(result.outputFiles.map((f) => [f.path, f.isExecutable])).toEqual([
      ['gen.h', false],
      ['tool.sh', true],
    ]);
    expect(await remoteText(result.outputFiles[0]!.digest)).toBe('old header\nnew header\n');
    expect(await remoteText(result.outputFiles[1]!.digest)).toBe('#!/bin/sh\necho changed\n');
    // A declared output directory starts empty: inputs under it are gone.
    const tree = decodeTree(await remote.get(result.outputDirectories[0]!.treeDigest));
    expect(tree.root.files.map((f) => f.name)).toEqual(['new.txt']);
    // The node-local CAS still holds the inputs intact, each hashing to its digest.
    for (const d of [oldHeader, oldTool, stale]) {
      const file = local.localPath!(d)!;
      expect(sha256Hex(await readFile(file))).toBe(d.hash);
      expect(await local.get(d)).toHaveLength(d.sizeBytes);
    }
    const execCopy = await local.localExecutablePath!(oldTool);
    expect(sha256Hex(await readFile(execCopy!))).toBe(oldTool.hash);
  });

  it('kills a command that exceeds the action timeout, with DEADLINE_EXCEEDED, and leaves none of its processes behind', async () => {
    const root = await inputRoot({ 'x.txt': 'x' });
    const pidFile = path.join(tmp, 'pids');
    const script = 'echo $$ >> "$PIDFILE"; sleep 100 & echo $! >> "$PIDFILE"; sh -c \'sleep 100 & echo $! >> "$PIDFILE"; wait\' & echo $! >> "$PIDFILE"; wait';
    const started = Date.now();
    const err = await failure(executor().execute(assignment(root, ['sh', '-c', script], { timeoutMs: 700, env: { PIDFILE: pidFile } }), new AbortController().signal));
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(err.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(err.message).toBe(`action timed out after 700 ms and was killed: sh -c ${script}`);
    const pids = (await readFile(pidFile, 'utf8')).trim().split('\n').map(Number);
    expect(pids).toHaveLength(4);
    expect(await waitUntilGone(pids)).toEqual([]);
    expect(await readdir(workDir)).toEqual([]);
  });

  it('cancels a running command when its signal aborts: CANCELLED, processes gone, directory removed', async () => {
    const root = await inputRoot({ 'x.txt': 'x' });
    const pidFile = path.join(tmp, 'pids');
    const controller = new AbortController();
    const running = executor().execute(assignment(root, ['sh', '-c', 'sleep 100 & echo $! > "$PIDFILE"; wait'], { env: { PIDFILE: pidFile } }), controller.signal);
    const pid = await (async () => {
      for (;;) {
        const text = await readFile(pidFile, 'utf8').catch(() => '');
        if (text.endsWith('\n')) return Number(text.trim());
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    expect(isRunning(pid)).toBe(true);
    controller.abort();
    const err = await failure(running);
    expect(err.code).toBe(Code.CANCELLED);
    expect(await waitUntilGone([pid])).toEqual([]);
    expect(await readdir(workDir)).toEqual([]);
  });

  it('removes the per-action directory after success and after every kind of failure', async () => {
    const root = await inputRoot({ 'x.txt': 'x' });
    const ex = executor();
    const signal = new AbortController().signal;
    await ex.execute(assignment(root, ['sh', '-c', 'echo made > out.txt'], { outputs: ['out.txt'] }), signal);
    expect(await readdir(workDir)).toEqual([]);
    const failed = await ex.execute(assignment(root, ['sh', '-c', 'mkdir -p a/b && touch a/b/c && exit 1']), signal);
    expect(failed.exitCode).toBe(1);
    expect(await readdir(workDir)).toEqual([]);
    const notFound = await failure(ex.execute(assignment(root, ['/no/such/program']), signal));
    expect(notFound.code).toBe(Code.FAILED_PRECONDITION);
    expect(notFound.message).toContain('cannot run "/no/such/program"');
    expect(await readdir(workDir)).toEqual([]);
  });

  it('reports INTERNAL (so the head retries elsewhere) when the head refuses an output the node uploads as not matching its digest', async () => {
    const root = await inputRoot({ 'in.txt': 'x' });
    const honest = remote;
    remote = {
      ...honest,
      put: async () => {
        throw new OrionError(Code.INVALID_ARGUMENT, 'digest mismatch: expected abc, got def');
      },
    };
    const err = await executor()
      .execute(assignment(root, ['/bin/sh', '-c', 'echo out > out.txt'], { outputs: ['out.txt'] }), new AbortController().signal)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OrionError);
    expect((err as OrionError).code).toBe(Code.INTERNAL);
    expect((err as OrionError).message).toMatch(/^node test-node could not upload output [0-9a-f]{64}\/\d+: digest mismatch/);
  });

  it('checks the program the key names at its index (a compile run through libtool names gcc, not the shell), and refuses an index out of range', async () => {
    const root = await inputRoot({ 'a.txt': 'a\n' });
    const seen: string[] = [];
    const tools: ToolCheck = {
      async verify(spec) {
        seen.push(spec.argv0);
        return {};
      },
    };
    const withTools = createExecutor({ local, remote, runner: createProcessRunner(), workDir, nodeId: 'test-node', clock: createManualClock(1_000), log: silentLogger(), tools });
    const platform = (arg: string) => ({ properties: [{ name: TOOL_PROPERTY, value: `/usr/bin/true@${'a'.repeat(64)}` }, { name: TOOL_ARG_PROPERTY, value: arg }] });
    const ok = await withTools.execute(assignment(root, ['/bin/sh', '-c', 'exit 0', 'true'], { platform: platform('3') }), new AbortController().signal);
    expect(ok.exitCode).toBe(0);
    expect(seen).toEqual(['true']);
    const err = await failure(withTools.execute(assignment(root, ['/bin/sh', '-c', 'exit 0'], { platform: platform('3') }), new AbortController().signal));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.message).toContain('orion-tool-arg');
    expect(seen).toEqual(['true']);
    expect(await readdir(workDir)).toEqual([]);
  });

  it('fails with FAILED_PRECONDITION listing a missing input file blob', async () => {
    const root = await inputRoot({ 'a.c': 'int a;\n', 'b.c': 'int b;\n' });
    const gone = digestOf(Buffer.from('int b;\n'));
    // Simulate eviction from the head CAS: a fresh store without that one blob.
    const evicted = createMemoryBlobStore();
    const all = [...(await collectKeys(root))].filter((k) => k !== digestKey(gone));
    for (const k of all) await evicted.put(parseKey(k), await remote.get(parseKey(k)));
    remote = evicted;
    const err = await failure(executor().execute(assignment(root, ['cat', 'a.c', 'b.c']), new AbortController().signal));
    expect(err.code).toBe(Code.FAILED_PRECONDITION);
    expect(err.missing).toEqual([gone]);
    expect(err.message).toContain(digestKey(gone));
    expect(await readdir(workDir)).toEqual([]);
  });

  it('fails with FAILED_PRECONDITION listing a missing input directory blob', async () => {
    const ghost = digestOf(Buffer.from('a directory that was never uploaded'));
    const err = await failure(executor().execute(assignment(ghost, ['true']), new AbortController().signal));
    expect(err.code).toBe(Code.FAILED_PRECONDITION);
    expect(err.missing).toEqual([ghost]);
    expect(await readdir(workDir)).toEqual([]);
  });

  it('runs the command inside bubblewrap at the mount path the action names', async () => {
    const probe = await probeBwrap();
    if (!probe.ok) throw new Error(`bubblewrap is required for this test but cannot run here: ${probe.reason}`);
    const root = await inputRoot({ 'src/main.c': 'int main;\n' });
    const mount = '/orion-test/project';
    const result = await executor(createBwrapRunner(createProcessRunner())).execute(
      assignment(root, ['sh', '-c', 'pwd; cat main.c; echo built > out.txt'], {
        cwd: 'src',
        outputs: ['out.txt'],
        platform: { properties: [{ name: MOUNT_PATH_PROPERTY, value: mount }] },
      }),
      new AbortController().signal,
    );
    expect(result.exitCode).toBe(0);
    expect(await remoteText(result.stdoutDigest)).toBe(`${mount}/src\nint main;\n`);
    expect(result.outputFiles.map((f) => f.path)).toEqual(['out.txt']);
    expect(await remoteText(result.outputFiles[0]!.digest)).toBe('built\n');
    expect(await readdir(workDir)).toEqual([]);
  });
});

/** Every blob key (directories and files) of a tree in the remote CAS. */
async function collectKeys(root: Digest): Promise<Set<string>> {
  const tree = await collectTree(root, remote);
  return new Set([...tree.directories.map((d) => digestKey(digestOf(encodeDirectory(d)))), ...tree.fileDigests.map(digestKey)]);
}
