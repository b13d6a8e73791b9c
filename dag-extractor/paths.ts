/** Path helpers shared by the extractors. All paths handled here are POSIX paths. */
import path from 'node:path';

/** Resolves `p` against `cwd` and normalises it (no `.`/`..` components, no trailing slash). */
export function resolveIn(cwd: string, p: string): string {
  return path.resolve(cwd, p);
}

/** True when `p` is `dir` itself or lies below it. Both must be absolute and normalised. */
export function isUnder(dir: string, p: string): boolean {
  if (p === dir) return true;
  const prefix = dir.endsWith(path.sep) ? dir : dir + path.sep;
  return p.startsWith(prefix);
}

/** `p` relative to `root` for display, or `p` itself when it lies outside `root`. */
export function displayPath(root: string, p: string): string {
  if (!isUnder(root, p)) return p;
  return path.relative(root, p) || '.';
}

/** Replaces the last extension of the file name in `p` (or appends `ext` when it has none). */
export function replaceExtension(p: string, ext: string): string {
  const parsed = path.parse(p);
  return path.join(parsed.dir, parsed.name + ext);
}

/** The deepest directory containing all of `paths` (absolute, normalised). */
export function commonAncestor(paths: string[]): string {
  if (paths.length === 0) return path.sep;
  let common = paths[0].split(path.sep);
  for (const p of paths.slice(1)) {
    const parts = p.split(path.sep);
    let i = 0;
    while (i < common.length && i < parts.length && common[i] === parts[i]) i++;
    common = common.slice(0, i);
  }
  return common.join(path.sep) || path.sep;
}

/** Removes duplicates, keeping the first occurrence of each value. */
export function unique(values: Iterable<string>): string[] {
  return [...new Set(values)];
}
