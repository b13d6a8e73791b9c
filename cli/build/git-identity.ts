/**
 * What a step may read of git besides the tree: the commit checked out and
 * the tags (`git describe`, `git rev-parse HEAD`, Redis's mkreleasehdr.sh).
 * .git is not part of the snapshots that key steps, and the same tree is
 * often checked out at several commits (a merge commit with the tree of the
 * branch CI built before, a tag): steps and graphs are keyed by this too, so
 * a version header made at one commit is not replayed at another.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';

/** The git directory of a work tree: `.git`, or where a `.git` file points (worktrees, submodules); with the common one holding refs. */
async function gitDirs(root: string): Promise<{ git: string; common: string } | undefined> {
  const dotGit = path.join(root, '.git');
  const file = await readFile(dotGit, 'utf8').catch(() => undefined);
  let git = dotGit;
  if (file !== undefined) {
    const to = /^gitdir: (.+)$/m.exec(file)?.[1]?.trim();
    if (!to) return undefined;
    git = path.resolve(root, to);
  }
  const common = await readFile(path.join(git, 'commondir'), 'utf8').then((c) => path.resolve(git, c.trim()), () => git);
  return { git, common };
}

async function listRefs(dir: string, prefix: string, out: string[]): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await listRefs(p, `${prefix}${e.name}/`, out);
    else out.push(`${prefix}${e.name}=${(await readFile(p, 'utf8').catch(() => '')).trim()}`);
  }
}

/** '' outside a git work tree; else the HEAD ref and commit, and a digest of the tags. */
export async function gitIdentity(root: string): Promise<string> {
  const dirs = await gitDirs(root);
  if (!dirs) return '';
  const head = (await readFile(path.join(dirs.git, 'HEAD'), 'utf8').catch(() => '')).trim();
  if (!head) return '';
  const packed = await readFile(path.join(dirs.common, 'packed-refs'), 'utf8').catch(() => '');
  let commit = head;
  const ref = /^ref: (.+)$/.exec(head)?.[1];
  if (ref) {
    const loose = (await readFile(path.join(dirs.common, ref), 'utf8').catch(() => '')).trim();
    commit = `${ref}@${loose || (packed.split('\n').find((l) => l.endsWith(` ${ref}`))?.split(' ')[0] ?? '')}`;
  }
  const tags: string[] = [];
  await listRefs(path.join(dirs.common, 'refs', 'tags'), 'refs/tags/', tags);
  // Packed ones ("<sha> refs/tags/v1") as loose ones are listed; a loose ref overrides a packed one.
  const loose = new Set(tags.map((t) => t.slice(0, t.indexOf('='))));
  for (const line of packed.split('\n')) {
    const m = /^([0-9a-f]+) (refs\/tags\/.+)$/.exec(line);
    if (m && !loose.has(m[2]!)) tags.push(`${m[2]}=${m[1]}`);
  }
  return `${commit} tags:${createHash('sha256').update(tags.sort().join('\n')).digest('hex').slice(0, 16)}`;
}
