/**
 * Merkle trees of REAPI Directory messages: built from a directory on disk or
 * from a flat list of files, walked in a store, and materialised back onto disk.
 */
import { createWriteStream, type Stats } from 'node:fs';
import { chmod, copyFile, link, lstat, mkdir, readdir, readlink, symlink } from 'node:fs/promises';
import { join, posix, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Code, failedPrecondition, invalidArgument, statusOf, wrap } from '../common/errors.js';
import type { BlobStore } from './blob-store.js';
import { createLimiter, settleAll, type Limiter } from './concurrency.js';
import { digestKey, digestOfFile } from './digest.js';
import { compareNames, decodeDirectory, encodeDirectoryWithDigest, validateDirectory } from './directory.js';
import type { StatCache } from './stat-cache.js';
import type { Digest, Directory, FileNode, SymlinkNode, Tree } from './types.js';

const IO_CONCURRENCY = 32;

export interface MerkleTree {
  rootDigest: Digest;
  /** Every Directory in the tree, encoded, by digestKey. */
  directories: Map<string, Buffer>;
}

export interface DiskTree extends MerkleTree {
  /** For each file content in the tree (by digestKey), the absolute path of one file holding it. */
  files: Map<string, string>;
}

export interface BuildTreeOptions {
  /** Entries (files, symlinks, directories, by '/'-separated path relative to the root) to keep. */
  include?: (relPath: string) => boolean;
  statCache?: StatCache;
  signal?: AbortSignal;
}

export interface TreeFileEntry {
  path: string;
  digest: Digest;
  isExecutable: boolean;
}

export interface TreeSymlinkEntry {
  path: string;
  target: string;
}

export interface MaterializeOptions {
  /** Hard-link files from stores that have them on disk instead of copying. */
  link?: boolean;
  signal?: AbortSignal;
}

/**
 * Runs leaf I/O operations at most IO_CONCURRENCY at a time. Once one fails (or
 * `signal` fires) the rest are refused with that same error, so a failing walk
 * stops quickly and reports its first cause.
 */
function ioRunner(signal?: AbortSignal): Limiter {
  const limit = createLimiter(IO_CONCURRENCY);
  let failure: { err: unknown } | undefined;
  return (fn) =>
    limit(async () => {
      if (failure) throw failure.err;
      signal?.throwIfAborted();
      try {
        return await fn();
      } catch (err) {
        failure ??= { err };
        throw err;
      }
    });
}

function sortDirectory(d: Directory): Directory {
  d.files.sort((a, b) => compareNames(a.name, b.name));
  d.directories.sort((a, b) => compareNames(a.name, b.name));
  d.symlinks.sort((a, b) => compareNames(a.name, b.name));
  return d;
}

function addDirectory(directories: Map<string, Buffer>, d: Directory): Digest {
  const { bytes, digest } = encodeDirectoryWithDigest(sortDirectory(d));
  directories.set(digestKey(digest), bytes);
  return digest;
}

/**
 * Hashes the tree under `rootDir` into canonical Directory messages. Regular files
 * are executable when the owner's x bit is set; symlinks are kept with their target
 * verbatim; sockets, fifos and devices are skipped.
 */
export async function buildTreeFromDisk(rootDir: string, opts: BuildTreeOptions = {}): Promise<DiskTree> {
  const run = ioRunner(opts.signal);
  const directories = new Map<string, Buffer>();
  const files = new Map<string, string>();
  const cache = opts.statCache;
  const hashFile = cache ? (p: string, st: Stats) => cache.digestFileCached(p, st) : (p: string) => digestOfFile(p);

  async function walk(abs: string, rel: string): Promise<Digest> {
    const names = await run(() => readdir(abs));
    const dir: Directory = { files: [], directories: [], symlinks: [] };
    await settleAll(
      names.map(async (name) => {
        const childRel = rel === '' ? name : `${rel}/${name}`;
        if (opts.include && !opts.include(childRel)) return;
        const childAbs = join(abs, name);
        const st = await run(() => lstat(childAbs));
        if (st.isDirectory()) {
          dir.directories.push({ name, digest: await walk(childAbs, childRel) });
        } else if (st.isFile()) {
          const digest = await run(() => hashFile(childAbs, st));
          files.set(digestKey(digest), childAbs);
          dir.files.push({ name, digest, isExecutable: (st.mode & 0o100) !== 0 });
        } else if (st.isSymbolicLink()) {
          dir.symlinks.push({ name, target: await run(() => readlink(childAbs)) });
        }
      }),
    );
    return addDirectory(directories, dir);
  }

  const root = resolve(rootDir);
  try {
    return { rootDigest: await walk(root, ''), directories, files };
  } catch (err) {
    throw wrap(err, `failed to build tree from ${root}`);
  }
}

/** Splits a relative path into names, rejecting absolute paths and '..'. */
function splitRelative(path: string): string[] {
  if (path.startsWith('/')) throw invalidArgument(`path ${JSON.stringify(path)} is absolute, expected a relative path`);
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw invalidArgument(`path ${JSON.stringify(path)} contains '..'`);
  if (parts.length === 0) throw invalidArgument(`path ${JSON.stringify(path)} names no file`);
  return parts;
}

