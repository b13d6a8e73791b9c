/**
 * Puts files into an existing Merkle tree without walking all of it: only the
 * directories on the way to each changed path are read, rewritten and stored.
 * The head uses it to add producers' outputs to an action's input root and to
 * grow a build's exec root as actions finish.
 */
import { Code, OrionError } from '../common/errors.js';
import type { BlobStore } from './blob-store.js';
import { digestKey } from './digest.js';
import { compareNames, decodeDirectory, encodeDirectoryWithDigest, validateName } from './directory.js';
import type { TreeFileEntry } from './merkle.js';
import type { Digest, Directory, DirectoryNode } from './types.js';

export interface TreeOverlay {
  /**
   * The root of `base` with `files` added (a file or symlink already at a path is
   * replaced) and the entries at `remove` taken out (a missing one is ignored).
   * New directories are written to the store. A path whose parent is a file, or
   * that names an existing directory, is INVALID_ARGUMENT.
   */
  overlay(base: Digest, files: TreeFileEntry[], remove?: string[]): Promise<Digest>;
  /** Whether `root` holds a file or symlink at the '/'-separated `path`. */
  has(root: Digest, path: string): Promise<boolean>;
  /** The file at `path` in `root`, if there is one. */
  file(root: Digest, path: string): Promise<TreeFileEntry | undefined>;
}

/** A directory being rewritten: its entries by name, and the subdirectories being rewritten below it. */
interface Node {
  files: Map<string, Directory['files'][number]>;
  directories: Map<string, DirectoryNode>;
  symlinks: Map<string, Directory['symlinks'][number]>;
  children: Map<string, Node>;
}

const byName = <T extends { name: string }>(xs: T[]) => new Map(xs.map((x) => [x.name, x]));

/** Decoded directories are kept (bounded) so repeated overlays of one tree read each directory once. */
export function createTreeOverlay(store: BlobStore, maxCached = 50_000): TreeOverlay {
  const cache = new Map<string, Directory>();

  async function load(d: Digest): Promise<Directory> {
    const key = digestKey(d);
    const hit = cache.get(key);
    if (hit) return hit;
    const dir = decodeDirectory(await store.get(d));
    if (cache.size >= maxCached) cache.clear();
    cache.set(key, dir);
    return dir;
  }

  async function parentOf(root: Digest, path: string): Promise<Directory | undefined> {
    let dir = await load(root);
    for (const name of path.split('/').slice(0, -1)) {
      const sub = dir.directories.find((x) => x.name === name);
      if (!sub) return undefined;
      dir = await load(sub.digest);
    }
    return dir;
  }

  const open = (d: Directory): Node => ({ files: byName(d.files), directories: byName(d.directories), symlinks: byName(d.symlinks), children: new Map() });
  const empty = (): Node => ({ files: new Map(), directories: new Map(), symlinks: new Map(), children: new Map() });
  const sorted = <T extends { name: string }>(m: Map<string, T>) => [...m.values()].sort((a, b) => compareNames(a.name, b.name));

  async function store1(n: Node): Promise<Digest> {
    for (const [name, child] of n.children) n.directories.set(name, { name, digest: await store1(child) });
    const dir: Directory = { files: sorted(n.files), directories: sorted(n.directories), symlinks: sorted(n.symlinks) };
    const { bytes, digest } = encodeDirectoryWithDigest(dir);
    if (!cache.has(digestKey(digest))) {
      await store.put(digest, bytes);
      cache.set(digestKey(digest), dir);
    }
    return digest;
  }

  return {
    async has(root, path) {
      const dir = await parentOf(root, path);
      const leaf = path.split('/').at(-1)!;
      return dir !== undefined && (dir.files.some((x) => x.name === leaf) || dir.symlinks.some((x) => x.name === leaf));
    },
    async file(root, path) {
      const dir = await parentOf(root, path);
      const f = dir?.files.find((x) => x.name === path.split('/').at(-1));
      return f ? { path, digest: f.digest, isExecutable: f.isExecutable } : undefined;
    },
    async overlay(base, files, remove = []) {
      if (files.length === 0 && remove.length === 0) return base;
      const root = open(await load(base));
      for (const r of remove) {
        const parts = r.split('/');
        for (const p of parts) validateName(p, 'path component');
        let node: Node | undefined = root;
        for (const name of parts.slice(0, -1)) {
          let child: Node | undefined = node.children.get(name);
          if (!child) {
            const existing = node.directories.get(name);
            if (!existing) {
              node = undefined;
              break;
            }
            child = open(await load(existing.digest));
            node.children.set(name, child);
          }
          node = child;
        }
        if (!node) continue;
        const leaf = parts.at(-1)!;
        node.children.delete(leaf);
        node.files.delete(leaf);
        node.symlinks.delete(leaf);
        node.directories.delete(leaf);
      }
      for (const f of files) {
        const parts = f.path.split('/');
        for (const p of parts) validateName(p, 'path component');
        let node = root;
        for (const name of parts.slice(0, -1)) {
          let child = node.children.get(name);
          if (!child) {
            if (node.files.has(name) || node.symlinks.has(name)) {
              throw new OrionError(Code.INVALID_ARGUMENT, `cannot add ${f.path}: ${name} is a file`);
            }
            const existing = node.directories.get(name);
            child = existing ? open(await load(existing.digest)) : empty();
            node.children.set(name, child);
          }
          node = child;
        }
        const leaf = parts.at(-1)!;
        if (node.children.has(leaf) || node.directories.has(leaf)) {
          throw new OrionError(Code.INVALID_ARGUMENT, `cannot add file ${f.path}: a directory has that path`);
        }
        node.symlinks.delete(leaf);
        node.files.set(leaf, { name: leaf, digest: f.digest, isExecutable: f.isExecutable });
      }
      return store1(root);
    },
  };
}
