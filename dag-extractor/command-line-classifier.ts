/**
 * Turns one shell command line, as a build tool would run it in `cwd`, into
 * action drafts.
 *
 * The line is split at top level on `;`, `&&` and newlines. Segments that only
 * print (`echo`, `printf`, `true`, `:` without a file redirection, such as
 * Redis's `printf '    %b %b\n' CC foo.o 1>&2;` prefix) are dropped, `cd DIR`
 * segments move the working directory of the segments after them, and
 * recursive make invocations are left out (make runs them even in dry-run mode
 * and prints their commands itself). What remains:
 *  - compiles, archives, links and copies only: one cacheable action per command
 *    ('split' mode), or one action for the whole line ('single' mode, or when
 *    the line also removes the tool's own outputs first, as in
 *    `rm -f libx.a && ar rcs libx.a ...`);
 *  - anything else: one non-cacheable 'other' action running the line with
 *    `/bin/sh -c`, with the outputs that can be seen (redirections, `-o FILE`,
 *    the destination of cp/mv/install/ln, touched files).
 * Lines with compound commands or shell expansions around a tool command run
 * whole, as 'other'.
 */
import path from 'node:path';
import type { ActionDraft } from './action-draft.js';
import { resolveIn, unique } from './paths.js';
import {
  commandName,
  parseCommandLine,
  type CommandSegment,
  type ParsedCommandLine,
  type ShellRedirect,
  type SimpleCommand,
} from './shell-command-line.js';
import { ShellSyntaxError, type ShellWord } from './shell-tokenizer.js';
import { classifyToolInvocation, type ToolInvocation } from './tool-invocation.js';

export interface ClassifyOptions {
  /** Absolute project root: link inputs outside it are system files and are left out. */
  root: string;
  /** Command names (basenames) that are recursive make invocations; empty when the build has none. */
  makeNames: ReadonlySet<string>;
  /** 'split': one action per tool command of the line (Make). 'single': at most one action per line (Ninja edges). */
  mode: 'split' | 'single';
  /** The shell and its flags a line runs with (make's SHELL and .SHELLFLAGS); default `/bin/sh -c`. */
  shell?: readonly string[];
}

export interface LineClassification {
  /** The line invokes make recursively (the dry run has already printed the sub-make's commands). */
  recursive: boolean;
  drafts: ActionDraft[];
}

