import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import type { ActionCache } from '../../cas/action-cache.js';
import { createCompletenessCheckingActionCache } from '../../cas/complete-action-cache.js';
import { digestOf } from '../../cas/digest.js';
import { encodeTree } from '../../cas/directory.js';
import { createDiskActionCache } from '../../cas/disk-action-cache.js';
import { createMemoryActionCache } from '../../cas/memory-action-cache.js';
import { createMemoryBlobStore } from '../../cas/memory-blob-store.js';
import type { ActionResult, Tree } from '../../cas/types.js';
import { useTempDirs } from './tmpdir.js';

const tempDir = useTempDirs();
const actionDigest = digestOf(Buffer.from('action: cc -c hello.c'));
const objBytes = Buffer.from('\x7fELF object');

function sampleResult(): ActionResult {
  return {
    outputFiles: [{ path: 'out/hello.o', digest: digestOf(objBytes), isExecutable: false }],
    outputSymlinks: [{ path: 'out/latest', target: 'hello.o' }],
    outputDirectories: [],
    exitCode: 0,
    stdoutRaw: Buffer.from([0, 1, 2, 255]),
    stderrDigest: digestOf(Buffer.from('warning: unused variable')),
    executionMetadata: { worker: 'node-1', executionStartMs: 10, executionCompletedMs: 25 },
  };
}

describe.each<[string, () => Promise<ActionCache>]>([
  ['memory', async () => createMemoryActionCache()],
  ['disk', async () => createDiskActionCache(await tempDir())],
])('%s action cache', (_, make) => {
  it('misses, then returns what was put', async () => {
    const ac = await make();
    expect(await ac.get(actionDigest)).toBeUndefined();
    await ac.put(actionDigest, sampleResult());
    expect(await ac.get(actionDigest)).toEqual(sampleResult());
  });

  it('rejects a malformed action digest with INVALID_ARGUMENT', async () => {
    const ac = await make();
    const err = await ac.get({ hash: 'xyz', sizeBytes: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OrionError);
    expect((err as OrionError).code).toBe(Code.INVALID_ARGUMENT);
  });
});

describe('disk action cache', () => {
  it('persists entries across instances, raw stdout bytes included', async () => {
    const dir = await tempDir();
    await createDiskActionCache(dir).put(actionDigest, sampleResult());
    const got = await createDiskActionCache(dir).get(actionDigest);
    expect(got).toEqual(sampleResult());
    expect(Buffer.isBuffer(got!.stdoutRaw)).toBe(true);
  });

  it('stores one JSON file per action digest, with no temp files left', async () => {
    const dir = await tempDir();
    await createDiskActionCache(dir).put(actionDigest, sampleResult());
    const file = join(dir, actionDigest.hash.slice(0, 2), `${actionDigest.hash}-${actionDigest.sizeBytes}.json`);
    expect(JSON.parse(await readFile(file, 'utf8')).result.stdoutRaw).toBe('AAEC/w==');
    expect(await readdir(join(dir, actionDigest.hash.slice(0, 2)))).toEqual([`${actionDigest.hash}-${actionDigest.sizeBytes}.json`]);
  });

  it('treats a corrupt entry as a miss and removes it', async () => {
    const dir = await tempDir();
    const ac = createDiskActionCache(dir);
    await ac.put(actionDigest, sampleResult());
    const shard = join(dir, actionDigest.hash.slice(0, 2));
    const file = join(shard, (await readdir(shard))[0]!);
    for (const corrupt of ['{"version":1,"res', '{"version":1,"result":{"outputFiles":"nope"}}', '']) {
      await writeFile(file, corrupt);
      expect(await ac.get(actionDigest)).toBeUndefined();
      expect(await readdir(shard)).toEqual([]);
    }
  });
});

describe('completeness-checking action cache', () => {
  async function setup() {
    const blobs = createMemoryBlobStore();
    const inner = createMemoryActionCache();
    return { blobs, inner, ac: createCompletenessCheckingActionCache(inner, blobs) };
  }

  it('returns an entry whose referenced blobs are all present', async () => {
    const { blobs, ac } = await setup();
    await blobs.put(digestOf(objBytes), objBytes);
    await blobs.put(digestOf(Buffer.from('warning: unused variable')), Buffer.from('warning: unused variable'));
    await ac.put(actionDigest, sampleResult());
    expect(await ac.get(actionDigest)).toEqual(sampleResult());
  });

  it('hides an entry whose output file is missing', async () => {
    const { blobs, inner, ac } = await setup();
    await blobs.put(digestOf(Buffer.from('warning: unused variable')), Buffer.from('warning: unused variable'));
    await ac.put(actionDigest, sampleResult());
    expect(await inner.get(actionDigest)).toBeDefined();
    expect(await ac.get(actionDigest)).toBeUndefined();
  });

  it('hides an entry whose stderr blob is missing', async () => {
    const { blobs, ac } = await setup();
    await blobs.put(digestOf(objBytes), objBytes);
    await ac.put(actionDigest, sampleResult());
    expect(await ac.get(actionDigest)).toBeUndefined();
  });

  it('hides an entry whose output directory tree, or a file inside it, is missing', async () => {
    const { blobs, ac } = await setup();
    const lib = Buffer.from('archive');
    const tree: Tree = { root: { files: [{ name: 'libx.a', digest: digestOf(lib), isExecutable: false }], directories: [], symlinks: [] }, children: [] };
    const treeBytes = encodeTree(tree);
    const result: ActionResult = { outputFiles: [], outputSymlinks: [], outputDirectories: [{ path: 'lib', treeDigest: digestOf(treeBytes) }], exitCode: 0 };
    await ac.put(actionDigest, result);
    expect(await ac.get(actionDigest)).toBeUndefined();
    await blobs.put(digestOf(treeBytes), treeBytes);
    expect(await ac.get(actionDigest)).toBeUndefined();
    await blobs.put(digestOf(lib), lib);
    expect(await ac.get(actionDigest)).toEqual(result);
  });
});
