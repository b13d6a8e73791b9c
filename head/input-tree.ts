/**
 * Validation of an input tree before the head schedules it: every Directory is
 * present, decodes, has valid, sorted, unique names (cas/directory.ts), no
 * symlink is absolute or climbs out of the root, and the tree stays within the
 * head's size limits. Directory blobs are read only when they are small enough
 * to be a message, so a hostile tree cannot make the head load a huge blob.
 */
import { Code, OrionError, statusOf, wrap } from '../common/errors.js';
import type { BlobStore } from '../cas/blob-store.js';
import { createLimiter, settleAll } from '../cas/concurrency.js';
import { digestKey } from '../cas/digest.js';
import { decodeDirectory, validateDirectory } from '../cas/directory.js';
import type { Digest, Directory, SymlinkNode } from '../cas/types.js';

export interface InputTreeLimits {
  maxEntries: number;
  maxDepth: number;
  /** Largest Directory blob (a Directory is a message). */
  maxDirectoryBytes: number;
}

/**
 * How many levels above its own directory a symlink target reaches (0 when it
 * stays at or below it). `a/../../b` reaches 1 level up.
 */
export function symlinkClimb(target: string): number {
  let depth = 0;
  let lowest = 0;
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    depth += part === '..' ? -1 : 1;
    lowest = Math.min(lowest, depth);
  }
  return lowest === 0 ? 0 : -lowest;
}

/**
 * Rejects a symlink that is absolute or, seen from a directory `depth` levels
 * below the root, leads out of the root. Checked at the shallowest place a
 * directory occurs, which is the strictest. (Lexical: chains of symlinks are
 * resolved by the node, which refuses to touch paths that resolve outside.)
 */
export function checkSymlink(s: SymlinkNode, depth: number, where: string): void {
  if (s.target === '') throw new OrionError(Code.INVALID_ARGUMENT, `symlink ${JSON.stringify(where)} has an empty target`);
  if (s.target.startsWith('/')) throw new OrionError(Code.INVALID_ARGUMENT, `symlink ${JSON.stringify(where)} has absolute target ${JSON.stringify(s.target)} (absolute symlinks are not allowed in input trees)`);
  if (s.target.includes('\0')) throw new OrionError(Code.INVALID_ARGUMENT, `symlink ${JSON.stringify(where)} target contains NUL`);
  if (symlinkClimb(s.target) > depth) {
    throw new OrionError(Code.INVALID_ARGUMENT, `symlink ${JSON.stringify(where)} target ${JSON.stringify(s.target)} escapes the input root`);
  }
}

/** Walks and validates the tree under `root`; returns every distinct file digest in it. */
export async function validateInputTree(cas: BlobStore, root: Digest, limits: InputTreeLimits): Promise<{ fileDigests: Digest[]; directories: number }> {
  const run = createLimiter(32);
  const seen = new Set<string>([digestKey(root)]);
  const files = new Map<string, Digest>();
  let frontier: { digest: Digest; path: string }[] = [{ digest: root, path: '' }];
  let entries = 0;
  let depth = 0;
  while (frontier.length > 0) {
    if (depth > limits.maxDepth) {
      throw new OrionError(Code.INVALID_ARGUMENT, `input tree ${digestKey(root)} is nested deeper than ${limits.maxDepth} directories (at ${JSON.stringify(frontier[0]!.path)})`);
    }
    const missing: Digest[] = [];
    const dirs = await settleAll(
      frontier.map(({ digest, path }) =>
        run(async (): Promise<Directory | undefined> => {
          if (digest.sizeBytes > limits.maxDirectoryBytes) {
            throw new OrionError(Code.INVALID_ARGUMENT, `directory ${JSON.stringify(path || '.')} (${digestKey(digest)}) is ${digest.sizeBytes} bytes; a Directory may be at most ${limits.maxDirectoryBytes}`);
          }
          let bytes: Buffer;
          try {
            bytes = await cas.get(digest);
          } catch (err) {
            if (statusOf(err) !== Code.NOT_FOUND) throw wrap(err, `reading directory ${digestKey(digest)}`);
            missing.push(digest);
            return undefined;
          }
          try {
            const dir = decodeDirectory(bytes);
            validateDirectory(dir);
            return dir;
          } catch (err) {
            throw new OrionError(Code.INVALID_ARGUMENT, `invalid directory ${JSON.stringify(path || '.')} (${digestKey(digest)}) in input tree ${digestKey(root)}: ${(err as Error).message}`);
          }
        }),
      ),
    );
    if (missing.length > 0) {
      throw new OrionError(Code.FAILED_PRECONDITION, `input tree ${digestKey(root)} is missing ${missing.length} directory blob(s) in the CAS`, { missing });
    }
    const next: { digest: Digest; path: string }[] = [];
    dirs.forEach((dir, i) => {
      const base = frontier[i]!.path;
      const at = (name: string) => (base === '' ? name : `${base}/${name}`);
      entries += dir!.files.length + dir!.directories.length + dir!.symlinks.length;
      if (entries > limits.maxEntries) throw new OrionError(Code.INVALID_ARGUMENT, `input tree ${digestKey(root)} has more than ${limits.maxEntries} entries`);
      for (const s of dir!.symlinks) checkSymlink(s, depth, at(s.name));
      for (const f of dir!.files) files.set(digestKey(f.digest), f.digest);
      for (const sub of dir!.directories) {
        const key = digestKey(sub.digest);
        if (seen.has(key)) continue;
        seen.add(key);
        next.push({ digest: sub.digest, path: at(sub.name) });
      }
    });
    frontier = next;
    depth++;
  }
  return { fileDigests: [...files.values()], directories: seen.size };
}
