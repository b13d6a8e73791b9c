/**
 * A persistent ActionCache kept as an append-only log of segment files, with an in-memory
 * index: the head's action cache. A put is one append (one write call), a miss is a map
 * lookup, a hit one or two positioned reads. The one-file-per-entry cache (disk-action-cache.ts)
 * costs a head a stat per lookup and four file calls per entry (create, write, close, rename),
 * ~0.2 ms of its main thread per executed action on the benchmark machine.
 *
 * Layout: `dir/<8 digits>.log`, numbered in write order. A record is a 16-byte header
 * (magic, body length, first 8 bytes of the body's SHA-256) and a body: the action digest as
 * `hash-size`, a newline, and the entry in disk-action-cache.ts's JSON format. Opening scans
 * every segment; a record whose checksum fails (a write a crash cut short) ends its segment,
 * and the segment being appended to is truncated there. Entries are not flushed one by one:
 * a crash can lose recent entries, never serve a torn one.
 *
 * The log is bounded: past `maxBytes` the oldest segment is deleted with its entries, after a
 * hit in the oldest quarter of the segments has been written again at the head of the log, so
 * entries in use survive (Buildbarn's local store does the same with its blocks).
 *
 * One process owns a directory (`dir/LOCK` holds its pid): a second one fails with
 * FAILED_PRECONDITION naming the owner, since its index would not see the first one's entries.
 */
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Code, OrionError, isErrno, wrap } from '../common/errors.js';
import { isProcessAlive } from '../common/process-alive.js';
import type { ActionCache } from './action-cache.js';
import { deserializeEntry, serializeEntry } from './disk-action-cache.js';
import { validateDigest } from './digest.js';
import type { Digest } from './types.js';

const MAGIC = 0x4f41_4331; // "OAC1"
const HEADER = 16;
/** An entry larger than this is refused (its stdout and stderr are inlined only when small). */
const MAX_RECORD = 64 << 20;
const SEGMENT_NAME = /^(\d{8})\.log$/;

export interface LogActionCacheOptions {
  /** Bytes a segment grows to before the next one starts (default 8 MiB). */
  segmentBytes?: number;
  /** Bytes of segments kept; past it the oldest segment is deleted (default 512 MiB). */
  maxBytes?: number;
}

export interface LogActionCache extends ActionCache {
  /** Entries the index holds. */
  size(): number;
  /** Closes the log's files and releases the directory (the cache is not used after). */
  close(): void;
}

interface Segment {
  seq: number;
  path: string;
  bytes: number;
}

const checksum = (body: Buffer) => createHash('sha256').update(body).digest().subarray(0, 8);

/** The index key of a digest: 52 bits of its hash (a collision only costs a miss: records carry the whole digest). */
const keyOf = (d: Digest) => Number.parseInt(d.hash.slice(0, 13), 16);
/** A record's place: segment sequence number and offset, packed in one number (offsets stay below 2^32). */
const locOf = (seq: number, off: number) => seq * 2 ** 32 + off;

/** Directories an open log of this process holds. */
const openHere = new Set<string>();

function takeLock(dir: string): string {
  const lock = join(dir, 'LOCK');
  if (openHere.has(lock)) throw new OrionError(Code.FAILED_PRECONDITION, `the action cache ${dir} is already open in this process`);
  for (let tries = 0; tries < 2; tries++) {
    try {
      writeFileSync(lock, `${process.pid}\n`, { flag: 'wx' });
      openHere.add(lock);
      return lock;
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw wrap(err, `cannot lock the action cache ${dir}`);
    }
    const owner = Number.parseInt(readFileSync(lock, 'utf8'), 10);
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && isProcessAlive(owner)) {
      throw new OrionError(Code.FAILED_PRECONDITION, `the action cache ${dir} is in use by process ${owner}`, {
        hint: `give each head its own --data-dir; if process ${owner} is not an Orion head, remove ${lock}`,
      });
    }
    rmSync(lock, { force: true }); // left by a process that is gone
  }
  throw new OrionError(Code.FAILED_PRECONDITION, `cannot lock the action cache ${dir}: another process keeps taking ${lock}`);
}

