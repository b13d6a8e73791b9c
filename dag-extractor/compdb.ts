/**
 * Extracts compile actions from a JSON compilation database
 * (compile_commands.json, https://clang.llvm.org/docs/JSONCompilationDatabase.html).
 * Each entry becomes one compile action with no dependencies: a database
 * lists compiles only, never archives, links or generators.
 *
 * The format requires an absolute "directory"; this reader also accepts a
 * relative one and resolves it against the folder holding the JSON file, so a
 * database can be checked in with a project. "file" and "output" are
 * resolved against the entry's directory. "arguments" is used as argv when
 * present, otherwise "command" is split as the shell would split it.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { failedPrecondition, invalidArgument } from '../common/errors.js';
import { actionLabel, type ActionDraft } from './action-draft.js';
import { assignActionIds } from './action-id.js';
import type { ExtractOptions, GraphExtractor } from './extractor.js';
import { commonAncestor, resolveIn, unique } from './paths.js';
import { resolveDirectory } from './project-dir.js';
import { ShellSyntaxError, tokenizeShell } from './shell-tokenizer.js';
import { classifyToolInvocation } from './tool-invocation.js';
import type { BuildGraph } from './types.js';

export const COMPILE_COMMANDS = 'compile_commands.json';

/** Reads PROJECT/compile_commands.json, or BUILD_DIR/compile_commands.json when a build directory is given. */
export function createCompdbExtractor(): GraphExtractor {
  return {
    name: 'compile_commands.json',
    async extract(projectDir: string, options: ExtractOptions = {}): Promise<BuildGraph> {
      if (options.makeArgs && options.makeArgs.length > 0) {
        throw invalidArgument('A compilation database has no targets or variables: makeArgs cannot be used with compile_commands.json');
      }
      const projectRoot = await resolveDirectory(projectDir);
      const dbDir = options.buildDir === undefined ? projectRoot : await resolveDirectory(path.resolve(projectRoot, options.buildDir), 'Build directory');
      const file = path.join(dbDir, COMPILE_COMMANDS);
      const root = commonAncestor([projectRoot, dbDir]);
      const drafts = parseCompilationDatabase(await readDatabase(file), file, dbDir, root);
      const ids = assignActionIds(drafts);
      const actions = drafts.map((draft, i) => ({
        id: ids[i],
        kind: draft.kind,
        cwd: draft.cwd,
        argv: draft.argv,
        inputs: draft.inputs,
        outputs: draft.outputs,
        deps: [],
        cacheable: true,
        label: actionLabel(draft, root),
      }));
      return { root, tool: 'compile_commands', actions };
    },
  };
}

async function readDatabase(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw failedPrecondition(`Cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** Parses the database text into compile drafts; `baseDir` resolves relative "directory" entries. */
export function parseCompilationDatabase(text: string, file: string, baseDir: string, root: string): ActionDraft[] {
  let entries: unknown;
  try {
    entries = JSON.parse(text);
  } catch (err) {
    throw invalidArgument(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(entries)) throw invalidArgument(`${file} must contain a JSON array of compile commands`);
  return entries.map((entry, index) => entryToDraft(entry, index, file, baseDir, root));
}

function entryToDraft(entry: unknown, index: number, file: string, baseDir: string, root: string): ActionDraft {
  const where = `${file} entry ${index}`;
  if (typeof entry !== 'object' || entry === null) throw invalidArgument(`${where} is not an object`);
  const e = entry as Record<string, unknown>;
  if (typeof e.directory !== 'string' || e.directory === '') throw invalidArgument(`${where} has no "directory"`);
  if (typeof e.file !== 'string' || e.file === '') throw invalidArgument(`${where} has no "file"`);
  if (e.output !== undefined && typeof e.output !== 'string') throw invalidArgument(`${where}: "output" must be a string`);
  const cwd = resolveIn(baseDir, e.directory);
  const argv = entryArgv(e, where);
  const source = resolveIn(cwd, e.file);
  const output = typeof e.output === 'string' ? [resolveIn(cwd, e.output)] : [];

  const tool = classifyToolInvocation(argv, cwd, root);
  if (tool?.kind === 'compile') {
    return {
      kind: 'compile', verb: tool.verb, cwd, argv: tool.argv, inputs: unique([source, ...tool.inputs]), optionalInputs: [],
      outputs: unique([...output, ...tool.outputs]), cacheable: true,
    };
  }
  // A compiler this reader does not know (nvcc, a wrapper script): trust the database's own fields.
  const dashO = argv.indexOf('-o');
  const outputs = output.length > 0 ? output : dashO >= 0 && dashO + 1 < argv.length ? [resolveIn(cwd, argv[dashO + 1])] : [];
  return { kind: 'compile', verb: 'CC', cwd, argv, inputs: [source], optionalInputs: [], outputs, cacheable: true };
}

function entryArgv(e: Record<string, unknown>, where: string): string[] {
  if (e.arguments !== undefined) {
    if (!Array.isArray(e.arguments) || e.arguments.length === 0 || !e.arguments.every((a) => typeof a === 'string')) {
      throw invalidArgument(`${where}: "arguments" must be a non-empty array of strings`);
    }
    return e.arguments as string[];
  }
  if (typeof e.command !== 'string') throw invalidArgument(`${where} has neither "arguments" nor "command"`);
  let tokens;
  try {
    tokens = tokenizeShell(e.command);
  } catch (err) {
    if (err instanceof ShellSyntaxError) throw invalidArgument(`${where}: cannot split "command": ${err.message}`);
    throw err;
  }
  const argv: string[] = [];
  for (const token of tokens) {
    if (token.type !== 'word' || !token.literal) {
      throw invalidArgument(`${where}: "command" must be a single command without shell operators or expansions: ${e.command}`);
    }
    argv.push(token.value);
  }
  if (argv.length === 0) throw invalidArgument(`${where}: "command" is empty`);
  return argv;
}
