/**
 * Reads the output of `make -n -w --trace --debug=j`: the commands make would run, one
 * per line (or several lines joined by backslash-newline), interleaved with
 * make's own messages. "make[N]: Entering directory 'X'" and "Leaving
 * directory" lines, printed around every sub-make, give the directory each
 * command runs in. --trace adds a line before each recipe naming its target
 * and, when it has any, its prerequisites ("Makefile:12: update target 'x'
 * due to: a b"; "target 'x' does not exist" when it has none).
 *
 * With -p, each make process also prints its rule database as it exits,
 * between "# GNU Make 4.x" and "# Finished Make data base", and prefixes its
 * directory messages with "# ". The database is not commands: it is read only
 * for what the trace does not say, whether a target is phony or has a
 * double-colon rule (make runs such a recipe without prerequisites every
 * time, where it runs a plain one only when its target is missing), and
 * whether the makefile asks for `.ONESHELL` (make -n prints a recipe line by
 * line either way; with it, the lines of one recipe are one command for one
 * shell, so a `cd` on one line holds for the next), and the SHELL and
 * .SHELLFLAGS recipes run with (`SHELL := /bin/bash`).
 *
 * make -n still runs a recipe line that starts a sub-make, and whatever that
 * shell script prints itself (automake's `echo "Making all in src"` in its loop
 * over SUBDIRS) would read as a command. --debug=j brackets every line make
 * runs for real ("Live child ..." / "Reaping winning child ..."): within those
 * brackets only the sub-makes' own Entering/Leaving regions hold commands.
 */
import path from 'node:path';
import { tokenizeShell, type ShellToken } from './shell-tokenizer.js';

export interface DryRunCommand {
  /** The command line as make would pass it to the shell. */
  text: string;
  /** Absolute directory make runs it in. */
  cwd: string;
  /** The rule whose recipe the command belongs to, when make traced it. */
  rule?: MakeRecipe;
  /** Make's SHELL and .SHELLFLAGS for it, when its makefile sets another shell than `/bin/sh -c`. */
  shell?: string[];
  /** Its recipe line starts with `-` (or the makefile has `.IGNORE:`): make goes on when it fails. */
  ignoreErrors?: boolean;
}

/** One run of a rule's recipe: every command line of it shares this object. */
export interface MakeRecipe {
  /** Absolute path of the target. */
  target: string;
  /** Absolute paths of its (normal, not order-only) prerequisites; empty when it has none. */
  prereqs: string[];
  /**
   * Set when a rule database (-p) was printed by the make that ran the recipe:
   * true when the target is phony, or has a double-colon rule and no
   * prerequisites, so make runs the recipe whether or not the target exists.
   */
  alwaysRuns?: boolean;
  /** Its makefile has `.DELETE_ON_ERROR:`: make deletes the target when the recipe fails after changing it. */
  deleteOnError?: boolean;
}

/**
 * Splits `output` into commands. `makeNames` are the program names make
 * prints its messages under (`make: ...`, `make[2]: ...`); `cwd` is the
 * directory of commands printed before any "Entering directory" line.
 */
