/**
 * Reads the output of `make -n -w`: the commands make would run, one per line
 * (or several lines joined by backslash-newline), interleaved with make's own
 * messages. "make[N]: Entering directory 'X'" and "Leaving directory" lines,
 * printed around every sub-make, give the directory each command runs in.
 */
import path from 'node:path';

export interface DryRunCommand {
  /** The command line as make would pass it to the shell. */
  text: string;
  /** Absolute directory make runs it in. */
  cwd: string;
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
  const stack: string[] = [];
  const commands: DryRunCommand[] = [];
  const lines = output.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const m = message.exec(line);
    if (m) {
      const d = directory.exec(m[1]);
      if (d?.[1] === 'Entering') stack.push(path.resolve(d[2]));
      else if (d?.[1] === 'Leaving') stack.pop();
      continue;
    }
    let text = line;
    while (endsWithContinuation(text) && i + 1 < lines.length) text += '\n' + lines[++i];
    if (text.trim() === '') continue;
    commands.push({ text, cwd: stack.length > 0 ? stack[stack.length - 1] : cwd });
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
