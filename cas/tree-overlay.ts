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

interface Node {
  dir: Directory;
  children: Map<string, Node>;
}

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

  const copy = (d: Directory): Directory => ({ files: [...d.files], directories: [...d.directories], symlinks: [...d.symlinks] });

  async function store1(n: Node): Promise<Digest> {
    for (const [name, child] of n.children) {
      const digest = await store1(child);
      const i = n.dir.directories.findIndex((x) => x.name === name);
      if (i >= 0) n.dir.directories[i] = { name, digest };
      else n.dir.directories.push({ name, digest });
    }
    n.dir.files.sort((a, b) => compareNames(a.name, b.name));
    n.dir.directories.sort((a, b) => compareNames(a.name, b.name));
    const { bytes, digest } = encodeDirectoryWithDigest(n.dir);
    if (!cache.has(digestKey(digest))) {
      await store.put(digest, bytes);
      cache.set(digestKey(digest), n.dir);
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
      const root: Node = { dir: copy(await load(base)), children: new Map() };
      for (const r of remove) {
        const parts = r.split('/');
        for (const p of parts) validateName(p, 'path component');
        let node: Node | undefined = root;
        for (const name of parts.slice(0, -1)) {
          let child: Node | undefined = node.children.get(name);
          if (!child) {
            const existing: DirectoryNode | undefined = node.dir.directories.find((x) => x.name === name);
            if (!existing) {
              node = undefined;
              break;
            }
            child = { dir: copy(await load(existing.digest)), children: new Map() };
            node.children.set(name, child);
          }
          node = child;
        }
        if (!node) continue;
        const leaf = parts.at(-1)!;
        node.children.delete(leaf);
        node.dir.files = node.dir.files.filter((x) => x.name !== leaf);
        node.dir.symlinks = node.dir.symlinks.filter((x) => x.name !== leaf);
        node.dir.directories = node.dir.directories.filter((x) => x.name !== leaf);
      }
      for (const f of files) {
        const parts = f.path.split('/');
        for (const p of parts) validateName(p, 'path component');
        let node = root;
        for (const name of parts.slice(0, -1)) {
          let child = node.children.get(name);
          if (!child) {
            if (node.dir.files.some((x) => x.name === name) || node.dir.symlinks.some((x) => x.name === name)) {
              throw new OrionError(Code.INVALID_ARGUMENT, `cannot add ${f.path}: ${name} is a file`);
            }
            const existing = node.dir.directories.find((x) => x.name === name);
            child = { dir: existing ? copy(await load(existing.digest)) : { files: [], directories: [], symlinks: [] }, children: new Map() };
            node.children.set(name, child);
          }
          node = child;
        }
        const leaf = parts.at(-1)!;
        if (node.children.has(leaf) || node.dir.directories.some((x) => x.name === leaf)) {
          throw new OrionError(Code.INVALID_ARGUMENT, `cannot add file ${f.path}: a directory has that path`);
        }
        node.dir.symlinks = node.dir.symlinks.filter((x) => x.name !== leaf);
        node.dir.files = node.dir.files.filter((x) => x.name !== leaf);
        node.dir.files.push({ name: leaf, digest: f.digest, isExecutable: f.isExecutable });
      }
      return store1(root);
    },
  };
}
