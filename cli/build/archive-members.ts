/**
 * What an `ar r` on an existing archive starts from. `ar rcs lib.a a.o b.o`
 * replaces members and keeps any others: on a tree where lib.a was built
 * before from other objects (a source renamed or removed since), the result
 * holds the old members too, where a fresh checkout's make makes an archive of
 * a.o and b.o alone. Such an archive is then an input of the action (its key
 * differs from a fresh tree's, so neither result is served to the other);
 * one holding exactly the command's members, in order (what this command made
 * last time), is left out: updating it gives what a fresh archive would.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import type { BuildAction } from '../../dag-extractor/types.js';

/** Member names of a Unix `ar` archive, in order, without the symbol and long-name tables; undefined when `file` is no readable archive. */
export function archiveMembers(file: string): string[] | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const magic = Buffer.alloc(8);
    if (readSync(fd, magic, 0, 8, 0) !== 8 || magic.toString('latin1') !== '!<arch>\n') return undefined;
    const names: string[] = [];
    let longNames = '';
    const header = Buffer.alloc(60);
    for (let at = 8; ; ) {
      const n = readSync(fd, header, 0, 60, at);
      if (n === 0) return names;
      if (n !== 60 || header.toString('latin1', 58, 60) !== '`\n') return undefined;
      const raw = header.toString('latin1', 0, 16).trimEnd();
      const size = Number(header.toString('latin1', 48, 58).trim());
      if (!Number.isSafeInteger(size) || size < 0) return undefined;
      const data = at + 60;
      if (raw === '//') {
        const table = Buffer.alloc(size);
        readSync(fd, table, 0, size, data);
        longNames = table.toString('latin1');
      } else if (raw !== '/' && raw !== '/SYM64/' && !raw.startsWith('__.SYMDEF')) {
        if (/^\/\d+$/.test(raw)) {
          // GNU: "/offset" into the long-name table, each name ending with "/\n".
          const start = Number(raw.slice(1));
          const end = longNames.indexOf('/\n', start);
          names.push(longNames.slice(start, end < 0 ? undefined : end));
        } else if (raw.startsWith('#1/')) {
          // BSD: the name is the first N bytes of the data.
          const len = Number(raw.slice(3));
          const name = Buffer.alloc(len);
          readSync(fd, name, 0, len, data);
          names.push(name.toString('latin1').replace(/\0+$/, ''));
        } else names.push(raw.endsWith('/') ? raw.slice(0, -1) : raw);
      }
      at = data + size + (size % 2);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * The archive `ar r` (or `ar q`) of action `a` would start from, when its
 * contents change the result: it exists, was not made earlier in this build,
 * and holds other members than the command adds, or any at all for `q` (which
 * appends). Undefined otherwise, and for commands it cannot read.
 */
export function archiveStartingPoint(a: BuildAction): string | undefined {
  if (a.kind !== 'archive' || path.basename(a.argv[0] ?? '') === 'sh' || a.outputs.length !== 1) return undefined;
  const archive = a.outputs[0]!;
  // Made earlier in this build (its writer is then among the action's inputs): keyed as such already.
  if (a.inputs.includes(archive)) return undefined;
  const letters = (a.argv[1] ?? '').replace(/^-/, '');
  const op = [...letters].find((l) => 'dmpqrstx'.includes(l));
  if (op !== 'r' && op !== 'q') return undefined;
  const existing = archiveMembers(archive);
  if (existing === undefined) return undefined;
  if (op === 'q') return existing.length > 0 ? archive : undefined;
  const members = a.inputs.filter((f) => f !== archive).map((f) => path.basename(f));
  return existing.length === members.length && existing.every((m, i) => m === members[i]) ? undefined : archive;
}
