/**
 * Runs a build graph: actions start when their dependencies finished, in
 * critical-path order, at most `jobs` at a time. Each cacheable action is
 * keyed, looked up in the local then the remote action cache, and executed only
 * on a miss; failures stop the build the way make does (or not, with -k).
 */
import { rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { Code, OrionError, isFatal, statusOf } from '../../common/errors.js';
import type { ActionCache } from '../../cas/action-cache.js';
import { putHashedFile, type BlobStore } from '../../cas/blob-store.js';
import type { ActionResult } from '../../cas/types.js';
import type { BuildAction, BuildGraph, MakeRule } from '../../dag-extractor/types.js';
import { computeActionKey, inputChangedSinceKeyed, throughSymlink, warmTools, withoutOrionDepfile, type ActionKey, type KeyDeps } from './action-key.js';
import { parseDepFile } from '../../common/depfile.js';
import type { BuildExecutor, ExecOutcome } from './in-place-executor.js';
import { writeOutputs } from './output-writer.js';
import { assertSafeResult } from './result-guard.js';
import type { Reporter } from './reporter.js';
import { KEYED_ENV } from './action-key.js';
import { makeFindsUpToDate } from './make-rule.js';
import { diffSnapshots, stepKey, type StepCache, type StepEffect } from './step-cache.js';
import { applyStepEffect, freshenOutputs } from './output-writer.js';
import type { DagClient, DagClientEvent, DagSpec } from './dag-client.js';
import type { RemoteExecutor } from './remote-executor.js';
import { fromDigestKey } from '../../cas/digest.js';
import { createLimiter } from '../../cas/concurrency.js';
import type { Digest } from '../../cas/types.js';

export interface RemoteActionCache {
  /** `a` (when given) lets the head record the lookup under this build. */
  get(key: ActionKey, a?: BuildAction): Promise<ActionResult | undefined>;
  /** Copies a remote result's blobs into the local CAS. */
  fetch(result: ActionResult): Promise<void>;
  /** Stores a result whose blobs the head already holds. */
  put?(key: ActionKey, result: ActionResult): Promise<void>;
}

export interface BuildRunnerOptions {
  jobs: number;
  keepGoing: boolean;
  dryRun: boolean;
  explain: boolean;
  /**
   * With a DAG head: when everything that could run here has and at most this many misses wait
   * for the cluster, they run here (in place) instead, without asking its cache, and so do the
   * next such waves (default 0: never). A few actions (an edited file, then its link) cost here
   * about what the round trips, the upload and the download cost around them on a node, and a
   * fresh edit is rarely in a shared cache. A larger wave sends the rest of the graph to the head.
   */
  localMax?: number;
}

export interface BuildRunnerDeps {
  graph: BuildGraph;
  keyDeps: KeyDeps;
  localCas: BlobStore;
  localAc: ActionCache;
  remoteCache?: RemoteActionCache;
  /** Runs cacheable actions (in place, or on the cluster). */
  executor: BuildExecutor;
  /** Runs steps that must run here: uncacheable ones, and those a cluster cannot express. */
  localExecutor: BuildExecutor;
  reporter: Reporter;
  /** Effects of steps with unknown inputs, keyed by the tree they started from. */
  stepCache: StepCache;
  /** Previous keys' inputs by action id, for --explain. */
  history?: KeyHistory;
  /**
   * Whole-DAG mode (a head with the Builds service): the head schedules every
   * action a node can run; this process runs the rest and reports their effects.
   * Without the service, or when its stream breaks, actions go one by one.
   */
  dag?: { client: DagClient; uploader: Pick<RemoteExecutor, 'uploadTree' | 'ensure'>; buildId: string };
  /**
   * Files that changed since the last build (as far as is known yet). Actions
   * reading one are probably cache misses: they start first, and the cache
   * hits are keyed while their compilers run.
   */
  changedFiles?: () => ReadonlySet<string>;
  /** Expected milliseconds of each action (default: every action counts as one unit): ready actions start longest remaining chain first. */
  estimate?: (a: BuildAction) => number;
  signal: AbortSignal;
}

export interface KeyHistory {
  previous(actionId: string): { actionDigest: string; inputs: Record<string, string>; argv: string[] } | undefined;
  record(actionId: string, key: ActionKey, argv: string[]): void;
}

/** 'up-to-date': a step make would not run, its target being newer than every prerequisite. */
export type ActionOutcome = 'cached' | 'remote-cached' | 'executed' | 'failed' | 'skipped' | 'dry-run' | 'up-to-date';

export interface BuildSummary {
  ok: boolean;
  total: number;
  counts: Record<ActionOutcome, number>;
  /** Where executed actions ran (node id or 'local') with counts. */
  where: Record<string, number>;
  failures: { action: BuildAction; message: string }[];
  durations: Map<string, number>;
  /** Whole-DAG mode: output bytes nodes fetched from each other, and from the head. */
  transfer?: { peerBytes: number; headBytes: number };
}

/** For each action id, the ids of the actions that depend on it (dependencies outside the graph ignored). */
export function dependentsOf(actions: BuildAction[]): Map<string, string[]> {
  const ids = new Set(actions.map((a) => a.id));
  const dependents = new Map<string, string[]>();
  for (const a of actions) {
    for (const d of new Set(a.deps)) {
      if (!ids.has(d)) continue;
      const list = dependents.get(d);
      if (list) list.push(a.id);
      else dependents.set(d, [a.id]);
    }
  }
  return dependents;
}

/**
 * `dependents` as the build expects to run it: a step make will probably find
 * up to date (MakeRule.decideAfter) is settled as soon as its decision is
 * taken, so only what the decision waits for leads through it. Redis's
 * `commands.c` rule depends on the ninety compiles before it; counted through
 * it, each of them outranked every compile after it.
 */
export function skippingSteps(actions: BuildAction[], dependents: Map<string, string[]>): Map<string, string[]> {
  const decideAfter = new Map<string, Set<string>>();
  for (const a of actions) if (a.makeRule?.decideAfter) decideAfter.set(a.id, new Set(a.makeRule.decideAfter));
  if (decideAfter.size === 0) return dependents;
  const out = new Map<string, string[]>();
  for (const [id, list] of dependents) out.set(id, list.filter((d) => decideAfter.get(d)?.has(id) ?? true));
  return out;
}

/**
 * Longest chain from each action to the end of the build, the action itself
 * included: its critical-path length, in actions, or in expected milliseconds
 * when `costOf` estimates each action (cli/build/cost-estimate.ts).
 */
export function criticalPathLengths(actions: BuildAction[], dependents = dependentsOf(actions), costOf: (a: BuildAction) => number = () => 1): Map<string, number> {
  const memo = new Map<string, number>();
  const byId = new Map(actions.map((a) => [a.id, a]));
  const visit = (id: string): number => {
    const known = memo.get(id);
    if (known !== undefined) return known;
    const own = costOf(byId.get(id)!);
    memo.set(id, own);
    let best = 0;
    for (const d of dependents.get(id) ?? []) best = Math.max(best, visit(d));
    memo.set(id, best + own);
    return best + own;
  };
  for (const a of actions) visit(a.id);
  return memo;
}

/** The build's priorities: critical paths in expected time (`estimate`, else action count), through skippable steps as they will probably run. */
export function buildPriorities(actions: BuildAction[], estimate?: (a: BuildAction) => number, dependents = dependentsOf(actions)): Map<string, number> {
  return criticalPathLengths(actions, skippingSteps(actions, dependents), estimate);
}

/** A command still waiting for a `-j` slot when the build began to stop: like make after a failure, it is not started. */
class NotStarted extends Error {
  constructor() {
    super('not started: the build stopped after a failure');
  }
}

export async function runBuild(deps: BuildRunnerDeps, opts: BuildRunnerOptions): Promise<BuildSummary> {
  const { graph, reporter } = deps;
  const byId = new Map(graph.actions.map((a) => [a.id, a]));
  const dependents = dependentsOf(graph.actions);
  const waiting = new Map<string, number>();
  for (const a of graph.actions) waiting.set(a.id, [...new Set(a.deps)].filter((d) => byId.has(d)).length);
  const priority = buildPriorities(graph.actions, deps.estimate, dependents);
  const ready: BuildAction[] = graph.actions.filter((a) => waiting.get(a.id) === 0);
  const summary: BuildSummary = {
    ok: true,
    total: graph.actions.length,
    counts: { cached: 0, 'remote-cached': 0, executed: 0, failed: 0, skipped: 0, 'dry-run': 0, 'up-to-date': 0 },
    where: {},
    failures: [],
    durations: new Map(),
  };
  let running = 0;
  let finished = 0;
  // `jobs` commands run at once; more actions than that are in flight, so cache hits
  // (keying, copying outputs: file-system work) proceed while commands run.
  const execSlots = createLimiter(opts.jobs);
  const inFlightMax = Math.max(opts.jobs, Math.min(opts.jobs * 4, 16));
  let stopping = false;
  /** Likely misses (they read files changed since the last build) being keyed: lookups wait for them. */
  const keyingFirst = new Set<string>();
  reporter.start(graph.actions.length);

  const settled = new Set<string>();
  /** Records that an action ended (one way or another); false when it already had. */
  const markSettled = (id: string): boolean => {
    if (settled.has(id)) return false;
    settled.add(id);
    if (dag?.ids.has(id)) dag.left--;
    return true;
  };
  const effects = new Map<string, Pick<StepEffect, 'written' | 'deleted'> & Partial<Pick<StepEffect, 'symlinks'>>>();
  /**
   * Steps make may find up to date whose decision waits for fewer actions than
   * the step itself (MakeRule.decideAfter): how many of those are not done yet,
   * and who waits for each. Found up to date, such a step is settled at once.
   */
  const decideLeft = new Map<string, number>();
  const decideWaiters = new Map<string, string[]>();
  for (const a of graph.actions) {
    const after = a.makeRule?.decideAfter;
    if (!after) continue;
    const open = [...new Set(after)].filter((d) => byId.has(d));
    decideLeft.set(a.id, open.length);
    for (const d of open) {
      const list = decideWaiters.get(d);
      if (list) list.push(a.id);
      else decideWaiters.set(d, [a.id]);
    }
  }
  let dag: DagState | undefined;
  /** collect: cluster misses are deferred; started: the head has the rest of the DAG; off: one by one. */
  let dagPhase: 'collect' | 'started' | 'off' = deps.dag && !opts.dryRun ? 'collect' : 'off';
  const deferred = new Set<string>();
  /** Misses that run here rather than on the cluster: a wave of at most localMax (see BuildRunnerOptions). */
  const runHere = new Set<string>();
  let wake = () => {};
  /** The build's fatal error (the head could not be reached at all): reported once, and nothing more starts. */
  let fatal: string | undefined;
  const failBuild = (err: unknown): string => {
    if (fatal === undefined) {
      const hint = err instanceof OrionError && err.hint ? `; ${err.hint}` : '';
      fatal = `${(err as Error).message}${hint}`;
      summary.ok = false;
      stopping = true;
      summary.failures.push({ action: graph.actions[0]!, message: fatal });
    }
    return fatal;
  };
  const skipDependents = (id: string) => {
    const stack = [...(dependents.get(id) ?? [])];
    while (stack.length > 0) {
      const d = stack.pop()!;
      if (waiting.get(d)! < 0 || settled.has(d)) continue;
      waiting.set(d, -1);
      markSettled(d);
      summary.counts.skipped++;
      finished++;
      stack.push(...(dependents.get(d) ?? []));
    }
  };

  const replay = async (result: ActionResult) => {
    for (const [d, write] of [
      [result.stdoutDigest, reporter.actionStdout],
      [result.stderrDigest, reporter.actionStderr],
    ] as const) {
      if (d && d.sizeBytes > 0) write.call(reporter, await deps.localCas.get(d));
    }
  };

  /**
   * Learns the files a remote result's dependency output shows the compile
   * read but `key` does not cover; true when there were any. The head caches a
   * result under the key the node ran, which misses headers the scanner cannot
   * see (computed includes): such a result says nothing about their contents.
   */
  async function learnUnkeyedReads(a: BuildAction, key: ActionKey, result: ActionResult): Promise<boolean> {
    const rel = key.depfileRel ?? (key.depfileAbs ? path.relative(a.cwd, key.depfileAbs) : undefined);
    const dep = rel === undefined ? undefined : result.outputFiles.find((f) => f.path === rel);
    if (!dep) return false;
    await deps.remoteCache!.fetch({ outputFiles: [dep], outputSymlinks: [], outputDirectories: [], exitCode: 0 });
    const read = parseDepFile((await deps.localCas.get(dep.digest)).toString('utf8'), a.cwd);
    const unkeyed = read.filter((f) => !a.outputs.includes(f) && !key.inputs.has(f));
    return unkeyed.length > 0 && deps.keyDeps.manifest.add(a.id, unkeyed);
  }

  async function runCacheable(a: BuildAction, again = false): Promise<ActionOutcome | 'deferred'> {
    const key = await computeActionKey(a, deps.keyDeps);
    if (!again) explain(a, key);
    const local = await deps.localAc.get(key.actionDigest);
    if (local) {
      // An entry stored before dagDone left the dependency file out may still hold it.
      const written = await writeOutputs(withoutOrionDepfile(local, key), a.cwd, deps.keyDeps.files, deps.localCas);
      await freshenOutputs(a.outputs, key.inputs.keys(), deps.keyDeps.files);
      deps.keyDeps.scanner.invalidate(a.outputs);
      // Its compiler's warnings again when its outputs are put in place (a fresh tree), as ccache
      // replays them; not when they already were (a no-op), where make would not have run it.
      if (written > 0 || local.outputFiles.length + local.outputSymlinks.length === 0) await replay(local);
      deps.history?.record(a.id, key, a.argv);
      return 'cached';
    }
    if (opts.dryRun) return 'dry-run';
    // Whole-DAG mode: misses wait until nothing else can run here, then go to the head together.
    const here = runHere.has(a.id);
    if (dagPhase === 'collect' && key.remotable && !here) return 'deferred';
    const remoteRaw = here ? undefined : await deps.remoteCache?.get(key, a);
    // Look again under the key that covers what the result shows was read (each round learns files, so this ends).
    if (remoteRaw && (await learnUnkeyedReads(a, key, remoteRaw))) return runCacheable(a, true);
    const remote = remoteRaw && withoutOrionDepfile(remoteRaw, key);
    if (remote) {
      assertSafeResult(remote, deps.keyDeps.files.root, a.cwd, `the cached result of ${a.label}`);
      await deps.remoteCache!.fetch(remote);
      await writeOutputs(remote, a.cwd, deps.keyDeps.files, deps.localCas);
      await freshenOutputs(a.outputs, key.inputs.keys(), deps.keyDeps.files);
      deps.keyDeps.scanner.invalidate(a.outputs);
      await deps.localAc.put(key.actionDigest, remote);
      await replay(remote);
      deps.history?.record(a.id, key, a.argv);
      return 'remote-cached';
    }
    const executor = key.remotable && !here ? deps.executor : deps.localExecutor;
    const { out, started } = await runCommand(a, executor === deps.localExecutor ? 'local' : 'remote', () => executor.run(a, key, deps.signal));
    reporter.executed?.(a, { where: out.where, startMs: started, endMs: Date.now(), sentAt: out.sentAt, metadata: out.result.executionMetadata, exitCode: out.result.exitCode });
    deps.keyDeps.scanner.invalidate(a.outputs);
    if (out.stdout.length > 0) reporter.actionStdout(out.stdout);
    if (out.stderr.length > 0) reporter.actionStderr(out.stderr);
    summary.where[out.where] = (summary.where[out.where] ?? 0) + 1;
    if (out.result.exitCode !== 0) {
      throw new OrionError(Code.ABORTED, `${a.label} failed with exit code ${out.result.exitCode}`, { hint: 'exit' });
    }
    let finalKey = key;
    if (out.depfile !== undefined) {
      // The compiler's own dependency output is the ground truth: cover whatever the key missed.
      const read = parseDepFile(out.depfile, a.cwd).filter((f) => !a.outputs.includes(f));
      const missed = read.filter((f) => !key.inputs.has(f));
      if (missed.length > 0 && deps.keyDeps.manifest.add(a.id, missed)) {
        finalKey = await computeActionKey(a, deps.keyDeps);
      }
    }
    if (out.where === 'local') {
      // Run in the tree itself: an input edited meanwhile may or may not be in the outputs.
      const changed = await inputChangedSinceKeyed(key, a.outputs, deps.keyDeps.files);
      if (changed) {
        deps.keyDeps.files.forget(changed);
        deps.keyDeps.scanner.invalidate([changed]);
        reporter.error(`${path.relative(graph.root, changed)} changed while ${a.label} ran: its result is not cached`);
        return 'executed';
      }
    }
    await deps.localAc.put(finalKey.actionDigest, out.result);
    if (finalKey !== key && out.where !== 'local' && deps.remoteCache?.put) {
      // The head cached the result under the key the node ran; builds that check its dependency
      // output then look under the complete key. Best effort: a head may refuse client writes.
      await deps.remoteCache.put(finalKey, out.result).catch(() => undefined);
    }
    deps.history?.record(a.id, finalKey, a.argv);
    return 'executed';
  }

  /**
   * Runs an action's command in one of the `-j` slots; records how long it took. A command
   * still waiting for a slot once the build stops is not started (as make, after a failure),
   * and a failing one stops the build before its slot goes to the next (unless -k).
   */
  async function runCommand<T extends ExecOutcome>(a: BuildAction, where: string, run: () => Promise<T>): Promise<{ out: T; started: number }> {
    if (keyingFirst.delete(a.id)) queueMicrotask(wake);
    return execSlots(async () => {
      if (stopping) throw new NotStarted();
      const started = Date.now();
      reporter.running?.(a, where);
      const out = await run();
      if (out.result.exitCode !== 0 && !opts.keepGoing && !a.ignoreErrors) stopping = true;
      summary.durations.set(a.id, Date.now() - started);
      return { out, started };
    });
  }

  /** Make's decision for each recipe with a rule, taken once: when its first step is ready, or earlier (decideEarly). */
  const recipeUpToDate = new Map<string, Promise<boolean>>();
  const recipeDecision = (rule: MakeRule): Promise<boolean> => {
    let decision = recipeUpToDate.get(rule.recipe);
    if (!decision) recipeUpToDate.set(rule.recipe, (decision = makeFindsUpToDate(rule)));
    return decision;
  };

  /**
   * Takes make's decision for step `id` as soon as what it waits for is done
   * (MakeRule.decideAfter), before the rest of the step's dependencies: found up
   * to date, the step is settled at once and what follows it does not wait for
   * them (Redis's `commands.c` rule: the compiles after it no longer wait for
   * the ninety before it). Otherwise the step runs when it is ready, as before.
   */
  function decideEarly(id: string) {
    const a = byId.get(id)!;
    if (settled.has(id) || announced.has(id) || waiting.get(id) === 0 || stopping || opts.dryRun) return;
    running++;
    void (async () => {
      if (!(await recipeDecision(a.makeRule!))) return;
      if (settled.has(id) || announced.has(id) || stopping) return;
      // Its last dependency may end while the head is told: it must not become ready and run then.
      waiting.set(id, -1);
      announced.add(id);
      reporter.started(a);
      effects.set(id, { written: [], deleted: [] });
      if (dag && !dag.broken && dag.members.has(id)) await reportUpToDate(dag, a);
      settle(a, 'up-to-date');
    })()
      .catch((err) => reporter.error(`${a.label}: ${(err as Error).message}`))
      .finally(() => {
        running--;
        wake();
      });
  }

  /** A step of the DAG the client found up to date early: the head settles it once its decision's dependencies are. */
  async function reportUpToDate(state: DagState, a: BuildAction) {
    const decidedAfter = (a.makeRule!.decideAfter ?? []).filter((d) => state.members.has(d));
    try {
      await deps.dag!.client.report({ buildId: deps.dag!.buildId, actionId: a.id, exitCode: 0, written: [], deleted: [], rekeyed: [], upToDate: { decidedAfter } });
    } catch (err) {
      if (deps.signal.aborted) return;
      breakDag(state, err);
    }
  }

  /** A step whose reads are unknown: skipped by make's rule, or keyed by the whole tree it starts from. */
  async function runStep(a: BuildAction): Promise<ActionOutcome> {
    if (a.makeRule) {
      if (await recipeDecision(a.makeRule)) {
        effects.set(a.id, { written: [], deleted: [] });
        return 'up-to-date';
      }
    }
    const files = deps.keyDeps.files;
    const snap = await files.snapshot();
    const before = new Map(snap.entries);
    const env = KEYED_ENV.map((n) => `${n}=${a.env?.[n] ?? deps.keyDeps.env[n] ?? ''}`);
    // A step may read git (a version header): the same tree at another commit or tag is another key.
    if (deps.keyDeps.git) env.push(`orion-git=${deps.keyDeps.git}`);
    // Make hands the variables it imported from the environment on to the commands it runs.
    if (deps.keyDeps.makeEnv) env.push(...deps.keyDeps.makeEnv);
    const key = stepKey(a.cwd, a.argv, env, snap);
    const hit = await deps.stepCache.get(key);
    if (hit && (await deps.localCas.findMissing([...hit.written.map((w) => w.digest), ...(hit.stdout ? [hit.stdout] : []), ...(hit.stderr ? [hit.stderr] : [])])).length === 0) {
      const touched = await applyStepEffect(hit, files, deps.localCas);
      effects.set(a.id, hit);
      deps.keyDeps.scanner.invalidate(touched);
      await replay({ outputFiles: [], outputSymlinks: [], outputDirectories: [], exitCode: 0, stdoutDigest: hit.stdout, stderrDigest: hit.stderr });
      return 'cached';
    }
    if (opts.dryRun) return 'dry-run';
    const { out, started } = await runCommand(a, 'local', () => deps.localExecutor.run(a, undefined, deps.signal));
    reporter.executed?.(a, { where: out.where, startMs: started, endMs: Date.now(), exitCode: out.result.exitCode });
    files.forgetAll();
    if (out.stdout.length > 0) reporter.actionStdout(out.stdout);
    if (out.stderr.length > 0) reporter.actionStderr(out.stderr);
    summary.where.local = (summary.where.local ?? 0) + 1;
    const after = await files.snapshot();
    const change = diffSnapshots(before, after.entries);
    deps.keyDeps.scanner.invalidate([...change.written.map((w) => w.path), ...change.deleted].map((p) => path.join(graph.root, p)));
    if (out.result.exitCode !== 0) throw new OrionError(Code.ABORTED, `${a.label} failed with exit code ${out.result.exitCode}`, { hint: 'exit' });
    for (const w of change.written) await putHashedFile(deps.localCas, w.digest, path.join(graph.root, w.path));
    const effect: StepEffect = { ...change, stdout: out.result.stdoutDigest, stderr: out.result.stderrDigest };
    effects.set(a.id, change);
    await deps.localCas.put(out.result.stdoutDigest!, out.stdout);
    await deps.localCas.put(out.result.stderrDigest!, out.stderr);
    await deps.stepCache.put(key, effect);
    return 'executed';
  }

  function explain(a: BuildAction, key: ActionKey) {
    if (!opts.explain || !deps.history) return;
    const prev = deps.history.previous(a.id);
    if (!prev) return reporter.explain(a, 'no earlier build of this action is known');
    if (prev.actionDigest === key.actionDigest.hash) return;
    const changed: string[] = [];
    for (const [f, h] of key.inputs) {
      if (prev.inputs[f] === undefined) changed.push(`new input ${path.relative(graph.root, f)}`);
      else if (prev.inputs[f] !== h) changed.push(`${path.relative(graph.root, f)} changed`);
    }
    for (const f of Object.keys(prev.inputs)) if (!key.inputs.has(f)) changed.push(`${path.relative(graph.root, f)} no longer read`);
    if (prev.argv.join('\u0000') !== a.argv.join('\u0000')) changed.push('command line changed');
    reporter.explain(a, changed.length > 0 ? changed.join(', ') : 'tool or environment changed');
  }

  const writers = new Map<string, string[]>();
  for (const a of graph.actions) for (const o of a.outputs) writers.set(o, [...(writers.get(o) ?? []), a.id]);
  const ancestorCache = new Map<string, Set<string>>();

  interface DagState {
    /** Actions the head runs. */
    ids: Set<string>;
    /** Every action of the submitted DAG (those the head runs and the client's steps). */
    members: Set<string>;
    /** How many of them have not ended yet. */
    left: number;
    keys: Map<string, ActionKey>;
    run: ReturnType<DagClient['submit']>;
    /** The stream broke: what is left runs action by action. */
    broken: boolean;
    /** When the DAG was submitted (this process's clock). */
    submittedAt: number;
    abort: AbortController;
  }

  /** A cluster action as the head's Builds service takes it. */
  function dagSpecOf(a: BuildAction, key: ActionKey, edges: string[]): DagSpec {
    const depfileAbs = key.depfileRel ? path.join(a.cwd, key.depfileRel) : key.depfileAbs && a.outputs.includes(key.depfileAbs) ? key.depfileAbs : undefined;
    return {
      id: a.id,
      label: a.label,
      deps: edges,
      client: false,
      commandDigest: key.action.commandDigest,
      inputRootDigest: key.inputRoot.rootDigest,
      producedInputs: key.producedInputs ?? [],
      depfile: depfileAbs ? path.relative(graph.root, depfileAbs) : undefined,
      estimatedMs: deps.estimate && Math.round(deps.estimate(a)),
    };
  }

  /** Keys every action a node can run, uploads the tree and keys once, and submits the DAG. Undefined: the head has no Builds service. */
  async function startDag(d: NonNullable<BuildRunnerDeps['dag']>): Promise<DagState | undefined> {
    const root = graph.root;
    const keys = new Map<string, ActionKey>();
    const rest = graph.actions.filter((a) => !settled.has(a.id));
    const inDag = new Set(rest.map((a) => a.id));
    for (const a of rest) {
      if (!a.cacheable) continue;
      const key = await computeActionKey(a, deps.keyDeps, { produced: producersFor(a) });
      if (key.remotable) keys.set(a.id, key);
    }
    const sourceRoot = await d.uploader.uploadTree();
    const blobs = new Map<string, Buffer>();
    for (const k of keys.values()) for (const [dk, b] of k.blobs) blobs.set(dk, b);
    await d.uploader.ensure([...blobs.keys()].map(fromDigestKey), (x) => blobs.get(`${x.hash}/${x.sizeBytes}`));
    const specs: DagSpec[] = rest.map((a) => {
      const key = keys.get(a.id);
      const edges = [...new Set(a.deps)].filter((x) => inDag.has(x));
      if (!key) return { id: a.id, label: a.label, deps: edges, client: true, producedInputs: [], decideAfter: a.makeRule?.decideAfter?.filter((x) => inDag.has(x)) };
      return dagSpecOf(a, key, edges);
    });
    const abort = new AbortController();
    const onAbort = () => abort.abort();
    deps.signal.addEventListener('abort', onAbort, { once: true });
    const state: DagState = { ids: new Set(keys.keys()), members: inDag, left: keys.size, keys, broken: false, abort, submittedAt: Date.now(), run: undefined as unknown as DagState['run'] };
    state.run = d.client.submit({ buildId: d.buildId, sourceRoot, actions: specs, keepGoing: opts.keepGoing }, (ev) => void onDagEvent(state, ev), abort.signal);
    try {
      await state.run.accepted;
    } catch (err) {
      deps.signal.removeEventListener('abort', onAbort);
      if (statusOf(err) === Code.UNIMPLEMENTED) return undefined;
      throw err;
    }
    state.run.finished.then(
      () => wake(),
      (err) => {
        if (deps.signal.aborted) return wake();
        breakDag(state, err);
      },
    );
    return state;

  }

  /**
   * For each file some other action writes, the action `a` reads it from: the
   * nearest writer among its dependencies (ranlib reads what ar wrote), else any writer.
   */
  function producersFor(a: BuildAction): Pick<ReadonlyMap<string, string>, 'get' | 'has'> {
    const get = (file: string): string | undefined => {
      // Files of actions already done are in the tree the head gets.
      const candidates = (writers.get(file) ?? []).filter((w) => w !== a.id && !settled.has(w));
      if (candidates.length <= 1) return candidates[0];
      const ancestors = ancestorsOf(a.id);
      const mine = candidates.filter((w) => ancestors.has(w));
      // Nearest: a candidate no other candidate depends on.
      return mine.find((w) => !mine.some((o) => o !== w && ancestorsOf(o).has(w))) ?? candidates[0];
    };
    return { get, has: (file) => get(file) !== undefined };
  }

  function ancestorsOf(id: string): Set<string> {
    let set = ancestorCache.get(id);
    if (set) return set;
    set = new Set();
    const stack = [...(byId.get(id)?.deps ?? [])];
    while (stack.length > 0) {
      const d = stack.pop()!;
      if (set.has(d) || !byId.has(d)) continue;
      set.add(d);
      stack.push(...byId.get(d)!.deps);
    }
    ancestorCache.set(id, set);
    return set;
  }

  /** The head has no Builds service (or the DAG could not be sent): deferred actions go one by one. */
  function toOneByOne() {
    dagPhase = 'off';
    for (const id of deferred) ready.push(byId.get(id)!);
    deferred.clear();
  }

  /** The head went away mid-build: what it had not finished runs action by action (with retries). */
  function breakDag(state: DagState, err: unknown) {
    if (state.broken) return;
    state.broken = true;
    state.abort.abort();
    reporter.error(`the head's build stream broke (${(err as Error).message}); the remaining actions go one by one`);
    for (const id of state.ids) {
      if (!settled.has(id) && waiting.get(id) === 0 && !inFlight.has(id)) ready.push(byId.get(id)!);
    }
    wake();
  }

  const inFlight = new Set<string>();
  /** Actions the reporter was told started. */
  const announced = new Set<string>();
  /** When the head queued each cluster action (the start of its span in the timeline). */
  const queuedAt = new Map<string, number>();
  /** Cluster results being written into the tree, by action id. */
  const applying = new Map<string, Promise<void>>();

  /** The writes into the tree still in progress of the cluster results `a` reads (its dependencies', its producers'). */
  const applyingBefore = (state: DagState, a: BuildAction): Promise<void>[] =>
    [...a.deps, ...(state.keys.get(a.id)?.producedInputs ?? []).map((p) => p.producer)].map((d) => applying.get(d)).filter((p): p is Promise<void> => p !== undefined);

  let toldRunHere = false;
  async function onDagEvent(state: DagState, ev: DagClientEvent) {
    const a = byId.get(ev.actionId);
    if (!a || !state.ids.has(a.id) || settled.has(a.id) || state.broken) return;
    if (ev.kind === 'queued') {
      queuedAt.set(a.id, Date.now());
      return;
    }
    if (ev.kind === 'started') {
      if (!announced.has(a.id)) {
        announced.add(a.id);
        reporter.started(a);
      }
      reporter.running?.(a, ev.nodeId || 'remote');
      return;
    }
    if (ev.kind === 'retried') return;
    if (ev.kind === 'run-here') {
      // Its dependencies' outputs first go into the tree; then it runs here, and is reported to the head.
      await Promise.all(applyingBefore(state, a));
      if (settled.has(a.id) || state.broken) return;
      state.ids.delete(a.id);
      state.left--;
      runHere.add(a.id);
      // Said once: the cluster lacks this build's compiler, so everything that needs it runs here.
      if (!toldRunHere) reporter.error(`${a.label} runs here, and every action after it that no node can run: ${ev.message}`);
      toldRunHere = true;
      ready.push(a);
      return wake();
    }
    inFlight.add(a.id);
    // An action's outputs go into the tree after those of what it depends on (ranlib after ar).
    let done!: () => void;
    const mine = new Promise<void>((r) => (done = r));
    const before = applyingBefore(state, a);
    applying.set(a.id, mine);
    try {
      await Promise.all(before);
      if (ev.kind === 'skipped') {
        if (markSettled(a.id)) {
          waiting.set(a.id, -1);
          summary.counts.skipped++;
          finished++;
          skipDependents(a.id);
        }
        return;
      }
      if (ev.kind === 'failed') {
        if (ev.result) {
          await deps.remoteCache?.fetch(ev.result).catch(() => undefined);
          await replay(ev.result).catch(() => undefined);
          summary.where[ev.nodeId || 'remote'] = (summary.where[ev.nodeId || 'remote'] ?? 0) + 1;
          return settle(a, 'failed', `${a.label} failed with exit code ${ev.result.exitCode}`);
        }
        const message = ev.error?.message ?? 'failed on the cluster';
        reporter.error(`${a.label}: ${message}`);
        return settle(a, 'failed', message);
      }
      settle(a, await dagDone(a, state.keys.get(a.id)!, ev), undefined);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      reporter.error(`${a.label}: ${message}`);
      settle(a, 'failed', message);
    } finally {
      done();
      inFlight.delete(a.id);
      wake();
    }
  }

  /** A cluster action finished (or was served from the head's cache): its outputs go into the tree. */
  async function dagDone(a: BuildAction, key: ActionKey, ev: Extract<DagClientEvent, { kind: 'done' }>): Promise<ActionOutcome> {
    const result = ev.result;
    await deps.remoteCache!.fetch(result);
    const outputs = withoutOrionDepfile(result, key);
    assertSafeResult(outputs, deps.keyDeps.files.root, a.cwd, `the result of ${a.label}`);
    await writeOutputs(outputs, a.cwd, deps.keyDeps.files, deps.localCas);
    await freshenOutputs(a.outputs, [...key.inputs.keys()], deps.keyDeps.files);
    deps.keyDeps.scanner.invalidate(a.outputs);
    await replay(result);
    // The compiler's dependency output: whatever it read that the key missed is keyed from the next build on.
    const dep = key.depfileRel ? result.outputFiles.find((f) => f.path === key.depfileRel) : key.depfileAbs ? result.outputFiles.find((f) => path.join(a.cwd, f.path) === key.depfileAbs) : undefined;
    let learnt = false;
    if (dep) {
      const read = parseDepFile((await deps.localCas.get(dep.digest)).toString('utf8'), a.cwd).filter((f) => !a.outputs.includes(f));
      const missed = read.filter((f) => !key.inputs.has(f));
      if (missed.length > 0) learnt = deps.keyDeps.manifest.add(a.id, missed);
    }
    // The key as the next build here computes it (inputs on disk now, whatever the compiler showed it read):
    // the submitted key itself unless it left produced inputs to the head or the manifest just grew.
    const finalKey = learnt || (key.producedInputs?.length ?? 0) > 0 ? await computeActionKey(a, deps.keyDeps) : key;
    // Kept here without the dependency file Orion asked for: a later hit must not write it into the tree.
    await deps.localAc.put(finalKey.actionDigest, outputs);
    if (finalKey.actionDigest.hash !== ev.actionDigest.hash && deps.remoteCache?.put) {
      await deps.remoteCache.put(finalKey, result).catch(() => undefined);
    }
    if (!ev.cached) explain(a, finalKey);
    deps.history?.record(a.id, finalKey, a.argv);
    if (ev.cached) return 'remote-cached';
    const where = ev.nodeId || 'remote';
    summary.where[where] = (summary.where[where] ?? 0) + 1;
    const m = result.executionMetadata;
    const endMs = Date.now();
    // The QUEUED event can reach this process after the node started the action: the span starts
    // when the head queued it (its clock), kept between the DAG's submission and that event.
    const heard = queuedAt.get(a.id);
    const queued = heard !== undefined && m?.queuedMs !== undefined && dag ? Math.min(heard, Math.max(dag.submittedAt, m.queuedMs)) : heard;
    const startMs = queued ?? (m?.workerStartMs && m.workerCompletedMs ? endMs - (m.workerCompletedMs - m.workerStartMs) : endMs);
    summary.durations.set(a.id, endMs - startMs);
    reporter.executed?.(a, { where, startMs, endMs, sentAt: startMs, metadata: m, exitCode: result.exitCode });
    return 'executed';
  }

  /** Tells the head about an action this process ran, with what it changed in the tree. */
  async function reportToHead(a: BuildAction, failure: string | undefined) {
    const state = dag!;
    const files = deps.keyDeps.files;
    const root = graph.root;
    let written: { path: string; digest: Digest; isExecutable: boolean }[] = [];
    let deleted: string[] = [];
    const effect = effects.get(a.id);
    // A symlink the step made (`ln -s $(abs_srcdir)/x.dist x.c`) goes to the head as the file it
    // points to, as action keys read it: the cluster's compiles of x.c read those bytes.
    const throughLink = async (rel: string) => {
      const l = await throughSymlink(path.join(root, rel), files);
      const inside = l && path.relative(root, l.target);
      if (!l || inside === undefined || inside.startsWith('..') || path.isAbsolute(inside)) return undefined;
      return { path: rel, digest: l.state.digest, isExecutable: l.state.isExecutable };
    };
    if (effect) {
      written = [...effect.written];
      deleted = effect.deleted;
      for (const l of effect.symlinks ?? []) {
        const w = await throughLink(l.path);
        if (w) written.push(w);
      }
    } else {
      for (const o of a.outputs) {
        const rel = path.relative(root, o);
        if (rel.startsWith('..') || path.isAbsolute(rel)) continue;
        const st = (await files.state(o)) ?? (await throughLink(rel));
        if (st) written.push({ path: rel, digest: st.digest, isExecutable: st.isExecutable });
        else deleted.push(rel);
      }
    }
    try {
      if (!failure) {
        const sources = new Map(written.map((w) => [`${w.digest.hash}/${w.digest.sizeBytes}`, path.join(root, w.path)]));
        await deps.dag!.uploader.ensure(written.map((w) => w.digest), (d) => sources.get(`${d.hash}/${d.sizeBytes}`));
      }
      // Cluster actions downstream whose keyed inputs this step changed are keyed again.
      const changed = new Set([...written.map((w) => path.join(root, w.path)), ...deleted.map((x) => path.join(root, x))]);
      const rekeyed: DagSpec[] = [];
      if (!failure && changed.size > 0) {
        for (const f of changed) deps.keyDeps.files.forget(f);
        const stack = [...(dependents.get(a.id) ?? [])];
        const seen = new Set<string>();
        while (stack.length > 0) {
          const id = stack.pop()!;
          if (seen.has(id)) continue;
          seen.add(id);
          stack.push(...(dependents.get(id) ?? []));
          const key = state.keys.get(id);
          if (!key || settled.has(id) || ![...key.inputs.keys()].some((f) => changed.has(f))) continue;
          const b = byId.get(id)!;
          const fresh = await computeActionKey(b, deps.keyDeps, { produced: producersFor(b) });
          if (fresh.inputRoot.rootDigest.hash === key.inputRoot.rootDigest.hash && (fresh.producedInputs ?? []).length === (key.producedInputs ?? []).length) continue;
          await deps.dag!.uploader.ensure([...fresh.blobs.keys()].map(fromDigestKey), (d) => fresh.blobs.get(`${d.hash}/${d.sizeBytes}`));
          state.keys.set(id, fresh);
          rekeyed.push(dagSpecOf(b, fresh, []));
        }
      }
      await deps.dag!.client.report({ buildId: deps.dag!.buildId, actionId: a.id, exitCode: failure ? 1 : 0, written: failure ? [] : written, deleted: failure ? [] : deleted, rekeyed, message: failure });
    } catch (err) {
      if (deps.signal.aborted) return;
      breakDag(state, err);
    }
  }

  /** `cp SRC DIR` (and `install`) writes DIR/SRC's name: a copy whose destination is a directory now. */
  function copyDestination(a: BuildAction): BuildAction {
    const [src, dst] = [a.inputs[0], a.outputs[0]];
    if (a.kind !== 'copy' || !src || !dst || !statSync(dst, { throwIfNoEntry: false })?.isDirectory()) return a;
    return { ...a, outputs: [path.join(dst, path.basename(src))] };
  }

  async function process1(a: BuildAction) {
    let outcome: ActionOutcome;
    let error: string | undefined;
    // .DELETE_ON_ERROR: make deletes the target of a failed recipe that changed it.
    const targetBefore = a.deleteOnError ? statSync(a.deleteOnError, { throwIfNoEntry: false })?.mtimeMs ?? -1 : undefined;
    try {
      if (!a.cacheable) {
        outcome = await runStep(a);
      } else if (a.makeRule && (await recipeDecision(a.makeRule))) {
        // A copy make would skip (`config.h:` / `cp config.def.h $@` once config.h exists).
        effects.set(a.id, { written: [], deleted: [] });
        outcome = 'up-to-date';
      } else {
        const o = await runCacheable(copyDestination(a));
        if (o === 'deferred') return void deferred.add(a.id);
        outcome = o;
      }
    } catch (err) {
      if (err instanceof NotStarted) {
        outcome = 'skipped';
        error = err.message;
      } else if (a.ignoreErrors && statusOf(err) === Code.ABORTED) {
        // As make prints "Error 1 (ignored)" and goes on.
        outcome = 'executed';
        reporter.error(`${a.label}: ${err instanceof Error ? err.message : String(err)} (ignored)`);
      } else if (isFatal(err)) {
        // Not this action's failure: the build's, reported once (failBuild).
        outcome = 'skipped';
        error = failBuild(err);
      } else {
        outcome = 'failed';
        error = err instanceof Error ? err.message : String(err);
        if (statusOf(err) !== Code.ABORTED) reporter.error(`${a.label}: ${error}`);
      }
    }
    if (outcome === 'failed' && a.deleteOnError) {
      const now = statSync(a.deleteOnError, { throwIfNoEntry: false });
      if (now && !now.isDirectory() && now.mtimeMs !== targetBefore) {
        rmSync(a.deleteOnError, { force: true });
        deps.keyDeps.files.forget(a.deleteOnError);
        reporter.error(`deleting file '${path.relative(graph.root, a.deleteOnError)}' (.DELETE_ON_ERROR)`);
      }
    }
    if (dag && !dag.broken && !dag.ids.has(a.id)) await reportToHead(a, outcome === 'failed' || outcome === 'skipped' ? (error ?? 'failed') : undefined);
    settle(a, outcome, error);
  }

  /** Records an action's end and makes its dependents ready (or skips them when it failed). */
  function settle(a: BuildAction, outcome: ActionOutcome, error?: string) {
    if (!markSettled(a.id)) return;
    if (outcome === 'failed') summary.failures.push({ action: a, message: error ?? 'failed' });
    summary.counts[outcome]++;
    finished++;
    reporter.finished(a, outcome, finished);
    if (outcome === 'failed') {
      summary.ok = false;
      if (!opts.keepGoing) stopping = true;
      skipDependents(a.id);
    } else {
      for (const d of dependents.get(a.id) ?? []) {
        const n = waiting.get(d)!;
        if (n < 0) continue;
        waiting.set(d, n - 1);
        // A step settled early (decideEarly) is not run when its last dependency ends.
        if (n - 1 === 0 && !settled.has(d) && (!dag || dag.broken || !dag.ids.has(d))) ready.push(byId.get(d)!);
      }
      for (const x of decideWaiters.get(a.id) ?? []) {
        const k = decideLeft.get(x)! - 1;
        decideLeft.set(x, k);
        if (k === 0) decideEarly(x);
      }
    }
  }

  if (!opts.dryRun) warmTools(graph.actions, deps.keyDeps);
  await new Promise<void>((resolve) => {
    /** The deferred misses (a wave of at most localMax) go back to `ready`, to run here instead of on the cluster. */
    const takeWaveHere = () => {
      for (const id of deferred) {
        runHere.add(id);
        ready.push(byId.get(id)!);
      }
      deferred.clear();
    };
    const pump = () => {
      if (deps.signal.aborted) stopping = true;
      const changed = deps.changedFiles?.();
      let likelyMiss: Map<string, number> | undefined;
      if (changed && changed.size > 0) {
        const likely = (a: BuildAction) => a.inputs.some((f) => changed.has(f));
        // After an edit the likely misses are keyed first: once none is left to key and the wave
        // they made is small enough, it runs here at once (ahead of the cache hits' lookups).
        // (Only a wave of likely misses: misses that cache lookups found are weighed once every lookup is done.)
        const early = dagPhase === 'collect' && deferred.size > 0 && deferred.size <= (opts.localMax ?? 0) && !stopping && [...deferred].every((id) => likely(byId.get(id)!));
        if (early && running + ready.length > 0 && keyingFirst.size === 0 && !ready.some(likely)) takeWaveHere();
        likelyMiss = new Map(ready.map((a) => [a.id, likely(a) || runHere.has(a.id) ? 1 : 0]));
        ready.sort((x, y) => likelyMiss!.get(x.id)! - likelyMiss!.get(y.id)! || priority.get(x.id)! - priority.get(y.id)!);
      } else ready.sort((x, y) => priority.get(x.id)! - priority.get(y.id)!);
      while (!stopping && running < inFlightMax && ready.length > 0) {
        const miss = likelyMiss?.get(ready[ready.length - 1]!.id) === 1;
        // Cache lookups wait until the likely misses are keyed and their commands started:
        // keying shares this thread, and the misses' commands are what the build waits for.
        if (!miss && keyingFirst.size > 0) break;
        const a = ready.pop()!;
        if (miss && a.cacheable) keyingFirst.add(a.id);
        running++;
        announced.add(a.id);
        reporter.started(a);
        void process1(a).finally(() => {
          running--;
          keyingFirst.delete(a.id);
          pump();
        });
      }
      if (running === 0 && ready.length === 0 && dagPhase === 'collect' && deferred.size > 0 && !stopping) {
        // A few misses: they run here, as in a build without a head; what they unblock is
        // looked up and, if it misses, weighed the same way.
        if (deferred.size <= (opts.localMax ?? 0)) {
          takeWaveHere();
          return pump();
        }
        // Everything that could run here has: the head takes the rest of the graph.
        dagPhase = 'started';
        running++;
        void startDag(deps.dag!)
          .then(
            (state) => {
              dag = state;
              if (!state) toOneByOne();
            },
            (err) => {
              if (deps.signal.aborted) return;
              if (isFatal(err)) return void failBuild(err);
              reporter.error(`cannot submit the build to the head (${(err as Error).message}); actions go one by one`);
              toOneByOne();
            },
          )
          .finally(() => {
            running--;
            pump();
          });
        return;
      }
      const headBusy = dag && !dag.broken && !deps.signal.aborted && dag.left > 0;
      if (running === 0 && (stopping || ready.length === 0) && !headBusy) resolve();
    };
    wake = pump;
    for (const [id, k] of decideLeft) if (k === 0) decideEarly(id);
    pump();
  });
  if (dag && !dag.broken) {
    const s = await dag.run.finished.catch(() => undefined);
    if (s) summary.transfer = { peerBytes: s.peerBytes, headBytes: s.headBytes };
  }
  if (deps.signal.aborted) {
    summary.ok = false;
    summary.failures.push({ action: graph.actions[0]!, message: 'build cancelled' });
  }
  if (fatal !== undefined) {
    // What the head never got (the DAG was not sent) did not run either.
    summary.counts.skipped += graph.actions.length - finished;
    finished = graph.actions.length;
  }
  if (finished < graph.actions.length && summary.ok) {
    summary.ok = false;
    summary.failures.push({ action: graph.actions[0]!, message: `dependency cycle: ${graph.actions.length - finished} actions never became ready` });
  }
  return summary;
}
