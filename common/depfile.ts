/** Make-style dependency files, as compilers write them with -MD/-MMD. */
import path from 'node:path';

/** Parses a make-style dependency file into the absolute paths of its prerequisites. */
export function parseDepFile(text: string, cwd: string): string[] {
  const joined = text.replace(/\\\r?\n/g, ' ');
  const out = new Set<string>();
  for (const line of joined.split(/\r?\n/)) {
    const colon = line.search(/:(\s|$)/);
    if (colon < 0) continue;
    const rest = line.slice(colon + 1);
    // Paths are space separated; a backslash escapes a space inside a name.
    const words = rest.match(/(?:\\ |[^\s])+/g) ?? [];
    for (const w of words) out.add(path.resolve(cwd, w.replace(/\\ /g, ' ')));
  }
  return [...out];
}
