/**
 * A daemon's disk CAS kept within its size: trims it (store-trim.ts) at start,
 * every `everyMs`, and each time a tenth of `maxBytes` has been written to it
 * (`wrote`), one trim at a time, until `signal` aborts. A node
 * passes `ready`, which says whether now is a good moment (no action running)
 * and may free what pins blobs first (its kept exec roots); a node that is
 * never idle would never trim, so a trim skipped while the store is estimated
 * over its size (the size the last trim left plus what was written since)
 * calls `overdue`: the node then takes no new actions until it could trim.
 */
import type { Logger } from 'pino';
import { trimDiskStore, type TrimOptions, type TrimResult } from './store-trim.js';

export interface StoreTrimmerOptions extends TrimOptions {
  dir: string;
  everyMs: number;
  log: Pick<Logger, 'info' | 'warn'>;
  signal: AbortSignal;
  /** False: skip this round. Called before each trim. */
  ready?: () => boolean;
  /** Told the outcome of each trim (metrics). */
  onTrim?(r: TrimResult): void;
  /** A trim was skipped (`ready` said no) while the store is estimated over its size. */
  overdue?(): void;
  /** Injected for tests; defaults to setInterval/clearInterval. */
  every?: (fn: () => void, ms: number) => () => void;
}

export interface StoreTrimmer {
  /** Trims now (waiting for a trim in progress first); undefined when `ready` said no. */
  trimNow(): Promise<TrimResult | undefined>;
  /** Counts bytes written to the store: a tenth of maxBytes since the last such trim starts one. */
  wrote(n: number): void;
  /** Call when `ready` may have turned true: runs a trim that was skipped because it was not. */
  maybeReady(): void;
}

const MiB = 1024 * 1024;

export function startStoreTrimmer(o: StoreTrimmerOptions): StoreTrimmer {
  let running: Promise<TrimResult | undefined> = Promise.resolve(undefined);
  let skipped = false;
  /** Bytes in the store: what the last trim left, plus what was written since (0 before the first trim). */
  let estimate = 0;
  /** When the last trim could not get under the size (all of it used within keepMs), and when it ran. */
  let stuck: number | undefined;
  const now = o.now ?? Date.now;
  const trimOnce = async (): Promise<TrimResult | undefined> => {
    if (o.signal.aborted) return undefined;
    skipped = !!o.ready && !o.ready();
    if (skipped) {
      // After a trim that could not help, only once some of what it kept may have aged.
      if (estimate > o.maxBytes && (stuck === undefined || now() - stuck >= o.keepMs / 6)) o.overdue?.();
      return undefined;
    }
    const t0 = Date.now();
    const r = await trimDiskStore(o.dir, o);
    estimate = r.bytesAfter;
    stuck = r.over ? now() : undefined;
    o.onTrim?.(r);
    const fields = { dir: o.dir, files: r.files, removed: r.removed, mib: Math.round(r.bytesAfter / MiB), maxMiB: Math.round(o.maxBytes / MiB), ms: Date.now() - t0 };
    if (r.over) o.log.warn(fields, 'the CAS is over its size, and what is left was used too recently to remove');
    else if (r.removed > 0) o.log.info(fields, 'removed least recently used blobs from the CAS');
    return r;
  };
  const trimNow = () => {
    running = running.then(trimOnce, trimOnce).catch((err: unknown) => {
      o.log.warn({ err: (err as Error).message, dir: o.dir }, 'could not trim the CAS');
      return undefined;
    });
    return running;
  };
  const every = o.every ?? ((fn, ms) => {
    const t = setInterval(fn, ms);
    t.unref();
    return () => clearInterval(t);
  });
  const stop = every(() => void trimNow(), o.everyMs);
  o.signal.addEventListener('abort', stop, { once: true });
  void trimNow();
  let written = 0;
  return {
    trimNow,
    maybeReady() {
      if (skipped) {
        skipped = false;
        void trimNow();
      }
    },
    wrote(n) {
      estimate += n;
      written += n;
      if (written < o.maxBytes / 10) return;
      written = 0;
      void trimNow();
    },
  };
}
