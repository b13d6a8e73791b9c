/**
 * Checks an ActionResult that came from a head (remote cache hit or remote
 * execution) before any of it is written into the project: every output path
 * stays inside the project, and every output symlink is relative and points
 * inside it (the head advertises SymlinkAbsolutePathStrategy DISALLOWED, so an
 * absolute target is a result no honest node produces).
 */
import path from 'node:path';
import { Code, OrionError } from '../../common/errors.js';
import type { ActionResult } from '../../cas/types.js';

const inside = (root: string, p: string) => p === root || p.startsWith(`${root}/`);

export function assertSafeResult(result: Pick<ActionResult, 'outputFiles' | 'outputSymlinks' | 'outputDirectories'>, root: string, cwd: string, what = 'result'): void {
  const refuse = (msg: string) => {
    throw new OrionError(Code.PERMISSION_DENIED, `refusing ${what}: ${msg}`, { hint: 'the head or one of its nodes sent an output that would land outside the project; nothing was written' });
  };
  const check = (rel: string, kind: string) => {
    if (path.isAbsolute(rel)) refuse(`${kind} ${JSON.stringify(rel)} is an absolute path`);
    const abs = path.resolve(cwd, rel);
    if (!inside(root, abs)) refuse(`${kind} ${JSON.stringify(rel)} resolves outside the project (${abs})`);
    return abs;
  };
  for (const f of result.outputFiles) check(f.path, 'output file');
  for (const d of result.outputDirectories) check(d.path, 'output directory');
  for (const s of result.outputSymlinks) {
    const abs = check(s.path, 'output symlink');
    if (s.target === '' || path.isAbsolute(s.target)) refuse(`output symlink ${JSON.stringify(s.path)} has absolute target ${JSON.stringify(s.target)}`);
    const dest = path.resolve(path.dirname(abs), s.target);
    if (!inside(root, dest)) refuse(`output symlink ${JSON.stringify(s.path)} points outside the project (${JSON.stringify(s.target)})`);
  }
}
