/**
 * Stable action ids: the same command in the same directory gets the same id
 * in every extraction, so ids can key caches and logs across builds.
 */
import { createHash } from 'node:crypto';

export interface IdentifiedCommand {
  cwd: string;
  argv: string[];
  env?: Record<string, string>;
}

/** First 16 hex digits of sha256(cwd NUL argv joined by NUL [NUL NUL sorted env]). */
export function commandId(command: IdentifiedCommand): string {
  const hash = createHash('sha256');
  hash.update(command.cwd);
  for (const arg of command.argv) hash.update('\0').update(arg);
  const env = Object.entries(command.env ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (env.length > 0) {
    hash.update('\0\0');
    for (const [key, value] of env) hash.update(`${key}=${value}`).update('\0');
  }
  return hash.digest('hex').slice(0, 16);
}

/**
 * Ids for a list of commands in order. A command that occurs again (the same
 * argv in the same directory) gets its id with a suffix: "-2", "-3", ...
 */
export function assignActionIds(commands: readonly IdentifiedCommand[]): string[] {
  const seen = new Map<string, number>();
  return commands.map((command) => {
    const id = commandId(command);
    const count = (seen.get(id) ?? 0) + 1;
    seen.set(id, count);
    return count === 1 ? id : `${id}-${count}`;
  });
}
