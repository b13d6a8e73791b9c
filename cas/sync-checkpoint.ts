/**
 * Batched durability for stores written without a flush per file (a head's CAS and action cache).
 *
 * A flush per uploaded blob cost ~0.1 ms of CPU and a disk round trip per file (3,000 blobs of
 * 18 KB on this VM's ext4: 0.87-0.93 s flushed one by one, 0.32-0.34 s unflushed, and 0.26 s for
 * one syncfs of all of them; a cold Redis build uploads ~3,200 blobs to a head). What a flush
 * protects against is a machine crash, not a process crash (the page cache outlives the
 * process), so instead:
 *
 * - Files are written whole and renamed into place, unflushed. Writers call `dirtied()`.
 * - At most every `intervalMs` after a write, the file system is flushed as a whole (syncfs,
 *   through `sync -f`), and then a record `{bootId, syncedBeforeMs}` is written: every file
 *   written before `syncedBeforeMs` on that boot of the machine is on disk.
 * - At start, a record from another boot of the machine (it crashed or was restarted with writes
 *   not yet synced) means files written after its `syncedBeforeMs` may hold zeros or garbage:
 *   `verify(sinceMs)` checks those (for a CAS: rehash each blob modified since then, remove any
 *   that does not match its name). Without a record every file is checked (a store from before
 *   this scheme, or a record lost). A record from this boot needs no check: the process stopped
 *   or crashed, the kernel still had its writes.
 *
 * A blob removed that way is missing (clients upload it again, action cache entries naming it
 * fail their completeness check and run again): work can be redone, never served wrong. A sync
 * that fails leaves the record where it was, so a crash then costs a longer check, nothing else.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { systemClock, type Clock } from '../common/clock.js';
import type { Logger } from '../common/logger.js';
import { isErrno } from '../common/errors.js';
import { writeFileAtomic } from './atomic-file.js';
import type { BlobStore } from './blob-store.js';

const execFileP = promisify(execFile);

/** Runs a command to its end; `exitCode` -1 when it could not finish (say, timed out: the reason in `stderr`). */
export type RunCommand = (argv: string[], timeoutMs: number) => Promise<{ exitCode: number; stderr: string }>;

const execFileCommand: RunCommand = async (argv, timeoutMs) => {
  try {
    await execFileP(argv[0]!, argv.slice(1), { timeout: timeoutMs });
    return { exitCode: 0, stderr: '' };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw err;
    return { exitCode: typeof e.code === 'number' ? e.code : -1, stderr: e.stderr?.trim() || e.message };
  }
};

/**
 * Flushes the file system holding `dir` (syncfs(2)) with coreutils' `sync -f`, started by `run`
 * (default: Node's execFile; a daemon passes its spawn helper, which does not fork the daemon).
 */
export async function syncFileSystem(dir: string, run: RunCommand = execFileCommand): Promise<void> {
  let r;
  try {
    r = await run(['sync', '-f', dir], 10 * 60_000);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const missing = e.code === 'ENOENT' || /ENOENT/.test(e.message);
    throw new Error(`sync -f ${dir} failed: ${missing ? 'the sync command (coreutils) is not installed' : e.message}`);
  }
  if (r.exitCode !== 0) throw new Error(`sync -f ${dir} failed: ${r.stderr.trim() || `exit code ${r.exitCode}`}`);
}

/** This boot of the machine (Linux: a random id the kernel draws at boot). */
export function machineBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    // No procfs: every start counts as a new boot, so every start checks what was written since the last sync.
    return `unknown-${process.pid}-${Date.now()}`;
  }
}

export interface SyncRecord {
  bootId: string;
  syncedBeforeMs: number;
}

export interface RecoveryReport {
  /** Why files were checked; undefined when the record showed no check was needed. */
  reason?: string;
  /** Files modified at or after this time were checked (0: all of them). */
  sinceMs?: number;
  checked: number;
  removed: number;
}

export interface SyncCheckpointOptions {
  /** Where the record is kept. */
  recordPath: string;
  /** A directory on the file system to flush. */
  syncDir: string;
  /** Checks files modified at or after `sinceMs`, removes the bad ones, and says how many of each. */
  verify(sinceMs: number): Promise<{ checked: number; removed: number }>;
  /** Flush at most this long after a write (default 5 s). */
  intervalMs?: number;
  clock?: Clock;
  syncFs?: (dir: string) => Promise<void>;
  bootId?: () => string;
  log?: Logger;
}

export interface SyncCheckpoint {
  /** What the start-up check found. */
  recovery: RecoveryReport;
  /** Notes an unflushed write: a flush follows within the interval. */
  dirtied(): void;
  /** Flushes now when anything was written since the last flush. */
  flush(): Promise<void>;
  /** Final flush; no more timers. */
  close(): Promise<void>;
}

