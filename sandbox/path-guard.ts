/**
 * Keeps the node's own file operations (preparing outputs, reading them back)
 * inside an action's directory. An action controls what its tree holds: a
 * symlink it made, or a chain of input symlinks that each look harmless, can
 * make `root/out/x` name a file anywhere the node's user can reach. The node
 * acts on such a path only when its existing part resolves inside the root.
 */
import { lstatSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { Code, OrionError } from '../common/errors.js';

const inside = (root: string, p: string) => p === root || p.startsWith(root.endsWith('/') ? root : `${root}/`);

/**
 * The deepest existing ancestor of `p` (or `p` itself), resolved through symlinks. Synchronous
 * calls: a realpath is a few microseconds of system time, a promise-based one ~0.2 ms of the
 * caller's thread, and a warm build restores outputs by the hundred.
 */
function realAncestor(p: string): string {
  for (let cur = p; ; cur = path.dirname(cur)) {
    try {
      return realpathSync.native(cur);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || cur === path.dirname(cur)) throw err;
      // A dangling symlink: where it would lead is not known to be inside, so it is not.
      if (lstatSync(cur, { throwIfNoEntry: false })?.isSymbolicLink()) return `(dangling symlink ${cur})`;
    }
  }
}

/**
 * Returns `abs` when everything above its last component stays inside `root`
 * (the last component is left alone: callers lstat it, so an output that is
 * itself a symlink is reported as a symlink, never followed). Throws
 * PERMISSION_DENIED otherwise.
 */
export async function confineToRoot(root: string, abs: string, what: string, rootName = "the action's directory"): Promise<string> {
  const normalized = path.resolve(abs);
  const lexicalRoot = path.resolve(root);
  if (!inside(lexicalRoot, normalized)) {
    throw new OrionError(Code.PERMISSION_DENIED, `${what} ${JSON.stringify(path.relative(lexicalRoot, normalized))} is outside ${rootName}`);
  }
  if (normalized === lexicalRoot) return normalized;
  const realRoot = realpathSync.native(lexicalRoot);
  const parent = realAncestor(path.dirname(normalized));
  if (!inside(realRoot, parent)) {
    throw new OrionError(Code.PERMISSION_DENIED, `${what} ${JSON.stringify(path.relative(lexicalRoot, normalized))} leads outside ${rootName} through a symlink (to ${parent}); refusing to touch it`);
  }
  return normalized;
}