const DEFAULT_SHELL = ['/bin/sh', '-c'];
/** Syntax bash reads otherwise than POSIX sh: brace expansion, [[ ]], $'...', process substitution, (( )). */
const NOT_POSIX = /\{[^{}\s]*(?:,|\.\.)[^{}\s]*\}|\[\[|\$'|[<>]\(|\(\(/;
const NOISE_COMMANDS = new Set(['echo', 'printf', 'true', ':']);
const COPY_COMMANDS = new Set(['cp', 'mv', 'install', 'ln']);
const OUTPUT_REDIRECTIONS = new Set(['>', '>>', '>|', '<>']);

type Step =
  | { type: 'tool'; tool: ToolInvocation; cwd: string; env?: Record<string, string> }
  | { type: 'clean'; paths: string[] }
  | { type: 'other'; outputs: string[] };

export function classifyCommandLine(text: string, cwd: string, options: ClassifyOptions): LineClassification {
  const shell = options.shell ?? DEFAULT_SHELL;
  const otherDraft = (t: string, c: string, outputs: string[], inputs: string[]) => shellDraft(shell, t, c, outputs, inputs);
  // Another shell (bash) may give this line another meaning than POSIX sh, which the tokenizer reads.
  if (shell[0] !== DEFAULT_SHELL[0] && NOT_POSIX.test(text)) return { recursive: false, drafts: [otherDraft(text, cwd, [], [])] };
  let parsed: ParsedCommandLine;
  try {
    parsed = parseCommandLine(text);
  } catch (err) {
    if (err instanceof ShellSyntaxError) return { recursive: false, drafts: [otherDraft(text, cwd, [], [])] };
    throw err;
  }
  const isRecursiveMake = (segment: CommandSegment) => segment.commands.some((c) => isMakeCommand(c, options.makeNames));
  const recursive = parsed.segments.some(isRecursiveMake);

  if (parsed.compound) {
    if (recursive) return { recursive, drafts: [] };
    const outputs = parsed.segments.flatMap((s) => s.commands.flatMap((c) => visibleOutputs(c, cwd)));
    return { recursive, drafts: [otherDraft(text, cwd, outputs, [])] };
  }

  const kept = recursive ? parsed.segments.filter((s) => !isRecursiveMake(s)) : parsed.segments;
  const { steps, cwdKnown } = walkSegments(kept, cwd, options);
  const tools = steps.flatMap((s) => (s.type === 'tool' ? [s] : []));
  if (steps.length === 0) return { recursive, drafts: [] };
  const lineText = recursive ? kept.map((s) => text.slice(s.start, s.end)).join(' && ') : text;
  const toolOutputs = new Set(tools.flatMap((t) => t.tool.outputs));
  const cleans = steps.flatMap((s) => (s.type === 'clean' ? [s] : []));
  const onlyOwnCleans = cleans.every((c) => c.paths.every((p) => toolOutputs.has(p)));

  if (tools.length === 0 || !cwdKnown || !onlyOwnCleans || steps.some((s) => s.type === 'other')) {
    const outputs = steps.flatMap((s) => (s.type === 'other' ? s.outputs : s.type === 'tool' ? s.tool.outputs : []));
    const inputs = tools.flatMap((t) => t.tool.inputs);
    return { recursive, drafts: [otherDraft(lineText, cwd, outputs, inputs)] };
  }
  if (cleans.length === 0 && (tools.length === 1 || options.mode === 'split')) {
    return { recursive, drafts: tools.map((t) => toolDraft(t.tool, t.cwd, t.env)) };
  }
  return { recursive, drafts: [combinedDraft(shell, lineText, cwd, tools.map((t) => t.tool), cleans.flatMap((c) => c.paths))] };
}

/**
 * Classifies each segment in order, following `cd DIR` segments. `cwdKnown`
 * turns false after a `cd` whose target cannot be known without running it.
 */
function walkSegments(segments: CommandSegment[], cwd: string, options: ClassifyOptions): { steps: Step[]; cwdKnown: boolean } {
  const steps: Step[] = [];
  let current = cwd;
  let cwdKnown = true;
  for (const segment of segments) {
    const [command] = segment.commands;
    if (segment.commands.length !== 1 || command.words.length === 0) {
      steps.push({ type: 'other', outputs: segment.commands.flatMap((c) => visibleOutputs(c, current)) });
      continue;
    }
    const cdTarget = cdDirectory(command);
    if (cdTarget !== null) {
      if (cdTarget === undefined) cwdKnown = false;
      else current = resolveIn(current, cdTarget);
      continue;
    }
    if (isNoise(command)) continue;
    if (isPlain(command)) {
      const tool = classifyToolInvocation(command.words.map((w) => w.value), current, options.root);
      if (tool) {
        steps.push({ type: 'tool', tool, cwd: current, env: environment(command.assignments) });
        continue;
      }
      const cleaned = cleanedFiles(command, current);
      if (cleaned) {
        steps.push({ type: 'clean', paths: cleaned });
        continue;
      }
    }
    steps.push({ type: 'other', outputs: visibleOutputs(command, current) });
  }
  return { steps, cwdKnown };
}

function toolDraft(tool: ToolInvocation, cwd: string, env: Record<string, string> | undefined): ActionDraft {
  return {
    kind: tool.kind,
    verb: tool.verb,
    cwd,
    argv: tool.argv,
    ...(env ? { env } : {}),
    inputs: tool.inputs,
    optionalInputs: tool.optionalInputs,
    outputs: tool.outputs,
    cacheable: true,
  };
}

/**
 * Several tool commands that must run as one shell line, e.g. CMake's
 * `cmake -E rm -f libx.a && ar qc libx.a a.o && ranlib libx.a`. The action
 * takes its kind from the main tool (the last one that is not an in-place
 * ranlib); files produced or removed earlier on the line are not inputs.
 */
function combinedDraft(shell: readonly string[], text: string, cwd: string, tools: ToolInvocation[], cleaned: string[]): ActionDraft {
  const main = [...tools].reverse().find((t) => t.verb !== 'RANLIB') ?? tools[tools.length - 1];
  const internal = new Set(cleaned);
  const inputs: string[] = [];
  const optionalInputs: string[] = [];
  for (const tool of tools) {
    inputs.push(...tool.inputs.filter((p) => !internal.has(p)));
    optionalInputs.push(...tool.optionalInputs.filter((p) => !internal.has(p)));
    for (const output of tool.outputs) internal.add(output);
  }
  return {
    kind: main.kind,
    verb: main.verb,
    cwd,
    argv: [...shell, text],
    inputs: unique(inputs),
    optionalInputs: unique(optionalInputs),
    outputs: unique([...main.outputs, ...tools.flatMap((t) => t.outputs)]),
    cacheable: true,
  };
}

function shellDraft(shell: readonly string[], text: string, cwd: string, outputs: string[], inputs: string[]): ActionDraft {
  const uniqueOutputs = unique(outputs);
  return {
    kind: 'other',
    verb: uniqueOutputs.length > 0 ? 'GEN' : 'SH',
    cwd,
    argv: [...shell, text],
    inputs: unique(inputs),
    optionalInputs: [],
    outputs: uniqueOutputs,
    cacheable: false,
  };
}

function isMakeCommand(command: SimpleCommand, makeNames: ReadonlySet<string>): boolean {
  const name = commandName(command);
  return name !== undefined && name.literal && makeNames.has(path.basename(name.value));
}

/** The directory of a `cd DIR` command; undefined for a `cd` whose target is unknown; null for other commands. */
function cdDirectory(command: SimpleCommand): string | undefined | null {
  if (command.words[0].value !== 'cd' || !command.words[0].literal) return null;
  const args = command.words.slice(1).filter((w) => w.value !== '-P' && w.value !== '-L');
  if (args.length !== 1 || !args[0].literal || args[0].value === '-' || command.assignments.length > 0) return undefined;
  return args[0].value;
}

function isFileRedirect(redirect: ShellRedirect): boolean {
  if (redirect.op === '>&' || redirect.op === '<&') return !/^(\d+|-)$/.test(redirect.target.value);
  return !(redirect.target.literal && redirect.target.value === '/dev/null');
}

/** Prints something and nothing else: `echo`, `printf`, `true` or `:` without file redirections or substitutions. */
function isNoise(command: SimpleCommand): boolean {
  const name = command.words[0];
  return (
    command.assignments.length === 0 &&
    name.literal &&
    NOISE_COMMANDS.has(path.basename(name.value)) &&
    !command.redirects.some(isFileRedirect) &&
    !command.words.some((w) => w.substitutes)
  );
}

/** No expansions anywhere and no file redirections: argv is exactly the word values. */
function isPlain(command: SimpleCommand): boolean {
  const literal = (w: ShellWord) => w.literal;
  return command.words.every(literal) && command.assignments.every(literal) && !command.redirects.some(isFileRedirect);
}

function environment(assignments: ShellWord[]): Record<string, string> | undefined {
  if (assignments.length === 0) return undefined;
  const env: Record<string, string> = {};
  for (const a of assignments) {
    const eq = a.value.indexOf('=');
    env[a.value.slice(0, eq)] = a.value.slice(eq + 1);
  }
  return env;
}

/** Files removed by `rm [-f] FILES` or `cmake -E rm|remove [-f] FILES`; undefined for other commands. */
function cleanedFiles(command: SimpleCommand, cwd: string): string[] | undefined {
  const words = command.words.map((w) => w.value);
  const name = path.basename(words[0]);
  let args: string[];
  if (name === 'rm') args = words.slice(1);
  else if (name === 'cmake' && words[1] === '-E' && (words[2] === 'rm' || words[2] === 'remove')) args = words.slice(3);
  else return undefined;
  const options = args.filter((a) => a.startsWith('-'));
  const files = args.filter((a) => !a.startsWith('-'));
  if (files.length === 0 || !options.every((o) => /^-[fr]+$/.test(o) || o === '--')) return undefined;
  return files.map((f) => resolveIn(cwd, f));
}

/** Best-effort outputs of a command Orion cannot model: redirections, -o/--output, copy destinations, touched files. */
function visibleOutputs(command: SimpleCommand, cwd: string): string[] {
  const outputs: string[] = [];
  const add = (p: string) => {
    if (p !== '' && !p.startsWith('/dev/')) outputs.push(resolveIn(cwd, p));
  };
  for (const r of command.redirects) {
    const writes = OUTPUT_REDIRECTIONS.has(r.op) || (r.op === '>&' && isFileRedirect(r));
    if (writes && r.target.literal) add(r.target.value);
  }
  const words = command.words;
  if (words.length === 0 || !words[0].literal) return outputs;
  for (let i = 1; i < words.length; i++) {
    const w = words[i];
    if (!w.literal) continue;
    const next = words[i + 1];
    if ((w.value === '-o' || w.value === '--output') && next?.literal) add(next.value);
    else if (w.value.startsWith('--output=')) add(w.value.slice('--output='.length));
  }
  const name = path.basename(words[0].value);
  const args = words.slice(1);
  if (COPY_COMMANDS.has(name) && args.length >= 2 && !args.some((w) => w.value === '-d')) {
    const destination = args[args.length - 1];
    if (destination.literal && !destination.value.startsWith('-') && !destination.value.endsWith('/')) add(destination.value);
  }
  if (name === 'touch') for (const w of args) if (w.literal && !w.value.startsWith('-')) add(w.value);
  return unique(outputs);
}
