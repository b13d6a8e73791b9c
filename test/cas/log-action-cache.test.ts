import { spawn } from 'node:child_process';
import { appendFile, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Code, OrionError } from '../../common/errors.js';
import { digestOf } from '../../cas/digest.js';
import { openLogActionCache, type LogActionCache, type LogActionCacheOptions } from '../../cas/log-action-cache.js';
import type { ActionResult, Digest } from '../../cas/types.js';
import { useTempDirs } from './tmpdir.js';

const tempDir = useTempDirs();
const open: LogActionCache[] = [];
afterEach(() => {
  for (const ac of open.splice(0)) ac.close();
});

function openLog(dir: string, opts?: LogActionCacheOptions): LogActionCache {
  const ac = openLogActionCache(dir, opts);
  open.push(ac);
  return ac;
}

/** Closes `ac` now (a reopen of its directory in this process needs it). */
function closeLog(ac: LogActionCache) {
  ac.close();
  open.splice(open.indexOf(ac), 1);
}

const key = (name: string): Digest => digestOf(Buffer.from(`action ${name}`));

function result(name: string): ActionResult {
  return {
    outputFiles: [{ path: `out/${name}.o`, digest: digestOf(Buffer.from(name)), isExecutable: false }],
    outputSymlinks: [],
    outputDirectories: [],
    exitCode: 0,
    stdoutRaw: Buffer.from([0, 1, 2, 255]),
    executionMetadata: { worker: 'node-1', executionStartMs: 10, executionCompletedMs: 25 },
  };
}

const segmentsIn = async (dir: string) => (await readdir(dir)).filter((n) => n.endsWith('.log')).sort();

