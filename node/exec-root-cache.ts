/**
 * Fast exec roots for a node. Consecutive actions of a build run in trees that
 * differ by a few files (the source tree plus their ancestors' outputs), so a
 * node keeps one materialised template tree, hard-link-copies it for each
 * action and applies only the differences, found by walking both Merkle trees
 * and skipping identical subtrees. A template of up to `maxInProcess` entries is
 * copied by synchronous link calls in this process (~10 µs each; spawning
 * `cp -al` costs a fork of the node, ~10 ms); a larger one by `cp -al`. It also
 * remembers which directories it holds completely, so fetching an input root
 * from the head only walks what is new.
 *
 * Exec roots of a listed template are kept between actions: after its action one
 * is put back to the tree that action was given (not to the template), so the
 * next action with the same ancestors (every compile of a library, say) gets it
 * with no change at all, and one with other ancestors gets only the difference.
 * Putting a root back reads only the directories whose entries changed: every
 * directory of a kept root has its mtime set to STAMP and its ctime recorded; a
 * directory whose entries the action changed has a new mtime (the kernel sets the
 * current time), and one whose mtime the action set back has a new ctime (no
 * call sets a ctime), so a directory showing both is unchanged and its files
 * need no look.
 */
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, linkSync, lstatSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmdirSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Code, OrionError, invalidArgument, isErrno, wrap } from '../common/errors.js';
import type { BlobStore } from '../cas/blob-store.js';
import { digestKey } from '../cas/digest.js';
import { decodeDirectory, validateDirectory, validateName } from '../cas/directory.js';
import { materializeTree } from '../cas/merkle.js';
import type { Digest, Directory } from '../cas/types.js';

export interface TreeChange {
  /** Files to put (replacing whatever is at the path). */
  files: { path: string; digest: Digest; isExecutable: boolean }[];
  symlinks: { path: string; target: string }[];
  /** Directories to create (new, possibly empty). */
  dirs: string[];
  /** Paths to remove first. */
  removed: string[];
}

/** An exec root lent to one action; `release` takes it back (reset for the next one, or removed). */
export interface ExecRootLease {
  dir: string;
  release(): void;
}

export interface ExecRootCache {
  /** Creates `dest` (absent) holding the tree `root`, whose blobs are all in the local store. */
  materialize(root: Digest, dest: string, signal?: AbortSignal): Promise<void>;
  /**
   * A directory holding the tree `root` for one action. Exec roots of a template small enough
   * to list are kept after their action and put back to the tree that action was given (a walk
   * of the directories it changed: on a filesystem where mkdir and rmdir cost 60-300 µs of CPU,
   * copying and removing a 1,500-file tree per action cost ~100 ms); others are made and removed.
   */
  lease(root: Digest, signal?: AbortSignal): Promise<ExecRootLease>;
  /** Removes the exec roots kept for reuse (a node stopping leaves no action directory). */
  close(): void;
  /**
   * Before blobs are removed from the local store: drops the template and its kept roots and
   * forgets which directories are complete, so nothing here relies on a blob that may go. False
   * (nothing dropped) while a template is being built or copied.
   */
  reset(): boolean;
  /** Directories known to be complete in the local store (their whole subtree). */
  isComplete(dir: Digest): boolean;
  markComplete(dirs: Digest[]): void;
}

export interface ExecRootCacheDeps {
  local: BlobStore;
  /** Where templates live (on the same filesystem as the action directories and the CAS). */
  dir: string;
  /** Above this many changed entries the template is rebuilt for the new tree. */
  maxChanges?: number;
  /** Copies a directory as hard links (default: in this process up to `maxInProcess` entries, else `cp -al`). */
  copyLinks?: (src: string, dest: string) => Promise<void>;
  /** Largest template (files, directories and symlinks) copied without a process. */
  maxInProcess?: number;
  /** Where lent exec roots live while in use (same filesystem; default `dir`); kept ones wait in `dir`. */
  leaseDir?: string;
}

/**
 * An entry of a listed tree. A file is a hard link: `ino` is its inode, `from` a path holding
 * that inode to link it again from (the template's file, or the local CAS's blob); '' when it
 * was copied, not linked (such a root is not put back, but removed).
 */
type Entry = { kind: 'dir' } | { kind: 'file'; ino: number; from: string } | { kind: 'symlink'; target: string };

