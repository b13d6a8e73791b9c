import { mkdir, readFile, readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.js';
import { digestOf } from '../../cas/digest.js';
import { createDiskBlobStore, verifyDiskBlobs } from '../../cas/disk-blob-store.js';
import { createCheckpointedBlobStore, openSyncCheckpoint, syncFileSystem, type SyncCheckpointOptions } from '../../cas/sync-checkpoint.js';
import { commandRunner } from '../../sandbox/runner.js';
import { useTempDirs } from './tmpdir.js';

const tempDir = useTempDirs();

/** A checkpoint over `dir` whose flushes are recorded and whose verification is a spy. */
function fixture(dir: string, over: Partial<SyncCheckpointOptions> = {}) {
  const syncs: number[] = [];
  const verified: number[] = [];
  const clock = createManualClock(1_000_000);
  const opts: SyncCheckpointOptions = {
    recordPath: join(dir, 'synced.json'),
    syncDir: dir,
    clock,
    bootId: () => 'boot-A',
    syncFs: async () => {
      syncs.push(clock.now());
    },
    verify: async (sinceMs) => {
      verified.push(sinceMs);
      return { checked: 3, removed: 1 };
    },
    intervalMs: 5000,
    ...over,
  };
  return { opts, syncs, verified, clock };
}

const record = async (dir: string) => JSON.parse(await readFile(join(dir, 'synced.json'), 'utf8')) as { bootId: string; syncedBeforeMs: number };

/** Lets the promise chains a timer started run to their end. */
const settle = () => new Promise((r) => setTimeout(r, 20));

describe('sync checkpoint', () => {
  it('checks every file when there is no record, then flushes and records the start', async () => {
    const dir = await tempDir();
    const f = fixture(dir);
    const cp = await openSyncCheckpoint(f.opts);
    expect(f.verified).toEqual([0]);
    expect(cp.recovery).toEqual({ reason: 'no sync record', sinceMs: 0, checked: 3, removed: 1 });
    expect(f.syncs).toEqual([1_000_000]);
    expect(await record(dir)).toEqual({ bootId: 'boot-A', syncedBeforeMs: 1_000_000 });
    await cp.close();
  });

  it('checks nothing when the record is from this boot (a process crash loses no written data)', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'synced.json'), JSON.stringify({ bootId: 'boot-A', syncedBeforeMs: 5 }));
    const f = fixture(dir);
    const cp = await openSyncCheckpoint(f.opts);
    expect(f.verified).toEqual([]);
    expect(cp.recovery).toEqual({ checked: 0, removed: 0 });
    expect((await record(dir)).syncedBeforeMs).toBe(1_000_000);
    await cp.close();
  });

  it('after a machine restart checks the files written since the last flush (with slack), and says why', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'synced.json'), JSON.stringify({ bootId: 'boot-OLD', syncedBeforeMs: 900_000 }));
    const f = fixture(dir);
    const cp = await openSyncCheckpoint(f.opts);
    expect(f.verified).toEqual([898_000]);
    expect(cp.recovery.reason).toBe('the machine restarted since the last flush');
    expect(await record(dir)).toEqual({ bootId: 'boot-A', syncedBeforeMs: 1_000_000 });
    await cp.close();
  });

  it('treats a malformed record as none: everything is checked', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'synced.json'), '{"bootId": 7');
    const f = fixture(dir);
    const cp = await openSyncCheckpoint(f.opts);
    expect(f.verified).toEqual([0]);
    expect(cp.recovery.reason).toMatch(/synced\.json is malformed/);
    await cp.close();
  });

  it('flushes within the interval after a write, once for many writes, and records when the flush began', async () => {
    const dir = await tempDir();
    const f = fixture(dir);
    const cp = await openSyncCheckpoint(f.opts);
    f.syncs.length = 0;
    f.clock.advance(60_000); // nothing written: no flush
    await settle();
    expect(f.syncs).toEqual([]);
    cp.dirtied();
    f.clock.advance(1000);
    cp.dirtied();
    f.clock.advance(3999);
    await settle();
    expect(f.syncs).toEqual([]);
    f.clock.advance(1);
    await settle();
    expect(f.syncs).toEqual([1_065_000]);
    expect((await record(dir)).syncedBeforeMs).toBe(1_065_000);
    await cp.close();
    expect(f.syncs).toHaveLength(1); // nothing written since: close does not flush again
  });

  it('keeps the old record when a flush fails and tries again at the next interval', async () => {
    const dir = await tempDir();
    let fail = false;
    const f = fixture(dir);
    const cp = await openSyncCheckpoint({
      ...f.opts,
      syncFs: async () => {
        f.syncs.push(f.clock.now());
        if (fail) throw new Error('EIO');
      },
    });
    fail = true;
    cp.dirtied();
    f.clock.advance(5000);
    await settle();
    expect(f.syncs).toHaveLength(2);
    expect((await record(dir)).syncedBeforeMs).toBe(1_000_000);
    fail = false;
    f.clock.advance(5000);
    await settle();
    expect(f.syncs).toHaveLength(3);
    expect((await record(dir)).syncedBeforeMs).toBe(1_010_000);
    await cp.close();
  });

  it('close flushes what was written since the last flush', async () => {
    const dir = await tempDir();
    const f = fixture(dir);
    const cp = await openSyncCheckpoint(f.opts);
    cp.dirtied();
    await cp.close();
    expect(f.syncs).toHaveLength(2);
  });

  it('the default flush runs sync -f, and names the directory when it fails', async () => {
    const dir = await tempDir();
    await expect(syncFileSystem(dir)).resolves.toBeUndefined();
    await expect(syncFileSystem(join(dir, 'absent'))).rejects.toThrow(/sync -f .*absent failed/);
  });

  it('runs sync -f through a daemon\'s process runner (the head\'s), with the same errors', async () => {
    const dir = await tempDir();
    await expect(syncFileSystem(dir, commandRunner())).resolves.toBeUndefined();
    await expect(syncFileSystem(join(dir, 'absent'), commandRunner())).rejects.toThrow(/sync -f .*absent failed: .*No such file or directory/);
    await expect(syncFileSystem(dir, commandRunner(undefined, dir))).rejects.toThrow(/sync -f .* failed: the sync command \(coreutils\) is not installed/);
    const slow = await tempDir();
    await writeFile(join(slow, 'sync'), '#!/bin/sh\nexec /bin/sleep 5\n', { mode: 0o755 });
    const timeout = commandRunner(undefined, slow);
    await expect(timeout(['sync', '-f', dir], 200)).resolves.toEqual({ exitCode: -1, stderr: 'timed out after 0.2 s' });
  });
});

