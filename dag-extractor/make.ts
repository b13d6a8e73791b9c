/**
 * Extracts the build graph of a GNU Make project from a dry run:
 * `make -n -B -w --trace --debug=j -p [makeArgs] -j1` prints every command of a full build (-B
 * treats every target as out of date) without running it, with the directory
 * of every sub-make (-w); the trailing -j1 keeps sub-make output from
 * interleaving even when makeArgs ask for parallel jobs; --trace names the
 * rule (target, prerequisites) of each recipe, and -p's rule database which
 * targets are phony, --debug=j which printed lines are the output of a
 * recursive line make ran (see make-dry-run-parser.ts). Each printed line
 * is classified into compile, archive, link, copy or 'other' actions, and edges
 * come from the files they exchange plus barriers around the 'other' steps
 * (see ordered-graph.ts).
 *
 * Make still runs some things during a dry run: lines that invoke $(MAKE)
 * (so sub-makes can print their commands), $(shell ...) functions, and rules
 * that remake included makefiles.
 */
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import fg from 'fast-glob';
import { failedPrecondition, invalidArgument, type OrionError } from '../common/errors.js';
import type { ActionDraft } from './action-draft.js';
import { classifyCommandLine } from './command-line-classifier.js';
import { createProcessCommandRunner, environmentWith, tail, type CommandRunner } from './command-runner.js';
import type { ExtractOptions, GraphExtractor } from './extractor.js';
import { escapeRegExp, parseMakeDryRun, type MakeRecipe } from './make-dry-run-parser.js';
import { buildOrderedActions, type OrderedAction } from './ordered-graph.js';
import { resolveDirectory } from './project-dir.js';
import type { BuildAction, BuildGraph } from './types.js';

export interface MakeExtractorDeps {
  runner?: CommandRunner;
  /** The make program (default "make"). */
  makeProgram?: string;
}

