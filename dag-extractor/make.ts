/**
 * Extracts the build graph of a GNU Make project from a dry run:
 * `make -n -B -w --trace -p [makeArgs] -j1` prints every command of a full build (-B
 * treats every target as out of date) without running it, with the directory
 * of every sub-make (-w); the trailing -j1 keeps sub-make output from
 * interleaving even when makeArgs ask for parallel jobs; --trace names the
 * rule (target, prerequisites) of each recipe, and -p's rule database which
 * targets are phony. Each printed line
 * is classified into compile, archive, link, copy or 'other' actions, and edges
 * come from the files they exchange plus barriers around the 'other' steps
 * (see ordered-graph.ts).
 *
 * Make still runs some things during a dry run: lines that invoke $(MAKE)
 * (so sub-makes can print their commands), $(shell ...) functions, and rules
 * that remake included makefiles.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import fg from 'fast-glob';
import { failedPrecondition, invalidArgument, type OrionError } from '../common/errors.js';
import type { ActionDraft } from './action-draft.js';
import { classifyCommandLine } from './command-line-classifier.js';
import { createProcessCommandRunner, environmentWith, tail, type CommandRunner } from './command-runner.js';
import type { ExtractOptions, GraphExtractor } from './extractor.js';
import { parseMakeDryRun, type MakeRecipe } from './make-dry-run-parser.js';
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
      const args = ['-n', '-B', '-w', '--trace', '-p', ...makeArgs, '-j1', ...(await assumeOldArgs(root, makeProgram, makeArgs))];
      const overrides: Record<string, string | undefined> = { LC_ALL: 'C' };
      for (const name of INHERITED_MAKE_VARIABLES) overrides[name] = undefined;
      const result = await runner.run(makeProgram, args, { cwd: root, env: environmentWith(overrides), signal: options.signal });
      if (result.exitCode !== 0) throw makeFailure(makeProgram, args, root, result.exitCode, result.stderr);

      const drafts: ActionDraft[] = [];
      const recipes: (MakeRecipe | undefined)[] = [];
      for (const command of parseMakeDryRun(result.stdout, root, makeNames)) {
        for (const draft of classifyCommandLine(command.text, command.cwd, { root, makeNames, mode: 'split', shell: command.shell }).drafts) {
          // A line make goes on after when it fails runs here as a step, whose failure the build ignores.
          if (command.ignoreErrors) {
            draft.cacheable = false;
            draft.ignoreErrors = true;
          }
          drafts.push(draft);
          recipes.push(command.rule);
        }
      }
      const skippable = skippableRecipes(drafts, recipes);
      const actions = buildOrderedActions(drafts, root, (i) => (skippable.has(recipes[i]!) ? recipes[i] : undefined));
      attachMakeRules(actions, recipes, skippable);
      return { root, tool: 'make', actions };
    },
  };
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
 * With -B, make remakes every included makefile before the dry run, and runs
 * those rules for real (Redis regenerates Makefile.dep with `cc -MM *.c`), and
 * treats generated stamp files as stale (Redis's .make-prerequisites then
 * triggers a distclean). Such files that already exist are marked old (-o), as
 * a plain make would find them up to date. -o is not passed down to sub-makes,
 * so it also goes into the MAKE variable recursive makes are started with.
 */
async function assumeOldArgs(root: string, makeProgram: string, makeArgs: string[]): Promise<string[]> {
  const ignore = ['**/.git/**'];
  const found = await fg(['**/Makefile.*', '**/*.mk', '**/*.dep', '**/.make-*'], { cwd: root, dot: true, onlyFiles: true, ignore, followSymbolicLinks: false });
  const names = new Set<string>();
  for (const f of found) {
    names.add(f);
    names.add(path.basename(f));
  }
  // Optional includes named literally (`-include Makefile.dep`) are generated files too: marked
  // old even when absent, the dry run reads the makefile without running their rules (Redis's
  // runs `cc -MM *.c` for several seconds). Orion reads headers itself, so nothing is lost.
  const makefiles = await fg(['**/{GNUmakefile,makefile,Makefile,*.mk}'], { cwd: root, dot: false, onlyFiles: true, ignore, followSymbolicLinks: false });
  for (const m of makefiles) {
    const text = await readFile(path.join(root, m), 'utf8').catch(() => '');
    for (const line of text.matchAll(/^[ \t]*(?:-include|sinclude)[ \t]+([^\n#]+)$/gm)) {
      for (const name of line[1]!.trim().split(/\s+/)) if (/^[A-Za-z0-9_./-]+$/.test(name)) names.add(name);
    }
  }
  if (names.size === 0) return [];
  const old = [...names].sort().flatMap((n) => ['-o', n]);
  const userSetsMake = makeArgs.some((a) => a.startsWith('MAKE='));
  const quote = (s: string) => (/^[A-Za-z0-9_./+-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`);
  return userSetsMake ? old : [...old, `MAKE=${[makeProgram, ...old].map(quote).join(' ')}`];
}

function makeFailure(program: string, args: string[], cwd: string, exitCode: number, stderr: string): OrionError {
  const errors = stderr.split('\n').filter((l) => l.includes('***'));
  const detail = errors.length > 0 ? errors.join('\n') : tail(stderr) || '(no error output)';
  return failedPrecondition(`${program} ${args.join(' ')} failed with exit code ${exitCode} in ${cwd}:\n${detail}`, {
    hint: `Orion lists the build's commands with a make dry run; check that \`${program}\` works in this directory.`,
  });
}