describe('verifyDiskBlobs', () => {
  it('removes blobs modified since the given time that do not hash to their name, keeps the rest', async () => {
    const dir = await tempDir();
    const store = createDiskBlobStore(dir, { durable: false });
    const good = Buffer.from('good blob');
    const torn = Buffer.from('a blob a crash tore');
    const old = Buffer.from('an old torn blob');
    for (const b of [good, torn, old]) await store.put(digestOf(b), b);
    const exec = await store.localExecutablePath!(digestOf(good));
    const pathOf = (b: Buffer) => store.localPath!(digestOf(b))!;
    // What a machine crash leaves of unflushed files: zeros of the right size.
    for (const b of [torn, old]) await writeFile(pathOf(b), Buffer.alloc(b.length), { mode: 0o644 });
    await writeFile(exec!, Buffer.alloc(good.length));
    const t = Date.now() / 1000;
    await utimes(pathOf(old), t - 3600, t - 3600); // before the last flush: on disk, not checked
    await mkdir(join(dir, 'tmp'), { recursive: true });
    await writeFile(join(dir, 'tmp', 'half-written'), 'x');

    const r = await verifyDiskBlobs(dir, (t - 60) * 1000);
    expect(r).toEqual({ checked: 3, removed: 2 });
    expect(await store.has(digestOf(good))).toBe(true);
    expect(await store.get(digestOf(good))).toEqual(good);
    expect(await store.has(digestOf(torn))).toBe(false);
    expect(await store.has(digestOf(old))).toBe(true);
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
    // The executable copy was torn: removed, and made again from the good blob on demand.
    const again = await store.localExecutablePath!(digestOf(good));
    expect(await readFile(again!)).toEqual(good);
  });

  it('checks every blob from time 0, and an empty or absent store is fine', async () => {
    const dir = await tempDir();
    expect(await verifyDiskBlobs(join(dir, 'absent'), 0)).toEqual({ checked: 0, removed: 0 });
    const store = createDiskBlobStore(dir, { durable: false });
    const b = Buffer.from('x'.repeat(300_000)); // streamed
    await store.put(digestOf(b), b);
    expect(await verifyDiskBlobs(dir, 0)).toEqual({ checked: 1, removed: 0 });
  });
});

describe('checkpointed blob store', () => {
  it('reports every write to the checkpoint and none of the reads', async () => {
    const dir = await tempDir();
    let writes = 0;
    const store = createCheckpointedBlobStore(createDiskBlobStore(dir, { durable: false }), { dirtied: () => writes++ });
    const a = Buffer.from('a');
    await store.put(digestOf(a), a);
    await store.putStream(digestOf(Buffer.from('bb')), [Buffer.from('bb')]);
    expect(writes).toBe(2);
    await store.get(digestOf(a));
    await store.has(digestOf(a));
    await store.findMissing([digestOf(a)]);
    expect(writes).toBe(2);
    await expect(store.put(digestOf(a), Buffer.from('not a'))).rejects.toThrow(/digest mismatch/);
    expect(writes).toBe(2);
  });
});