interface DirBuilder {
  files: Map<string, FileNode>;
  symlinks: Map<string, SymlinkNode>;
  dirs: Map<string, DirBuilder>;
}

const newDirBuilder = (): DirBuilder => ({ files: new Map(), symlinks: new Map(), dirs: new Map() });

/** Builds a Merkle tree from a flat list of files (and symlinks) at relative paths. */
export function buildTreeFromEntries(entries: TreeFileEntry[], symlinks: TreeSymlinkEntry[] = []): MerkleTree {
  const root = newDirBuilder();
  const place = (path: string, add: (parent: DirBuilder, name: string) => void) => {
    const parts = splitRelative(path);
    const name = parts.pop()!;
    let dir = root;
    for (const part of parts) {
      if (dir.files.has(part) || dir.symlinks.has(part)) throw invalidArgument(`path ${JSON.stringify(path)}: ${JSON.stringify(part)} is not a directory`);
      let sub = dir.dirs.get(part);
      if (!sub) dir.dirs.set(part, (sub = newDirBuilder()));
      dir = sub;
    }
    if (dir.dirs.has(name) || dir.symlinks.has(name) || dir.files.has(name)) throw invalidArgument(`duplicate path ${JSON.stringify(path)}`);
    add(dir, name);
  };
  for (const e of entries) place(e.path, (dir, name) => dir.files.set(name, { name, digest: e.digest, isExecutable: e.isExecutable }));
  for (const s of symlinks) place(s.path, (dir, name) => dir.symlinks.set(name, { name, target: s.target }));

  const directories = new Map<string, Buffer>();
  const encode = (b: DirBuilder): Digest =>
    addDirectory(directories, {
      files: [...b.files.values()],
      directories: [...b.dirs].map(([name, sub]) => ({ name, digest: encode(sub) })),
      symlinks: [...b.symlinks.values()],
    });
  return { rootDigest: encode(root), directories };
}

/** The REAPI Tree message (used for output directories) of a built tree. */
export function treeOf(t: MerkleTree): Tree {
  const rootKey = digestKey(t.rootDigest);
  const root = t.directories.get(rootKey);
  if (!root) throw invalidArgument(`tree has no root directory ${rootKey}`);
  const children = [...t.directories].filter(([k]) => k !== rootKey).map(([, b]) => decodeDirectory(b));
  return { root: decodeDirectory(root), children };
}

const asMissing = (d: Digest) => ({ hash: d.hash, sizeBytes: d.sizeBytes });

/**
 * Fetches and validates every Directory under `rootDigest`, level by level.
 * Missing directory blobs fail with FAILED_PRECONDITION listing them all.
 */
async function fetchDirectories(rootDigest: Digest, store: BlobStore, run: Limiter): Promise<Map<string, Directory>> {
  const dirs = new Map<string, Directory>();
  const queued = new Set([digestKey(rootDigest)]);
  let frontier = [rootDigest];
  while (frontier.length > 0) {
    const missing: Digest[] = [];
    const fetched = await settleAll(
      frontier.map((d) =>
        run(() =>
          store.get(d).catch((err: unknown) => {
            if (statusOf(err) !== Code.NOT_FOUND) throw err;
            missing.push(d);
            return undefined;
          }),
        ),
      ),
    );
    if (missing.length > 0) {
      throw failedPrecondition(`missing ${missing.length} directory blob(s) of input tree ${digestKey(rootDigest)}: ${missing.map(digestKey).join(', ')}`, { missing: missing.map(asMissing) });
    }
    const next: Digest[] = [];
    fetched.forEach((bytes, i) => {
      const key = digestKey(frontier[i]!);
      let dir: Directory;
      try {
        dir = decodeDirectory(bytes!);
        validateDirectory(dir);
      } catch (err) {
        throw wrap(err, `invalid directory ${key}`);
      }
      dirs.set(key, dir);
      for (const sub of dir.directories) {
        const subKey = digestKey(sub.digest);
        if (!queued.has(subKey)) {
          queued.add(subKey);
          next.push(sub.digest);
        }
      }
    });
    frontier = next;
  }
  return dirs;
}

/** Every Directory (root first) and every distinct file digest of the tree under `rootDigest`. */
export async function collectTree(rootDigest: Digest, store: BlobStore): Promise<{ directories: Directory[]; fileDigests: Digest[] }> {
  const dirs = await fetchDirectories(rootDigest, store, createLimiter(IO_CONCURRENCY));
  const files = new Map<string, Digest>();
  for (const d of dirs.values()) for (const f of d.files) files.set(digestKey(f.digest), f.digest);
  return { directories: [...dirs.values()], fileDigests: [...files.values()] };
}