/** Environment variables of an enclosing make that would change how the dry run behaves. */
const INHERITED_MAKE_VARIABLES = ['MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'MAKEOVERRIDES', 'GNUMAKEFLAGS'];

export function createMakeExtractor(deps: MakeExtractorDeps = {}): GraphExtractor {
  const runner = deps.runner ?? createProcessCommandRunner();
  const makeProgram = deps.makeProgram ?? 'make';
  const makeNames = new Set(['make', 'gmake', path.basename(makeProgram)]);

  return {
    name: 'make',
    async extract(projectDir: string, options: ExtractOptions = {}): Promise<BuildGraph> {
      if (options.buildDir !== undefined) {
        throw invalidArgument('A build directory applies to CMake and Ninja projects, not to Make projects', {
          hint: 'Pass make variables (e.g. O=out) in makeArgs instead.',
        });
      }
      const makeArgs = options.makeArgs ?? [];
      for (const arg of makeArgs) {
        if (arg === '' || arg.includes('\n')) throw invalidArgument(`Invalid make argument ${JSON.stringify(arg)}`);
        if (arg === '--no-print-directory') {
          throw invalidArgument('--no-print-directory cannot be used: Orion follows sub-makes through their "Entering directory" lines');
        }
      }
      const root = await resolveDirectory(projectDir);
      const overrides: Record<string, string | undefined> = { LC_ALL: 'C' };
      for (const name of INHERITED_MAKE_VARIABLES) overrides[name] = undefined;
      const old = await assumedOld(root);
      const pretendNew: string[] = [];
      const shown = ['-n', '-B', '-w', '--trace', '--debug=j', '-p', ...makeArgs, '-j1'];
      let result: Awaited<ReturnType<CommandRunner['run']>>;
      for (;;) {
        const args = [...shown, ...subMakeFlags(old, pretendNew, makeProgram, makeArgs)];
        result = await runner.run(makeProgram, args, { cwd: root, env: environmentWith(overrides), signal: options.signal });
        if (result.exitCode === 0) break;
        // A sub-make needing a file another sub-make's recipe makes earlier in the same build
        // (automake's `tests: ../src/libfoo.la`): the dry run made nothing, so the file is missing.
        // Make is told it exists (-W) and the dry run goes again.
        const missing = pretendNew.length < MAX_PRETEND_NEW ? madeEarlier(result.stdout, result.stderr, root, makeNames) : undefined;
        if (missing === undefined || pretendNew.includes(missing)) {
          // The -o/-W list can be long (a name per makefile): the message shows its size only.
          const files = (n: number) => `${n} file${n === 1 ? '' : 's'}`;
          const marked = [old.length ? `-o: ${files(old.length)}` : '', pretendNew.length ? `-W: ${files(pretendNew.length)}` : ''].filter(Boolean).join(', ');
          throw makeFailure(makeProgram, marked ? [...shown, `(${marked})`] : shown, root, result.exitCode, result.stderr);
        }
        pretendNew.push(missing);
      }

      const drafts: ActionDraft[] = [];
      const recipes: (MakeRecipe | undefined)[] = [];
      /** Files the commands so far write: there when a later command runs. */
      const written = new Set<string>();
      for (const command of parseMakeDryRun(result.stdout, root, makeNames)) {
        const text = withVpathSources(command.text, command.cwd, (abs) => written.has(abs));
        for (const draft of classifyCommandLine(text, command.cwd, { root, makeNames, mode: 'split', shell: command.shell }).drafts) {
          for (const o of draft.outputs) written.add(o);
          // A line make goes on after when it fails runs here as a step, whose failure the build ignores.
          if (command.ignoreErrors) {
            draft.cacheable = false;
            draft.ignoreErrors = true;
          }
          drafts.push(draft);
          recipes.push(command.rule);
        }
      }
      foldDepfileMoves(drafts, recipes);
      const skippable = skippableRecipes(drafts, recipes);
      const actions = buildOrderedActions(drafts, root, (i) => (skippable.has(recipes[i]!) ? recipes[i] : undefined));
      attachMakeRules(actions, recipes, skippable);
      return { root, tool: 'make', actions };
    },
  };
}

/**
 * automake names a compile's source `` `test -f 'a.c' || echo './'`a.c `` (the file here, or in
 * the source directory of a VPATH build): a command substitution no classifier can read. When
 * the file is here, or an earlier command of the build writes it here (`writtenEarlier`: a
 * generated source, so the graph is the same before and after a build), the shell would pick it:
 * it is written plainly, and the compile is a compile.
 */
function withVpathSources(text: string, cwd: string, writtenEarlier: (abs: string) => boolean): string {
  return text.replace(/`test -f '([^'\n]+)' \|\| echo '[^'\n]*'`([^\s`'";|&]+)/g, (whole, tested: string, named: string) => {
    if (tested !== named) return whole;
    const abs = path.resolve(cwd, tested);
    if (writtenEarlier(abs)) return named;
    try {
      return statSync(abs).isFile() ? named : whole;
    } catch {
      return whole;
    }
  });
}

/**
 * automake's compile recipes write the dependency file under a temporary name and rename it
 * on the next line (`gcc -MD -MF .deps/a.Tpo -c a.c` / `mv -f .deps/a.Tpo .deps/a.Po`): the
 * rename would be a step, and a step is a barrier, so every compile would wait for the one
 * before it. The compile writes the final name itself instead (the file's contents do not
 * depend on its name: -MT names the target) and the rename goes. make leaves the same tree.
 */
function foldDepfileMoves(drafts: ActionDraft[], recipes: (MakeRecipe | undefined)[]): void {
  for (let i = drafts.length - 1; i > 0; i--) {
    const move = drafts[i]!;
    const compile = drafts[i - 1]!;
    if (move.kind !== 'other' || compile.kind !== 'compile' || !compile.cacheable || recipes[i] === undefined || recipes[i] !== recipes[i - 1]) continue;
    if (move.cwd !== compile.cwd || move.ignoreErrors || compile.ignoreErrors) continue;
    const m = /^mv(?: -f)? ([A-Za-z0-9_.\/+-]+) ([A-Za-z0-9_.\/+-]+)$/.exec(move.argv.at(-1)!.trim());
    if (!m) continue;
    const [, from, to] = m;
    const mf = compile.argv.indexOf('-MF');
    if (mf < 0 || compile.argv[mf + 1] !== from || compile.argv.indexOf('-MF', mf + 1) >= 0) continue;
    const fromAbs = path.resolve(compile.cwd, from!);
    const toAbs = path.resolve(compile.cwd, to!);
    if (!compile.outputs.includes(fromAbs)) continue;
    compile.argv = compile.argv.map((a, k) => (k === mf + 1 ? to! : a));
    compile.outputs = compile.outputs.map((o) => (o === fromAbs ? toAbs : o));
    drafts.splice(i, 1);
    recipes.splice(i, 1);
  }
}

/**
 * The recipes make may find up to date, whose actions then do nothing: those
 * made of steps and copies only (a compile, archive or link is keyed by its
 * inputs' contents instead), unless make runs them every time (a phony
 * target). A recipe with prerequisites runs when its target is missing or
 * older than one of them; one without runs only when its target is missing
 * (`config.h:` / `cp config.def.h $@`: a config.h the user edited is kept),
 * which needs the database to say the target is not phony.
 */
function skippableRecipes(drafts: readonly ActionDraft[], recipes: readonly (MakeRecipe | undefined)[]): Set<MakeRecipe> {
  const all = new Set<MakeRecipe>();
  const keyed = new Set<MakeRecipe>();
  drafts.forEach((d, i) => {
    const r = recipes[i];
    if (!r || r.alwaysRuns === true || (r.prereqs.length === 0 && r.alwaysRuns === undefined)) return;
    all.add(r);
    if (d.cacheable && d.kind !== 'copy') keyed.add(r);
  });
  return new Set([...all].filter((r) => !keyed.has(r)));
}

/**
 * Gives the steps and source copies of each skippable recipe make's own
 * up-to-date rule (see BuildAction.makeRule). They are barriers, so the first of them runs after
 * everything make would have run before the recipe and before any of its
 * commands, which is where make decides; the decision itself only waits for
 * the previous barrier and the writers of the rule's files (decideAfter).
 */
function attachMakeRules(actions: OrderedAction[], recipes: readonly (MakeRecipe | undefined)[], skippable: ReadonlySet<MakeRecipe>) {
  const first = new Map<MakeRecipe, string>();
  actions.forEach((a, i) => {
    const r = recipes[i];
    const decideAfter = a.decideAfter;
    delete a.decideAfter;
    if (r?.deleteOnError) a.deleteOnError = r.target;
    // Only the conditional barriers carry the rule (a copy of a binary in the recipe is keyed instead).
    if (!r || !skippable.has(r) || decideAfter === undefined) return;
    if (!first.has(r)) first.set(r, a.id);
    a.makeRule = { recipe: first.get(r)!, target: r.target, prereqs: r.prereqs, decideAfter };
  });
}

/**
 * With -B, make remakes every makefile it reads, and runs those rules for real even in a dry
 * run: Redis regenerates Makefile.dep with `cc -MM *.c`; an automake tree re-runs
 * `config.status --recheck` (the whole configure script, per directory) and overwrites the
 * dependency files of the last build (.deps/*.Po) with dummies; Redis's .make-prerequisites
 * stamp triggers a distclean. So the makefiles, the dependency files and the configure
 * script's inputs and outputs that exist are marked old (-o), as a plain make would find
 * them up to date. These are the names (each path relative to the project and its basename,
 * as sub-makes name them relative to their own directories).
 */
async function assumedOld(root: string): Promise<string[]> {
  const ignore = ['**/.git/**'];
  const patterns = [
    '**/Makefile.*', '**/*.mk', '**/*.dep', '**/.make-*', '**/{GNUmakefile,makefile,Makefile}', '**/*.d', '**/.deps/*.{Po,Plo,Tpo}',
    '**/{configure,config.status,aclocal.m4,libtool}', '**/*.in', '**/stamp-h[0-9]*',
  ];
  const found = await fg(patterns, { cwd: root, dot: true, onlyFiles: true, ignore, followSymbolicLinks: false });
  const makefiles = await fg(['**/{GNUmakefile,makefile,Makefile,*.mk}'], { cwd: root, dot: false, onlyFiles: true, ignore, followSymbolicLinks: false });
  // Each file as the makes that may name it do: relative to the project, to every directory
  // above it with a makefile (src/Makefile names src/.deps/a.Po `.deps/a.Po`), and by its name.
  const makeDirs = new Set(makefiles.map((m) => path.dirname(m)));
  const names = new Set<string>();
  for (const f of found) {
    names.add(f);
    names.add(path.basename(f));
    for (let d = path.dirname(f); d !== '.'; d = path.dirname(d)) if (makeDirs.has(d)) names.add(path.relative(d, f));
  }
  // Optional includes named literally (`-include Makefile.dep`) are generated files too: marked
  // old even when absent, the dry run reads the makefile without running their rules (Redis's
  // runs `cc -MM *.c` for several seconds). Orion reads headers itself, so nothing is lost.
  for (const m of makefiles) {
    const text = await readFile(path.join(root, m), 'utf8').catch(() => '');
    for (const line of text.matchAll(/^[ \t]*(?:-include|sinclude)[ \t]+([^\n#]+)$/gm)) {
      for (const name of line[1]!.trim().split(/\s+/)) if (/^[A-Za-z0-9_./-]+$/.test(name)) names.add(name);
    }
  }
  return [...names].sort();
}

/** Files marked new (-W) at most, one dry run each: a project needing more is reported as make failed. */
const MAX_PRETEND_NEW = 64;

/**
 * The -o (and -W) flags of the dry run. Neither is passed down to sub-makes, so they also go
 * into the MAKE variable recursive makes are started with.
 */
function subMakeFlags(old: readonly string[], pretendNew: readonly string[], makeProgram: string, makeArgs: readonly string[]): string[] {
  const flags = [...old.flatMap((n) => ['-o', n]), ...pretendNew.flatMap((n) => ['-W', n])];
  if (flags.length === 0) return [];
  const userSetsMake = makeArgs.some((a) => a.startsWith('MAKE='));
  const quote = (s: string) => (/^[A-Za-z0-9_./+-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`);
  return userSetsMake ? flags : [...flags, `MAKE=${[makeProgram, ...flags].map(quote).join(' ')}`];
}

/**
 * When the dry run stopped at "No rule to make target 'X', needed by 'Y'" in some make, and a
 * recipe the dry run printed before makes X (make's trace named it as the target): X as that
 * make wrote it. Undefined otherwise (a file missing for real).
 */
function madeEarlier(stdout: string, stderr: string, root: string, makeNames: ReadonlySet<string>): string | undefined {
  const names = [...makeNames].map(escapeRegExp).join('|');
  const noRule = new RegExp(`^(?:\\S*/)?(?:${names})(?:\\[(\\d+)\\])?: \\*\\*\\* No rule to make target [\`'](.+)', needed by [\`'].+'\\.  Stop\\.$`, 'm').exec(stderr);
  if (!noRule) return undefined;
  const level = noRule[1] ?? '';
  const name = noRule[2]!;
  // The directory of the make at that level: the last one it entered.
  const entering = new RegExp(`^(?:# )?(?:\\S*/)?(?:${names})${level ? `\\[${level}\\]` : ''}: Entering directory [\`'"](.*)['"]$`, 'gm');
  let dir = root;
  for (const m of stdout.matchAll(entering)) dir = m[1]!;
  const wanted = path.resolve(dir, name);
  const made = parseMakeDryRun(stdout, root, makeNames).some((c) => c.rule?.target === wanted);
  return made ? name : undefined;
}

function makeFailure(program: string, args: string[], cwd: string, exitCode: number, stderr: string): OrionError {
  const errors = stderr.split('\n').filter((l) => l.includes('***'));
  const detail = errors.length > 0 ? errors.join('\n') : tail(stderr) || '(no error output)';
  return failedPrecondition(`${program} ${args.join(' ')} failed with exit code ${exitCode} in ${cwd}:\n${detail}`, {
    hint: `Orion lists the build's commands with a make dry run; check that \`${program}\` works in this directory.`,
  });
}
