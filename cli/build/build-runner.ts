/**
 * Runs a build graph: actions start when their dependencies finished, in
 * critical-path order, at most `jobs` at a time. Each cacheable action is
 * keyed, looked up in the local then the remote action cache, and executed only
 * on a miss; failures stop the build the way make does (or not, with -k).
 */
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { Code, OrionError, statusOf } from '../../common/errors.js';
import type { ActionCache } from '../../cas/action-cache.js';
import type { BlobStore } from '../../cas/blob-store.js';
import type { ActionResult } from '../../cas/types.js';
import type { BuildAction, BuildGraph } from '../../dag-extractor/types.js';
import { computeActionKey, type ActionKey, type KeyDeps } from './action-key.js';
import { parseDepFile } from './compiler-args.js';
import type { BuildExecutor } from './in-place-executor.js';
import { writeOutputs } from './output-writer.js';
import { assertSafeResult } from './result-guard.js';
import type { Reporter } from './reporter.js';
import { KEYED_ENV } from './action-key.js';
import { diffSnapshots, stepKey, type StepCache, type StepEffect } from './step-cache.js';
import { applyStepEffect, freshenOutputs } from './output-writer.js';

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
  signal: AbortSignal;
}

export interface KeyHistory {
  previous(actionId: string): { actionDigest: string; inputs: Record<string, string>; argv: string[] } | undefined;
  record(actionId: string, key: ActionKey, argv: string[]): void;
}

export type ActionOutcome = 'cached' | 'remote-cached' | 'executed' | 'failed' | 'skipped' | 'dry-run';

export interface BuildSummary {
  ok: boolean;
  total: number;
  counts: Record<ActionOutcome, number>;
  /** Where executed actions ran (node id or 'local') with counts. */
  where: Record<string, number>;
  failures: { action: BuildAction; message: string }[];
  durations: Map<string, number>;
}

