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
 */
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, linkSync, lstatSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Code, OrionError, invalidArgument, wrap } from '../common/errors.js';
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
   * to list are kept after their action and reset to the template (a walk that puts back what
   * the action changed: on a filesystem where mkdir and rmdir cost 60-300 µs of CPU, copying
   * and removing a 1,500-file tree per action cost ~100 ms); others are made and removed.
   */
  lease(root: Digest, signal?: AbortSignal): Promise<ExecRootLease>;
  /** Removes the exec roots kept for reuse (a node stopping leaves no action directory). */
  close(): void;
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

/** A template's entries, parents before children, for copying it without a process. */
type Entry = { kind: 'dir'; path: string } | { kind: 'file'; path: string; ino?: number } | { kind: 'symlink'; path: string; target: string };

/** A listed template: its entries, and each directory's entries by name ('' is the root). */
interface Listing {
  entries: Entry[];
  dirs: Map<string, Map<string, Entry>>;
  /** The template's directory mode (every directory has it). */
  dirMode: number;
}

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
  /** Exec roots copied from it, reset and free for the next action. */
  free: string[];
  /** Exec roots diffing against or copying this template; it is removed only at 0. */
  users: number;
}

/** The entries of tree `root` (all in `store`), or undefined past `max` of them. */
async function listTree(store: BlobStore, root: Digest, max: number): Promise<Entry[] | undefined> {
  const out: Entry[] = [];
  const walk = async (d: Digest, prefix: string): Promise<boolean> => {
    const dir = decodeDirectory(await store.get(d));
    for (const f of dir.files) out.push({ kind: 'file', path: `${prefix}${f.name}` });
    for (const l of dir.symlinks) out.push({ kind: 'symlink', path: `${prefix}${l.name}`, target: l.target });
    if (out.length > max) return false;
    for (const sub of dir.directories) {
      out.push({ kind: 'dir', path: `${prefix}${sub.name}` });
      if (!(await walk(sub.digest, `${prefix}${sub.name}/`))) return false;
    }
    return true;
  };
  return (await walk(root, '')) ? out : undefined;
}

/** Indexes a listed template materialised at `dir`: each directory's entries, the files' inodes. */
function indexListing(entries: Entry[], dir: string): Listing {
  const dirs = new Map<string, Map<string, Entry>>([['', new Map()]]);
  for (const e of entries) {
    const slash = e.path.lastIndexOf('/');
    dirs.get(slash < 0 ? '' : e.path.slice(0, slash))!.set(e.path.slice(slash + 1), e);
    if (e.kind === 'dir') dirs.set(e.path, new Map());
    else if (e.kind === 'file') e.ino = lstatSync(path.join(dir, e.path)).ino;
  }
  return { entries, dirs, dirMode: lstatSync(dir).mode & 0o7777 };
}

/** Hard-link copy of the listed entries under `prefix` ('' for all): directories before what they hold. */
function copyListed(entries: Entry[], src: string, dest: string, prefix = ''): void {
  mkdirSync(path.join(dest, prefix));
  const under = prefix === '' ? '' : `${prefix}/`;
  for (const e of entries) {
    if (!e.path.startsWith(under)) continue;
    const to = path.join(dest, e.path);
    if (e.kind === 'dir') mkdirSync(to);
    else if (e.kind === 'file') linkSync(path.join(src, e.path), to);
    else symlinkSync(e.target, to);
  }
}

/**
 * Puts exec root `dest` back to the listed template at `src`: removes what the action added,
 * relinks files it replaced or removed (a file of the template is the same inode), restores
 * symlinks and directories (and their mode). Every directory is read and every file looked at:
 * no timestamp is trusted (a change within one clock tick of the last look keeps the ctime).
 */
function resetToTemplate(l: Listing, src: string, dest: string): void {
  const walk = (rel: string) => {
    const abs = rel === '' ? dest : path.join(dest, rel);
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (!st || !st.isDirectory()) {
      rmSync(abs, { recursive: true, force: true });
      copyListed(l.entries, src, dest, rel);
      return;
    }
    if ((st.mode & 0o7777) !== l.dirMode) chmodSync(abs, l.dirMode);
    const want = l.dirs.get(rel)!;
    const seen = new Set<string>();
    for (const d of readdirSync(abs, { withFileTypes: true })) {
      const e = want.get(d.name);
      const p = path.join(abs, d.name);
      if (!e) {
        rmSync(p, { recursive: true, force: true });
        continue;
      }
      seen.add(d.name);
      if (e.kind === 'dir') {
        walk(e.path);
      } else if (e.kind === 'file') {
        if (d.isFile() && lstatSync(p).ino === e.ino) continue;
        rmSync(p, { recursive: true, force: true });
        linkSync(path.join(src, e.path), p);
      } else {
        if (d.isSymbolicLink() && readlinkSync(p) === e.target) continue;
        rmSync(p, { recursive: true, force: true });
        symlinkSync(e.target, p);
      }
    }
    for (const [name, e] of want) {
      if (seen.has(name)) continue;
      if (e.kind === 'dir') copyListed(l.entries, src, dest, e.path);
      else if (e.kind === 'file') linkSync(path.join(src, e.path), path.join(abs, name));
      else symlinkSync(e.target, path.join(abs, name));
    }
  };
  walk('');
}