/** Rejects symlink targets that are absolute or lead out of the tree root. */
function checkSymlinkTarget(relDir: string, s: SymlinkNode): void {
  const where = relDir === '' ? s.name : `${relDir}/${s.name}`;
  if (s.target === '') throw invalidArgument(`symlink ${JSON.stringify(where)} has an empty target`);
  if (s.target.startsWith('/')) throw invalidArgument(`symlink ${JSON.stringify(where)} has absolute target ${JSON.stringify(s.target)}`);
  const resolved = posix.normalize(posix.join(relDir, s.target));
  if (resolved === '..' || resolved.startsWith('../')) {
    throw invalidArgument(`symlink ${JSON.stringify(where)} target ${JSON.stringify(s.target)} escapes the tree root`);
  }
}

const LINK_FALLBACK_ERRORS = new Set(['EXDEV', 'EMLINK', 'EPERM', 'EACCES', 'ENOENT']);

async function tryLink(src: string, dest: string): Promise<boolean> {
  try {
    await link(src, dest);
    return true;
  } catch (err) {
    if (LINK_FALLBACK_ERRORS.has((err as NodeJS.ErrnoException).code ?? '')) return false;
    throw err;
  }
}

interface Placement {
  path: string;
  isExecutable: boolean;
}

/** What materializeTree will create, computed (and validated) before touching the disk. */
interface Layout {
  /** Directories to create, by depth, so parents exist before their children. */
  dirsByDepth: string[][];
  symlinks: { path: string; target: string }[];
  /** Every path of each distinct blob, by digestKey. */
  files: Map<string, { digest: Digest; targets: Placement[] }>;
}

function planLayout(dirs: Map<string, Directory>, rootDigest: Digest, root: string): Layout {
  const plan: Layout = { dirsByDepth: [], symlinks: [], files: new Map() };
  const visit = (digest: Digest, abs: string, rel: string, depth: number) => {
    const dir = dirs.get(digestKey(digest))!;
    for (const s of dir.symlinks) {
      checkSymlinkTarget(rel, s);
      plan.symlinks.push({ path: join(abs, s.name), target: s.target });
    }
    for (const f of dir.files) {
      const key = digestKey(f.digest);
      let p = plan.files.get(key);
      if (!p) plan.files.set(key, (p = { digest: f.digest, targets: [] }));
      p.targets.push({ path: join(abs, f.name), isExecutable: f.isExecutable });
    }
    for (const sub of dir.directories) {
      const subAbs = join(abs, sub.name);
      (plan.dirsByDepth[depth] ??= []).push(subAbs);
      visit(sub.digest, subAbs, rel === '' ? sub.name : `${rel}/${sub.name}`, depth + 1);
    }
  };
  visit(rootDigest, root, '', 0);
  return plan;
}

/**
 * Recreates the tree under `rootDigest` in `destDir` (which must be empty or absent).
 * Every Directory and symlink is validated before anything is written. Files are
 * read-only: 0555 when executable, 0444 otherwise. With `link`, files are hard-linked
 * from stores that keep them on disk; otherwise (or when linking fails, e.g. across
 * filesystems) each blob is fetched once and copied to its other paths.
 */
export async function materializeTree(rootDigest: Digest, store: BlobStore, destDir: string, opts: MaterializeOptions = {}): Promise<void> {
  const run = ioRunner(opts.signal);
  const root = resolve(destDir);

  async function fetchTo(digest: Digest, path: string): Promise<void> {
    try {
      await pipeline(store.getStream(digest), createWriteStream(path, { flags: 'wx', mode: 0o644 }));
    } catch (err) {
      if (statusOf(err) !== Code.NOT_FOUND) throw err;
      throw failedPrecondition(`missing blob ${digestKey(digest)} of input tree ${digestKey(rootDigest)}`, { missing: [asMissing(digest)] });
    }
  }

  async function place(digest: Digest, targets: Placement[]): Promise<void> {
    let pending = targets;
    if (opts.link && store.localPath && digest.sizeBytes > 0) {
      const plain = store.localPath(digest);
      const exec = targets.some((t) => t.isExecutable) ? await run(async () => store.localExecutablePath?.(digest)) : undefined;
      const linked = await settleAll(
        targets.map((t) => {
          const src = t.isExecutable ? exec : plain;
          return src ? run(() => tryLink(src, t.path)) : Promise.resolve(false);
        }),
      );
      pending = targets.filter((_, i) => !linked[i]);
    }
    const [first, ...rest] = pending;
    if (!first) return;
    await run(() => fetchTo(digest, first.path));
    await settleAll(rest.map((t) => run(() => copyFile(first.path, t.path))));
    await settleAll(pending.map((t) => run(() => chmod(t.path, t.isExecutable ? 0o555 : 0o444))));
  }

  try {
    const plan = planLayout(await fetchDirectories(rootDigest, store, run), rootDigest, root);
    await mkdir(root, { recursive: true });
    for (const level of plan.dirsByDepth) await settleAll(level.map((p) => run(() => mkdir(p))));
    await settleAll([
      ...plan.symlinks.map((s) => run(() => symlink(s.target, s.path))),
      ...[...plan.files.values()].map((p) => place(p.digest, p.targets)),
    ]);
  } catch (err) {
    throw wrap(err, `failed to materialize tree ${digestKey(rootDigest)} in ${root}`);
  }
}
