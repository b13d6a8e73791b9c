/**
 * Whole-DAG builds (the orion.v1 Builds service, in domain terms). A client
 * submits every action of a build at once with its edges; the head runs each
 * action when its producers have finished: it adds their output digests to the
 * action's input root, keys it, serves it from the action cache or queues it
 * (longest remaining path first, measured durations where known) in its exec
 * root: the source tree overlaid with the effects (outputs, a client step's
 * deletions) of the action's ancestors, in the order they finished. Actions
 * that share their ancestors share an exec root, so a node reuses one tree for
 * them; an action never sees the output of one it does not depend on (make -j
 * gives no such guarantee either). Progress goes back as events until the
 * build ends.
 */
import { posix } from 'node:path';
import { randomUUID } from 'node:crypto';
import { encodeActionMessage } from '../cas/proto-wire.js';
import type { Clock } from '../common/clock.js';
import { Code, OrionError, statusOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { parseDepFile } from '../common/depfile.js';
import { MOUNT_PATH_PROPERTY } from '../common/platform-properties.js';
import type { BlobStore } from '../cas/blob-store.js';
import { createLimiter } from '../cas/concurrency.js';
import { digestKey, digestOf } from '../cas/digest.js';
import type { TreeOverlay } from '../cas/tree-overlay.js';
import type { TreeFileEntry } from '../cas/merkle.js';
import type { Action, ActionResult, Command, Digest, Platform } from '../cas/types.js';
import type { BuildTracker } from './build-tracker.js';
import { checkInputRoot, loadCommand, validateRelativePath, type ExecutionLimits } from './execution-service.js';
import type { InstanceCaches } from './instance-caches.js';
import type { Execution, ExecutionStatus, Scheduler } from './scheduler.js';

export interface DagActionSpec {
  id: string;
  commandDigest: Digest;
  /** Key input root without the files this build produces. */
  inputRootDigest: Digest;
  /** Root-relative paths the action reads that `producer` writes. */
  producedInputs: { path: string; producer: string }[];
  deps: string[];
  timeoutMs?: number;
  doNotCache: boolean;
  platform?: Platform;
  /** Root-relative path of the compiler's dependency output, if any. */
  depfile?: string;
  label?: string;
  /** Run by the client, which reports its effects (reportClientAction). */
  client?: boolean;
  /** The client's guess of its duration (ms), used until the head has measured the command. */
  estimatedMs?: number;
  /** A client step make will probably find up to date: the actions its decision waits for (only they lead through it in the priorities). */
  decideAfter?: string[];
}

export interface ClientActionReport {
  buildId: string;
  actionId: string;
  exitCode: number;
  /** Files the step wrote, root-relative. */
  written: TreeFileEntry[];
  deleted: string[];
  /** Waiting actions keyed again because the step changed their key inputs. */
  rekeyed: DagActionSpec[];
  message?: string;
  /**
   * Make's rule found the step up to date once `decidedAfter` (ancestors of it)
   * were done: it changed nothing, and its dependents need not wait for its
   * other dependencies.
   */
  upToDate?: { decidedAfter: string[] };
}

export interface DagBuildRequest {
  instanceName: string;
  /** Empty: the head picks one. */
  buildId: string;
  sourceRoot: Digest;
  actions: DagActionSpec[];
  keepGoing: boolean;
  skipCacheLookup: boolean;
  /** The submitter's identity (with authentication): only it (or an admin) may cancel or report into the build. */
  owner?: string;
}

export type DagEventKind = 'accepted' | 'queued' | 'started' | 'cache-hit' | 'finished' | 'failed' | 'retried' | 'skipped' | 'run-on-client' | 'build-finished';

export interface DagSummary {
  ok: boolean;
  total: number;
  executed: number;
  cacheHits: number;
  failed: number;
  skipped: number;
  peerBytes: number;
  headBytes: number;
  wallMs: number;
}

export interface DagEvent {
  kind: DagEventKind;
  buildId: string;
  actionId?: string;
  nodeId?: string;
  attempt?: number;
  actionDigest?: Digest;
  result?: ActionResult;
  status?: ExecutionStatus;
  message?: string;
  summary?: DagSummary;
}

export type DagLimits = ExecutionLimits & { maxDagActions: number };

export interface DagBuildsDeps {
  cas: BlobStore;
  caches: InstanceCaches;
  scheduler: Scheduler;
  overlay: TreeOverlay;
  clock: Clock;
  log: Logger;
  limits: DagLimits;
  builds?: BuildTracker;
  /** Expected duration (ms) of an action not measured before. */
  defaultDurationMs?: number;
}

export interface DagBuilds {
  /** Validates and runs a build, reporting through `emit`; resolves with the summary (also the last event). */
  run(req: DagBuildRequest, emit: (ev: DagEvent) => void, signal: AbortSignal): Promise<DagSummary>;
  /** Cancels a running build; false when none has that id (or `as`, when given, is not its owner). */
  cancel(buildId: string, reason: string, as?: string): boolean;
  /** The client ran one of its actions: its effects join the build (applied once the action's dependencies are done). */
  reportClientAction(report: ClientActionReport, as?: string): Promise<void>;
  active(): string[];
}

type State = 'waiting' | 'resolving' | 'client' | 'queued' | 'running' | 'done' | 'failed' | 'skipped';

interface Node {
  spec: DagActionSpec;
  command: Command;
  dependents: Node[];
  producers: Set<string>;
  waiting: number;
  state: State;
  /** Remaining critical path (ms) from this action's start to the end of the build. */
  remainingMs: number;
  /** Root-relative path -> file, once it finished. */
  outputs?: Map<string, TreeFileEntry>;
  /** The node that ran it in this build (it holds the outputs). */
  ranOn?: string;
  execution?: string;
  unwatch?: () => void;
  /** A client action's report, kept until its dependencies are done. */
  report?: ClientActionReport;
  /** The actions it depends on (its `deps` and producers, once each). */
  parents: Node[];
  /** Longest chain of ancestors below it (0: none). */
  depth: number;
  /** Its place in the build's finishing order. */
  seq?: number;
  /** What it did to the tree, once it finished. */
  effects?: { files: TreeFileEntry[]; deleted: string[] };
  /** Its exec root: the source tree with its ancestors' effects (computed once, on first use). */
  pre?: Promise<Digest>;
  /** Its exec root with its own effects applied, once it finished: what its dependents build on. */
  post?: Digest;
}

/** Every action `n` depends on, directly or not. */
function ancestorsOf(n: Node): Set<Node> {
  const seen = new Set<Node>();
  const stack = [...n.parents];
  while (stack.length > 0) {
    const x = stack.pop()!;
    if (seen.has(x)) continue;
    seen.add(x);
    for (const p of x.parents) stack.push(p);
  }
  return seen;
}

const MAX_ID_LENGTH = 1000;
const RESOLVE_CONCURRENCY = 64;
/** Decoded commands the head keeps across builds (a few hundred bytes each). */
const COMMAND_CACHE_ENTRIES = 50_000;
/**
 * Resolves started in one turn of the event loop before it is let run: a burst of ready
 * actions (a build's roots, a generator's hundreds of dependents) resolves from memory in one
 * go, and the assignments it dispatches only reach the nodes once the loop turns.
 */
const RESOLVES_PER_TURN = 16;

export function createDagBuilds(deps: DagBuildsDeps): DagBuilds {
  const running = new Map<string, { owner?: string; cancel(reason: string): void; report(r: ClientActionReport): Promise<void> }>();
  /** A caller acting as `as` (an identity; undefined: anyone, e.g. an admin or no authentication) may touch build `b`. */
  const mayTouch = (b: { owner?: string }, as: string | undefined) => as === undefined || b.owner === undefined || b.owner === as;
  /** How many DAG builds wait on each execution: the last one to go cancels it. */
  const interest = new Map<string, number>();
  const knownComplete = new Set<string>();
  const defaultMs = deps.defaultDurationMs ?? 1000;
  /**
   * Decoded, validated commands by digest, least recently used first (a digest names one
   * command forever): a build repeating an earlier one's commands reads and decodes none again
   * (2,000 of them were ~90 ms of the head's time before the first action could start).
   */
  const commandCache = new Map<string, Command>();
  const cachedCommand = (key: string): Command | undefined => {
    const c = commandCache.get(key);
    if (c) {
      commandCache.delete(key);
      commandCache.set(key, c);
    }
    return c;
  };
  const loadCachedCommand = async (key: string, d: Digest): Promise<Command> => {
    const c = await loadCommand(deps.cas, d, deps.limits);
    commandCache.set(key, c);
    if (commandCache.size > COMMAND_CACHE_ENTRIES) commandCache.delete(commandCache.keys().next().value!);
    return c;
  };

  /** Checks the DAG's shape and loads what it names; throws the error the client should see. */
  async function prepare(req: DagBuildRequest): Promise<Map<string, Node>> {
    const { limits } = deps;
    if (req.actions.length === 0) throw new OrionError(Code.INVALID_ARGUMENT, 'the build has no actions');
    if (req.actions.length > limits.maxDagActions) {
      throw new OrionError(Code.INVALID_ARGUMENT, `the build has ${req.actions.length} actions; this head accepts at most ${limits.maxDagActions} per build (--max-dag-actions)`);
    }
    const nodes = new Map<string, Node>();
    for (const spec of req.actions) {
      if (spec.id === '' || spec.id.length > MAX_ID_LENGTH) throw new OrionError(Code.INVALID_ARGUMENT, `action id ${JSON.stringify(spec.id.slice(0, 100))} must be 1 to ${MAX_ID_LENGTH} characters`);
      if (nodes.has(spec.id)) throw new OrionError(Code.INVALID_ARGUMENT, `action id ${JSON.stringify(spec.id)} appears twice`);
      if (spec.timeoutMs !== undefined && spec.timeoutMs > limits.maxActionTimeoutMs) {
        throw new OrionError(Code.INVALID_ARGUMENT, `action ${spec.id} asks for a timeout of ${spec.timeoutMs} ms; this head allows at most ${limits.maxActionTimeoutMs} ms (--max-action-timeout)`);
      }
      if (spec.depfile) validateRelativePath(spec.depfile, `action ${spec.id} depfile`);
      nodes.set(spec.id, { spec, command: undefined as unknown as Command, dependents: [], producers: new Set(), waiting: 0, state: 'waiting', remainingMs: 0, parents: [], depth: 0 });
    }
    for (const n of nodes.values()) {
      const edges = new Set(n.spec.deps);
      const seen = new Set<string>();
      for (const p of n.spec.producedInputs) {
        validateRelativePath(p.path, `action ${n.spec.id} produced input`);
        if (seen.has(p.path)) throw new OrionError(Code.INVALID_ARGUMENT, `action ${n.spec.id} lists produced input ${p.path} twice`);
        seen.add(p.path);
        edges.add(p.producer);
        n.producers.add(p.producer);
      }
      for (const d of edges) {
        if (d === n.spec.id) throw new OrionError(Code.INVALID_ARGUMENT, `action ${d} depends on itself`);
        const dep = nodes.get(d);
        if (!dep) throw new OrionError(Code.INVALID_ARGUMENT, `action ${n.spec.id} depends on ${JSON.stringify(d.slice(0, 200))}, which is not in the build`);
        dep.dependents.push(n);
        n.parents.push(dep);
        n.waiting++;
      }
    }
    // Kahn's algorithm: whatever never becomes ready is on a cycle.
    const order: Node[] = [];
    const left = new Map([...nodes.values()].map((n) => [n, n.waiting]));
    for (const n of nodes.values()) if (n.waiting === 0) order.push(n);
    for (let i = 0; i < order.length; i++) {
      for (const d of order[i]!.dependents) {
        const k = left.get(d)! - 1;
        left.set(d, k);
        if (k === 0) order.push(d);
      }
    }
    if (order.length < nodes.size) {
      const stuck = [...nodes.values()].filter((n) => left.get(n)! > 0).slice(0, 5).map((n) => n.spec.id);
      throw new OrionError(Code.INVALID_ARGUMENT, `the build's dependencies form a cycle through ${nodes.size - order.length} actions (e.g. ${stuck.join(', ')})`);
    }
    for (const n of order) for (const p of n.parents) n.depth = Math.max(n.depth, p.depth + 1);
    // Everything the build names must be there before anything runs.
    await checkInputRoot(deps.cas, req.sourceRoot, knownComplete, limits);
    const commands = new Map<string, Promise<Command>>();
    const limit = createLimiter(RESOLVE_CONCURRENCY);
    await Promise.all(
      [...nodes.values()].map(async (n) => {
        if (n.spec.client) {
          n.command = { arguments: [], environmentVariables: [], outputPaths: [], outputFiles: [], outputDirectories: [], workingDirectory: '' };
          return;
        }
        const key = digestKey(n.spec.commandDigest);
        const cached = cachedCommand(key);
        if (cached) n.command = cached;
        else {
          let c = commands.get(key);
          if (!c) commands.set(key, (c = limit(() => loadCachedCommand(key, n.spec.commandDigest))));
          n.command = await c;
        }
        if (!knownComplete.has(digestKey(n.spec.inputRootDigest))) await limit(() => checkInputRoot(deps.cas, n.spec.inputRootDigest, knownComplete, limits));
      }),
    );
    // Longest remaining path, in reverse topological order, from measured durations where known.
    for (let i = order.length - 1; i >= 0; i--) {
      const n = order[i]!;
      const own = n.spec.client ? 0 : (deps.scheduler.expectedDuration(n.spec.commandDigest.hash) ?? n.spec.estimatedMs ?? defaultMs);
      // A loop, not Math.max(...): one generated header can have more dependents than a call has arguments.
      let after = 0;
      for (const d of n.dependents) if (!d.spec.decideAfter || d.spec.decideAfter.includes(n.spec.id)) after = Math.max(after, d.remainingMs);
      n.remainingMs = own + after;
    }
    return nodes;
  }

  /** Output files of a result, by root-relative path. */
  function outputsOf(n: Node, result: ActionResult): Map<string, TreeFileEntry> {
    const out = new Map<string, TreeFileEntry>();
    // A client reports root-relative paths (an action handed to it too).
    const wd = n.spec.client ? '.' : n.command.workingDirectory || '.';
    for (const f of result.outputFiles) {
      const p = posix.normalize(posix.join(wd, f.path));
      out.set(p, { path: p, digest: f.digest, isExecutable: f.isExecutable });
    }
    return out;
  }

  /**
   * A result is only as good as its key: the project files the compiler's
   * dependency output names that the key's input root lacks (root-relative).
   * Undefined when the dependency output cannot be read.
   */
  async function unkeyedReads(n: Node, result: ActionResult, keyRoot: Digest): Promise<string[] | undefined> {
    const depfile = n.spec.depfile;
    if (!depfile) return [];
    const outputs = outputsOf(n, result);
    const file = outputs.get(posix.normalize(depfile));
    if (!file) return [];
    const mount = n.command.platform?.properties.find((p) => p.name === MOUNT_PATH_PROPERTY)?.value;
    const wd = n.command.workingDirectory || '.';
    const base = mount ?? '/orion-root';
    let text: string;
    try {
      text = (await deps.cas.get(file.digest)).toString('utf8');
    } catch {
      return undefined;
    }
    const missing: string[] = [];
    for (const abs of parseDepFile(text, posix.join(base, wd))) {
      const rel = posix.relative(base, abs);
      if (rel.startsWith('..') || posix.isAbsolute(rel) || outputs.has(rel)) continue;
      if (!(await deps.overlay.has(keyRoot, rel))) missing.push(rel);
    }
    return missing;
  }

  /**
   * The Action of `n` over input root `root`, and its digest (the action cache key). Its bytes
   * are not stored in the CAS: the head makes them from the DAG, nodes receive the Action inline
   * with their assignment, and no reader of the cache needs it (REAPI asks clients to upload an
   * Action only for Execute). Storing it cost the head a stat and four file calls per executed
   * action, ~0.18 ms of its main thread.
   */
  function keyOn(n: Node, root: Digest): { action: Action; digest: Digest } {
    const action: Action = { commandDigest: n.spec.commandDigest, inputRootDigest: root, timeoutMs: n.spec.timeoutMs, doNotCache: n.spec.doNotCache, platform: n.spec.platform };
    return { action, digest: digestOf(encodeActionMessage(action)) };
  }

  /**
   * The key extended with the files the dependency output showed were read, as
   * they are in `execRoot`: a second key under which a result is stored and
   * found, so reads the client could not see up front (computed includes) are
   * covered by content. Undefined when a read file is not in `execRoot`.
   */
  async function extendedKey(n: Node, keyRoot: Digest, reads: string[], execRoot: Digest): Promise<ReturnType<typeof keyOn> | undefined> {
    const files: TreeFileEntry[] = [];
    for (const rel of reads) {
      const f = await deps.overlay.file(execRoot, rel);
      if (!f) return undefined;
      files.push(f);
    }
    return keyOn(n, await deps.overlay.overlay(keyRoot, files));
  }

  async function run(req: DagBuildRequest, emit: (ev: DagEvent) => void, signal: AbortSignal): Promise<DagSummary> {
    const buildId = req.buildId || randomUUID();
    if (running.has(buildId)) throw new OrionError(Code.ALREADY_EXISTS, `a build with id ${buildId} is already running`);
    const startedAt = deps.clock.now();
    // The id is taken while the DAG is validated, so a second build with it is refused
    // at once; a cancel meanwhile takes effect as soon as the build is accepted.
    let cancelledEarly: string | undefined;
    running.set(buildId, {
      owner: req.owner,
      cancel: (reason) => void (cancelledEarly ??= reason),
      report: async () => {
        throw new OrionError(Code.FAILED_PRECONDITION, `build ${buildId} has not been accepted yet`);
      },
    });
    let nodes: Map<string, Node>;
    try {
      nodes = await prepare(req);
    } catch (err) {
      running.delete(buildId);
      throw err;
    }
    const log = deps.log.child({ buildId });
    const summary: DagSummary = { ok: true, total: nodes.size, executed: 0, cacheHits: 0, failed: 0, skipped: 0, peerBytes: 0, headBytes: 0, wallMs: 0 };
    let stopping = false;
    let left = nodes.size;
    let finishedCount = 0;
    /** Exec roots of actions with several parents, by parent set: actions after one barrier share theirs. */
    const merged = new Map<string, Promise<Digest>>();
    const preRoot = (n: Node): Promise<Digest> => (n.pre ??= computePre(n));
    /** Client steps reported up to date, waiting for the actions their decision waited for. */
    const early = new Set<Node>();

    async function computePre(n: Node): Promise<Digest> {
      if (n.parents.length === 0) return req.sourceRoot;
      if (n.parents.length === 1) return n.parents[0]!.post!;
      const key = n.parents
        .map((p) => p.spec.id)
        .sort()
        .join('\n');
      let root = merged.get(key);
      if (!root) merged.set(key, (root = mergeParents(n.parents)));
      return root;
    }

    /**
     * The tree of the deepest parent, plus the effects of the ancestors it does not
     * have, in finishing order (an ancestor finished before its dependents did).
     */
    async function mergeParents(parents: Node[]): Promise<Digest> {
      let base = parents[0]!;
      for (const p of parents) if (p.depth > base.depth) base = p;
      const covered = ancestorsOf(base).add(base);
      const extra: Node[] = [];
      const stack = [...parents];
      while (stack.length > 0) {
        const x = stack.pop()!;
        if (covered.has(x)) continue;
        covered.add(x);
        extra.push(x);
        for (const p of x.parents) stack.push(p);
      }
      extra.sort((a, b) => a.seq! - b.seq!);
      const files = new Map<string, TreeFileEntry>();
      const deleted = new Set<string>();
      for (const x of extra) {
        for (const d of x.effects!.deleted) {
          for (const k of files.keys()) if (k === d || k.startsWith(`${d}/`)) files.delete(k);
          deleted.add(d);
        }
        for (const f of x.effects!.files) files.set(f.path, f);
      }
      return deps.overlay.overlay(base.post!, [...files.values()], [...deleted]);
    }
    const limit = createLimiter(RESOLVE_CONCURRENCY);
    let startedThisTurn = 0;
    let nextTurn: Promise<void> | undefined;
    const pace = async () => {
      while (startedThisTurn >= RESOLVES_PER_TURN) await nextTurn;
      if (startedThisTurn++ === 0) nextTurn = new Promise<void>((r) => setImmediate(() => ((startedThisTurn = 0), r())));
    };
    /** Resolves actions that became ready, on the longest remaining path first (then DAG order). */
    const resolveReady = (ready: Node[]) => {
      ready.sort((a, b) => b.remainingMs - a.remainingMs);
      for (const n of ready) void limit(async () => (await pace(), resolve(n)));
    };
    let finish!: () => void;
    const ended = new Promise<void>((r) => (finish = r));
    const send = (ev: Omit<DagEvent, 'buildId'>) => {
      try {
        emit({ buildId, ...ev });
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'could not send a build event');
      }
    };
    const info = (n: Node) => ({ buildId, actionId: n.spec.id, label: n.spec.label || n.command.arguments.slice(0, 3).join(' '), deps: [...new Set([...n.spec.deps, ...n.producers])] });

    const settle = (n: Node, state: 'done' | 'failed' | 'skipped') => {
      n.state = state;
      n.unwatch?.();
      n.unwatch = undefined;
      if (n.execution) release(n.execution);
      left--;
      if (left === 0) finish();
    };

    const skipFrom = (n: Node, why: string) => {
      const stack = [...n.dependents];
      while (stack.length > 0) {
        const d = stack.pop()!;
        if (d.state !== 'waiting') continue;
        summary.skipped++;
        settle(d, 'skipped');
        send({ kind: 'skipped', actionId: d.spec.id, message: why });
        for (const x of d.dependents) stack.push(x);
      }
    };

    /**
     * No node has the compiler the action's key names (node/tool-check.ts); the client that
     * resolved it has: it runs the action and reports it as one of its own (ReportClientAction).
     */
    const handToClient = (n: Node, why: string) => {
      n.unwatch?.();
      n.spec = { ...n.spec, client: true };
      n.state = 'client';
      log.info({ action: n.spec.id, why }, 'handing an action to the client');
      send({ kind: 'run-on-client', actionId: n.spec.id, message: why });
      if (n.report) void applyReport(n, n.report);
    };

    const fail = (n: Node, ev: Omit<DagEvent, 'buildId' | 'kind' | 'actionId'>) => {
      if (n.state === 'done' || n.state === 'failed' || n.state === 'skipped') return;
      summary.failed++;
      summary.ok = false;
      settle(n, 'failed');
      send({ kind: 'failed', actionId: n.spec.id, ...ev });
      skipFrom(n, `${n.spec.label || n.spec.id} failed`);
      if (!req.keepGoing) stop(`${n.spec.label || n.spec.id} failed`);
    };

    /** No new work starts; queued work is dropped; running work finishes (make without -k). */
    function stop(why: string, cancelRunning = false) {
      if (stopping && !cancelRunning) return;
      stopping = true;
      const victims = [...nodes.values()].filter((n) => n.state === 'waiting' || n.state === 'client' || (n.state === 'queued' && n.execution) || (cancelRunning && n.state === 'running'));
      // Queued work goes first: cancelling a running action frees a slot, which the
      // scheduler would otherwise hand at once to queued work about to be cancelled too.
      victims.sort((a, b) => Number(a.state === 'running') - Number(b.state === 'running'));
      for (const n of victims) {
        summary.skipped++;
        const name = n.execution;
        settle(n, 'skipped');
        if (name && !interest.has(name)) deps.scheduler.cancel(name, why);
        send({ kind: 'skipped', actionId: n.spec.id, message: why });
      }
    }

    const succeed = async (n: Node, result: ActionResult, hit: boolean, actionDigest: Digest | undefined, nodeId?: string, deleted: string[] = []) => {
      n.outputs = outputsOf(n, result);
      n.ranOn = hit || n.spec.client ? undefined : nodeId;
      n.seq = ++finishedCount;
      n.effects = { files: [...n.outputs.values()], deleted };
      try {
        n.post = await deps.overlay.overlay(await preRoot(n), n.effects.files, deleted);
      } catch (err) {
        return fail(n, { actionDigest, result, status: { code: statusOf(err), message: `cannot add the outputs of ${n.spec.id} to the build tree: ${(err as Error).message}` } });
      }
      if (n.state === 'skipped') return; // cancelled meanwhile
      if (hit) summary.cacheHits++;
      else summary.executed++;
      settle(n, 'done');
      if (!n.spec.client) send({ kind: hit ? 'cache-hit' : 'finished', actionId: n.spec.id, actionDigest, result, nodeId });
      const ready: Node[] = [];
      for (const d of n.dependents) {
        d.waiting--;
        if (d.waiting === 0 && d.state === 'waiting' && !stopping) ready.push(d);
      }
      resolveReady(ready);
      if (early.size > 0 && !stopping) void settleEarly();
    };

    async function resolve(n: Node): Promise<void> {
      if (n.state !== 'waiting' || stopping) return;
      if (n.spec.client) {
        n.state = 'client';
        if (n.report) await applyReport(n, n.report);
        return;
      }
      n.state = 'resolving';
      try {
        const produced: TreeFileEntry[] = [];
        for (const p of n.spec.producedInputs) {
          const producer = nodes.get(p.producer)!;
          let f = producer.outputs?.get(posix.normalize(p.path));
          // A client step reports what it changed: a file it left as it was is in the exec root.
          if (!f && producer.spec.client) f = await deps.overlay.file(producer.post!, posix.normalize(p.path));
          if (!f) throw new OrionError(Code.FAILED_PRECONDITION, `${p.producer} finished without writing ${p.path}, which ${n.spec.id} reads`);
          produced.push(f);
        }
        const keyRoot = await deps.overlay.overlay(n.spec.inputRootDigest, produced);
        const key = keyOn(n, keyRoot);
        const { action, digest: actionDigest } = key;
        const cache = deps.caches.forInstance(req.instanceName);
        if (!req.skipCacheLookup && !action.doNotCache) {
          const cached = await cache.get(actionDigest);
          const reads = cached ? await unkeyedReads(n, cached, keyRoot) : undefined;
          if (cached && reads && reads.length === 0) {
            deps.builds?.lookup(info(n), actionDigest, true);
            return await succeed(n, cached, true, actionDigest);
          }
          if (reads && reads.length > 0) {
            // Cached under a key that misses files it read: look under the key that covers them as they are now.
            const ext = await extendedKey(n, keyRoot, reads, await preRoot(n));
            const hit = ext ? await cache.get(ext.digest) : undefined;
            if (ext && hit && (await unkeyedReads(n, hit, keyRoot))?.every((r) => reads.includes(r))) {
              deps.builds?.lookup(info(n), ext.digest, true);
              return await succeed(n, hit, true, ext.digest);
            }
          }
        }
        if (stopping) return settleSkipped(n);
        action.timeoutMs ??= deps.limits.maxActionTimeoutMs;
        // Prefer the node that holds most of the produced input bytes.
        const localityBytes = new Map<string, number>();
        const peerSources: { digest: Digest; nodeId: string }[] = [];
        for (const p of n.spec.producedInputs) {
          const producer = nodes.get(p.producer)!;
          const out = producer.outputs?.get(posix.normalize(p.path));
          if (!producer.ranOn || !out) continue;
          const size = out.digest.sizeBytes;
          localityBytes.set(producer.ranOn, (localityBytes.get(producer.ranOn) ?? 0) + size);
          peerSources.push({ digest: out.digest, nodeId: producer.ranOn });
        }
        const root = await preRoot(n);
        if (stopping) return settleSkipped(n);
        const e = deps.scheduler.enqueue({
          instanceName: req.instanceName,
          actionDigest,
          action,
          command: n.command,
          execRootDigest: root,
          buildId,
          priority: -Math.round(n.remainingMs),
          localityBytes,
          peerSources,
        });
        if (n.state !== 'resolving') return;
        n.execution = e.name;
        interest.set(e.name, (interest.get(e.name) ?? 0) + 1);
        n.state = 'queued';
        deps.builds?.execution(e, info(n));
        send({ kind: 'queued', actionId: n.spec.id, actionDigest });
        let started = 0;
        let lastStage = '';
        n.unwatch = deps.scheduler.watch(e.name, (ex) => {
          if (n.state !== 'queued' && n.state !== 'running') return;
          if (ex.stage === 'executing' && ex.attempts.length > started) {
            started = ex.attempts.length;
            n.state = 'running';
            send({ kind: 'started', actionId: n.spec.id, nodeId: ex.attempts.at(-1)!.nodeId, attempt: started, actionDigest });
          } else if (ex.stage === 'queued' && lastStage === 'executing') {
            n.state = 'queued';
            send({ kind: 'retried', actionId: n.spec.id, attempt: ex.attempts.length, message: ex.attempts.at(-1)?.outcome, actionDigest });
          } else if (ex.stage === 'completed') {
            for (const at of ex.attempts) {
              summary.peerBytes += at.peerBytes ?? 0;
              summary.headBytes += at.headBytes ?? 0;
            }
            const r = ex.response!;
            const nodeId = r.result?.executionMetadata?.worker || ex.attempts.at(-1)?.nodeId;
            if (r.status.code !== Code.OK && r.status.toolchain !== undefined) handToClient(n, r.status.message);
            else if (r.status.code !== Code.OK) fail(n, { actionDigest, status: r.status, nodeId, attempt: ex.attempts.length, message: r.status.message });
            else if (r.result!.exitCode !== 0) fail(n, { actionDigest, result: r.result, nodeId, attempt: ex.attempts.length, message: `exit code ${r.result!.exitCode}` });
            else void remember(n, r.result!, keyRoot, root).then(() => succeed(n, r.result!, r.cachedResult, actionDigest, nodeId));
          }
          lastStage = ex.stage;
        });
      } catch (err) {
        fail(n, { status: { code: statusOf(err), message: (err as Error).message, missing: err instanceof OrionError ? err.missing : undefined }, message: (err as Error).message });
      }
    }

    /** A fresh result that read files its key lacks is also stored under the extended key. */
    async function remember(n: Node, result: ActionResult, keyRoot: Digest, root: Digest) {
      if (n.spec.doNotCache) return;
      try {
        const reads = await unkeyedReads(n, result, keyRoot);
        if (!reads || reads.length === 0) return;
        const ext = await extendedKey(n, keyRoot, reads, root);
        if (!ext) return;
        await deps.caches.forInstance(req.instanceName).put(ext.digest, result);
      } catch (err) {
        log.warn({ action: n.spec.id, err: (err as Error).message }, 'could not store the result under its extended key');
      }
    }

    async function applyReport(n: Node, r: ClientActionReport) {
      if (r.exitCode !== 0) {
        return fail(n, { status: { code: Code.ABORTED, message: r.message || `exit code ${r.exitCode}` }, message: r.message || `exit code ${r.exitCode}` });
      }
      for (const spec of r.rekeyed) {
        const target = nodes.get(spec.id)!;
        target.spec = { ...target.spec, inputRootDigest: spec.inputRootDigest, producedInputs: spec.producedInputs, depfile: spec.depfile };
      }
      const result: ActionResult = { outputFiles: r.written.map((f) => ({ path: f.path, digest: f.digest, isExecutable: f.isExecutable })), outputSymlinks: [], outputDirectories: [], exitCode: 0 };
      await succeed(n, result, false, undefined, 'client', r.deleted);
    }

    async function report(r: ClientActionReport) {
      const n = nodes.get(r.actionId);
      if (!n) throw new OrionError(Code.NOT_FOUND, `build ${buildId} has no action ${JSON.stringify(r.actionId.slice(0, 200))}`);
      if (!n.spec.client) throw new OrionError(Code.FAILED_PRECONDITION, `action ${r.actionId} runs on the cluster, not on the client`);
      if (n.report || (n.state !== 'waiting' && n.state !== 'client')) throw new OrionError(Code.FAILED_PRECONDITION, `action ${r.actionId} was already reported or skipped`);
      for (const f of r.written) validateRelativePath(f.path, `written file of ${r.actionId}`);
      for (const d of r.deleted) validateRelativePath(d, `deleted path of ${r.actionId}`);
      for (const spec of r.rekeyed) {
        const target = nodes.get(spec.id);
        if (!target || target.spec.client || target.state !== 'waiting') throw new OrionError(Code.FAILED_PRECONDITION, `rekeyed action ${JSON.stringify(spec.id.slice(0, 200))} is not a cluster action that is still waiting`);
        for (const p of spec.producedInputs) {
          validateRelativePath(p.path, `action ${spec.id} produced input`);
          if (!target.producers.has(p.producer) && !target.spec.deps.includes(p.producer)) throw new OrionError(Code.INVALID_ARGUMENT, `rekeyed action ${spec.id} may not read from ${p.producer}, which it does not depend on`);
        }
        await checkInputRoot(deps.cas, spec.inputRootDigest, knownComplete, deps.limits);
      }
      const missing = await deps.cas.findMissing(r.written.map((f) => f.digest));
      if (missing.length > 0) throw new OrionError(Code.FAILED_PRECONDITION, `${missing.length} written file(s) of ${r.actionId} are not in the CAS`, { missing });
      if (r.upToDate) {
        if (r.exitCode !== 0 || r.written.length > 0 || r.deleted.length > 0 || r.rekeyed.length > 0) {
          throw new OrionError(Code.INVALID_ARGUMENT, `action ${r.actionId} is reported up to date: it must have exit code 0 and no written, deleted or rekeyed entries`);
        }
        const ancestors = ancestorsOf(n);
        for (const id of r.upToDate.decidedAfter) {
          const a = nodes.get(id);
          if (!a || !ancestors.has(a)) throw new OrionError(Code.INVALID_ARGUMENT, `action ${r.actionId} is reported up to date after ${JSON.stringify(id.slice(0, 200))}, which is not one of its dependencies`);
        }
      }
      n.report = r;
      if (n.state === 'client') await applyReport(n, r);
      else if (r.upToDate) {
        early.add(n);
        await settleEarly();
      }
    }

    /**
     * Client steps reported up to date whose decision's dependencies are done:
     * each is settled with no effects and with those as its only parents (its
     * exec root is theirs), so its dependents wait for nothing else of its.
     */
    async function settleEarly() {
      for (const n of [...early]) {
        if (n.state !== 'waiting') {
          early.delete(n);
          continue;
        }
        const after = n.report!.upToDate!.decidedAfter.map((id) => nodes.get(id)!);
        if (!after.every((p) => p.state === 'done')) continue;
        early.delete(n);
        n.parents = after;
        n.depth = after.reduce((d, p) => Math.max(d, p.depth + 1), 0);
        n.state = 'client';
        await applyReport(n, n.report!);
      }
    }

    function settleSkipped(n: Node) {
      summary.skipped++;
      settle(n, 'skipped');
      send({ kind: 'skipped', actionId: n.spec.id, message: 'the build stopped' });
    }

    function release(name: string) {
      const k = (interest.get(name) ?? 1) - 1;
      if (k > 0) interest.set(name, k);
      else interest.delete(name);
    }

    const cancel = (reason: string) => {
      if (left === 0) return;
      log.info({ reason }, 'cancelling build');
      summary.ok = false;
      stop(`cancelled: ${reason}`, true);
    };
    running.set(buildId, { owner: req.owner, cancel, report });
    const onAbort = () => cancel('the client went away');
    signal.addEventListener('abort', onAbort, { once: true });
    log.info({ actions: nodes.size }, 'DAG build accepted');
    send({ kind: 'accepted' });
    try {
      // The signal may have fired while the DAG was validated: its 'abort' event is gone.
      if (cancelledEarly !== undefined) cancel(cancelledEarly);
      else if (signal.aborted) onAbort();
      resolveReady([...nodes.values()].filter((n) => n.waiting === 0));
      await ended;
    } finally {
      signal.removeEventListener('abort', onAbort);
      running.delete(buildId);
    }
    summary.wallMs = deps.clock.now() - startedAt;
    log.info({ ...summary }, 'DAG build finished');
    send({ kind: 'build-finished', summary: { ...summary } });
    return summary;
  }

  return {
    run,
    cancel(buildId, reason, as) {
      const b = running.get(buildId);
      if (!b || !mayTouch(b, as)) return false;
      b.cancel(reason);
      return true;
    },
    async reportClientAction(r, as) {
      const b = running.get(r.buildId);
      if (!b || !mayTouch(b, as)) throw new OrionError(Code.NOT_FOUND, `no running build has id ${JSON.stringify(r.buildId.slice(0, 200))}`);
      await b.report(r);
    },
    active: () => [...running.keys()],
  };
}