const removeQuietly = (dir: string) => {
  try {
    rmSync(dir, { recursive: true, force: true });
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
      rmSync(dir, { recursive: true, force: true });
      try {
        await materializeTree(root, deps.local, dir, { link: true, signal });
        const entries = maxInProcess >= 0 ? await listTree(deps.local, root, maxInProcess) : undefined;
        listing = entries && indexListing(entries, dir);
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
    for (const d of t.free.splice(0)) removeQuietly(d);
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

  /** A hard-link copy of the template at `dest` (absent). */
  async function copyTemplate(t: Template, dest: string) {
    if (t.listing) copyListed(t.listing.entries, t.dir, dest);
    else await (deps.copyLinks ?? cpAl)(t.dir, dest);
  }

  /** Puts one changed file in place (synchronous calls: a few µs each, against ~20 µs through promises). */
  async function place(dest: string, f: TreeChange['files'][number]) {
    const abs = path.join(dest, f.path);
    rmSync(abs, { recursive: true, force: true });
    mkdirSync(path.dirname(abs), { recursive: true });
    const src = f.digest.sizeBytes === 0 ? undefined : f.isExecutable ? await deps.local.localExecutablePath?.(f.digest) : deps.local.localPath?.(f.digest);
    if (src) {
      try {
        linkSync(src, abs);
        return;
      } catch {
        // Fall through to a copy (another filesystem, or too many links).
      }
    }
    const tmp = `${abs}.orion-tmp`;
    if (src) copyFileSync(src, tmp);
    else writeFileSync(tmp, await deps.local.get(f.digest));
    chmodSync(tmp, f.isExecutable ? 0o555 : 0o444);
    renameSync(tmp, abs);
  }

  async function apply(dest: string, change: TreeChange) {
    for (const p of [...change.removed, ...change.files.map((f) => f.path), ...change.symlinks.map((s) => s.path), ...change.dirs]) {
      for (const part of p.split('/')) validateName(part, 'path component');
    }
    for (const s of change.symlinks) checkSymlink(s);
    for (const r of change.removed) rmSync(path.join(dest, r), { recursive: true, force: true });
    for (const d of change.dirs) mkdirSync(path.join(dest, d), { recursive: true });
    for (const f of change.files) await place(dest, f);
    for (const s of change.symlinks) {
      const abs = path.join(dest, s.path);
      try {
        unlinkSync(abs);
      } catch {
        // Nothing there.
      }
      mkdirSync(path.dirname(abs), { recursive: true });
      symlinkSync(s.target, abs);
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
      let held: Template | undefined;
      try {
        const { t, change } = await acquire(root, signal);
        held = t;
        const kept = t.listing ? t.free.pop() : undefined;
        if (kept) renameSync(kept, dir);
        else await copyTemplate(t, dir);
        // A template too large to list is not needed after the copy: that root is removed after its action.
        if (!t.listing) {
          t.users--;
          held = undefined;
        }
        await apply(dir, change);
      } catch (err) {
        if (held) held.users--;
        removeQuietly(dir);
        throw wrap(err, `failed to materialize exec root ${digestKey(root)}`);
      }
      const t = held;
      if (!t) return { dir, release: () => removeQuietly(dir) };
      let released = false;
      return {
        dir,
        release() {
          if (released) return;
          released = true;
          try {
            // Reset while the template is held: it cannot be retired meanwhile.
            if (template === t && t.free.length < MAX_FREE_ROOTS) {
              resetToTemplate(t.listing!, t.dir, dir);
              const kept = path.join(deps.dir, `f${process.pid}-${++seq}`);
              renameSync(dir, kept);
              t.free.push(kept);
            } else removeQuietly(dir);
          } catch {
            removeQuietly(dir);
          } finally {
            t.users--;
          }
        },
      };
    },
    close() {
      if (template) for (const d of template.free.splice(0)) removeQuietly(d);
    },
    isComplete: (d) => complete.has(digestKey(d)),
    markComplete(dirs) {
      if (complete.size > 200_000) complete.clear();
      for (const d of dirs) complete.add(digestKey(d));
    },
  };
}
