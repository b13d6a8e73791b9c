/**
 * Input roots already built, by a fingerprint of their entries. Building an
 * action's input root (a Directory message per folder, each encoded and
 * hashed) costs about a millisecond for a compile with a hundred headers;
 * hashing the sorted entry list once costs a few microseconds. A rebuild
 * whose actions read what they read last time takes their root digests from
 * here and builds the Directories only when they are needed (to upload them
 * to a head), from the same entries.
 *
 * Stored as text lines `fingerprint hash size`, newest first, at most
 * MAX_ENTRIES of them; a line that does not parse is ignored.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../../cas/atomic-file.js';
import { buildTreeFromEntries, type MerkleTree, type TreeFileEntry } from '../../cas/merkle.js';
import { Code, OrionError } from '../../common/errors.js';
import type { Digest } from '../../cas/types.js';

export interface TreeMemo {
  get(fingerprint: string): Digest | undefined;
  set(fingerprint: string, root: Digest): void;
  /** Writes the file when something was added since it was read. */
  save(): Promise<void>;
}

const MAX_ENTRIES = 20_000;

export function loadTreeMemo(file: string): TreeMemo {
  const known = new Map<string, Digest>();
  try {
    for (const line of readFileSync(file, 'latin1').split('\n')) {
      const [fp, hash, size] = line.split(' ');
      if (fp && hash?.length === 64 && size !== undefined && /^\d+$/.test(size)) known.set(fp, { hash, sizeBytes: Number(size) });
    }
  } catch {
    // No memo yet: every root is built.
  }
  const used = new Map<string, Digest>();
  let added = false;
  return {
    get(fp) {
      const d = used.get(fp) ?? known.get(fp);
      if (d) used.set(fp, d);
      return d;
    },
    set(fp, root) {
      used.set(fp, root);
      added = true;
    },
    async save() {
      if (!added) return;
      const lines: string[] = [];
      const line = (fp: string, d: Digest) => lines.push(`${fp} ${d.hash} ${d.sizeBytes}`);
      for (const [fp, d] of used) line(fp, d);
      for (const [fp, d] of known) {
        if (lines.length >= MAX_ENTRIES) break;
        if (!used.has(fp)) line(fp, d);
      }
      await writeFileAtomic(file, lines.join('\n') + '\n', { durable: false });
      added = false;
    },
  };
}

/** What decides an input root: every entry's path, content and executable bit, in order. */
export function treeFingerprint(entries: readonly TreeFileEntry[]): string {
  let text = '';
  for (const e of entries) text += `${e.path}\u0000${e.digest.hash}\u0000${e.digest.sizeBytes}\u0000${e.isExecutable ? 1 : 0}\n`;
  return createHash('sha256').update(text).digest('hex').slice(0, 40);
}

/**
 * The input root of `entries` (sorted by path): its digest from `memo` when
 * these entries were built before, its Directories built on first use.
 */
export function inputRootOf(entries: TreeFileEntry[], memo: TreeMemo | undefined): MerkleTree {
  if (!memo) return buildTreeFromEntries(entries);
  const fp = treeFingerprint(entries);
  const rootDigest = memo.get(fp);
  if (!rootDigest) {
    const built = buildTreeFromEntries(entries);
    memo.set(fp, built.rootDigest);
    return built;
  }
  let directories: Map<string, Buffer> | undefined;
  return {
    rootDigest,
    get directories() {
      if (!directories) {
        const built = buildTreeFromEntries(entries);
        if (built.rootDigest.hash !== rootDigest.hash || built.rootDigest.sizeBytes !== rootDigest.sizeBytes) {
          throw new OrionError(Code.DATA_LOSS, `the input-root memo holds a wrong digest for ${fp} (${rootDigest.hash}, built ${built.rootDigest.hash}): remove the cache's trees folder`);
        }
        directories = built.directories;
      }
      return directories;
    },
  };
}