export function parseMakeDryRun(output: string, cwd: string, makeNames: ReadonlySet<string>): DryRunCommand[] {
  const names = [...makeNames].map(escapeRegExp).join('|');
  const message = new RegExp(`^(?:# )?(?:\\S*/)?(?:${names})(?:\\[\\d+\\])?: (.*)$`);
  const directory = /^(Entering|Leaving) directory [`'"](.*)['"]$/;
  // "Makefile:12: ..." for rules of a makefile, "<builtin>: ..." for make's built-in implicit rules.
  const trace = /^(?:[^:\n]+:\d+|<[a-z-]+>): (?:update target '(.+)' due to: (.*)|target '(.+)' does not exist)$/;
  // One entry per make process: its directory and the recipe it is printing. `quiet`: a sub-make
  // run with --no-print-directory, which prints no Entering/Leaving lines; it ends with its database.
  // `children`: the recipe lines the make runs for real now (recursive ones), by --debug=j's id;
  // what their shells print meanwhile, outside the sub-makes they start, is not a command.
  type Make = { cwd: string; rule?: MakeRecipe; quiet?: boolean; children: Set<string> };
  const stack: Make[] = [{ cwd, children: new Set() }];
  /** The make each command was read for. */
  const printedBy: Make[] = [];
  const recursive = new RegExp(`(?:^|[\\s;&|(\`])(?:\\S*/)?(?:${names})(?:\\s|$)`);
  const commands: DryRunCommand[] = [];
  const facts: DatabaseFacts = {
    described: new Set(),
    phony: new Set(),
    doubleColon: new Set(),
    oneShell: new Set(),
    deleteOnError: new Set(),
    ignoreAll: new Set(),
    ignoring: new Map(),
    shells: new Map(),
  };
  const lines = output.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (DATABASE_START.test(line)) {
      i = readDatabase(lines, i + 1, stack[stack.length - 1].cwd, facts);
      // A quiet sub-make's database is the last thing it prints.
      if (stack.length > 1 && stack[stack.length - 1].quiet) stack.pop();
      continue;
    }
    const m = message.exec(line);
    if (m) {
      const d = directory.exec(m[1]);
      if (d?.[1] === 'Entering') stack.push({ cwd: path.resolve(d[2]), children: new Set() });
      else if (d?.[1] === 'Leaving' && stack.length > 1) stack.pop();
      continue;
    }
    const job = JOB_DEBUG.exec(line);
    if (job) {
      const kind = job[1] ?? job[5];
      const pointer = job[2] ?? job[6];
      const name = job[3];
      const pid = job[4] ?? job[7];
      if (kind === undefined || pointer === undefined || pid === undefined) continue;
      const id = `${pointer} ${pid}`;
      if (kind.startsWith('Reaping') || kind === 'Removing') {
        for (const e of stack) e.children.delete(id);
        continue;
      }
      // The make running the recipe of that target. make prints this after it started the
      // child, so the line may come in the middle of what the child printed (a sub-make's
      // commands): the target, not the position, says whose child it is.
      let owner: Make | undefined;
      for (let k = stack.length - 1; k >= 0 && owner === undefined && name !== undefined; k--) if (stack[k]!.rule?.target === path.resolve(stack[k]!.cwd, name)) owner = stack[k];
      if (owner === undefined || owner.children.has(id)) continue;
      owner.children.add(id);
      // What was read for that make since the recursive line it runs is that child's output.
      let last = printedBy.length - 1;
      while (last >= 0 && (printedBy[last] !== owner || !recursive.test(commands[last]!.text))) last--;
      for (let k = printedBy.length - 1; last >= 0 && k > last; k--) {
        if (printedBy[k] !== owner) continue;
        commands.splice(k, 1);
        printedBy.splice(k, 1);
      }
      continue;
    }
    const top = stack[stack.length - 1];
    if (top.children.size > 0) continue;
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
    printedBy.push(top);
    // make -n runs a recursive make line; one told --no-print-directory prints what follows unannounced.
    const quiet = quietSubMakeDirectory(text, top.cwd, makeNames);
    if (quiet !== undefined) stack.push({ cwd: quiet, quiet: true, children: new Set() });
  }
  return applyDatabaseFacts(commands, facts);
}

/**
 * The directory of the sub-make `text` starts when it runs make with --no-print-directory (its
 * Entering/Leaving lines are not printed, even with -w): `-C DIR` (cumulative), `--directory=DIR`,
 * or a `cd DIR &&` before it. Undefined for any other command.
 */
export function quietSubMakeDirectory(text: string, cwd: string, makeNames: ReadonlySet<string>): string | undefined {
  if (!text.includes('--no-print-directory')) return undefined;
  let tokens: ShellToken[];
  try {
    tokens = tokenizeShell(text);
  } catch {
    return undefined;
  }
  let dir = cwd;
  // Simple commands separated by && or ;: `cd DIR` changes the directory of the ones after it.
  let words: string[] = [];
  const simple: string[][] = [];
  for (const t of tokens) {
    if (t.type === 'word') words.push(t.value);
    else if (t.op === '&&' || t.op === ';' || t.op === '\n') {
      simple.push(words);
      words = [];
    } else return undefined; // pipes, redirections, subshells: not a plain recursive make line
  }
  simple.push(words);
  for (const argv of simple) {
    if (argv.length === 0) continue;
    if (argv[0] === 'cd' && argv.length === 2) {
      dir = path.resolve(dir, argv[1]!);
      continue;
    }
    if (!makeNames.has(path.basename(argv[0]!)) && !makeNames.has(argv[0]!)) continue;
    if (!argv.includes('--no-print-directory')) return undefined;
    for (let i = 1; i < argv.length; i++) {
      const a = argv[i]!;
      if (a === '-C' || a === '--directory') dir = path.resolve(dir, argv[++i] ?? '.');
      else if (a.startsWith('--directory=')) dir = path.resolve(dir, a.slice('--directory='.length));
      else if (/^-C./.test(a)) dir = path.resolve(dir, a.slice(2));
    }
    return dir;
  }
  return undefined;
}

/** What the rule databases (-p) told, by directory of the make that printed them, or by absolute target path. */
interface DatabaseFacts {
  /** Directories whose make printed a database: in the others nothing is known of phony targets. */
  described: Set<string>;
  /** Targets that are phony, and targets with a double-colon rule. */
  phony: Set<string>;
  doubleColon: Set<string>;
  /** Directories whose makefile has `.ONESHELL:`, `.DELETE_ON_ERROR:`, `.IGNORE:` (without prerequisites). */
  oneShell: Set<string>;
  deleteOnError: Set<string>;
  ignoreAll: Set<string>;
  /** By target: whether each line of its recipe ignores errors (`-`). */
  ignoring: Map<string, boolean[]>;
  /** SHELL and .SHELLFLAGS by directory. */
  shells: Map<string, { shell?: string; flags?: string }>;
}

/**
 * A make prints its database as it exits, after its recipes: the commands
 * and their rules learn of it once everything is read.
 */
function applyDatabaseFacts(commands: DryRunCommand[], facts: DatabaseFacts): DryRunCommand[] {
  const byRecipe = new Map<MakeRecipe, DryRunCommand[]>();
  const shellOf = new Map<string, string[] | undefined>();
  for (const c of commands) {
    if (!shellOf.has(c.cwd)) {
      const s = facts.shells.get(c.cwd);
      const shell = [s?.shell ?? '/bin/sh', ...(s?.flags ?? '-c').split(/\s+/).filter(Boolean)];
      shellOf.set(c.cwd, shell.join(' ') === '/bin/sh -c' ? undefined : shell);
    }
    const shell = shellOf.get(c.cwd);
    if (shell) c.shell = shell;
    const r = c.rule;
    if (!r) continue;
    let cs = byRecipe.get(r);
    if (!cs) byRecipe.set(r, (cs = []));
    cs.push(c);
    if (!facts.described.has(c.cwd)) continue;
    r.alwaysRuns = facts.phony.has(r.target) || (r.prereqs.length === 0 && facts.doubleColon.has(r.target));
    if (facts.deleteOnError.has(c.cwd) && !facts.phony.has(r.target)) r.deleteOnError = true;
  }
  // A recipe's printed commands match its lines one for one when they are as many.
  for (const [r, cs] of byRecipe) {
    const flags = facts.ignoring.get(r.target);
    if (facts.ignoreAll.has(cs[0]!.cwd)) for (const c of cs) c.ignoreErrors = true;
    else if (flags && flags.length === cs.length) cs.forEach((c, k) => flags[k] && (c.ignoreErrors = true));
  }
  if (facts.oneShell.size === 0) return commands;
  // .ONESHELL: the lines of each recipe go to one shell, as one command.
  const joined: DryRunCommand[] = [];
  for (const c of commands) {
    const last = joined[joined.length - 1];
    if (last && c.rule && last.rule === c.rule && last.cwd === c.cwd && facts.oneShell.has(c.cwd)) last.text += `\n${c.text}`;
    else joined.push({ ...c });
  }
  return joined;
}

/**
 * make's --debug=j lines (GNU make 3.81 to 4.4): a recipe line it runs for real in a dry run (a
 * recursive make) is a child between "Live child" and "Reaping winning child".
 */
const JOB_DEBUG =
  /^(Putting|Live) child (0x[0-9a-f]+) \((.*)\) PID (\d+)[ (].*$|^(Reaping winning|Reaping losing|Removing) child (0x[0-9a-f]+) PID (\d+)\b.*$|^(?:Released token for|Obtained token for) child .*$|^Got a SIGCHLD; \d+ unreaped children\.$|^Need a job token; we (?:have|don't have) children$/;

/** The first line of the database -p prints ("# GNU Make 4.3"); it ends with "# Finished Make data base on ...". */
const DATABASE_START = /^# GNU Make \S+$/;
const DATABASE_END = /^# Finished Make data base /;
/** A file entry of the database: "name:" or "name::", then its prerequisites; never a comment or a recipe line. */
const ENTRY = /^([^#\t\s][^\t]*?)(::?)(?:\s|$)/;
const PHONY_NOTE = /^#  Phony target /;

/**
 * Reads a database from line `start` up to its end marker (returns that
 * line's index) into `facts`: file entries marked "#  Phony target", entries
 * with a double-colon rule and recipes, as absolute paths under `cwd`; the
 * special targets and SHELL / .SHELLFLAGS of the make in `cwd`. Variable
 * definitions (`X := y`, `define`) never match an entry: a variable's name is
 * followed by its operator, not by a colon and a blank.
 */
function readDatabase(lines: readonly string[], start: number, cwd: string, facts: DatabaseFacts): number {
  const { phony, doubleColon, oneShell, shells, deleteOnError } = facts;
  facts.described.add(cwd);
  let entry: string | undefined;
  let inDefine = false;
  /** The recipe lines of `entry` being read ("#  recipe to execute" then tab-indented lines). */
  let recipe: boolean[] | undefined;
  for (let i = start; i < lines.length; i++) {
    const line = lines[i];
    if (DATABASE_END.test(line)) return i;
    if (recipe) {
      if (line.startsWith('\t')) {
        recipe.push(/^[@+\s]*-/.test(line.slice(1)));
        // A line continued with a backslash is one recipe line.
        while (lines[i]!.endsWith('\\') && i + 1 < lines.length) i++;
        continue;
      }
      recipe = undefined;
    }
    if (entry !== undefined && line.startsWith('#  recipe to execute')) {
      recipe = [];
      facts.ignoring.set(entry, recipe);
      continue;
    }
    if (inDefine) {
      if (line === 'endef') inDefine = false;
      continue;
    }
    if (line.startsWith('define ')) {
      inDefine = true;
      continue;
    }
    if (line === '') {
      entry = undefined;
      continue;
    }
    if (entry !== undefined && PHONY_NOTE.test(line)) {
      phony.add(entry);
      continue;
    }
    if (line === '.ONESHELL:' || line.startsWith('.ONESHELL: ')) oneShell.add(cwd);
    if (line === '.DELETE_ON_ERROR:' || line.startsWith('.DELETE_ON_ERROR: ')) deleteOnError.add(cwd);
    if (line === '.IGNORE:') facts.ignoreAll.add(cwd);
    // Values with a reference ($(BASH)) are printed unexpanded: those are left at the default.
    const v = /^(SHELL|\.SHELLFLAGS) :?= ([^$]*)$/.exec(line);
    if (v) {
      const s = shells.get(cwd) ?? {};
      if (v[1] === 'SHELL') s.shell = v[2]!.trim() || undefined;
      else s.flags = v[2]!.trim();
      shells.set(cwd, s);
      continue;
    }
    const e = ENTRY.exec(line);
    if (e && !/^\S+ (?::|::|\?|\+|!)?= /.test(line)) {
      entry = path.resolve(cwd, e[1]);
      if (e[2] === '::') doubleColon.add(entry);
    }
  }
  return lines.length;
}

/** A recipe line continues on the next line when it ends with an unescaped backslash. */
function endsWithContinuation(text: string): boolean {
  let backslashes = 0;
  for (let i = text.length - 1; i >= 0 && text[i] === '\\'; i--) backslashes++;
  return backslashes % 2 === 1;
}

/** `s` matched literally inside a regular expression. */
export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
