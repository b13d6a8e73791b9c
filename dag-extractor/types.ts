/** The build graph extracted from a project, independent of the build tool. */

export type ActionKind = 'compile' | 'archive' | 'link' | 'copy' | 'other';

export interface BuildAction {
  /** Stable identifier, unique within the graph (same project + same command line gives the same id). */
  id: string;
  kind: ActionKind;
  /** Absolute working directory the command runs in. */
  cwd: string;
  /** The command. `other` steps that need a shell are ['/bin/sh', '-c', line]. */
  argv: string[];
  /** Environment variables the command needs beyond the ambient ones (usually empty). */
  env?: Record<string, string>;
  /** Absolute paths of files the command is known to read (sources, objects, archives; not headers). */
  inputs: string[];
  /** Absolute paths of files the command writes. */
  outputs: string[];
  /** Ids of actions that must finish first (producers of inputs, or ordering barriers). */
  deps: string[];
  /** False when the action's inputs cannot be known: it then runs locally, uncached. */
  cacheable: boolean;
  /** Short label for humans, e.g. "CC src/foo.o". */
  label: string;
  /**
   * For a step or copy from a Make recipe whose commands are all steps and
   * copies: the rule it belongs to, so that the action is skipped when make
   * would find the target up to date (it exists and no prerequisite is newer).
   */
  makeRule?: MakeRule;
  /** The target make deletes when this action fails after changing it (`.DELETE_ON_ERROR:`). */
  deleteOnError?: string;
  /** Make goes on when this fails (a `-` recipe line, `.IGNORE:`): the build does too. */
  ignoreErrors?: boolean;
}

export interface MakeRule {
  /** Shared by every action of one run of the recipe (the id of its first action). */
  recipe: string;
  /** Absolute path of the rule's target. */
  target: string;
  /** Absolute paths of its prerequisites; none: the recipe runs only when the target is missing. */
  prereqs: string[];
  /**
   * Ids of the actions make's decision waits for: the previous step and the
   * writers of the target and the prerequisites. Found up to date once these
   * are done, the recipe's steps are settled at once: what follows them need
   * not wait for the rest of their dependencies.
   */
  decideAfter?: string[];
}

export interface BuildGraph {
  /** Absolute project root: every input and output lies under it (or is a system file). */
  root: string;
  tool: 'make' | 'ninja' | 'compile_commands';
  actions: BuildAction[];
}