export function openLogActionCache(dir: string, opts: LogActionCacheOptions = {}): LogActionCache {
  const segmentBytes = opts.segmentBytes ?? 8 << 20;
  const maxBytes = Math.max(opts.maxBytes ?? 512 << 20, segmentBytes * 2);
  mkdirSync(dir, { recursive: true });
  const lock = takeLock(dir);
  const index = new Map<number, number>();
  const segments: Segment[] = [];
  let fd = -1;
  let totalBytes = 0;
  /** Read descriptors by segment sequence number, opened on first read. */
  const readers = new Map<number, number>();
  const closeReader = (seq: number) => {
    const r = readers.get(seq);
    if (r !== undefined) closeSync(r);
    readers.delete(seq);
  };

  /** Indexes the whole records of a segment; returns the length they span. */
  function scan(seg: Segment, data: Buffer): number {
    let off = 0;
    while (off + HEADER <= data.length) {
      const len = data.readUInt32LE(off + 4);
      if (data.readUInt32LE(off) !== MAGIC || off + HEADER + len > data.length) break;
      const body = data.subarray(off + HEADER, off + HEADER + len);
      if (!checksum(body).equals(data.subarray(off + 8, off + 16))) break;
      const nl = body.indexOf(10);
      const hash = body.toString('latin1', 0, Math.min(nl, 13));
      if (nl < 0 || !/^[0-9a-f]{13}$/.test(hash)) break;
      index.set(Number.parseInt(hash, 16), locOf(seg.seq, off));
      off += HEADER + len;
    }
    return off;
  }

  const names = readdirSync(dir).filter((n) => SEGMENT_NAME.test(n)).sort();
  for (const name of names) {
    const seg = { seq: Number(SEGMENT_NAME.exec(name)![1]), path: join(dir, name), bytes: 0 };
    const data = readFileSync(seg.path);
    seg.bytes = scan(seg, data);
    if (seg.bytes < data.length && name === names.at(-1)) {
      // A cut write at the end: drop it, so the next record starts on a record boundary.
      const t = openSync(seg.path, 'r+');
      try {
        ftruncateSync(t, seg.bytes);
      } finally {
        closeSync(t);
      }
    }
    segments.push(seg);
    totalBytes += seg.bytes;
  }

  function openNext(): Segment {
    if (fd >= 0) closeSync(fd);
    const seq = (segments.at(-1)?.seq ?? 0) + 1;
    const seg = { seq, path: join(dir, `${String(seq).padStart(8, '0')}.log`), bytes: 0 };
    fd = openSync(seg.path, 'a');
    segments.push(seg);
    return seg;
  }

  function current(): Segment {
    const last = segments.at(-1);
    if (last && fd >= 0) return last;
    if (last && last.bytes < segmentBytes) {
      fd = openSync(last.path, 'a');
      return last;
    }
    return openNext();
  }

  /** Deletes the oldest segments while the log is over its bound. */
  function evict() {
    while (totalBytes > maxBytes && segments.length > 1) {
      const old = segments.shift()!;
      closeReader(old.seq);
      rmSync(old.path, { force: true });
      totalBytes -= old.bytes;
      const lo = locOf(old.seq, 0);
      const hi = locOf(old.seq + 1, 0);
      for (const [k, loc] of index) if (loc >= lo && loc < hi) index.delete(k);
    }
  }

  function append(digest: Digest, json: string): void {
    const body = Buffer.from(`${digest.hash}-${digest.sizeBytes}\n${json}`);
    if (body.length > MAX_RECORD) throw new OrionError(Code.INVALID_ARGUMENT, `action cache entry of ${body.length} bytes is over the ${MAX_RECORD}-byte limit`);
    const rec = Buffer.allocUnsafe(HEADER + body.length);
    rec.writeUInt32LE(MAGIC, 0);
    rec.writeUInt32LE(body.length, 4);
    checksum(body).copy(rec, 8);
    body.copy(rec, HEADER);
    let seg = current();
    if (seg.bytes > 0 && seg.bytes + rec.length > segmentBytes) seg = openNext();
    for (let off = 0; off < rec.length; ) off += writeSync(fd, rec, off, rec.length - off);
    index.set(keyOf(digest), locOf(seg.seq, seg.bytes));
    seg.bytes += rec.length;
    totalBytes += rec.length;
    evict();
  }

  /** The record at `loc`, when it is the entry of `digest`. */
  function read(loc: number, digest: Digest): { json: string; seq: number } | undefined {
    const seq = Math.floor(loc / 2 ** 32);
    const off = loc - seq * 2 ** 32;
    const seg = segments.find((s) => s.seq === seq);
    if (!seg) return undefined;
    let r = readers.get(seq);
    if (r === undefined) readers.set(seq, (r = openSync(seg.path, 'r')));
    const head = Buffer.allocUnsafe(HEADER + 4096);
    const got = readSync(r, head, 0, head.length, off);
    if (got < HEADER || head.readUInt32LE(0) !== MAGIC) return undefined;
    const len = head.readUInt32LE(4);
    let body = head.subarray(HEADER, Math.min(got, HEADER + len));
    if (body.length < len) {
      body = Buffer.allocUnsafe(len);
      if (readSync(r, body, 0, len, off + HEADER) !== len) return undefined;
    }
    if (!checksum(body).equals(head.subarray(8, 16))) return undefined;
    const nl = body.indexOf(10);
    if (body.toString('latin1', 0, nl) !== `${digest.hash}-${digest.sizeBytes}`) return undefined;
    return { json: body.toString('utf8', nl + 1), seq };
  }

  return {
    async get(actionDigest) {
      const d = validateDigest(actionDigest);
      const loc = index.get(keyOf(d));
      if (loc === undefined) return undefined;
      let rec;
      try {
        rec = read(loc, d);
      } catch (err) {
        if (isErrno(err, 'ENOENT')) return undefined;
        throw wrap(err, `failed to read the action cache in ${dir}`);
      }
      if (!rec) return undefined;
      let result;
      try {
        result = deserializeEntry(rec.json);
      } catch {
        index.delete(keyOf(d));
        return undefined;
      }
      // In use and next in line for eviction: write it again at the head of the log (a failure
      // to do so costs the entry later, not this hit).
      if (segments.length >= 4 && rec.seq <= segments[Math.floor(segments.length / 4) - 1]!.seq) {
        try {
          append(d, rec.json);
        } catch {
          // disk full or the like: the next put reports it
        }
      }
      return result;
    },
    async put(actionDigest, result) {
      const d = validateDigest(actionDigest);
      try {
        append(d, serializeEntry(result));
      } catch (err) {
        throw err instanceof OrionError ? err : wrap(err, `failed to write an action cache entry in ${dir}`);
      }
    },
    size: () => index.size,
    close() {
      if (fd >= 0) closeSync(fd);
      fd = -1;
      for (const seq of [...readers.keys()]) closeReader(seq);
      rmSync(lock, { force: true });
      openHere.delete(lock);
    },
  };
}
