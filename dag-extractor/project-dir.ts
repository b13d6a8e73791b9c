/** Checks on the directories and files the extractors are pointed at. */
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { invalidArgument } from '../common/errors.js';

/**
 * The absolute, symlink-free path of an existing directory. Build tools report
 * real paths (make's "Entering directory" lines), so the graph uses them too.
 */
export async function resolveDirectory(dir: string, what = 'Project directory'): Promise<string> {
  const absolute = path.resolve(dir);
  let real: string;
  try {
    real = await realpath(absolute);
  } catch {
    throw invalidArgument(`${what} ${absolute} does not exist`);
  }
  if (!(await stat(real)).isDirectory()) throw invalidArgument(`${what} ${absolute} is not a directory`);
  return real;
}

export async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}
