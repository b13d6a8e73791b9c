/**
 * The build's view of the project tree: file digests (through the persistent
 * stat cache, so an unchanged file is never re-hashed), updated as actions
 * write outputs, and the whole tree as a Merkle root for remote execution.
 */
import { lstat, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import type { StatCache } from '../../cas/stat-cache.js';
import { buildTreeFromEntries, type MerkleTree, type TreeFileEntry, type TreeSymlinkEntry } from '../../cas/merkle.js';
import type { Digest } from '../../cas/types.js';

export interface FileState {
  digest: Digest;
  isExecutable: boolean;
}

export interface ProjectFiles {
  readonly root: string;
  /** The file's content digest, or undefined when it does not exist (or is not a regular file). */
  state(abs: string): Promise<FileState | undefined>;
  /** An action wrote `abs` with known content. */
  record(abs: string, state: FileState): void;
  /** An action changed `abs` in ways Orion did not see (a local step): look again next time. */
  forget(abs: string): void;
  /** Every file and symlink under the root (minus ignored directories), relative paths. */
  list(): Promise<{ files: string[]; symlinks: TreeSymlinkEntry[] }>;
  /** The whole project as a Merkle tree, as it stands now (global source context). */
  tree(): Promise<MerkleTree>;
}

/** Directories never part of a build's inputs. */
const IGNORED = new Set(['.git', '.hg', '.svn', '.orion']);

export function createProjectFiles(root: string, statCache: StatCache): ProjectFiles {
  const states = new Map<string, Promise<FileState | undefined>>();
  let listing: Promise<{ files: string[]; symlinks: TreeSymlinkEntry[] }> | undefined;
  const extraFiles = new Set<string>();

  async function compute(abs: string): Promise<FileState | undefined> {
    try {
      const st = await lstat(abs);
      if (!st.isFile()) return undefined;
      return { digest: await statCache.digestFileCached(abs, st), isExecutable: (st.mode & 0o100) !== 0 };
    } catch {
      return undefined;
    }
  }

  async function walk(): Promise<{ files: string[]; symlinks: TreeSymlinkEntry[] }> {
    const files: string[] = [];
    const symlinks: TreeSymlinkEntry[] = [];
    async function visit(dir: string, rel: string): Promise<void> {
      const entries = await readdir(dir, { withFileTypes: true });
      await Promise.all(
        entries.map(async (e) => {
          const childRel = rel ? `${rel}/${e.name}` : e.name;
          if (e.isDirectory()) {
            if (!IGNORED.has(e.name)) await visit(path.join(dir, e.name), childRel);
          } else if (e.isFile()) files.push(childRel);
          else if (e.isSymbolicLink()) symlinks.push({ path: childRel, target: await readlink(path.join(dir, e.name)) });
        }),
      );
    }
    await visit(root, '');
    files.sort();
    return { files, symlinks };
  }

  return {
    root,
    state(abs) {
      let p = states.get(abs);
      if (!p) {
        p = compute(abs);
        states.set(abs, p);
      }
      return p;
    },
    record(abs, state) {
      states.set(abs, Promise.resolve(state));
      const rel = path.relative(root, abs);
      if (!rel.startsWith('..')) {
        extraFiles.add(rel);
      }
    },
    forget(abs) {
      states.delete(abs);
      const rel = path.relative(root, abs);
      if (!rel.startsWith('..')) {
        extraFiles.add(rel);
        listing = undefined;
      }
    },
    list() {
      return (listing ??= walk());
    },
    async tree() {
      const { files, symlinks } = await this.list();
      const all = new Set([...files, ...extraFiles]);
      const entries: TreeFileEntry[] = [];
      const symlinkPaths = new Set(symlinks.map((s) => s.path));
      await Promise.all(
        [...all].map(async (rel) => {
          if (symlinkPaths.has(rel)) return;
          const s = await this.state(path.join(root, rel));
          if (s) entries.push({ path: rel, digest: s.digest, isExecutable: s.isExecutable });
        }),
      );
      return buildTreeFromEntries(entries, symlinks);
    },
  };
}