/** A listed tree: each directory's entries by name ('' is the root). */
interface Listing {
  dirs: Map<string, Map<string, Entry>>;
  /** The template's directory mode (every directory has it). */
  dirMode: number;
}

/** The mtime every directory of a kept exec root is given (2000-01-01T00:00:00Z): any change of its entries replaces it. */
const STAMP_SECONDS = 946_684_800;
const STAMP_NS = BigInt(STAMP_SECONDS) * 1_000_000_000n;

/** An exec root kept between actions: the tree it holds (once put back), its listing, its directories' stamps. */
interface Kept {
  dir: string;
  root: Digest;
  listing: Listing;
  /** ctime (ns) of each directory, read after its mtime was set to STAMP. */
  stamps: Map<string, bigint>;
}

const childPath = (rel: string, name: string) => (rel === '' ? name : `${rel}/${name}`);
const parentOf = (rel: string) => {
  const slash = rel.lastIndexOf('/');
  return slash < 0 ? '' : rel.slice(0, slash);
};
const nameOf = (rel: string) => rel.slice(rel.lastIndexOf('/') + 1);

function cpAl(src: string, dest: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('cp', ['-al', '--', src, dest], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new OrionError(Code.INTERNAL, `cp -al ${src} ${dest} failed: ${err.trim()}`))));
  });
}

/** The differences that turn tree `from` into tree `to`, reading directories from `store`. */
export async function diffTrees(store: BlobStore, from: Digest, to: Digest, limit = Infinity): Promise<TreeChange | undefined> {
  const change: TreeChange = { files: [], symlinks: [], dirs: [], removed: [] };
  let count = 0;
  const load = async (d: Digest): Promise<Directory> => {
    const dir = decodeDirectory(await store.get(d));
    validateDirectory(dir);
    return dir;
  };
  const bump = () => ++count > limit;

  async function added(d: Digest, prefix: string): Promise<boolean> {
    const dir = await load(d);
    change.dirs.push(prefix);
    for (const f of dir.files) {
      change.files.push({ path: `${prefix}/${f.name}`, digest: f.digest, isExecutable: f.isExecutable });
      if (bump()) return false;
    }
    for (const s of dir.symlinks) change.symlinks.push({ path: `${prefix}/${s.name}`, target: s.target });
    for (const sub of dir.directories) if (!(await added(sub.digest, `${prefix}/${sub.name}`))) return false;
    return true;
  }

  async function walk(a: Digest, b: Digest, prefix: string): Promise<boolean> {
    if (a.hash === b.hash) return true;
    const [da, db] = await Promise.all([load(a), load(b)]);
    const join = (name: string) => (prefix ? `${prefix}/${name}` : name);
    const filesA = new Map(da.files.map((f) => [f.name, f]));
    const dirsA = new Map(da.directories.map((x) => [x.name, x]));
    const linksA = new Map(da.symlinks.map((x) => [x.name, x]));
    const namesB = new Set([...db.files.map((f) => f.name), ...db.directories.map((x) => x.name), ...db.symlinks.map((x) => x.name)]);
    for (const name of [...filesA.keys(), ...dirsA.keys(), ...linksA.keys()]) {
      if (namesB.has(name)) continue;
      change.removed.push(join(name));
      if (bump()) return false;
    }
    for (const f of db.files) {
      const old = filesA.get(f.name);
      if (old && old.digest.hash === f.digest.hash && old.isExecutable === f.isExecutable) continue;
      if (!old && (dirsA.has(f.name) || linksA.has(f.name))) change.removed.push(join(f.name));
      change.files.push({ path: join(f.name), digest: f.digest, isExecutable: f.isExecutable });
      if (bump()) return false;
    }
    for (const s of db.symlinks) {
      const old = linksA.get(s.name);
      if (old?.target === s.target) continue;
      if (old || filesA.has(s.name) || dirsA.has(s.name)) change.removed.push(join(s.name));
      change.symlinks.push({ path: join(s.name), target: s.target });
      if (bump()) return false;
    }
    for (const sub of db.directories) {
      const old = dirsA.get(sub.name);
      if (old) {
        if (!(await walk(old.digest, sub.digest, join(sub.name)))) return false;
        continue;
      }
      if (filesA.has(sub.name) || linksA.has(sub.name)) change.removed.push(join(sub.name));
      if (!(await added(sub.digest, join(sub.name)))) return false;
    }
    return true;
  }

  return (await walk(from, to, '')) ? change : undefined;
}

