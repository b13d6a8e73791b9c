/**
 * Reads the output of `make -n -w --trace`: the commands make would run, one
 * per line (or several lines joined by backslash-newline), interleaved with
 * make's own messages. "make[N]: Entering directory 'X'" and "Leaving
 * directory" lines, printed around every sub-make, give the directory each
 * command runs in. --trace adds a line before each recipe naming its target
 * and, when it has any, its prerequisites ("Makefile:12: update target 'x'
 * due to: a b"; "target 'x' does not exist" when it has none).
 */
import path from 'node:path';

export interface DryRunCommand {
  /** The command line as make would pass it to the shell. */
  text: string;
  /** Absolute directory make runs it in. */
  cwd: string;
  /** The rule whose recipe the command belongs to, when make traced it. */
  rule?: MakeRecipe;
}

/** One run of a rule's recipe: every command line of it shares this object. */
export interface MakeRecipe {
  /** Absolute path of the target. */
  target: string;
  /** Absolute paths of its (normal, not order-only) prerequisites; empty when it has none. */
  prereqs: string[];
}

/**
 * Splits `output` into commands. `makeNames` are the program names make
 * prints its messages under (`make: ...`, `make[2]: ...`); `cwd` is the
 * directory of commands printed before any "Entering directory" line.
 */
export function parseMakeDryRun(output: string, cwd: string, makeNames: ReadonlySet<string>): DryRunCommand[] {
  const names = [...makeNames].map(escapeRegExp).join('|');
  const message = new RegExp(`^(?:\\S*/)?(?:${names})(?:\\[\\d+\\])?: (.*)$`);
  const directory = /^(Entering|Leaving) directory [`'"](.*)['"]$/;
  // "Makefile:12: ..." for rules of a makefile, "<builtin>: ..." for make's built-in implicit rules.
  const trace = /^(?:[^:\n]+:\d+|<[a-z-]+>): (?:update target '(.+)' due to: (.*)|target '(.+)' does not exist)$/;
  // One entry per make process: its directory and the recipe it is printing.
  const stack: { cwd: string; rule?: MakeRecipe }[] = [{ cwd }];
  const commands: DryRunCommand[] = [];
  const lines = output.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const m = message.exec(line);
    if (m) {
      const d = directory.exec(m[1]);
      if (d?.[1] === 'Entering') stack.push({ cwd: path.resolve(d[2]) });
      else if (d?.[1] === 'Leaving' && stack.length > 1) stack.pop();
      continue;
    }
    const top = stack[stack.length - 1];
    const t = trace.exec(line);
    if (t) {
      const target = t[1] ?? t[3];
      const prereqs = t[2] === undefined ? [] : t[2].split(' ').filter((p) => p !== '').map((p) => path.resolve(top.cwd, p));
      top.rule = { target: path.resolve(top.cwd, target), prereqs };
      continue;
    }
    let text = line;
    while (endsWithContinuation(text) && i + 1 < lines.length) text += '\n' + lines[++i];
    if (text.trim() === '') continue;
    commands.push(top.rule ? { text, cwd: top.cwd, rule: top.rule } : { text, cwd: top.cwd });
  }
  return commands;
}

/** A recipe line continues on the next line when it ends with an unescaped backslash. */
function endsWithContinuation(text: string): boolean {
  let backslashes = 0;
  for (let i = text.length - 1; i >= 0 && text[i] === '\\'; i--) backslashes++;
  return backslashes % 2 === 1;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
