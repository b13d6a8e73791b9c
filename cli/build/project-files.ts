/**
 * The build's view of the project tree: file digests (through the persistent
 * stat cache, so an unchanged file is never re-hashed), kept up to date as
 * actions write outputs, and snapshots of the whole tree: the input of steps
 * whose reads are unknown, and the global source context of remote actions.
 */
import { lstatSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { lstat, readlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { StatCache } from '../../cas/stat-cache.js';
import { buildTreeFromEntries, type MerkleTree, type TreeFileEntry, type TreeSymlinkEntry } from '../../cas/merkle.js';
import type { Digest } from '../../cas/types.js';

export interface FileState {
  digest: Digest;
  isExecutable: boolean;
  /** Modification time when known (make compares these). */
  mtimeMs?: number;
}

/** What a path holds: a file, a symlink or a directory. */
export type Entry = { kind: 'file'; state: FileState } | { kind: 'symlink'; target: string } | { kind: 'dir' };

export interface Snapshot {
  entries: ReadonlyMap<string, Entry>;
  /** A digest of every path and what it holds. */
  hash: string;
}

export interface ProjectFiles {
  readonly root: string;
  /** The file's content digest, or undefined when it does not exist (or is not a regular file). */
  state(abs: string): Promise<FileState | undefined>;
  /**
   * `abs` was just written (by an action, or by Orion) and holds `digest`; `stats` is its
   * lstat after the write. The stat cache keeps the digest for later builds too.
   */
  record(abs: string, digest: Digest, stats: Stats): void;
  /** `abs` may have changed in ways Orion did not see: look again next time. */
  forget(abs: string): void;
  /** Anything in the tree may have changed (a step with unknown effects ran). */
  forgetAll(): void;
  /** Every file and symlink under the root (minus ignored directories), relative paths, as at the first call. */
  list(): Promise<{ files: string[]; symlinks: TreeSymlinkEntry[]; dirs: string[] }>;
  /** The whole tree as it stands now. */
  snapshot(): Promise<Snapshot>;
  /**
   * The whole project as a Merkle tree, as it stands now (global source context). A symlink to
   * an absolute path inside the project (`ln -s $(abs_srcdir)/x.dist x.c`) is written relative,
   * which resolves the same at the project's path; one to an absolute path outside it is left
   * out (REAPI input trees hold no absolute symlinks; a head refuses the whole tree otherwise), so
   * an action reading through it runs on a node only if its own inputs hold that file.
   */
  tree(): Promise<MerkleTree>;
}

/** `target` of the symlink at `rel` as the input tree holds it: relative, or undefined when it leaves the project. */
export function portableTarget(root: string, rel: string, target: string): string | undefined {
  if (!path.isAbsolute(target)) return target;
  const inside = path.relative(root, target);
  if (inside.startsWith('..') || path.isAbsolute(inside)) return undefined;
  return path.relative(path.dirname(path.join(root, rel)), target) || '.';
}

/** Directories never part of a build's inputs. */
const IGNORED = new Set(['.git', '.hg', '.svn', '.orion', '.orion-deps']);

export function snapshotHash(entries: ReadonlyMap<string, Entry>): string {
  // One update of the joined lines: an update per entry cost ~5 µs each (~10 ms on Redis).
  const lines: string[] = [];
  for (const p of [...entries.keys()].sort()) {
    const e = entries.get(p)!;
    if (e.kind === 'file') lines.push(`${p}\u0000${e.state.digest.hash}\u0000${e.state.isExecutable ? 'x' : '-'}\n`);
    else if (e.kind === 'symlink') lines.push(`${p}\u0000->${e.target}\n`);
    else lines.push(`${p}\u0000/\n`);
  }
  return createHash('sha256').update(lines.join('')).digest('hex');
}

const stateFrom = (digest: Digest, st: Stats): FileState => ({ digest, isExecutable: (st.mode & 0o100) !== 0, mtimeMs: st.mtimeMs });

export function createProjectFiles(root: string, statCache: StatCache): ProjectFiles {
  const states = new Map<string, Promise<FileState | undefined>>();
  let firstListing: Promise<{ files: string[]; symlinks: TreeSymlinkEntry[]; dirs: string[] }> | undefined;
  /** The live tree, once a snapshot was taken; undefined when it must be walked again. */
  let live: Map<string, Entry> | undefined;
  const dirty = new Set<string>();
  /** Bumped at every change of `live`; the hash of the last snapshot is kept for its version. */
  let version = 0;
  let hashed: { version: number; hash: string } | undefined;
  /** The root with one trailing slash: `base + rel` is path.join(root, rel) for the clean relative paths a listing makes, without normalising each (~1 µs per file). */
  const base = path.join(root, '/');

  const stateOf = async (abs: string, st: Stats): Promise<FileState> => stateFrom(await statCache.digestFileCached(abs, st), st);

  async function compute(abs: string): Promise<FileState | undefined> {
    try {
      const st = await lstat(abs);
      return st.isFile() ? await stateOf(abs, st) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Every file, symlink and directory under the root, with the files' lstat. Synchronous: a
   * project is a few thousand entries, which the synchronous calls list in a few milliseconds
   * where one promise per entry took ~45 ms (Redis), after every step with unknown effects.
   */
  function walk(): { files: string[]; stats: Map<string, Stats>; symlinks: TreeSymlinkEntry[]; dirs: string[] } {
    const files: string[] = [];
    const stats = new Map<string, Stats>();
    const symlinks: TreeSymlinkEntry[] = [];
    const dirs: string[] = [];
    const visit = (dir: string, rel: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const childRel = rel ? `${rel}/${e.name}` : e.name;
        const abs = base + childRel;
        if (e.isDirectory()) {
          if (IGNORED.has(e.name)) continue;
          dirs.push(childRel);
          visit(abs, childRel);
        } else if (e.isFile()) {
          // Gone since the listing (a racing process): left out, as a later listing would.
          const st = lstatSync(abs, { throwIfNoEntry: false });
          if (st?.isFile()) {
            files.push(childRel);
            stats.set(childRel, st);
          }
        } else if (e.isSymbolicLink()) symlinks.push({ path: childRel, target: readlinkSync(abs) });
      }
    };
    visit(base, '');
    files.sort();
    return { files, stats, symlinks, dirs };
  }

  async function refresh(rel: string, into: Map<string, Entry>) {
    const abs = path.join(root, rel);
    const st = await lstat(abs).catch(() => undefined);
    if (st?.isSymbolicLink()) into.set(rel, { kind: 'symlink', target: await readlink(abs) });
    else if (st?.isDirectory()) into.set(rel, { kind: 'dir' });
    else if (st?.isFile()) {
      const state = await stateOf(abs, st);
      states.set(abs, Promise.resolve(state));
      into.set(rel, { kind: 'file', state });
    } else {
      into.delete(rel);
      states.delete(abs);
    }
  }

  const relOf = (abs: string) => {
    const rel = path.relative(root, abs);
    return rel.startsWith('..') || path.isAbsolute(rel) ? undefined : rel;
  };

  const files: ProjectFiles = {
    root,
    state(abs) {
      let p = states.get(abs);
      if (!p) {
        p = compute(abs);
        states.set(abs, p);
      }
      return p;
    },
    record(abs, digest, stats) {
      statCache.remember(abs, stats, digest);
      const state = stateFrom(digest, stats);
      states.set(abs, Promise.resolve(state));
      const rel = relOf(abs);
      if (rel !== undefined && live) {
        version++;
        live.set(rel, { kind: 'file', state });
        dirty.delete(rel);
        // Its parent directories exist now too.
        for (let d = path.dirname(rel); d !== '.' && !live.has(d); d = path.dirname(d)) live.set(d, { kind: 'dir' });
      }
    },
    forget(abs) {
      states.delete(abs);
      const rel = relOf(abs);
      if (rel !== undefined) dirty.add(rel);
    },
    forgetAll() {
      states.clear();
      live = undefined;
      dirty.clear();
    },
    list() {
      return (firstListing ??= Promise.resolve().then(walk));
    },
    async snapshot() {
      if (!live) {
        const listing = walk();
        firstListing ??= Promise.resolve(listing);
        const next = new Map<string, Entry>();
        for (const s of listing.symlinks) next.set(s.path, { kind: 'symlink', target: s.target });
        for (const d of listing.dirs) next.set(d, { kind: 'dir' });
        const place = (rel: string, abs: string, state: FileState) => {
          states.set(abs, Promise.resolve(state));
          next.set(rel, { kind: 'file', state });
        };
        // Unchanged files are answered from the stat cache synchronously; only the others are hashed.
        const toHash: string[] = [];
        for (const rel of listing.files) {
          const abs = base + rel;
          const st = listing.stats.get(rel)!;
          const known = statCache.peek(abs, st);
          if (known) place(rel, abs, stateFrom(known, st));
          else toHash.push(rel);
        }
        await Promise.all(
          toHash.map(async (rel) => {
            const abs = path.join(root, rel);
            place(rel, abs, await stateOf(abs, listing.stats.get(rel)!));
          }),
        );
        live = next;
        version++;
        dirty.clear();
      } else if (dirty.size > 0) {
        const current = live;
        await Promise.all([...dirty].map((rel) => refresh(rel, current)));
        version++;
        dirty.clear();
      }
      // A step's snapshot after it runs is the next one's before (nothing ran between): hashed once.
      if (hashed?.version !== version) hashed = { version, hash: snapshotHash(live) };
      return { entries: live, hash: hashed.hash };
    },
    async tree() {
      const snap = await files.snapshot();
      const entries: TreeFileEntry[] = [];
      const symlinks: TreeSymlinkEntry[] = [];
      for (const [p, e] of snap.entries) {
        if (e.kind === 'file') entries.push({ path: p, digest: e.state.digest, isExecutable: e.state.isExecutable });
        else if (e.kind === 'symlink') {
          const target = portableTarget(root, p, e.target);
          if (target !== undefined) symlinks.push({ path: p, target });
        }
      }
      return buildTreeFromEntries(entries, symlinks);
    },
  };
  return files;
}
