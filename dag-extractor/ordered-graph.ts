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
 */
import { actionLabel, type ActionDraft } from './action-draft.js';
import { assignActionIds } from './action-id.js';
import { unique } from './paths.js';
import type { BuildAction } from './types.js';

export function buildOrderedActions(drafts: readonly ActionDraft[], root: string): BuildAction[] {
  const ids = assignActionIds(drafts);
  const lastWriter = new Map<string, string>();
  const readersSinceWrite = new Map<string, string[]>();
  /** Files a link or an archive wrote (or a copy of one): nothing includes them. */
  const binaries = new Set<string>();
  let barrier: string | undefined;
  let sinceBarrier: string[] = [];

  return drafts.map((draft, index) => {
    const id = ids[index];
    const deps = new Set<string>();
    const isBarrier = !draft.cacheable || (draft.kind === 'copy' && !draft.inputs.every((p) => binaries.has(p)));
    if (barrier !== undefined) deps.add(barrier);
    if (isBarrier) for (const earlier of sinceBarrier) deps.add(earlier);

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
      sinceBarrier.push(id);
    } else {
      barrier = id;
      sinceBarrier = [];
    }

    const action: BuildAction = {
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
    return action;
  });
}