/**
 * Rejects the symlinks materializeTree refuses (empty, absolute, or leading out of
 * the root): a tree applied as differences must pass the same checks as one
 * materialised whole. Messages as in cas/merkle.ts checkSymlinkTarget.
 */
function checkSymlink(s: { path: string; target: string }): void {
  const where = JSON.stringify(s.path);
  if (s.target === '') throw invalidArgument(`symlink ${where} has an empty target`);
  if (s.target.startsWith('/')) throw invalidArgument(`symlink ${where} has absolute target ${JSON.stringify(s.target)}`);
  const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(s.path), s.target));
  if (resolved === '..' || resolved.startsWith('../')) throw invalidArgument(`symlink ${where} target ${JSON.stringify(s.target)} escapes the tree root`);
}

interface Template {
  root: Digest;
  dir: string;
  /** Its entries, when few enough to copy in this process. */
  listing?: Listing;
  /** Exec roots copied from it, put back to their last action's tree and free for the next action. */
  free: Kept[];
  /** Exec roots diffing against or copying this template; it is removed only at 0. */
  users: number;
}

/** The listing of tree `root` (all in `store`) materialised at `dir`, or undefined past `max` entries. */
async function listTree(store: BlobStore, root: Digest, dir: string, max: number): Promise<Listing | undefined> {
  const dirs = new Map<string, Map<string, Entry>>();
  let count = 0;
  const walk = async (d: Digest, rel: string): Promise<boolean> => {
    const listed = decodeDirectory(await store.get(d));
    const here = new Map<string, Entry>();
    dirs.set(rel, here);
    count += listed.files.length + listed.symlinks.length + listed.directories.length;
    if (count > max) return false;
    for (const f of listed.files) {
      const from = path.join(dir, childPath(rel, f.name));
      here.set(f.name, { kind: 'file', ino: lstatSync(from).ino, from });
    }
    for (const l of listed.symlinks) here.set(l.name, { kind: 'symlink', target: l.target });
    for (const sub of listed.directories) {
      here.set(sub.name, { kind: 'dir' });
      if (!(await walk(sub.digest, childPath(rel, sub.name)))) return false;
    }
    return true;
  };
  return (await walk(root, '')) ? { dirs, dirMode: lstatSync(dir).mode & 0o7777 } : undefined;
}

/** A listing of its own (the entries are never changed in place, only replaced). */
const cloneListing = (l: Listing): Listing => ({ dirs: new Map([...l.dirs].map(([k, v]) => [k, new Map(v)])), dirMode: l.dirMode });

/**
 * Hard-link copy of the listed subtree `rel` ('' for all) at `dest`: directories before what
 * they hold. Calls `made` with each directory it creates. A file that was copied (no `from`)
 * cannot be copied again: that throws.
 */
function copyListed(l: Listing, dest: string, rel = '', made?: (rel: string) => void): void {
  mkdirSync(path.join(dest, rel));
  made?.(rel);
  for (const [name, e] of l.dirs.get(rel)!) {
    const sub = childPath(rel, name);
    if (e.kind === 'dir') copyListed(l, dest, sub, made);
    else if (e.kind === 'file') linkAgain(e, sub, path.join(dest, sub));
    else symlinkSync(e.target, path.join(dest, sub));
  }
}

/** Links listed file `rel` at `to` again, from the path holding its inode. */
function linkAgain(e: Extract<Entry, { kind: 'file' }>, rel: string, to: string): void {
  if (!e.from) throw new OrionError(Code.INTERNAL, `no source to link ${rel} again from`);
  linkSync(e.from, to);
}

/**
 * Removes the file, symlink or directory tree at `abs` (nothing there is fine). Direct calls: for
 * every entry rmSync stats it, and tries rmdir on a directory before emptying it; here the types
 * come from the directory listings (`isDir` when the caller's listing already says). An action's
 * output directories go this way after each action: rmSync was ~15% of a busy node's main thread.
 */