function readRecord(path: string): { record?: SyncRecord; problem?: string } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return { problem: 'no sync record' };
    return { problem: `sync record ${path} unreadable: ${(err as Error).message}` };
  }
  try {
    const r = JSON.parse(text) as Partial<SyncRecord>;
    if (typeof r.bootId === 'string' && typeof r.syncedBeforeMs === 'number' && Number.isFinite(r.syncedBeforeMs)) return { record: { bootId: r.bootId, syncedBeforeMs: r.syncedBeforeMs } };
  } catch {
    // reported below
  }
  return { problem: `sync record ${path} is malformed` };
}

/** File times and the clock may differ by a little (coarse timestamps, a clock stepped back). */
const SLACK_MS = 2000;

/**
 * Checks what an earlier crash of the machine may have left torn (see the file comment), flushes,
 * records the new starting point, and returns the checkpoint that flushes later writes.
 */
export async function openSyncCheckpoint(opts: SyncCheckpointOptions): Promise<SyncCheckpoint> {
  const clock = opts.clock ?? systemClock;
  const syncFs = opts.syncFs ?? syncFileSystem;
  const bootId = (opts.bootId ?? machineBootId)();
  const intervalMs = opts.intervalMs ?? 5000;
  const log = opts.log;

  const { record, problem } = readRecord(opts.recordPath);
  let recovery: RecoveryReport = { checked: 0, removed: 0 };
  if (!record || record.bootId !== bootId) {
    const sinceMs = record ? Math.max(0, record.syncedBeforeMs - SLACK_MS) : 0;
    const reason = record ? 'the machine restarted since the last flush' : problem!;
    // (A new data directory has no record and nothing to check: no word about it.)
    if (record) log?.info({ reason, since: sinceMs > 0 ? new Date(sinceMs).toISOString() : 'the beginning' }, 'checking the stored files written since the last flush against their digests');
    const r = await opts.verify(sinceMs);
    recovery = { reason, sinceMs, ...r };
    if (r.removed > 0) log?.warn({ ...recovery }, 'removed stored files that did not match their digest (written before a machine crash, never flushed)');
    else if (r.checked > 0) log?.info({ ...recovery }, 'checked stored files written since the last flush');
  }

  let dirty = false;
  let timer: { cancel(): void } | undefined;
  let running: Promise<void> | undefined;
  let closed = false;

  const writeRecord = async (syncedBeforeMs: number) => {
    await writeFileAtomic(opts.recordPath, `${JSON.stringify({ bootId, syncedBeforeMs } satisfies SyncRecord)}\n`, { durable: true });
  };

  const syncOnce = async (): Promise<void> => {
    dirty = false;
    const t0 = clock.now();
    try {
      await syncFs(opts.syncDir);
      await writeRecord(t0);
    } catch (err) {
      dirty = true;
      log?.warn({ err: (err as Error).message }, 'flushing the store failed; will retry (a machine crash now costs a longer check at the next start)');
      throw err;
    }
  };

  const schedule = () => {
    if (timer || closed) return;
    timer = clock.setTimeout(() => {
      timer = undefined;
      flush().catch(() => schedule());
    }, intervalMs);
  };

  const flush = async (): Promise<void> => {
    while (running) await running.catch(() => undefined);
    if (!dirty) return;
    running = syncOnce();
    try {
      await running;
    } finally {
      running = undefined;
    }
  };

  // Everything found now is on disk (checked, or from this boot and flushed here): start from now.
  dirty = true;
  await flush().catch(() => undefined);

  return {
    recovery,
    dirtied() {
      dirty = true;
      schedule();
    },
    flush,
    async close() {
      closed = true;
      timer?.cancel();
      timer = undefined;
      await flush().catch(() => undefined);
    },
  };
}

/** A BlobStore decorator: every write to `inner` is reported to the checkpoint, which flushes it within its interval. */
export function createCheckpointedBlobStore<S extends BlobStore>(inner: S, checkpoint: Pick<SyncCheckpoint, 'dirtied'>): S {
  const tracked: Partial<BlobStore> = {
    async put(d, data) {
      await inner.put(d, data);
      checkpoint.dirtied();
    },
    async putStream(d, src) {
      await inner.putStream(d, src);
      checkpoint.dirtied();
    },
  };
  if (inner.putHashedFile) {
    tracked.putHashedFile = async (d, path) => {
      await inner.putHashedFile!(d, path);
      checkpoint.dirtied();
    };
  }
  // Reads and whatever else the inner store offers pass through.
  return Object.assign(Object.create(inner) as S, tracked);
}
