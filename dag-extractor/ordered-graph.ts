/**
 * Builds the dependency edges of a graph whose actions come as a sequence in
 * which running them one by one is correct (Make's dry-run order).
 *
 * An action depends on the last earlier writer of each file it reads (its
 * inputs, and optional inputs that an earlier action writes), on the previous
 * writer of each file it writes, and on the earlier readers of each file it
 * overwrites. Headers are not inputs, so a non-cacheable action (a generator
 * script, `mkdir`, anything whose effects are unknown) is a barrier: it
 * depends on every action since the previous barrier and on that barrier, and
 * every later action depends on it. So is a copy (`install`, `cp`), since a
 * compile may include what it writes, unless it copies a binary: a file a link
 * or an archive wrote (Redis's `install redis-server redis-sentinel`). Running
 * the actions in any order that respects the edges is then as safe as the
 * original sequence.
 *
 * A conditional barrier is a step, or a copy of a source, that make may find up
 * to date (its whole recipe is steps and copies, and its target is not phony;
 * Redis's `commands.c: commands/*.json`, a `config.h:` copied once):
 * its `decideAfter` lists what make's decision waits for, the previous barrier
 * and the writers of its target and prerequisites. Found up to date, it does
 * nothing, and its dependents need not wait for the actions since the previous
 * barrier: the build settles it as soon as `decideAfter` is done. So that this
 * stays safe, the next barrier also depends on every action since the last
 * barrier that is not conditional.
 */
import { actionLabel, type ActionDraft } from './action-draft.js';
import { assignActionIds } from './action-id.js';
import { unique } from './paths.js';
import type { BuildAction } from './types.js';

/** The rule of a step make may skip (see above): absolute paths of its target and prerequisites. */
export interface ConditionalRule {
  target: string;
  prereqs: string[];
}

export interface OrderedAction extends BuildAction {
  /** For a conditional barrier: the ids make's up-to-date decision waits for. */
  decideAfter?: string[];
}

export function buildOrderedActions(drafts: readonly ActionDraft[], root: string, conditional: (index: number) => ConditionalRule | undefined = () => undefined): OrderedAction[] {
  const ids = assignActionIds(drafts);
  const lastWriter = new Map<string, string>();
  const readersSinceWrite = new Map<string, string[]>();
  /** Files a link or an archive wrote (or a copy of one): nothing includes them. */
  const binaries = new Set<string>();
  let barrier: string | undefined;
  /** Non-barrier actions since the last barrier that is not conditional. */
  let sinceHardBarrier: string[] = [];

  return drafts.map((draft, index) => {
    const id = ids[index];
    const deps = new Set<string>();
    const isBarrier = !draft.cacheable || (draft.kind === 'copy' && !draft.inputs.every((p) => binaries.has(p)));
    // A copy of a binary is no barrier and keeps no rule: keyed, it writes what make's copy would.
    const rule = isBarrier ? conditional(index) : undefined;
    let decideAfter: string[] | undefined;
    if (rule) {
      const after = new Set<string>();
      if (barrier !== undefined) after.add(barrier);
      for (const f of [rule.target, ...rule.prereqs]) {
        const writer = lastWriter.get(f);
        if (writer !== undefined) after.add(writer);
      }
      decideAfter = [...after];
    }
    if (barrier !== undefined) deps.add(barrier);
    if (isBarrier) for (const earlier of sinceHardBarrier) deps.add(earlier);

    const inputs = [...draft.inputs, ...draft.optionalInputs.filter((p) => lastWriter.has(p))];
    for (const input of inputs) {
      const writer = lastWriter.get(input);
      if (writer !== undefined) deps.add(writer);
    }
    for (const output of draft.outputs) {
      const writer = lastWriter.get(output);
      if (writer !== undefined) deps.add(writer);
      for (const reader of readersSinceWrite.get(output) ?? []) deps.add(reader);
    }
    deps.delete(id);

    for (const input of inputs) {
      const readers = readersSinceWrite.get(input);
      if (readers) readers.push(id);
      else readersSinceWrite.set(input, [id]);
    }
    const writesBinaries = draft.kind === 'link' || draft.kind === 'archive' || (draft.kind === 'copy' && !isBarrier);
    for (const output of draft.outputs) {
      lastWriter.set(output, id);
      readersSinceWrite.delete(output);
      if (writesBinaries) binaries.add(output);
      else binaries.delete(output);
    }
    if (!isBarrier) {
      sinceHardBarrier.push(id);
    } else {
      barrier = id;
      if (!rule) sinceHardBarrier = [];
    }

    const action: OrderedAction = {
      id,
      kind: draft.kind,
      cwd: draft.cwd,
      argv: draft.argv,
      inputs: unique(inputs),
      outputs: unique(draft.outputs),
      deps: [...deps],
      cacheable: draft.cacheable,
      label: actionLabel(draft, root),
    };
    if (draft.env) action.env = draft.env;
    if (draft.ignoreErrors) action.ignoreErrors = true;
    if (decideAfter) action.decideAfter = decideAfter;
    return action;
  });
}