describe('log action cache', () => {
  it('misses, returns what was put, and keeps entries across a reopen (raw stdout bytes included)', async () => {
    const dir = await tempDir();
    const ac = openLog(dir);
    expect(await ac.get(key('a'))).toBeUndefined();
    await ac.put(key('a'), result('a'));
    await ac.put(key('b'), result('b'));
    expect(await ac.get(key('a'))).toEqual(result('a'));
    closeLog(ac);
    const again = openLog(dir);
    expect(again.size()).toBe(2);
    const got = await again.get(key('b'));
    expect(got).toEqual(result('b'));
    expect(Buffer.isBuffer(got!.stdoutRaw)).toBe(true);
  });

  it('serves the latest result put under a digest, also after a reopen', async () => {
    const dir = await tempDir();
    const ac = openLog(dir);
    await ac.put(key('a'), result('first'));
    await ac.put(key('a'), result('second'));
    expect(await ac.get(key('a'))).toEqual(result('second'));
    closeLog(ac);
    expect(await openLog(dir).get(key('a'))).toEqual(result('second'));
  });

  it('never serves another digest\'s entry when their index keys collide', async () => {
    const ac = openLog(await tempDir());
    const a = { hash: 'a'.repeat(64), sizeBytes: 10 };
    await ac.put(a, result('a'));
    expect(await ac.get({ hash: `${'a'.repeat(13)}${'b'.repeat(51)}`, sizeBytes: 10 })).toBeUndefined();
    expect(await ac.get({ ...a, sizeBytes: 11 })).toBeUndefined();
    expect(await ac.get(a)).toEqual(result('a'));
  });

  it('drops a record a crash cut short, and appends cleanly after it', async () => {
    const dir = await tempDir();
    const ac = openLog(dir);
    await ac.put(key('a'), result('a'));
    await ac.put(key('b'), result('b'));
    closeLog(ac);
    const [seg] = await segmentsIn(dir);
    const whole = await readFile(join(dir, seg!));
    // Cut the last record in half, as a power loss during its write would.
    const firstLen = 16 + whole.readUInt32LE(4);
    await writeFile(join(dir, seg!), whole.subarray(0, firstLen + Math.floor((whole.length - firstLen) / 2)));
    const again = openLog(dir);
    expect(await again.get(key('a'))).toEqual(result('a'));
    expect(await again.get(key('b'))).toBeUndefined();
    expect((await stat(join(dir, seg!))).size).toBe(firstLen);
    await again.put(key('c'), result('c'));
    closeLog(again);
    const third = openLog(dir);
    expect(await third.get(key('a'))).toEqual(result('a'));
    expect(await third.get(key('c'))).toEqual(result('c'));
  });

  it('treats a record whose bytes changed as a miss, keeping the records before it', async () => {
    const dir = await tempDir();
    const ac = openLog(dir);
    await ac.put(key('a'), result('a'));
    await ac.put(key('b'), result('b'));
    const [seg] = await segmentsIn(dir);
    const bytes = await readFile(join(dir, seg!));
    const flipAt = bytes.length - 5; // inside b's JSON
    bytes[flipAt] ^= 0x20;
    await writeFile(join(dir, seg!), bytes);
    // The open cache re-reads and checks the record...
    expect(await ac.get(key('b'))).toBeUndefined();
    expect(await ac.get(key('a'))).toEqual(result('a'));
    closeLog(ac);
    // ...and so does a reopen.
    const again = openLog(dir);
    expect(again.size()).toBe(1);
    expect(await again.get(key('a'))).toEqual(result('a'));
  });

  it('ignores garbage appended after the last record', async () => {
    const dir = await tempDir();
    const ac = openLog(dir);
    await ac.put(key('a'), result('a'));
    closeLog(ac);
    const [seg] = await segmentsIn(dir);
    await appendFile(join(dir, seg!), Buffer.from('not a record at all, just bytes'));
    const again = openLog(dir);
    expect(await again.get(key('a'))).toEqual(result('a'));
    await again.put(key('b'), result('b'));
    expect(await again.get(key('b'))).toEqual(result('b'));
  });

  it('stays within its bound by deleting the oldest segments, keeping entries that are read', async () => {
    const dir = await tempDir();
    const ac = openLog(dir, { segmentBytes: 2048, maxBytes: 8192 });
    await ac.put(key('kept'), result('kept'));
    await ac.put(key('dropped'), result('dropped'));
    for (let i = 0; i < 200; i++) {
      await ac.put(key(`filler ${i}`), result(`filler ${i}`));
      expect(await ac.get(key('kept'))).toEqual(result('kept'));
    }
    expect(await ac.get(key('dropped'))).toBeUndefined();
    expect(await ac.get(key('filler 0'))).toBeUndefined();
    expect(await ac.get(key('filler 199'))).toEqual(result('filler 199'));
    const segs = await segmentsIn(dir);
    expect(segs.length).toBeLessThanOrEqual(6);
    let bytes = 0;
    for (const s of segs) bytes += (await stat(join(dir, s))).size;
    expect(bytes).toBeLessThanOrEqual(8192 + 2048);
    expect(ac.size()).toBeLessThan(60);
    closeLog(ac);
    const again = openLog(dir, { segmentBytes: 2048, maxBytes: 8192 });
    expect(await again.get(key('kept'))).toEqual(result('kept'));
    expect(await again.get(key('dropped'))).toBeUndefined();
  });

  it('rejects a malformed action digest with INVALID_ARGUMENT', async () => {
    const ac = openLog(await tempDir());
    const err = await ac.get({ hash: 'xyz', sizeBytes: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OrionError);
    expect((err as OrionError).code).toBe(Code.INVALID_ARGUMENT);
  });
});

describe('log action cache ownership', () => {
  it('refuses a second open of its directory in the same process until the first is closed', async () => {
    const dir = await tempDir();
    const ac = openLog(dir);
    expect(() => openLogActionCache(dir)).toThrow(/already open in this process/);
    closeLog(ac);
    expect(openLog(dir).size()).toBe(0);
  });

  it('refuses a directory another live process holds, naming it; takes over one a dead process left', async () => {
    const dir = await tempDir();
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      await writeFile(join(dir, 'LOCK'), `${child.pid}\n`);
      let err: unknown;
      try {
        openLogActionCache(dir);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(OrionError);
      expect((err as OrionError).code).toBe(Code.FAILED_PRECONDITION);
      expect((err as OrionError).message).toContain(`in use by process ${child.pid}`);
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    // The process is gone now: its lock is stale.
    const ac = openLog(dir);
    await ac.put(key('a'), result('a'));
    expect(await readFile(join(dir, 'LOCK'), 'utf8')).toBe(`${process.pid}\n`);
  });
});