export function removePath(abs: string, isDir?: boolean): void {
  if (isDir === undefined) {
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (!st) return;
    isDir = st.isDirectory();
  }
  try {
    if (!isDir) return unlinkSync(abs);
    for (const d of readdirSync(abs, { withFileTypes: true })) removePath(path.join(abs, d.name), d.isDirectory());
    rmdirSync(abs);
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
}

/** Sets each directory's mtime to STAMP and records its ctime. */
function stampDirs(k: Kept, dirs: Iterable<string>): void {
  for (const rel of dirs) {
    if (!k.listing.dirs.has(rel)) continue;
    const abs = rel === '' ? k.dir : path.join(k.dir, rel);
    utimesSync(abs, STAMP_SECONDS, STAMP_SECONDS);
    k.stamps.set(rel, lstatSync(abs, { bigint: true }).ctimeNs);
  }
}

/**
 * Puts exec root `k.dir` back to its listing: removes what the action added, relinks files it
 * replaced or removed (a listed file is the same inode), restores symlinks and directories (and
 * their mode). A directory still carrying its stamp (mtime STAMP, ctime as recorded) had no entry
 * added, removed or replaced, so only its subdirectories are looked at; every other one is read
 * and each of its files looked at. The directories it changed are stamped again.
 */
function resetKept(k: Kept): void {
  const l = k.listing;
  const touched = new Set<string>();
  const walk = (rel: string) => {
    const abs = rel === '' ? k.dir : path.join(k.dir, rel);
    const st = lstatSync(abs, { bigint: true, throwIfNoEntry: false });
    if (!st || !st.isDirectory()) {
      if (st) removePath(abs, false);
      copyListed(l, k.dir, rel, (d) => touched.add(d));
      touched.add(parentOf(rel));
      return;
    }
    const want = l.dirs.get(rel)!;
    if (st.mtimeNs === STAMP_NS && st.ctimeNs === k.stamps.get(rel) && Number(st.mode & 0o7777n) === l.dirMode) {
      for (const [name, e] of want) if (e.kind === 'dir') walk(childPath(rel, name));
      return;
    }
    touched.add(rel);
    if (Number(st.mode & 0o7777n) !== l.dirMode) chmodSync(abs, l.dirMode);
    const seen = new Set<string>();
    for (const d of readdirSync(abs, { withFileTypes: true })) {
      const e = want.get(d.name);
      const p = path.join(abs, d.name);
      if (!e) {
        removePath(p, d.isDirectory());
        continue;
      }
      seen.add(d.name);
      if (e.kind === 'dir') {
        walk(childPath(rel, d.name));
      } else if (e.kind === 'file') {
        if (d.isFile() && lstatSync(p).ino === e.ino) continue;
        removePath(p, d.isDirectory());
        linkAgain(e, childPath(rel, d.name), p);
      } else {
        if (d.isSymbolicLink() && readlinkSync(p) === e.target) continue;
        removePath(p, d.isDirectory());
        symlinkSync(e.target, p);
      }
    }
    for (const [name, e] of want) {
      if (seen.has(name)) continue;
      if (e.kind === 'dir') copyListed(l, k.dir, childPath(rel, name), (d) => touched.add(d));
      else if (e.kind === 'file') linkAgain(e, childPath(rel, name), path.join(abs, name));
      else symlinkSync(e.target, path.join(abs, name));
    }
  };
  walk('');
  stampDirs(k, touched);
}

const removeQuietly = (dir: string) => {
  try {
    removePath(dir);
  } catch {
    // Left for the next start's clean-up.
  }
};

/** Reset exec roots kept per template, free for the next action. */
const MAX_FREE_ROOTS = 16;

export function createExecRootCache(deps: ExecRootCacheDeps): ExecRootCache {
  const maxChanges = deps.maxChanges ?? 2000;
  const maxInProcess = deps.copyLinks ? -1 : (deps.maxInProcess ?? 4000);
  const complete = new Set<string>();
  let template: Template | undefined;
  /** Settles (never rejects) when the rebuild in progress, if any, is over. */
  let building: Promise<void> | undefined;
  let seq = 0;

  /** Makes `root` the template; the caller holds it (users = 1). */
  function startRebuild(root: Digest, signal?: AbortSignal): Promise<Template> {
    const made = (async () => {
      const dir = path.join(deps.dir, `t${process.pid}-${++seq}`);
      let listing: Listing | undefined;
      removePath(dir);
      try {
        await materializeTree(root, deps.local, dir, { link: true, signal });
        listing = maxInProcess >= 0 ? await listTree(deps.local, root, dir, maxInProcess) : undefined;
      } catch (err) {
        removeQuietly(dir);
        throw err;
      }
      const old = template;
      const t: Template = { root, dir, listing, free: [], users: 1 };
      template = t;
      if (old) void retire(old);
      return t;
    })();
    // Others wait for the rebuild to be over, whatever its outcome (its failure is the caller's).
    const settled: Promise<void> = made
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => {
        if (building === settled) building = undefined;
      });
    building = settled;
    return made;
  }

  async function retire(t: Template) {
    while (t.users > 0) await new Promise((r) => setTimeout(r, 50));
    for (const k of t.free.splice(0)) removeQuietly(k.dir);
    removeQuietly(t.dir);
  }

  /**
   * The template to copy for `root` and the changes to apply to the copy. The template
   * is held (users) from the moment it is read, so a rebuild for another root cannot
   * remove it before the caller has copied it; the caller releases it.
   */
  async function acquire(root: Digest, signal?: AbortSignal): Promise<{ t: Template; change: TreeChange }> {
    for (;;) {
      while (building) await building;
      let t = template;
      if (t) t.users++;
      else t = await startRebuild(root, signal);
      let change: TreeChange | undefined;
      try {
        change = await diffTrees(deps.local, t.root, root, maxChanges);
      } catch (err) {
        t.users--;
        throw err;
      }
      if (change) return { t, change };
      t.users--;
      // Too different: this tree becomes the template, unless a rebuild (for another
      // tree) started meanwhile; then look again once it is over.
      if (building) continue;
      t = await startRebuild(root, signal);
      try {
        change = await diffTrees(deps.local, t.root, root);
      } catch (err) {
        t.users--;
        throw err;
      }
      return { t, change: change! };
    }
  }

  /** A hard-link copy of the template at `dest` (absent); `made` is called with each directory of a listed one. */
  async function copyTemplate(t: Template, dest: string, made?: (rel: string) => void) {
    if (t.listing) copyListed(t.listing, dest, '', made);
    else await (deps.copyLinks ?? cpAl)(t.dir, dest);
  }

  /**
   * Puts one changed file in place (synchronous calls: a few µs each, against ~20 µs through
   * promises). Returns its entry: the inode, and the blob it is a link to ('' when copied).
   */
  async function place(dest: string, f: TreeChange['files'][number]): Promise<Entry> {
    const abs = path.join(dest, f.path);
    removePath(abs);
    mkdirSync(path.dirname(abs), { recursive: true });
    const src = f.digest.sizeBytes === 0 ? undefined : f.isExecutable ? await deps.local.localExecutablePath?.(f.digest) : deps.local.localPath?.(f.digest);
    if (src) {
      try {
        linkSync(src, abs);
        return { kind: 'file', ino: lstatSync(abs).ino, from: src };
      } catch {
        // Fall through to a copy (another filesystem, or too many links).
      }
    }
    const tmp = `${abs}.orion-tmp`;
    if (src) copyFileSync(src, tmp);
    else writeFileSync(tmp, await deps.local.get(f.digest));
    chmodSync(tmp, f.isExecutable ? 0o555 : 0o444);
    renameSync(tmp, abs);
    return { kind: 'file', ino: lstatSync(abs).ino, from: '' };
  }

  /** Applies `change` at `dest`; for a kept root also to its listing, stamping the directories it changed. */
  async function apply(dest: string, change: TreeChange, k?: Kept) {
    for (const p of [...change.removed, ...change.files.map((f) => f.path), ...change.symlinks.map((s) => s.path), ...change.dirs]) {
      for (const part of p.split('/')) validateName(part, 'path component');
    }
    for (const s of change.symlinks) checkSymlink(s);
    const l = k?.listing;
    const touched = new Set<string>();
    const set = (rel: string, e: Entry) => {
      if (!l) return;
      const parent = parentOf(rel);
      addDir(parent);
      l.dirs.get(parent)!.set(nameOf(rel), e);
      touched.add(parent);
    };
    const addDir = (rel: string) => {
      if (!l || l.dirs.has(rel)) return;
      set(rel, { kind: 'dir' });
      l.dirs.set(rel, new Map());
      touched.add(rel);
    };
    for (const r of change.removed) {
      removePath(path.join(dest, r));
      if (!l) continue;
      const parent = parentOf(r);
      if (l.dirs.get(parent)?.get(nameOf(r))?.kind === 'dir') {
        for (const key of [...l.dirs.keys()]) if (key === r || key.startsWith(`${r}/`)) l.dirs.delete(key);
      }
      l.dirs.get(parent)?.delete(nameOf(r));
      touched.add(parent);
    }
    for (const d of change.dirs) {
      mkdirSync(path.join(dest, d), { recursive: true });
      addDir(d);
    }
    for (const f of change.files) set(f.path, await place(dest, f));
    for (const s of change.symlinks) {
      const abs = path.join(dest, s.path);
      try {
        unlinkSync(abs);
      } catch {
        // Nothing there.
      }
      mkdirSync(path.dirname(abs), { recursive: true });
      symlinkSync(s.target, abs);
      set(s.path, { kind: 'symlink', target: s.target });
    }
    if (k) stampDirs(k, touched);
  }

  /**
   * A kept root of the current template turned into `root` at `dir`: the one holding that very
   * tree, else the last one put back. Undefined when none is kept, or the nearest differs by
   * more than maxChanges (it is removed). Holds the template (users) for the caller.
   */
  async function fromKept(root: Digest, dir: string): Promise<{ t: Template; k: Kept } | undefined> {
    while (building) await building;
    const t = template;
    if (!t?.listing || t.free.length === 0) return undefined;
    const same = t.free.findIndex((x) => x.root.hash === root.hash);
    const k = t.free.splice(same >= 0 ? same : t.free.length - 1, 1)[0]!;
    t.users++;
    try {
      const change = await diffTrees(deps.local, k.root, root, maxChanges);
      if (!change) {
        removeQuietly(k.dir);
        t.users--;
        return undefined;
      }
      renameSync(k.dir, dir);
      k.dir = dir;
      // The rename changed the root directory's ctime: stamp it again.
      stampDirs(k, ['']);
      await apply(dir, change, k);
      k.root = root;
      return { t, k };
    } catch (err) {
      t.users--;
      removeQuietly(k.dir);
      throw err;
    }
  }

  return {
    async materialize(root, dest, signal) {
      try {
        const { t, change } = await acquire(root, signal);
        try {
          await copyTemplate(t, dest);
        } finally {
          t.users--;
        }
        await apply(dest, change);
      } catch (err) {
        throw wrap(err, `failed to materialize exec root ${digestKey(root)} in ${dest}`);
      }
    },
    async lease(root, signal) {
      // In use under leaseDir, kept under dir: a node's action directory holds only running actions.
      const dir = path.join(deps.leaseDir ?? deps.dir, `a${process.pid}-${++seq}`);
      let held: { t: Template; k?: Kept } | undefined;
      try {
        held = await fromKept(root, dir);
        if (!held) {
          const { t, change } = await acquire(root, signal);
          held = { t };
          if (t.listing) {
            const k: Kept = { dir, root: t.root, listing: cloneListing(t.listing), stamps: new Map() };
            const made: string[] = [];
            await copyTemplate(t, dir, (rel) => made.push(rel));
            stampDirs(k, made);
            await apply(dir, change, k);
            k.root = root;
            held.k = k;
          } else {
            await copyTemplate(t, dir);
            // A template too large to list is not needed after the copy: that root is removed after its action.
            t.users--;
            held = undefined;
            await apply(dir, change);
          }
        }
      } catch (err) {
        if (held) held.t.users--;
        removeQuietly(dir);
        throw wrap(err, `failed to materialize exec root ${digestKey(root)}`);
      }
      if (!held) return { dir, release: () => removeQuietly(dir) };
      const { t, k } = held as { t: Template; k: Kept };
      let released = false;
      return {
        dir,
        release() {
          if (released) return;
          released = true;
          try {
            // Put back while the template is held: it cannot be retired meanwhile.
            if (template === t && t.free.length < MAX_FREE_ROOTS) {
              resetKept(k);
              const kept = path.join(deps.dir, `f${process.pid}-${++seq}`);
              renameSync(k.dir, kept);
              k.dir = kept;
              stampDirs(k, ['']);
              t.free.push(k);
            } else removeQuietly(k.dir);
          } catch {
            removeQuietly(k.dir);
          } finally {
            t.users--;
          }
        },
      };
    },
    close() {
      if (template) for (const k of template.free.splice(0)) removeQuietly(k.dir);
    },
    reset() {
      if (building || (template && template.users > 0)) return false;
      const t = template;
      template = undefined;
      complete.clear();
      if (t) {
        for (const k of t.free.splice(0)) removeQuietly(k.dir);
        removeQuietly(t.dir);
      }
      return true;
    },
    isComplete: (d) => complete.has(digestKey(d)),
    markComplete(dirs) {
      if (complete.size > 200_000) complete.clear();
      for (const d of dirs) complete.add(digestKey(d));
    },
  };
}