/** For each action id, the ids of the actions that depend on it (dependencies outside the graph ignored). */
function dependentsOf(actions: BuildAction[]): Map<string, string[]> {
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

/** Longest chain (in actions) from each action to the end of the build: its critical-path length. */
export function criticalPathLengths(actions: BuildAction[], dependents = dependentsOf(actions)): Map<string, number> {
  const memo = new Map<string, number>();
  const visit = (id: string): number => {
    const known = memo.get(id);
    if (known !== undefined) return known;
    memo.set(id, 1);
    let best = 0;
    for (const d of dependents.get(id) ?? []) best = Math.max(best, visit(d));
    memo.set(id, best + 1);
    return best + 1;
  };
  for (const a of actions) visit(a.id);
  return memo;
}

export async function runBuild(deps: BuildRunnerDeps, opts: BuildRunnerOptions): Promise<BuildSummary> {
  const { graph, reporter } = deps;
  const byId = new Map(graph.actions.map((a) => [a.id, a]));
  const dependents = dependentsOf(graph.actions);
  const waiting = new Map<string, number>();
  for (const a of graph.actions) waiting.set(a.id, [...new Set(a.deps)].filter((d) => byId.has(d)).length);
  const priority = criticalPathLengths(graph.actions, dependents);
  const ready: BuildAction[] = graph.actions.filter((a) => waiting.get(a.id) === 0);
  const summary: BuildSummary = {
    ok: true,
    total: graph.actions.length,
    counts: { cached: 0, 'remote-cached': 0, executed: 0, failed: 0, skipped: 0, 'dry-run': 0 },
    where: {},
    failures: [],
    durations: new Map(),
  };
  let running = 0;
  let finished = 0;
  let stopping = false;
  reporter.start(graph.actions.length);

  const skipDependents = (id: string) => {
    const stack = [...(dependents.get(id) ?? [])];
    while (stack.length > 0) {
      const d = stack.pop()!;
      if (waiting.get(d)! < 0) continue;
      waiting.set(d, -1);
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

  async function runCacheable(a: BuildAction, again = false): Promise<ActionOutcome> {
    const key = await computeActionKey(a, deps.keyDeps);
    if (!again) explain(a, key);
    const local = await deps.localAc.get(key.actionDigest);
    if (local) {
      await writeOutputs(local, a.cwd, deps.keyDeps.files, deps.localCas);
      await freshenOutputs(a.outputs, key.inputs.keys(), deps.keyDeps.files);
      deps.keyDeps.scanner.invalidate(a.outputs);
      await replay(local);
      deps.history?.record(a.id, key, a.argv);
      return 'cached';
    }
    if (opts.dryRun) return 'dry-run';
    const remoteRaw = await deps.remoteCache?.get(key, a);
    // Look again under the key that covers what the result shows was read (each round learns files, so this ends).
    if (remoteRaw && (await learnUnkeyedReads(a, key, remoteRaw))) return runCacheable(a, true);
    // A node's result carries the dependency file Orion asked for; it is not a build output.
    const remote = remoteRaw && key.depfileRel ? { ...remoteRaw, outputFiles: remoteRaw.outputFiles.filter((f) => f.path !== key.depfileRel) } : remoteRaw;
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
    const executor = key.remotable ? deps.executor : deps.localExecutor;
    const started = Date.now();
    reporter.running?.(a, executor === deps.localExecutor ? 'local' : 'remote');
    const out = await executor.run(a, key, deps.signal);
    summary.durations.set(a.id, Date.now() - started);
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
    await deps.localAc.put(finalKey.actionDigest, out.result);
    if (finalKey !== key && out.where !== 'local' && deps.remoteCache?.put) {
      // The head cached the result under the key the node ran; builds that check its dependency
      // output then look under the complete key. Best effort: a head may refuse client writes.
      await deps.remoteCache.put(finalKey, out.result).catch(() => undefined);
    }
    deps.history?.record(a.id, finalKey, a.argv);
    return 'executed';
  }

  /** A step whose reads are unknown: keyed by the whole tree it starts from. */
  async function runStep(a: BuildAction): Promise<ActionOutcome> {
    const files = deps.keyDeps.files;
    const snap = await files.snapshot();
    const before = new Map(snap.entries);
    const env = KEYED_ENV.map((n) => `${n}=${a.env?.[n] ?? deps.keyDeps.env[n] ?? ''}`);
    const key = stepKey(a.cwd, a.argv, env, snap);
    const hit = await deps.stepCache.get(key);
    if (hit && (await deps.localCas.findMissing([...hit.written.map((w) => w.digest), ...(hit.stdout ? [hit.stdout] : []), ...(hit.stderr ? [hit.stderr] : [])])).length === 0) {
      const touched = await applyStepEffect(hit, files, deps.localCas);
      deps.keyDeps.scanner.invalidate(touched);
      await replay({ outputFiles: [], outputSymlinks: [], outputDirectories: [], exitCode: 0, stdoutDigest: hit.stdout, stderrDigest: hit.stderr });
      return 'cached';
    }
    if (opts.dryRun) return 'dry-run';
    const started = Date.now();
    reporter.running?.(a, 'local');
    const out = await deps.localExecutor.run(a, undefined, deps.signal);
    summary.durations.set(a.id, Date.now() - started);
    reporter.executed?.(a, { where: out.where, startMs: started, endMs: Date.now(), exitCode: out.result.exitCode });
    files.forgetAll();
    if (out.stdout.length > 0) reporter.actionStdout(out.stdout);
    if (out.stderr.length > 0) reporter.actionStderr(out.stderr);
    summary.where.local = (summary.where.local ?? 0) + 1;
    const after = await files.snapshot();
    const change = diffSnapshots(before, after.entries);
    deps.keyDeps.scanner.invalidate([...change.written.map((w) => w.path), ...change.deleted].map((p) => path.join(graph.root, p)));
    if (out.result.exitCode !== 0) throw new OrionError(Code.ABORTED, `${a.label} failed with exit code ${out.result.exitCode}`, { hint: 'exit' });
    for (const w of change.written) await deps.localCas.putStream(w.digest, createReadStream(path.join(graph.root, w.path)));
    const effect: StepEffect = { ...change, stdout: out.result.stdoutDigest, stderr: out.result.stderrDigest };
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

  async function process1(a: BuildAction) {
    let outcome: ActionOutcome;
    try {
      if (!a.cacheable) {
        outcome = await runStep(a);
      } else {
        outcome = await runCacheable(a);
      }
    } catch (err) {
      outcome = 'failed';
      const message = err instanceof Error ? err.message : String(err);
      summary.failures.push({ action: a, message });
      if (statusOf(err) !== Code.ABORTED) reporter.error(`${a.label}: ${message}`);
    }
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
        if (n - 1 === 0) ready.push(byId.get(d)!);
      }
    }
  }

  await new Promise<void>((resolve) => {
    const pump = () => {
      if (deps.signal.aborted) stopping = true;
      ready.sort((x, y) => priority.get(x.id)! - priority.get(y.id)!);
      while (!stopping && running < opts.jobs && ready.length > 0) {
        const a = ready.pop()!;
        running++;
        reporter.started(a);
        void process1(a).finally(() => {
          running--;
          pump();
        });
      }
      if (running === 0 && (stopping || ready.length === 0)) resolve();
    };
    pump();
  });
  if (deps.signal.aborted) {
    summary.ok = false;
    summary.failures.push({ action: graph.actions[0]!, message: 'build cancelled' });
  }
  if (finished < graph.actions.length && summary.ok) {
    summary.ok = false;
    summary.failures.push({ action: graph.actions[0]!, message: `dependency cycle: ${graph.actions.length - finished} actions never became ready` });
  }
  return summary;
}
